"""Model files and network descriptions, without pickle.

A model file is a ``.npz`` (a zip of ``.npy`` arrays, read with
``allow_pickle=False``) holding:

- ``format``:       "symnet-model", the format version, the dtype;
- ``description``:  ``Network.describe()`` as JSON text;
- ``param/<name>``: one array per parameter (W1, b1, ...);
- ``optimizer/config``, ``optimizer/s1``, ``optimizer/s2``: the optimizer's state
  (``symnet.optimizer``), when the model has one;
- ``checksum``:     sha256 over all of the above.

``read`` checks a file and rebuilds the Network from its description
(``network_from_description``); ``symnet.load`` (``symnet.api.network``)
then compiles it (a cache hit when it was compiled before) and copies the
parameters in.  Built-in activations and losses are stored by name; custom
sympy ones by their ``sympy.srepr`` text, which is read back by a small
interpreter that accepts only sympy constructors of expressions with literal
arguments (never ``eval``).

>>> import os, tempfile, numpy as np, symnet as sn
>>> net = sn.Network(sn.Input(2), sn.Dense(3, "tanh"), sn.Dense(1), loss="mse")
>>> model = net.compile(dtype="float64", seed=1)
>>> path = os.path.join(tempfile.mkdtemp(), "m.npz")
>>> model.save(path)
>>> again = sn.load(path)
>>> X = np.ones((2, 2))
>>> bool((again.forward(X) == model.forward(X)).all())
True
"""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from ..guards import file_mode

__all__ = ["FORMAT", "VERSION", "network_from_description", "read", "save"]

FORMAT = "symnet-model"
VERSION = 1
MAX_EXPR_CHARS = 20000   # a custom activation's srepr text, bounded before parsing


def _checksum(header: np.ndarray, description: str, params: dict) -> str:
    h = hashlib.sha256()
    for part in (*header.tolist(), description):
        h.update(part.encode())
        h.update(b"\0")
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(model, path):
    """Write ``model`` to ``path`` atomically (temporary file, then rename), so a
    crash never leaves a half-written file; the file gets the mode the umask gives
    new files (0644 with umask 022)."""
    path = os.fspath(path)
    if os.path.isdir(path):     # else os.replace's message names the temporary file
        raise IsADirectoryError(f"model.save: {path} is a folder; give the file's path, "
                                f"e.g. {os.path.join(path, 'model.npz')}")
    header = np.array([FORMAT, str(VERSION), model.dtype.name])
    description = json.dumps(model.network.describe(), sort_keys=True)
    params = {name: np.array(v) for name, v in model.params.items()}
    state = {} if model.optimizer is None else model.optimizer.arrays()
    arrays = {"format": header, "description": np.array(description),
              "checksum": np.array(_checksum(header, description, {**params, **state}))}
    arrays.update({f"param/{k}": v for k, v in params.items()})
    arrays.update(state)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):   # else mkstemp's message names the temporary file
        raise FileNotFoundError(errno.ENOENT, f"model.save: no such folder to write "
                                f"{os.path.basename(path)} into (create it first: "
                                "os.makedirs)", folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".symnet-save-", suffix=".npz")
    try:
        os.fchmod(fd, file_mode())            # as open() would make it, not 0600
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path) -> dict:
    what = "symnet model file (an .npz that model.save writes)"
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path) \
            and not zipfile.is_zipfile(path):     # else numpy's guess: pickled data
        raise ValueError(f"{path} is not a readable {what}: it is not an .npz (zip) "
                         "archive, or is cut short")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        if "pickle" in str(exc):        # numpy's message offers allow_pickle: never here
            raise ValueError(f"{path} is not a readable {what}: it holds Python objects "
                             "(pickled data), which a model file never does") from None
        raise ValueError(f"{path} is not a readable {what} "
                         f"({type(exc).__name__}: {exc})") from None


