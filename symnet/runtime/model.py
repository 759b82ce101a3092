"""A compiled network: parameters and the calls into the kernels.

This is the model's core, what training and prediction drive: the backend's
runtime (``symnet.backend``: calls in NumPy arrays), the parameters, forward /
loss / gradients / step.  Other modules use its public fields: ``runtime``,
``theta`` and ``grad`` (the flat θ and ∂L/∂θ the parameters are views of),
``meta``, ``lock``, ``rows_per_call``, ``loss_grad_rows``, the checks of its
arrays (``as_inputs``, ``as_targets``, ``as_matrix``: ``symnet.runtime.validate``)
and of its layers with a training mode (``symnet.runtime.modes``); the parameters'
mapping and initialisation are ``symnet.runtime.params``.  The ``Model``
that ``net.compile()`` returns (``symnet.api.model``) adds the calls that
hand the model to later stages: ``fit``, ``predict``, ``evaluate``, ``save``,
``export_c``, ``summary``.

>>> import numpy as np, symnet as sn
>>> net = sn.Network(sn.Input(2), sn.Dense(4, "tanh"), sn.Dense(1), loss="mse")
>>> model = net.compile(dtype="float64", seed=0)
>>> model.forward(np.zeros((3, 2))).shape
(3, 1)
"""

from __future__ import annotations

import json
import math
import threading
import warnings

import numpy as np

from .. import guards
from ..backend import load as load_backend
from ..backend.c.runtime import network_key  # noqa: F401  (the cache key, for tools and tests)
from ..guards import CHUNK  # noqa: F401  (most examples per kernel call)
from .modes import TrainingModes
from .params import Params, check_init, initialise, rebuild
from .validate import ArrayChecks

_INF = float("inf")


def compile_network(net, dtype: str, tune: str = "fast", backend: str = "c"):
    """The backend's runtime for a network (see ``symnet.backend.load``)."""
    return load_backend(backend)(net, dtype, tune)



