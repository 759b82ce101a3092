"""Standalone C: a model as ``<name>.h`` + ``<name>.c``, for machines without Python.

The C is the model's own kernel plan rendered by the same templates symnet
compiles in process, with three differences: the functions are named
``<name>_forward``, ``<name>_loss_grad``, ... (macros ``<NAME>_N_PARAMS``, ...);
matrix products are plain loops (no packing buffers on the stack, no
threads) unless ``threads=True``; and the trained parameter values are the
initializer of ``<name>_trained_params`` (or, with ``params_file``, a raw
little-endian binary beside the C).  No function allocates memory: every one
takes its scratch as ``work`` (``<NAME>_WORK_SIZE(batch)`` numbers).  The
header is the contract, and its text is also what symnet hands cffi as the
cdef of its in-process kernels.

>>> import os, tempfile, symnet as sn
>>> net = sn.Network(sn.Input(2), sn.Dense(4, "tanh"), sn.Dense(1, "sigmoid"), loss="bce")
>>> model = net.compile(seed=0)
>>> out = tempfile.mkdtemp()
>>> [os.path.basename(p) for p in model.export_c(out, name="xor")]
['xor.h', 'xor.c']
>>> "float xor_step(float *params" in open(os.path.join(out, "xor.h")).read()
True
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from ...guards import file_mode

__all__ = ["export_c", "fold_batchnorm", "literals"]

_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern
float for goto if inline int long register restrict return short signed sizeof static struct
switch typedef union unsigned void volatile while _Bool _Complex _Imaginary""".split())


def _check_name(name) -> str:
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name)
            and name.isascii()):
        raise ValueError(f"export name must be a C identifier of ASCII letters, digits and "
                         f"'_' starting with a letter (it prefixes every function), "
                         f"got {name!r}")
    if name in _KEYWORDS or name == "sn" or name.startswith("sn_"):
        raise ValueError(f"export name {name!r} is reserved (a C keyword, or the sn_ prefix "
                         "of the file's own helpers); choose another, e.g. 'net'")
    return name


def literals(values: np.ndarray) -> list[str]:
    """C literals that read back as exactly these values (the shortest such
    decimal; an ``f`` suffix for float32).

    >>> literals(np.array([0.1, -2.0, 0.0], np.float32))
    ['1.e-01f', '-2.e+00f', '0.e+00f']
    """
    suffix = "f" if values.dtype == np.float32 else ""
    return [np.format_float_scientific(v, unique=True, trim=".") + suffix for v in values]