def read(path, network=None, cls=None, optimizer=False):
    """``(network, dtype, params)`` saved at ``path``: the network rebuilt as a
    ``cls`` (``symnet.lang.dsl.Network`` by default), the saved dtype's name, the
    parameters by name, each checked against the network's shapes.  With
    ``optimizer``, a fourth item: the optimizer state's arrays (``{}`` when the
    file has none; ``symnet.runtime.optimizer.from_arrays`` checks them).

    With ``network`` given, the file must hold that network (same description),
    else ValueError.  ``symnet.load`` compiles the result.
    """
    data = _read(path)
    try:
        header = data["format"]
        description = str(data["description"][()])
        checksum = str(data["checksum"][()])
    except (KeyError, IndexError, TypeError, ValueError):
        raise ValueError(f"{path} is not a symnet model file (missing format, "
                         "description or checksum)") from None
    if header.dtype.kind != "U" or header.shape != (3,) or header[0] != FORMAT:
        raise ValueError(f"{path} is not a symnet model file")
    if header[1] != str(VERSION):
        raise ValueError(f"{path} has model format version {header[1]}; this symnet reads "
                         f"version {VERSION}")
    params = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
    state = {k: v for k, v in data.items() if k.startswith("optimizer/")}
    if _checksum(header, description, {**params, **state}) != checksum:
        raise ValueError(f"{path} is damaged or was modified: its checksum does not match "
                         "its contents")
    try:
        desc = json.loads(description)
    except ValueError as exc:
        raise ValueError(f"{path}: the network description is not JSON: {exc}") from None
    if network is not None:
        if json.dumps(network.describe(), sort_keys=True) != description:
            raise ValueError(f"{path} holds a different network:\n  file:  {description}\n"
                             f"  given: {json.dumps(network.describe(), sort_keys=True)}")
    else:
        network = network_from_description(desc, cls)
    expected = network.param_shapes()
    if set(expected) != set(params):
        raise ValueError(f"{path}: parameters {sorted(params)} do not match the network's "
                         f"{sorted(expected)}")
    for name, shape in expected.items():
        if tuple(params[name].shape) != tuple(shape) or params[name].dtype.kind != "f":
            raise ValueError(f"{path}: parameter {name} has shape {params[name].shape} "
                             f"({params[name].dtype}), the network needs {tuple(shape)}")
    return (network, str(header[2]), params) + ((state,) if optimizer else ())


# ------------------------------------------------------------ descriptions

def network_from_description(desc: dict, cls=None):
    """The Network that ``Network.describe()`` returned ``desc`` for, as a ``cls``
    (a subclass of ``symnet.lang.dsl.Network``; that class itself by default)."""
    from ..lang.dsl import Network
    graph = isinstance(desc, dict) and "nodes" in desc
    try:
        net = (_graph_from_description if graph else _chain_from_description)(
            desc, cls or Network)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed network description ({type(exc).__name__}: {exc})") \
            from None
    if net.describe() != desc:
        raise ValueError("the network description does not rebuild to itself")
    return net


def _chain_from_description(desc: dict, cls):
    """A Network of one input and a chain of layers, built as a ``cls``."""
    from ..lang.base import Input
    n = desc["input"]["n"]
    inp = Input(tuple(n) if isinstance(n, list) else n, name=desc["input"]["name"],
                dtype=desc["input"].get("dtype", "float"))
    layers = []
    for d in desc["layers"]:
        layer = _layer(d)
        if layer is None:
            raise ValueError(f"layer kind {d.get('kind')!r} cannot be loaded: this symnet "
                             "has no layer of that kind (a file of another version?)")
        layers.append(layer)
    return cls(inp, *layers, loss=_spec(desc["loss"]))


def _layer(d: dict):
    """The layer object of one described layer (None for kinds not rebuilt here)."""
    from ..lang import conv, norm
    from ..lang.dsl import Dense
    kind = d.get("kind")
    if kind == "layer":
        return _formula_layer(d)
    if kind == "tensor":
        return _tensor_layer(d)
    if kind == "dense":
        return Dense(d["units"], _spec(d["activation"]), bias=d["bias"], name=d["name"],
                     init=d.get("init"), trainable=d.get("trainable", True))
    if kind in ("conv2d", "conv1d"):
        cls = conv.Conv2d if kind == "conv2d" else conv.Conv1d
        return cls(d["out_channels"], tuple(d["kernel_size"]), stride=tuple(d["stride"]),
                   padding=tuple(d["padding"]), activation=_spec(d["activation"]),
                   bias=d["bias"], name=d["name"],
                   dilation=tuple(d.get("dilation", (1,) * len(d["kernel_size"]))))
    if kind in ("maxpool2d", "avgpool2d", "maxpool1d", "avgpool1d"):
        cls = {"maxpool2d": conv.MaxPool2d, "avgpool2d": conv.AvgPool2d,
               "maxpool1d": conv.MaxPool1d, "avgpool1d": conv.AvgPool1d}[kind]
        return cls(tuple(d["kernel_size"]), stride=tuple(d["stride"]),
                   padding=tuple(d.get("padding", (0,) * len(d["kernel_size"]))),
                   name=d["name"])
    if kind == "flatten":
        return conv.Flatten(name=d["name"])
    if kind in ("attention", "pointwise", "positional"):
        from ..lang import attention
        if kind == "attention":
            return attention.MultiHeadAttention(d["heads"], causal=d["causal"],
                                                name=d["name"])
        if kind == "pointwise":
            return attention.Pointwise(d["units"], d["activation"], name=d["name"])
        return attention.PositionalEmbedding(name=d["name"])
    if kind in ("layernorm", "rmsnorm"):
        cls = norm.LayerNorm if kind == "layernorm" else norm.RMSNorm
        return cls(eps=d["eps"], bias=d.get("bias", True), name=d["name"])
    if kind == "softmax":
        return norm.Softmax(name=d["name"])
    if kind in ("batchnorm1d", "batchnorm2d"):
        from ..lang import batchnorm
        cls = batchnorm.BatchNorm1d if kind == "batchnorm1d" else batchnorm.BatchNorm2d
        return cls(eps=d["eps"], momentum=d["momentum"], name=d["name"],
                   sync=bool(d.get("sync", False)))
    if kind == "embedding":
        from ..lang.embedding import Embedding
        return Embedding(d["num"], d["dim"], name=d["name"])
    if kind == "dropout":
        from ..lang.dropout import Dropout
        return Dropout(d["p"], name=d["name"])
    return None


