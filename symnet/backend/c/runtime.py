"""The in-process C backend: kernel plan → C99 → cffi module → ``Runtime``.

The header rendered for the plan (``templates/network.h.j2``) is both the
cffi cdef here and the ``<name>.h`` of an export (``symnet.backend.c.export``), so the
functions symnet calls are exactly the ones a C program would.  ``render`` is
the one route from a network to its C text: this backend, ``export_c`` and the
command line all take it.

The runtime's calls take and return NumPy arrays (see ``symnet.backend``); the
pointers cffi makes of them never leave this module.

>>> import numpy as np, symnet as sn
>>> from symnet.backend.c import runtime as c
>>> net = sn.Network(sn.Input(2), sn.Dense(3, "tanh"), sn.Dense(1), loss="mse")
>>> rt = c.load(net, "float64")
>>> rt.forward(np.ones((4, 2))).ravel().tolist()     # θ = 0
[0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import time
from types import SimpleNamespace

import numpy as np

from ... import guards
from ..common import plan_meta, train_work_size, work_size
from . import build

_POINTERS = {"float32": "float *", "float64": "double *", "int64": "long long *",
             "intc": "int *", "int32": "int *"}
#: the same by dtype, for ``pointer`` (``dtype.name`` costs ~4 µs, a dict look-up 0.05)
_ARRAYS = {np.dtype(name): ptr.replace(" *", "[]") for name, ptr in _POINTERS.items()}


#: bytes of a huge page (x86-64, and the usual size on aarch64)
HUGE_PAGE = 2 << 20


def scratch(n: int, dtype) -> np.ndarray:
    """``n`` zeros of ``dtype`` for the C's work: at least one huge page of them
    (HUGE_PAGE) starts at a huge page, asked for as transparent huge pages
    (``madvise(MADV_HUGEPAGE)``; Linux; elsewhere, or where refused, the same array on
    ordinary pages).  The products read the activations and the packed weights there
    along rows a kilobyte or more apart: on 4 KiB pages each tile's pass over its rows
    misses the TLB.  numpy asks for huge pages too (from 4 MiB) but from wherever malloc
    put the array, so the pages at its ends stay small.  The bench's transformer step on
    a 2-core Xeon: held to AVX2, 3.64–3.68 against 3.71–3.74 ms (six alternating triples
    of processes); natively 2.20–2.29 against 2.39–2.45 ms, the GRU's 1.89–1.95 against
    2.12–2.28 (docs/performance.md)."""
    dtype = np.dtype(dtype)
    nbytes = int(n) * dtype.itemsize
    advise = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_PAGE or advise is None:
        return np.zeros(n, dtype)
    try:
        m = mmap.mmap(-1, nbytes + HUGE_PAGE,     # anonymous, private: zeros
                      flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m.madvise(advise)
    except (OSError, ValueError):
        return np.zeros(n, dtype)
    raw = np.frombuffer(m, np.uint8)              # keeps the mapping alive
    start = -raw.ctypes.data % HUGE_PAGE
    return raw[start:start + nbytes].view(dtype)


def network_key(description: dict, dtype: str) -> str:
    """Cache key of a network: its description, dtype, compiler and flags."""
    text = json.dumps([description, dtype, build.code_fingerprint(), build.compiler(),
                       build.flags(), build._cpu()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def render(plan, dtype: str, **options) -> tuple[str, str, str]:
    """(C source, header, symbol prefix) of a plan: the one route from a plan to C,
    taken by this backend, ``export_c`` and the command line.  Without ``prefix``
    the in-process naming ``symnet_<hash of the text>_`` (``symnet.backend.c.emit.emit``);
    otherwise ``symnet.backend.c.emit.Emitter.render`` with these options (``prefix``,
    ``training``, ``threads``, ``trained``, ...)."""
    from .emit import Emitter, emit
    if "prefix" not in options:
        source, prefix, header = emit(plan, dtype, **options)
        return source, header, prefix
    source, header = Emitter(plan, dtype).render(**options)
    return source, header, options["prefix"]


class Runtime:
    """One network compiled to C for one dtype, with its own parameters.

    ``params`` and ``grads`` are the flat θ and ∂L/∂θ (``meta["params"]`` gives
    each parameter's offset and shape).  ``X`` and ``T`` are C-contiguous,
    aligned (batch, width) arrays of ``dtype``, at most ``guards.rows_per_call``
    rows; T of width 1 for a network of several outputs and a loss that takes
    class labels holds labels.  Not safe for two threads at once (the calls
    share the work buffer): ``Model`` holds its lock around every call.

    ``kernels`` holds the C functions themselves (signatures as in the header,
    ``meta["header"]``), for tools and tests that call the C directly with
    ``buffer``/``pointer``.
    """

    backend = "c"

    def __init__(self, module, meta: dict, tune: str = "fast"):
        self.meta = meta
        self.dtype = np.dtype(meta["dtype"])
        lib, ffi = module.lib, module.ffi
        self._ffi = ffi
        p = meta.get("lib_prefix") or meta["prefix"]   # the wrapper's names (build.py)
        k = self.kernels = SimpleNamespace(**{name: getattr(lib, p + name) for name in (
            "forward", "loss", "loss_grad", "step", "update", "train")})
        # the same four for targets given as class labels (softmax cross-entropy)
        k.labels = tuple(getattr(lib, f"{p}{n}_labels")
                         for n in ("loss", "loss_grad", "step", "train")) \
            if meta.get("labels") else None
        self._rows_fns = (k.loss, k.loss_grad, k.step, k.train)
        self._c_step = k.step                     # bound once: step is the hot call
        self._c_step_labels = k.labels[2] if k.labels else None
        # where the products run on this machine (BLAS above a measured size,
        # threads from a measured cost); once per module, before any call
        from . import tuning
        self.tuning = tuning.apply(module, p, meta["dtype"], meta.get("products"), tune,
                                   meta.get("chunked"))
        if self.tuning:     # the register tile compiled in (tune="full" may choose one)
            self.tuning["tile"] = "x".join(map(str, meta["tile"])) if meta.get("tile") \
                else "default"
        self._tune = getattr(lib, p + "tune", None)
        self._rechoose = getattr(lib, p + "rechoose", lambda: None)
        # the BLAS checked on this module's own pass at its first training call in this
        # process (check_blas), once for the models that share the module
        self._key = meta["prefix"]        # the network's own (p: the shared wrapper's)
        self._blas_pending = bool(self.tuning) and tuning.check_wanted(self.tuning) \
            and not meta.get("batch_sums") and self._tune is not None
        if self._blas_pending and self._key in tuning.VERDICTS:
            self._blas_pending = False
            if tuning.VERDICTS[self._key]:        # checked: symnet's tiles (apply gave the BLAS)
                self._own_tiles()
                self.tuning["blas_check"] = {"slow": True, "by": "another model of this network"}
        self._buf = ffi.from_buffer
        self._carray = "float[]" if self.dtype == np.float32 else "double[]"
        self._ctype = _POINTERS[self.dtype.name]
        self.n_params, self.n_in, self.n_out = meta["n_params"], meta["n_in"], meta["n_out"]
        self.params = np.zeros(self.n_params, self.dtype)
        self.grads = np.zeros(self.n_params, self.dtype)
        self._p_params, self._p_grads = self.buffer(self.params), self.buffer(self.grads)
        self.work_rows = 0
        self._work = np.zeros(0, self.dtype)
        self._p_work = self.buffer(self._work)
        self._train_work = np.zeros(0, self.dtype)
        self._reduce_hook = getattr(lib, p + "reduce_hook", None)
        self._reduce_cb = None
        self.reduce_error = None

    def reduce_hook(self, fn, count: float = 0.0):
        """Sums over the batch (``meta["batch_sums"]``) go through ``fn(values, kind)``
        from now on: ``values`` a NumPy view of the C's sum (this dtype), which ``fn``
        replaces in place by the sum over all processes; ``count`` the examples of the step
        over all processes (1/count is BatchNorm's inv_stat).  ``fn`` None: this call's
        batch alone again.  An exception in ``fn`` is kept in ``reduce_error`` (the C goes
        on with the values as they are); the caller raises it after the call.  The module
        is shared by the models of one network in a process: set around one call, under
        the model's lock."""
        if self._reduce_hook is None:
            raise ValueError("this network has no sums over the batch to synchronise")
        ffi = self._ffi
        if fn is None:              # (reduce_error stays for the caller to raise)
            self._reduce_hook(ffi.NULL, 0.0)
            return
        self.reduce_error = None
        if self._reduce_cb is not None and self._reduce_cb[0] == fn:   # fit's every step
            self._reduce_hook(self._reduce_cb[1], float(count))
            return
        dtype, real = self.dtype, "float" if self.dtype == np.float32 else "double"

        def call(ptr, n, kind):
            fn(np.frombuffer(ffi.buffer(ptr, n * dtype.itemsize), dtype), kind)

        def onerror(exc_type, exc, tb):
            if self.reduce_error is None:
                self.reduce_error = exc if exc is not None else exc_type()

        cb = ffi.callback(f"void({real} *, int, int)", call, onerror=onerror)
        self._reduce_cb = (fn, cb)          # kept alive while the C may call it
        self._reduce_hook(cb, float(count))

    @property
    def c_source(self) -> str:
        """The C compiled into this runtime."""
        return self.meta["c_source"]

    @property
    def work(self) -> np.ndarray:
        """The scratch of the last call (per-row buffers at batch·offset, as the header
        lays them out): BatchNorm's batch sums are read from it."""
        return self._work

    @property
    def train_work(self) -> np.ndarray:
        """The scratch of the last ``train_epoch`` call (its rows first, as ``work``)."""
        return self._train_work

    # ------------------------------------------------------------ pointers
    def buffer(self, arr: np.ndarray):
        """A buffer of this dtype for the C (keeps ``arr`` alive); ~0.2 µs."""
        try:
            return self._buf(self._carray, arr)
        except (BufferError, TypeError, ValueError):
            return self._ffi.cast(self._ctype, arr.ctypes.data)

    def pointer(self, arr: np.ndarray):
        """A pointer to any contiguous int64/intc/float array; the caller keeps
        ``arr`` alive while the C runs.  (~0.7 µs; through ``arr.ctypes`` it took ~3.)"""
        try:
            return self._buf(_ARRAYS[arr.dtype], arr)
        except (BufferError, TypeError, ValueError):   # read-only: by its address
            return self._ffi.cast(_POINTERS[arr.dtype.name], arr.__array_interface__["data"][0])

    def work_size(self, batch: int) -> int:
        """Numbers of scratch for a call on ``batch`` examples (WORK_SIZE)."""
        return work_size(self.meta, batch)

    def train_work_size(self, batch_size: int) -> int:
        """Numbers of scratch for ``train`` (TRAIN_WORK_SIZE)."""
        return train_work_size(self.meta, batch_size)

    def reserve(self, rows: int):
        """Scratch for calls on up to ``rows`` examples (the gradients of ``step``
        included)."""
        if rows > self.work_rows:
            self._work = scratch(self.work_size(rows), self.dtype)
            self._p_work = self.buffer(self._work)
            self.work_rows = rows

    def _fns(self, T):
        """(loss, loss_grad, step, train) for targets T: rows or class labels."""
        return self._rows_fns if T.shape[1] == self.n_out else self.kernels.labels

    # --------------------------------------------------------------- calls
    def forward(self, X, out=None) -> np.ndarray:
        """The outputs (batch, n_out), side by side for several, into ``out``."""
        n = X.shape[0]
        if out is None:
            out = np.empty((n, self.n_out), self.dtype)
        self.reserve(n)
        self.kernels.forward(self._p_params, self.buffer(X), n, self.buffer(out),
                             self._p_work)
        return out

    def loss(self, X, T) -> float:
        """The batch's mean loss."""
        n = X.shape[0]
        self.reserve(n)
        return self._fns(T)[0](self._p_params, self.buffer(X), self.buffer(T), n,
                               self._p_work)

    def _own_tiles(self):
        """Every product of this module on symnet's tiles (for the process's life)."""
        from . import tuning
        s = tuning.settings()
        self._tune(self._ffi.NULL, math.inf, s["thread_min"], s["threads_max"])
        self.tuning["plan"] = {k: "symnet" for k in self.tuning.get("plan", {})}
        self.tuning["blas"] = None

    def check_blas(self, X, T):
        """Whether the products this module's plan runs on the BLAS run slower in this
        process than on symnet's tiles (symnet.backend.c.tuning, "the BLAS checked in
        each process"): the loss-and-gradient pass on the first rows of this batch, after
        passes that settle its threads, timed in turns with the plan's BLAS and without
        it.  When the plan's pass takes more than CHECK_SLOWER times as long, every
        product of this module runs on symnet's tiles from now on in this process.  Run
        once, at the module's first training call; ``grads`` is kept as it was.  The
        verdict is in ``tuning["blas_check"]``."""
        from . import tuning
        self._blas_pending = False
        if self._key in tuning.VERDICTS:    # another model of this network checks or did
            return bool(tuning.VERDICTS[self._key])
        tuning.VERDICTS[self._key] = None
        m = min(X.shape[0], tuning.CHECK_ROWS)
        Xc, Tc = np.ascontiguousarray(X[:m]), np.ascontiguousarray(T[:m])
        self.reserve(m)
        fn, s, ffi = self._fns(T)[1], tuning.settings(), self._ffi
        ptr = tuning.blas_pointer(ffi, self.dtype.name)
        args = (self._p_params, self.buffer(Xc), self.buffer(Tc), m, self._p_grads, self._p_work)
        kept = self.grads.copy()

        def use(blas: bool):
            self._tune(ptr if blas else ffi.NULL, s["blas_min"] if blas else math.inf,
                       s["thread_min"], s["threads_max"])

        def timed(blas: bool) -> float:
            use(blas)
            t0 = time.perf_counter()
            fn(*args)
            return time.perf_counter() - t0

        try:
            for _ in range(tuning.CHECK_WARM):      # the module's choice of threads settles
                fn(*args)
            grown = []
            with tuning.Watch() as w:
                for r in range(tuning.CHECK_PAIRS):     # in turns: each first in half
                    if r % 2 == 0:
                        blas = timed(True)
                        own = timed(False)
                    else:
                        own = timed(False)
                        blas = timed(True)
                    grown.append(blas / own)
            grown.sort()
        except BaseException:
            tuning.VERDICTS[self._key] = False      # the plan stands
            raise
        finally:
            self.grads[...] = kept
            use(True)
            self._rechoose()       # its passes told the choice of threads nothing true
        median = grown[len(grown) // 2]
        slow = not w.disturbed and tuning.check_verdict(median)
        tuning.VERDICTS[self._key] = slow
        if slow:
            self._own_tiles()
        self.tuning["blas_check"] = {"grown": round(median, 3), "slow": slow,
                                     **({"skipped": "under load"} if w.disturbed else {})}
        return slow

    def loss_grad(self, X, T) -> float:
        """The batch's mean loss; its gradients into ``grads``."""
        n = X.shape[0]
        if self._blas_pending:
            self.check_blas(X, T)
        self.reserve(n)
        return self._fns(T)[1](self._p_params, self.buffer(X), self.buffer(T), n,
                               self._p_grads, self._p_work)

    def step(self, X, T, lr: float) -> float:
        """θ ← θ − lr·∂L/∂θ on this batch; the loss before.  Raises BufferError or
        ValueError, having done nothing, for an array that is not C-contiguous."""
        n = X.shape[0]
        if self._blas_pending:
            self.check_blas(X, T)
        if n > self.work_rows:
            self.reserve(n)
        buf, carray = self._buf, self._carray
        return (self._c_step if T.shape[1] == self.n_out else self._c_step_labels)(
            self._p_params, buf(carray, X), buf(carray, T), n, lr, self._p_work)

    def update(self, lr: float, optimizer: int, s1, s2, hyper, t: int):
        """θ updated from ``grads`` by the optimizer (see ``symnet.runtime.train.Optimizer``;
        its state s1, s2 and float64 hyper-parameters)."""
        self.kernels.update(self._p_params, self._p_grads, float(lr), optimizer,
                            self.buffer(s1), self.buffer(s2), self.pointer(hyper), t)

    def train_epoch(self, X, T, idx, batch_size: int, lrs, losses, optimizer: int, s1, s2,
                    hyper, t0: int, prev, have_prev, correct=None) -> int:
        """Steps on the batches idx[s·batch_size ...] of (X, T) with step sizes lrs[s]:
        losses[s] the loss before step s, correct[s] the examples classified right
        (unless None); prev ← θ before the last update, have_prev[0] = 1 once there
        is one.  A non-finite loss stops before its update, θ restored from prev:
        returns the steps done."""
        if self._blas_pending:
            rows = idx[:batch_size]
            self.check_blas(X[rows], T[rows])
        need = self.train_work_size(batch_size)
        if self._train_work.size < need:
            self._train_work = scratch(need, self.dtype)
        ptr = self.pointer
        return self._fns(T)[3](
            self._p_params, self.buffer(X), self.buffer(T), ptr(idx), idx.size, batch_size,
            ptr(lrs), ptr(losses), optimizer, self.buffer(s1), self.buffer(s2), ptr(hyper),
            t0, self.buffer(prev), ptr(have_prev),
            ptr(correct) if correct is not None else self._ffi.NULL,
            self.buffer(self._train_work))


def load(net, dtype: str, tune: str = "fast") -> Runtime:
    """The runtime of a network, from the cache or freshly rendered and built; the
    cache key is the network's description, so a hit neither derives nor plans.
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
    from ...plan.lower import plan as make_plan
    from .emit import cdef, kernels_source, universal_cdef
    plan = make_plan(net.graph())
    source, header, prefix = render(plan, dtype, hooks=True)
    products = tuning.products_of(plan)
    tile = tuning.choose_tile(products) if tune == "full" else None
    kernels = kernels_source(dtype)     # the matrix driver, compiled once per machine
    if tile is not None:    # the register tile timed fastest here (templates/gemm.c.j2)
        kernels = f"#define SN_MR {tile[0]}\n#define SN_NR {tile[1]}\n" + kernels
    meta = dict(plan_meta(plan, net.describe(), dtype), prefix=prefix,
                products=products,           # what the planner times
                chunked=tuning.chunk_products(plan),     # ... as they run
                tile=list(tile) if tile else None)
    guards.check_sizes(meta)
    return Runtime(*build.build(key, source, cdef(header), meta, kernels=kernels,
                                shared=universal_cdef(dtype), meanwhile=tuning.preload), tune)
