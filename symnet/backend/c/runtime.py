"""The in-process C backend: kernel plan → C99 → cffi module → ``Runtime``.

The header rendered for the plan (``templates/network.h.j2``) is both the
cffi cdef here and the ``<name>.h`` of an export (``symnet.backend.c.export``), so the
functions symnet calls are exactly the ones a C program would.

>>> import numpy as np, symnet as sn
>>> from symnet.backend.c import runtime as c
>>> net = sn.Network(sn.Input(2), sn.Dense(3, "tanh"), sn.Dense(1), loss="mse")
>>> rt = c.load(net, "float64")
>>> params, X = np.zeros(rt.n_params), np.ones((4, 2))
>>> O, work = np.empty((4, 1)), np.zeros(rt.work_size(4))
>>> rt.forward(rt.buffer(params), rt.buffer(X), 4, rt.buffer(O), rt.buffer(work))
>>> O.ravel().tolist()
[0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from . import build

from ... import guards

_POINTERS = {"float32": "float *", "float64": "double *", "int64": "long long *",
             "intc": "int *", "int32": "int *"}


def network_key(description: dict, dtype: str) -> str:
    """Cache key of a network: its description, dtype, compiler and flags."""
    text = json.dumps([description, dtype, build.code_fingerprint(), build.compiler(),
                       build.flags(), build._cpu()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Runtime:
    """The compiled functions of one network and dtype (signatures as in the
    header, ``meta["header"]``), and the buffers they take.

    ``forward(params, X, batch, O, work)``, ``loss(params, X, T, batch, work)``,
    ``loss_grad(params, X, T, batch, grads, work)``,
    ``step(params, X, T, batch, lr, work)``,
    ``update(params, grads, lr, optimizer, s1, s2, hyper, t)`` and
    ``train(params, X, T, idx, n_idx, batch_size, lr, losses, optimizer, s1, s2,
    hyper, t0, prev, have_prev, work)`` are the C functions themselves (no
    Python between the caller and the C: ≈0.17 µs a call); their arrays are
    buffers from ``buffer`` (this dtype) or ``pointer`` (int64, intc, float64).
    """

    def __init__(self, module, meta: dict, tune: str = "fast"):
        self.meta = meta
        self.dtype = np.dtype(meta["dtype"])
        lib, ffi = module.lib, module.ffi
        self._ffi = ffi
        p = meta["prefix"]
        self.forward = getattr(lib, p + "forward")
        self.loss = getattr(lib, p + "loss")
        self.loss_grad = getattr(lib, p + "loss_grad")
        self.step = getattr(lib, p + "step")
        self.update = getattr(lib, p + "update")
        self.train = getattr(lib, p + "train")
        # the same four for targets given as class labels (softmax cross-entropy)
        self.labels = tuple(getattr(lib, f"{p}{k}_labels")
                            for k in ("loss", "loss_grad", "step", "train")) \
            if meta.get("labels") else None
        # where the products run on this machine (BLAS above a measured size,
        # threads from a measured cost); once per module, before any call
        from . import tuning
        self.tuning = tuning.apply(module, p, meta["dtype"], meta.get("products"), tune)
        if self.tuning:     # the register tile compiled in (tune="full" may choose one)
            self.tuning["tile"] = "x".join(map(str, meta["tile"])) if meta.get("tile") \
                else "default"
        self.from_buffer = ffi.from_buffer      # for a caller's own fast path
        self.null = ffi.NULL
        self.carray = "float[]" if self.dtype == np.float32 else "double[]"
        self._ctype = _POINTERS[self.dtype.name]
        self.n_params, self.n_in, self.n_out = meta["n_params"], meta["n_in"], meta["n_out"]
        self.work_per_row = meta["work_per_row"]

    def buffer(self, arr: np.ndarray):
        """A buffer of this dtype for the C (keeps ``arr`` alive); ~0.2 µs."""
        try:
            return self.from_buffer(self.carray, arr)
        except (BufferError, TypeError, ValueError):
            return self._ffi.cast(self._ctype, arr.ctypes.data)

    def pointer(self, arr: np.ndarray):
        """A pointer to any contiguous int64/intc/float array; the caller keeps
        ``arr`` alive while the C runs."""
        return self._ffi.cast(_POINTERS[arr.dtype.name], arr.ctypes.data)

    def work_size(self, batch: int) -> int:
        """Numbers of scratch for a call on ``batch`` examples (WORK_SIZE)."""
        return batch * self.work_per_row + self.n_params

    def train_work_size(self, batch_size: int) -> int:
        """Numbers of scratch for ``train`` (TRAIN_WORK_SIZE)."""
        return self.work_size(batch_size) + batch_size * (self.n_in + self.n_out)


def load(net, dtype: str, tune: str = "fast") -> Runtime:
    """The runtime of a network, from the cache or freshly rendered and built;
    ``tune``: how much the planner may time (``tuning.TUNE``)."""
    from . import tuning
    tuning.check_tune(tune)
    key = network_key(net.describe(), dtype)
    if tune == "full":      # its own module: the planner may choose its register tile
        key = hashlib.sha256(f"{key} tune=full".encode()).hexdigest()[:24]
    hit = build.lookup(key)
    if hit is not None:
        guards.check_sizes(hit[1])
        return Runtime(*hit, tune)
    from .emit import cdef, emit
    from ...plan.lower import plan as make_plan
    plan = make_plan(net.graph())
    source, prefix, header = emit(plan, dtype, hooks=True)
    products = tuning.products_of(plan)
    tile = tuning.choose_tile(products) if tune == "full" else None
    if tile is not None:    # the register tile timed fastest here (templates/gemm.c.j2)
        source = f"#define SN_MR {tile[0]}\n#define SN_NR {tile[1]}\n" + source
    out = plan.buffers[plan.output]
    meta = {
        "prefix": prefix, "dtype": dtype, "n_params": plan.n_params,
        "work_per_row": plan.work_per_row, "n_in": plan.graph.n_in,
        "n_out": plan.graph.n_out, "input": plan.graph.input_name,
        "in_shape": list(plan.graph.in_shape), "out_shape": list(plan.graph.output.out_shape),
        "output_offset": out.offset, "labels": bool(plan.loss_labels),
        "n_trainable": plan.n_trainable,
        "inputs": [[name, width] for name, width in plan.graph.inputs],
        "outputs": [[o, plan.buffers[o].offset, plan.graph.node(o).n_out]
                    for o in plan.graph.outputs],
        "params": [{"name": p.name, "shape": list(p.shape), "init": p.init,
                    "offset": plan.buffers[p.name].offset, "trainable": p.trainable}
                   for p in plan.graph.params()],
        "description": net.describe(),
        # where the batch sums of BatchNorm lie in work (per row; the model reads them)
        "work_offsets": {b.name: b.offset for b in plan.buffers.values() if b.kind == "work"
                         and any(n.kind == "batchnorm" and b.name == f"z_{n.name}"
                                 for n in plan.graph.nodes)},
        "products": products,     # what the planner times
        "tile": list(tile) if tile else None,
    }
    guards.check_sizes(meta)
    return Runtime(*build.build(key, source, cdef(header), meta), tune)