def _graph_from_description(desc: dict, cls):
    """A Network with merges, several inputs/outputs or shared layers (the
    ``nodes`` form of ``Network.describe()``); nodes with the same ``params_of``
    are one layer object applied at several places; built as a ``cls``."""
    from ..lang.base import Input
    from ..lang.merge import Add, Concatenate, Multiply, Slice
    from ..lang.recurrent import GRUCell, LSTMCell, RNNCell, Steps, _apply
    made = {}
    for d in desc["inputs"]:
        shape = tuple(d["shape"])
        made[d["name"]] = Input(shape[0] if len(shape) == 1 else shape, name=d["name"],
                                dtype=d.get("dtype", "float"))
    origins = {}
    for d in desc["nodes"]:
        kind, key = d.get("kind"), d["params_of"]
        if key not in origins:
            layer = _layer(d)
            if layer is not None:
                pass
            elif kind == "rnn":
                layer = RNNCell(d["units"], _spec(d["activation"]), name=d["name"])
            elif kind in ("gru", "lstm"):
                layer = (GRUCell if kind == "gru" else LSTMCell)(d["units"], name=d["name"])
            elif kind == "steps":
                layer = Steps(name=d["name"])
            elif kind in ("add", "multiply"):
                layer = {"add": Add, "multiply": Multiply}[kind](name=d["name"])
            elif kind == "concat":
                layer = Concatenate(d.get("axis"), name=d["name"])
            elif kind == "slice":
                layer = Slice(d["start"], d["units"], name=d["name"])
            else:
                raise ValueError(f"layer kind {kind!r} cannot be loaded from a graph "
                                 "description: this symnet has no layer of that kind (a file "
                                 "of another version?); pass the network: "
                                 "symnet.load(path, network=net)")
            origins[key] = layer
        made[d["name"]] = _apply(origins[key], [made[n] for n in d["inputs"]], d["name"])
        if d.get("projection"):      # a gated cell's input gates of every step (unroll)
            made[d["name"]].projection = d["projection"]
    return cls([made[d["name"]] for d in desc["inputs"]],
               [made[o] for o in desc["outputs"]],
               loss=[_spec(x) for x in desc["loss"]],
               loss_weights=desc["loss_weights"])


def _formula_layer(d: dict):
    """A ``symnet.Layer`` from its description: the formula is srepr text, read back
    by ``parse_srepr`` (whitelisted constructors, never eval)."""
    from ..lang.layers import Layer
    if not isinstance(d.get("formula"), str):
        raise ValueError(f"layer {d.get('name')!r}: the formula must be srepr text")
    formula = parse_srepr(d["formula"], evaluate=True)
    params = {k: tuple(v) for k, v in d["params"].items() if k != d["linear"]}
    extra = {"inputs": tuple(d["input_args"])} if d.get("input_args") else {}
    return Layer(d["units"], formula, params=params,
                 init=d["init"], linear=d["linear"], name=d["name"],
                 trainable=d.get("trainable", True), **extra)