class Model(ArrayChecks, TrainingModes):
    """A network compiled to C for one dtype, with its parameters (the core;
    ``symnet.api.model.Model`` is the one users hold).

    Safe to share between threads: every kernel call holds the model's lock
    (the kernels share the model's work and gradient buffers), so calls from
    several threads run one after another.  Use one model per thread to run
    them in parallel.
    """

    def __init__(self, network, dtype="float32", seed: int = 0, init=None, tune="fast",
                 backend="c"):
        if dtype not in ("float32", "float64") and np.dtype(dtype).name in ("float32",
                                                                              "float64"):
            dtype = np.dtype(dtype).name
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.network = network
        self.dtype = np.dtype(dtype)
        # Everything compiled comes from the backend's runtime: calls in arrays, the
        # flat parameters and gradients its own.
        rt = self.runtime = compile_network(network, dtype, tune, backend)
        self.backend = rt.backend
        self.meta = meta = rt.meta
        self.tuning = rt.tuning   # where its products run on this machine (C)
        self._rt_step = rt.step   # bound once: the fast path of step
        self.n_in, self.n_out = meta["n_in"], meta["n_out"]
        self.in_shape = tuple(meta.get("in_shape", (self.n_in,)))
        self.out_shape = tuple(meta.get("out_shape", (self.n_out,)))
        self.input_name = meta["input"]
        self.theta, self.grad = rt.params, rt.grads
        self.rows_per_call = guards.rows_per_call(meta, self.dtype.itemsize)
        self.fit_spare = None     # two θ-sized buffers fit keeps between calls
        self.evaluating = False   # loss in evaluation mode (Dropout off, BatchNorm running)
        # the runtime's calls share its work and gradient buffers (and the C
        # backend releases the GIL inside them): one call at a time.
        self.lock = threading.Lock()
        self._acquire, self._release = self.lock.acquire, self.lock.release
        self._views = {}
        self._gviews = {}
        for p in meta["params"]:
            size = int(np.prod(p["shape"]))
            sl = slice(p["offset"], p["offset"] + size)
            self._views[p["name"]] = self.theta[sl].reshape(p["shape"])
            self._gviews[p["name"]] = self.grad[sl].reshape(p["shape"])
        self.params = Params(self._views, self.lock)
        self._optimizer = None     # the optimizer's state (symnet.runtime.optimizer), once used
        self._find_modes()         # Dropout, BatchNorm: a training mode (symnet.runtime.modes)
        self._embeddings = self._embedding_inputs()
        self._bounded = self._bounded_targets()   # bce outputs: targets in [0, 1]
        # step's fast path takes X and T as given: not where they need their values checked,
        # but for every column of T in [0, 1] (one min and one max: ~1 µs of the checks'
        # ~4 µs more on a 2-8-8-1 network's 2 µs step)
        self._plain_step = not (self._embeddings or self._bounded)
        self._unit_step = not self._embeddings and bool(self._bounded) and \
            sum(width for _, width, _ in self._bounded) == self.n_out
        self._init = check_init(init)
        self.init_params(seed)

    # ---------------------------------------------------------------- basics
    @property
    def c_source(self) -> str:
        """The generated kernel C (plain C99, no Python); with the numpy backend,
        the C the C backend would compile."""
        return self.runtime.c_source

    @property
    def so_path(self) -> str:
        if "so_path" not in self.meta:
            raise AttributeError(f"a model of the {self.backend} backend has no shared "
                                 "library; compile(backend='c') builds one")
        return self.meta["so_path"]

    def init_params(self, seed: int = 0):
        """Seeded initialisation suited to each activation: Glorot-uniform for
        tanh/sigmoid/linear-like layers, He-normal for ReLU-like, zero biases.
        The optimizer's state starts afresh too (``reset_optimizer``)."""
        rng = np.random.default_rng(guards.seed(seed, "the initialisation"))
        with self.lock:
            initialise(self._views, self.meta["params"], self._init, rng)
            self._optimizer = None
            self.dropout_seed(seed)

    @property
    def optimizer(self):
        """The optimizer's state that ``step(..., optimizer=...)`` and ``fit`` continue
        (a ``symnet.runtime.optimizer.Optimizer``: ``name``, step count ``t``, moments ``s1``,
        ``s2``), or None before any."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, opt):
        self._optimizer = opt

    def reset_optimizer(self):
        """Forget the optimizer's state (momentum, Adam's moments and step count): the
        next ``step(..., optimizer=...)`` or ``fit`` starts afresh."""
        with self.lock:
            self._optimizer = None

    def params_of(self, layer: str) -> Params:
        """The parameters of the layer named ``layer``, by their short names (W, b,
        U, ...): views into the model's parameters, assignable like ``params``.

        >>> import symnet as sn
        >>> net = sn.Network(sn.Input((1, 6, 6)), sn.Conv2d(2, 3, name="conv1"),
        ...                  sn.MaxPool2d(2), sn.Flatten(), sn.Dense(1, name="out"),
        ...                  loss="mse")
        >>> model = net.compile(dtype="float64")
        >>> model.params_of("out")
        Params(W: (1, 8), b: (1,))
        >>> model.params_of("out")["W"] is not None and "W4" in model.params
        True
        """
        layers = self.network.layer_params()
        if layer not in layers:
            named = [n for n, p in layers.items() if p]
            raise ValueError(f"the network has no layer {layer!r}; its layers with "
                             f"parameters: {', '.join(named) or 'none'}")
        return Params({short: self._views[name] for short, name in layers[layer].items()},
                      self.lock)

    # ---------------------------------------------------------------- kernels
    def forward(self, X):
        """The network's output for X of shape (batch, inputs) → (batch, outputs).

        With several inputs X is a list (declaration order) or a dict keyed by
        input name; with several outputs the result is a list of arrays."""
        X = self.as_inputs(X)
        n, rt, rows = X.shape[0], self.runtime, self.rows_per_call
        if self._stateful:
            self.set_training(False)
        both = np.empty((n, self.n_out), self.dtype)    # the outputs side by side
        with self.lock:
            for s in range(0, n, rows):
                rt.forward(X[s:s + rows], both[s:s + rows])
        outs = self.meta.get("outputs") or [["O", self.meta["output_offset"], self.n_out]]
        shapes = [self.network._shapes[id(o)] for o in self.network.outputs]
        if len(outs) == 1:
            return both.reshape((n, *shapes[0])) if len(shapes[0]) > 1 else both
        res, col = [], 0
        for (_, _, w), sh in zip(outs, shapes):
            part = np.ascontiguousarray(both[:, col:col + w])
            res.append(part.reshape((n, *sh)) if len(sh) > 1 else part)
            col += w
        return res

    __call__ = forward

    def loss(self, X, T) -> float:
        """Mean over the batch of the per-example loss.  NaN or inf in X or T is
        refused (ValueError naming the first such row)."""
        X, T = self._finite_data(X, T, "no loss is computed from it")
        n, total, rows = X.shape[0], 0.0, self.rows_per_call
        if self._stateful:
            training = not self.evaluating
            self.set_training(training)
            if training:
                self.check_batch(min(n, rows))
                self._check_whole(n)
        rt = self.runtime
        with self.lock:
            for s in range(0, n, rows):
                b = min(rows, n - s)
                total += b * rt.loss(X[s:s + b], T[s:s + b])
        return total / n

    def loss_and_grad(self, X, T):
        """(loss, grads) with grads a dict of new arrays shaped like params.  NaN or
        inf in X or T is refused, as by ``loss``."""
        X, T = self._finite_data(X, T, "no loss is computed from it")
        with self.lock:
            loss = self.loss_grad_rows(X, T)
            return loss, {k: v.copy() for k, v in self._gviews.items()}

    def loss_grad_rows(self, X, T) -> float:
        """The loss of checked rows (``as_inputs``, ``as_targets``), their mean
        gradients into ``grad``, in calls of at most ``rows_per_call`` examples; the
        caller holds ``lock``."""
        n, rows, rt = X.shape[0], self.rows_per_call, self.runtime
        if self._stateful:
            self.set_training(True)
            self.check_batch(min(n, rows))
            self._check_whole(n)
        if n <= rows:
            return rt.loss_grad(X, T)
        total, acc = 0.0, np.zeros_like(self.grad, dtype=np.float64)
        for s in range(0, n, rows):
            b = min(rows, n - s)
            total += b * rt.loss_grad(X[s:s + b], T[s:s + b])
            acc += (b / n) * self.grad
        self.grad[...] = acc
        return total / n

    def step(self, X, T, lr: float = 0.1, optimizer=None, momentum=None, betas=None,
             eps=None, weight_decay=None, clip_norm=None) -> float:
        """One steepest-descent update on this batch, in place, in one compiled
        call: θ ← θ − lr·∂L/∂θ.  Returns the loss before the update.

        With ``optimizer`` (``"sgd"``, ``"momentum"``, ``"adam"``; ``momentum``,
        ``betas``, ``eps``, ``weight_decay``, ``clip_norm`` as for ``fit``) the update
        is that optimizer's, with its state kept in the model from call to call
        (``model.optimizer``; saved with the model; ``model.reset_optimizer()``
        starts afresh): a loop of such steps is what ``fit`` does.

        When the loss or a gradient is NaN or inf the step is not taken and the
        parameters stay as they were: NaN or inf in X or T raises ValueError (as
        ``fit`` does); an overflow from finite data warns and returns NaN."""
        # Fast path (most calls): arrays of our dtype and shape, checked with
        # attribute reads only; the runtime refuses a non-contiguous array
        # (BufferError, ValueError), which then takes the full path below.
        # Also: a finite float lr, aligned arrays (the C may use aligned vector
        # loads), and the model's lock around the call (the runtime's work is shared).
        if optimizer is not None or momentum is not None or betas is not None \
                or eps is not None or weight_decay is not None or clip_norm is not None:
            return self._step_optimizer(X, T, lr, optimizer or "sgd", momentum, betas, eps,
                                        weight_decay, clip_norm)
        if self._stateful:
            return self._stateful_step(X, T, lr)
        if type(X) is np.ndarray and type(T) is np.ndarray and X.dtype is self.dtype \
                and T.dtype is self.dtype and type(lr) is float and 0 < lr < _INF \
                and (self._plain_step or self._unit_step and T.size
                     and 0 <= T.min() and T.max() <= 1):
            xs, ts = X.shape, T.shape
            if len(xs) == 2 and len(ts) == 2 and xs[1] == self.n_in and ts[1] == self.n_out \
                    and xs[0] == ts[0] and 0 < xs[0] <= self.rows_per_call \
                    and X.flags.aligned and T.flags.aligned:
                loss = None
                self._acquire()
                try:
                    loss = self._rt_step(X, T, lr)
                except (BufferError, ValueError):  # not C-contiguous: the full path
                    pass
                finally:
                    self._release()
                if loss is not None:
                    if loss == loss:  # not NaN: the step was taken (the C refuses with NaN)
                        return loss
                    return self._not_taken(X, T)
        X = self.as_inputs(X)
        T = self.as_targets(T, X.shape[0])
        lr = self._lr(lr)
        self._acquire()  # bound methods: ~60 ns less per step than `with self.lock`
        try:
            if X.shape[0] > self.rows_per_call:
                loss = self.loss_grad_rows(X, T)
                if math.isfinite(loss) and np.isfinite(self.grad).all():
                    self.theta -= self.dtype.type(lr) * self.grad
                else:
                    loss = math.nan
            else:
                loss = self.runtime.step(X, T, lr)
        finally:
            self._release()
        return loss if math.isfinite(loss) else self._not_taken(X, T)

    @staticmethod
    def _lr(lr) -> float:
        try:
            lr = float(lr)
        except (TypeError, ValueError):
            raise ValueError(f"lr must be a number, got {lr!r}") from None
        if not 0 < lr < _INF:  # one NaN step would make every parameter NaN
            raise ValueError(f"lr must be a positive finite number, got {lr!r}"
                             + (" (a step size ≤ 0 does not descend)"
                                if lr <= 0 else ""))
        return lr

    def _step_optimizer(self, X, T, lr, name, momentum, betas, eps, weight_decay,
                        clip_norm) -> float:
        """``step`` with an optimizer: gradients, then the optimizer's compiled update
        with the model's optimizer state (``symnet.runtime.optimizer``)."""
        from .optimizer import for_model
        X = self.as_inputs(X)
        T = self.as_targets(T, X.shape[0])
        lr = self._lr(lr)
        opt = for_model(self, name, momentum, betas, eps,
                        0.0 if weight_decay is None else weight_decay, clip_norm)
        self._acquire()
        try:
            loss = self.loss_grad_rows(X, T)
            if math.isfinite(loss) and np.isfinite(self.grad).all():
                opt.apply_locked(self, lr)
            else:
                loss = math.nan
        finally:
            self._release()
        if not math.isfinite(loss):
            return self._not_taken(X, T)
        if self._stateful:     # Dropout: the next step's masks; BatchNorm: running statistics
            self.after_steps(self.runtime.work, min(X.shape[0], self.rows_per_call), 1)
        return loss

    def _not_taken(self, X, T) -> float:
        """After a step the C refused (a NaN or inf loss or gradient; the parameters
        are unchanged): ValueError when the data holds NaN or inf, else a warning and
        NaN (the network overflowed: too large a step size or inputs)."""
        after = "the step was not taken (the parameters are unchanged)"
        rows = isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == self.n_in
        X = X if rows else self.as_inputs(X)     # rows already checked, or as given
        guards.finite(X, "X", after)
        rows = isinstance(T, np.ndarray) and T.ndim == 2 and T.shape[1] == self.n_out
        guards.finite(T if rows else self.as_targets(T, X.shape[0]), "T", after)
        warnings.warn("the step was not taken: the loss or a gradient is NaN or inf for "
                      "this batch (an overflow: try a smaller learning rate or scale the "
                      "inputs); the parameters are unchanged", RuntimeWarning, stacklevel=3)
        return math.nan

    def _stateful_step(self, X, T, lr) -> float:
        """``step`` of a network with Dropout or BatchNorm: training mode, the step, then
        the next step's masks and the running statistics of this one."""
        n = self.as_inputs(X).shape[0]      # checked here, taken as given by step
        self.check_batch(n)
        self._check_whole(n)
        self.set_training(True)
        self._stateful = False
        try:
            loss = self.step(X, T, lr)
        finally:
            self._stateful = True
        self.after_steps(self.runtime.work, min(n, self.rows_per_call), 1)
        return loss

    def __reduce__(self):
        """Pickling and ``copy.deepcopy``: the network description (the same safe text
        ``save`` writes) and the parameters; the compiled module is loaded from the
        cache (or rebuilt) on the other side."""
        desc = json.dumps(self.network.describe(), sort_keys=True)
        opt = None if self._optimizer is None else self._optimizer.arrays()
        return rebuild, (type(self), type(self.network), desc, self.dtype.name,
                          {k: np.array(v) for k, v in self.params.items()}, self._init, opt,
                          self.backend)

    def __repr__(self):
        extra = "" if self.backend == "c" else f" backend={self.backend}"
        return f"<symnet.Model {self.network!r} dtype={self.dtype.name}{extra}>"