def _write(path: Path, data: bytes):
    """Write atomically (temporary file, then rename): never a half-written file; the
    file gets the mode the umask gives new files (0644 with umask 022)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())            # as open() would make it, not 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check_params_file(params_file, directory, name: str) -> str:
    """``params_file`` as a normalised path inside the export folder: an absolute path,
    one leading out of the folder, and the export's own ``<name>.c``/``<name>.h`` are
    refused (the C would overwrite the values, or the values the C)."""
    if not isinstance(params_file, (str, os.PathLike)):
        raise ValueError(f"params_file must be a file name or path relative to the export "
                         f"folder, e.g. '{name}.params', got {params_file!r}")
    given = os.fspath(params_file)
    rel = os.path.normpath(given)
    if os.path.isabs(given):
        raise ValueError(f"params_file {given!r} is an absolute path; it is relative to the "
                         f"export folder {os.fspath(directory)!r}, where the file is "
                         f"written: give e.g. '{name}.params'")
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"params_file {given!r} does not name a file inside the export "
                         f"folder {os.fspath(directory)!r}; give e.g. '{name}.params'")
    if rel in (f"{name}.c", f"{name}.h"):
        raise ValueError(f"params_file {given!r} is the export's own {rel} (name={name!r} "
                         f"writes {name}.h and {name}.c); give another, e.g. '{name}.params'")
    return rel


def export_c(model, directory, name: str = "net", training: bool = True,
             threads: bool = False, params_file=None) -> list[str]:
    """Write ``<name>.h`` and ``<name>.c`` for ``model`` into ``directory``
    (created if missing); returns the paths written.

    ``training``: also the loss, gradient, step, update and whole-epoch
    functions (else forward only, with the smaller forward-only work size);
    refused for a network with BatchNorm or Dropout, whose training state moves
    in Python between steps (``symnet.runtime.modes``): export its forward pass
    (evaluation mode) with ``training=False``;
    ``threads``: OpenMP for large products (compile with -fopenmp);
    ``params_file``: a path relative to ``directory`` (inside it, and not
    ``<name>.c`` or ``<name>.h``) where the trained values go as raw
    little-endian numbers instead of the C initializer.
    """
    from ...plan.lower import plan as make_plan
    from .runtime import render
    name = _check_name(name)
    for flag, value in (("training", training), ("threads", threads)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag} must be True or False, got {value!r}")
    if params_file is not None:
        params_file = _check_params_file(params_file, directory, name)
    if training and model.stateful:
        # model.step moves these layers' state on in Python after each step (BatchNorm's
        # running statistics, Dropout's step counter; symnet.runtime.modes), which the C
        # does not: its step, loss and train would not give model.step's numbers
        layers = model.mode_layers()
        many = len(layers) > 1
        raise ValueError(
            f"export_c(training=True): {'layers' if many else 'layer'} {', '.join(layers)} "
            f"{'have' if many else 'has'} a training mode that the exported C does not "
            "carry out (model.step moves BatchNorm's running statistics and Dropout's "
            "masks on in Python after each step; the C would train on the running "
            "statistics without dropout and never update them), so its training functions "
            "would not compute what model.step does; export the forward pass only: "
            "export_c(..., training=False) (python -m symnet export --inference-only)")
    with model.lock:
        if model.stateful:      # evaluation mode: Dropout is the identity, BatchNorm uses
            model.set_training(False)          # its running statistics
        theta = model.theta.copy()
    bad = ~np.isfinite(theta)
    if bad.any():
        where = int(np.nonzero(bad)[0][0])
        owner = next(p["name"] for p in model.meta["params"]
                     if p["offset"] <= where < p["offset"] + int(np.prod(p["shape"])))
        raise ValueError(f"parameter {owner} holds NaN or inf ({int(bad.sum())} values in "
                         "all); a C file cannot be exported from it: retrain or reset it")
    graph = model.network.graph()
    plan = make_plan(graph)
    if plan.n_params != theta.size:
        raise ValueError(f"the model has {theta.size} parameters but its network plans "
                         f"{plan.n_params}")  # a network changed after compiling
    if not training:
        folded, values = fold_batchnorm(graph, {
            p["name"]: theta[p["offset"]:p["offset"] + int(np.prod(p["shape"]))].reshape(
                p["shape"]) for p in model.meta["params"]})
        if folded is not graph:
            plan = make_plan(folded)
            theta = np.zeros(plan.n_params, theta.dtype)
            for b in plan.buffers.values():
                if b.kind == "param":
                    theta[b.offset:b.offset + values[b.name].size] = values[b.name].ravel()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    note = None
    if params_file is not None:
        bin_path = directory / params_file
        note = (f"{bin_path.name}: the trained values, {theta.size} little-endian "
                f"{'float32' if theta.dtype == np.float32 else 'float64'} numbers, no header")
    source, header, _ = render(
        plan, model.dtype.name, prefix=f"{name}_", macro=f"{name.upper()}_", header_file=f"{name}.h",
        title=f"{name}.h", training=training, threads=threads, portable=not threads,
        trained=None if params_file is not None else literals(theta), params_note=note,
        modes=", ".join(model.mode_layers()) or None)
    written = []
    if params_file is not None:
        bin_path.parent.mkdir(parents=True, exist_ok=True)
        _write(bin_path, theta.astype(theta.dtype.newbyteorder("<")).tobytes())
    for fname, text in ((f"{name}.h", header), (f"{name}.c", source)):
        _write(directory / fname, text.encode())
        written.append(str(directory / fname))
    if params_file is not None:
        written.append(str(bin_path))
    return written


def fold_batchnorm(graph, values: dict):
    """(graph, values) with each BatchNorm that can be folded folded into the Dense or
    Conv before it, for evaluation (running statistics): with s[c] = γ[c]/√(var[c] + ε),

        γ·(W·x + b − mean)/√(var + ε) + β = (s·W)·x + (s·(b − mean) + β),

    so W ← s[c]·W (each output channel c scaled) and b ← s·(b − mean) + β, and the two
    BatchNorm nodes go (the layer before takes the BatchNorm's name, so the layers after
    it read it unchanged).  It folds where the layer before is a Dense or Conv without an
    activation, with a bias, one output channel per BatchNorm channel, read by the
    BatchNorm alone and with parameters no other layer shares; other BatchNorms stay
    (they then use their running statistics).  ``values``: every parameter by name;
    returns the same graph object when nothing folds."""
    import dataclasses

    import sympy as sp

    nodes, out = list(graph.nodes), dict(values)
    users: dict = {}
    for node in nodes:
        for p in node.params:
            users[p.name] = users.get(p.name, 0) + 1
    changed = False
    for bn in [n for n in nodes if getattr(n, "fold", None)]:
        centre = next((n for n in nodes if n.name == bn.input), None)
        prev = next((n for n in nodes if centre is not None and n.name == centre.input), None)
        if prev is None or prev.kind not in ("dense", "conv") or len(prev.reductions) != 1 \
                or (prev.activation is not None and prev.activation.name != "linear") \
                or prev.name in graph.outputs \
                or [n.name for n in nodes if prev.name in n.inputs] != [centre.name]:
            continue
        red = prev.reductions[0]
        bias = next((p for p in prev.params if p.role == "bias"), None)
        weight = next((p for p in prev.params if p.role != "bias"), None)
        f = bn.fold
        C = out[f["gamma"]].shape[0]
        if bias is None or weight is None or bias.shape != (C,) or weight.shape[0] != C \
                or len(prev.params) != 2 or any(users[p.name] != 1 for p in prev.params):
            continue
        terms = sp.Add.make_args(prev.outer)
        accs = [prev.symbols.get(t) for t in terms]
        if len(terms) != 2 or red.symbol not in terms or \
                not any(a is not None and a.array == bias.name for a in accs):
            continue
        s = out[f["gamma"]].astype(np.float64) / np.sqrt(
            out[f["var"]].astype(np.float64) + f["eps"])
        W = out[weight.name]
        out[weight.name] = (W.astype(np.float64) * s.reshape((C,) + (1,) * (W.ndim - 1))
                            ).astype(W.dtype)
        b = out[bias.name]
        out[bias.name] = (s * (b.astype(np.float64) - out[f["mean"]]) + out[f["beta"]]
                          ).astype(b.dtype)
        k = nodes.index(prev)
        nodes[k] = dataclasses.replace(prev, name=bn.name)
        nodes = [n for n in nodes if n is not bn and n is not centre]
        changed = True
    if not changed:
        return graph, values
    return dataclasses.replace(graph, nodes=nodes), out