def _tensor_layer(d: dict):
    """A tensor ``symnet.Layer`` from its description: the element formula as srepr
    text (sums, indexed arrays and their affine positions), read back by
    ``parse_srepr``; the output indices by name (integer symbols, as
    ``symnet.indices`` makes them)."""
    import sympy as sp

    from ..lang.tensor import TensorLayer
    if not isinstance(d.get("formula"), str):
        raise ValueError(f"layer {d.get('name')!r}: the formula must be srepr text")
    expr = parse_srepr(d["formula"], evaluate=True)
    if not all(isinstance(n, str) for n in d["index"]):
        raise ValueError(f"layer {d.get('name')!r}: index names must be strings, "
                         f"got {d['index']!r}")
    index = tuple(sp.Symbol(n, integer=True) for n in d["index"])
    return TensorLayer(tuple(d["shape"]), lambda: expr, index,
                       params={k: tuple(v) for k, v in d["params"].items()},
                       init=d["init"], name=d["name"], layout=d.get("layout"))


def _spec(name):
    """A built-in name as is; ``custom:<srepr>`` parsed to a sympy expression."""
    if not isinstance(name, str):
        raise ValueError(f"expected an activation or loss name, got {name!r}")  # noqa: TRY004
    if name.startswith("custom:"):
        return parse_srepr(name[len("custom:"):])
    return name


# Constructors a sympy expression of activations and losses may use.
_ALLOWED = (
    "Add", "Mul", "Pow", "Symbol", "Integer", "Rational", "Float", "exp", "log", "sqrt",
    "Abs", "sign", "tanh", "sinh", "cosh", "sin", "cos", "tan", "atan", "asinh", "erf",
    "Max", "Min", "Piecewise", "StrictGreaterThan", "StrictLessThan", "GreaterThan",
    "LessThan", "Equality", "Unequality", "And", "Or", "Not", "Heaviside",
    "Indexed", "IndexedBase", "Sum", "Tuple",     # the index notation of symnet.Layer
    # every other function a declared formula may use (check_smooth: differentiable,
    # and the C printer spells it and its derivative): a model saved with one must load
    "asin", "acos", "acosh", "atanh", "cot", "sec", "csc", "acot", "asec", "acsc",
    "coth", "sech", "csch", "acoth", "asech", "acsch", "erfc", "atan2", "sinc", "Mod",
)
# C99's stable spellings, written by users from sympy.codegen.cfunctions
_CFUNCTIONS = ("log1p", "expm1", "log2", "exp2", "log10", "hypot", "Cbrt", "Sqrt")
_NAMES = {"true", "false", "pi", "E", "oo", "zoo", "nan", "I"}


def parse_srepr(text: str, evaluate: bool = False):
    """sympy expression from ``sympy.srepr`` text, building only whitelisted sympy
    classes from literal arguments: a tampered file cannot run code.  With
    ``evaluate`` the constructors evaluate as usual (the canonical form a formula
    had when it was written out).

    >>> parse_srepr("Mul(Integer(2), Symbol('z', real=True))")
    2*z
    """
    import sympy as sp

    from ..scalar import primitives
    if len(text) > MAX_EXPR_CHARS:
        raise ValueError(f"custom expression is longer than {MAX_EXPR_CHARS} characters")
    from sympy.codegen import cfunctions
    funcs = {n: getattr(sp, n) for n in _ALLOWED if hasattr(sp, n)}
    funcs.update({n: getattr(cfunctions, n) for n in _CFUNCTIONS})
    funcs.update(sigmoid=primitives.sigmoid, softplus=primitives.softplus,
                 ExprCondPair=sp.functions.elementary.piecewise.ExprCondPair)
    consts = {"true": sp.true, "false": sp.false, "pi": sp.pi, "E": sp.E, "oo": sp.oo,
              "zoo": sp.zoo, "nan": sp.nan, "I": sp.I}
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"custom expression is not sympy srepr text: {exc}") from None

    def build(node, depth=0):
        if depth > 200:
            raise ValueError("custom expression is nested too deeply")
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool)):
            if isinstance(node.value, (int, str)) and len(str(node.value)) > 400:
                raise ValueError("custom expression has a literal that is too long")
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = build(node.operand, depth + 1)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return -v
        if isinstance(node, ast.Name) and node.id in _NAMES:
            return consts[node.id]
        if isinstance(node, ast.Tuple):
            return tuple(build(e, depth + 1) for e in node.elts)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in funcs):
            args = [build(a, depth + 1) for a in node.args]
            kwargs = {k.arg: build(k.value, depth + 1) for k in node.keywords}
            if None in kwargs:
                raise ValueError("custom expression uses ** arguments")
            with sp.evaluate(evaluate):
                return funcs[node.func.id](*args, **kwargs)
        raise ValueError(f"custom expression uses {ast.dump(node)[:80]}, which is not an "
                         "allowed sympy constructor (refused: files must not run code)")

    try:
        return build(tree)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a constructor refused its literal arguments
        raise ValueError(f"custom expression could not be rebuilt: "
                         f"{type(exc).__name__}: {exc}") from None
