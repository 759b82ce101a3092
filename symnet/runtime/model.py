"""A compiled network: parameters, validation, and calls into the kernels.

This is the model's core, what training and prediction drive: the backend's
runtime (``symnet.backend``: calls in NumPy arrays), the parameters, forward /
loss / gradients / step.  Other modules use its public fields: ``runtime``,
``theta`` and ``grad`` (the flat θ and ∂L/∂θ the parameters are views of),
``meta``, ``lock``, ``rows_per_call``, ``loss_grad_rows`` and the checks
``as_inputs``, ``as_targets``, ``as_matrix``.  The ``Model``
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
from collections.abc import MutableMapping

import numpy as np

from .. import guards
from ..backend import load as load_backend
from ..backend.c.runtime import network_key  # noqa: F401  (the cache key, for tools and tests)
from ..guards import CHUNK  # noqa: F401  (most examples per kernel call)
from ..io.files import network_from_description

_INF = float("inf")


def compile_network(net, dtype: str, tune: str = "fast", backend: str = "c"):
    """The backend's runtime for a network (see ``symnet.backend.load``)."""
    return load_backend(backend)(net, dtype, tune)


def _check_init(init):
    number = isinstance(init, (int, float)) and not isinstance(init, bool)
    if init is None or number or init in ("glorot", "he", "normal", "zeros", "ones"):
        return float(init) if number else init
    raise ValueError(f"init must be one of glorot, he, normal, zeros, ones or a number, "
                     f"got {init!r}")


def _rebuild(cls, network_cls, description: str, dtype: str, params: dict, init,
             optimizer=None, backend: str = "c"):
    """A ``cls`` model of a ``network_cls`` network from its pickled state (see
    ``Model.__reduce__``)."""
    network = network_from_description(json.loads(description), network_cls)
    model = cls(network, dtype=dtype, init=init, backend=backend)
    for name, value in params.items():
        model.params[name] = value
    if optimizer is not None:
        from .optimizer import from_arrays
        model._optimizer = from_arrays(model, optimizer, "the pickled model")
    return model


class Params(MutableMapping):
    """Parameters by name (W1, b1, ...): numpy views into one flat array.

    Assigning copies into the existing array after checking the shape, so the
    compiled kernels always see the new values (never halfway through a
    kernel call of another thread)."""

    def __init__(self, views: dict, lock=None):
        self._views = views
        self._lock = lock or threading.Lock()

    def __getitem__(self, name):
        return self._views[name]

    def __setitem__(self, name, value):
        if name not in self._views:
            raise KeyError(f"no parameter {name!r}; parameters: {', '.join(self._views)}")
        view = self._views[name]
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ValueError(f"parameter {name} has shape {view.shape}, got {value.shape}")
        with self._lock:
            view[...] = value

    def __delitem__(self, name):
        raise TypeError("parameters cannot be deleted")

    def __iter__(self):
        return iter(self._views)

    def __len__(self):
        return len(self._views)

    def __repr__(self):
        return "Params(" + ", ".join(f"{k}: {v.shape}" for k, v in self._views.items()) + ")"


class Model:
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
        # the runtime's calls share its work and gradient buffers (and the C
        # backend releases the GIL inside them): one call at a time.
        self.lock = threading.Lock()
        self._acquire, self._release = self.lock.acquire, self.lock.release
        # the names the model's own methods and modules written before the public
        # ones use
        self._rt, self._meta, self._lock = rt, meta, self.lock
        self._theta, self._grad, self._rows = self.theta, self.grad, self.rows_per_call
        self._views = {}
        self._gviews = {}
        for p in meta["params"]:
            size = int(np.prod(p["shape"]))
            sl = slice(p["offset"], p["offset"] + size)
            self._views[p["name"]] = self._theta[sl].reshape(p["shape"])
            self._gviews[p["name"]] = self._grad[sl].reshape(p["shape"])
        self.params = Params(self._views, self.lock)
        self._optimizer = None     # the optimizer's state (symnet.runtime.optimizer), once used
        self._rngs = self._dropout_states()
        self._bns = self._batchnorms()
        self._stateful = bool(self._rngs or self._bns)   # a layer with a training mode
        self._embeddings = self._embedding_inputs()
        self._init = _check_init(init)
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
        rng = np.random.default_rng(seed)
        with self._lock:
            self._init_params(rng)
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
        with self._lock:
            self._optimizer = None

    # ---------------------------------------------------------------- dropout
    def _dropout_states(self) -> list:
        """The (seed, step, training) arrays rng{k} of the network's Dropout layers."""
        from ..lang.dropout import Dropout
        net, out = self.network, {}
        for app, k in zip(net.layers, getattr(net, "_param_index", ())):
            if isinstance(app.origin if app.origin is not None else app, Dropout):
                out[f"rng{k}"] = self._views[f"rng{k}"]
        return list(out.values())

    def dropout_seed(self, seed: int, step: int = 0):
        """Start Dropout's masks afresh: those of ``seed`` (an int), from training step
        ``step``; ``fit(seed=...)`` calls it.  No effect without Dropout layers."""
        from ..lang.dropout import SEED, SEED_RANGE, STEP
        for v in self._rngs:
            v[SEED] = int(seed) % SEED_RANGE
            v[STEP] = int(step) % SEED_RANGE

    def _train_mode(self, training: bool):
        """Dropout draws its masks (training) or is the identity (evaluation); BatchNorm
        uses the batch's statistics (training) or the running ones (evaluation)."""
        from ..lang.dropout import TRAINING
        for v in self._rngs:
            v[TRAINING] = 1.0 if training else 0.0
        for bn in self._bns:
            bn["mode"][0] = 1.0 if training else 0.0

    # ---------------------------------------------------------------- batchnorm
    def _batchnorms(self) -> list:
        """Per BatchNorm layer: its node name, running statistics, momentum and sizes."""
        from ..lang.batchnorm import _BatchNorm
        net, out = self.network, []
        for app, name, k, shape in zip(net.layers, getattr(net, "names", ()),
                                       getattr(net, "_param_index", ()),
                                       getattr(net, "shapes", ())):
            layer = app.origin if app.origin is not None else app
            if isinstance(layer, _BatchNorm):
                out.append({"layer": app, "name": name, "momentum": layer.momentum,
                            "C": shape[0], "S": int(np.prod(shape[1:])),
                            "mean": self._views[f"mean{k}"], "var": self._views[f"var{k}"],
                            "mode": self._views[f"mode{k}"]})
        return out

    def _check_batch(self, rows: int):
        """A batch whose channels hold one value each has no variance: refused."""
        for bn in self._bns:
            if rows * bn["S"] < 2:
                raise ValueError(f"layer {bn['name']!r} ({type(bn['layer']).__name__}): a "
                                 f"batch of {rows} example(s) has one value per channel in "
                                 "training, and no variance; use batches of 2 or more "
                                 "(evaluation, forward and predict take any batch)")

    def _check_whole(self, n: int):
        """A training batch of BatchNorm must be one compiled call: the statistics of
        its parts would not be the batch's."""
        for bn in self._bns:
            if n > self._rows:
                raise ValueError(f"layer {bn['name']!r} ({type(bn['layer']).__name__}): a "
                                 f"training batch of {n} examples is more than one compiled "
                                 f"call takes ({self._rows} rows, rows_per_call), and its "
                                 "statistics would be those of its parts; use batches of at "
                                 f"most {self._rows} (fit's minibatch takes any batch_size; "
                                 "evaluation, forward and predict take any batch)")

    def _after_steps(self, work: np.ndarray, rows: int, steps: int):
        """``steps`` updates were taken (the last on ``rows`` examples, whose forward pass
        is in ``work``): Dropout's masks move on; BatchNorm's running statistics take the
        last step's batch statistics (from its sums Σ_b Σ_s x and Σ_b Σ_s c² in work)."""
        self._advance(steps)
        offsets = self._meta.get("work_offsets", {})
        for bn in self._bns:
            if not steps:
                continue
            n, m, C, S = rows * bn["S"], bn["momentum"], bn["C"], bn["S"]
            at = rows * offsets[f"z_{bn['name']}_c"] + np.arange(C) * S
            sq = rows * offsets[f"z_{bn['name']}"] + np.arange(C) * S
            mu = work[at].astype(np.float64) / n
            var = work[sq].astype(np.float64) / max(n - 1, 1)     # unbiased, as PyTorch's
            bn["mean"][...] = (1 - m) * bn["mean"] + m * mu
            bn["var"][...] = (1 - m) * bn["var"] + m * var

    def _advance(self, steps: int):
        """The next ``steps`` updates were taken: the masks move on."""
        from ..lang.dropout import SEED_RANGE, STEP
        for v in self._rngs:
            v[STEP] = (int(v[STEP]) + steps) % SEED_RANGE

    def _init_params(self, rng):
        for p in self._meta["params"]:
            shape, view = p["shape"], self._views[p["name"]]
            fan_out = shape[0]
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            scheme = p["init"]
            if self._init is not None and len(shape) > 1:   # compile(init=...): matrices
                scheme = self._init
            if isinstance(scheme, (int, float)):
                view[...] = scheme
            elif scheme == "normal":
                view[...] = rng.normal(0.0, 1.0, shape)
            elif scheme == "zeros":
                view[...] = 0
            elif scheme == "ones":
                view[...] = 1
            elif scheme == "he":
                view[...] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
            else:
                a = np.sqrt(6.0 / (fan_in + fan_out))
                view[...] = rng.uniform(-a, a, shape)

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
                      self._lock)

    # ----------------------------------------------------------- validation
    def _matrix(self, A, what: str, width: int, owner: str) -> np.ndarray:
        """A as a C-contiguous, aligned (batch, width) array of this model's
        dtype: bool, integer and other float dtypes (either byte order) are
        converted; anything else is refused with a ValueError."""
        if (type(A) is np.ndarray and A.dtype == self.dtype and A.ndim == 2
                and A.shape[1] == width and A.shape[0] > 0 and A.flags.carray):
            return A
        if isinstance(A, np.ma.MaskedArray) and np.ma.count_masked(A):
            raise ValueError(f"{what} is a masked array with {np.ma.count_masked(A)} masked "
                             f"entries; fill them first, e.g. {what}.filled(0)")
        try:
            arr = np.asarray(A)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{what} cannot be read as a numeric array: {exc}") from None
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{what} must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim != 2:
            hint = f"; for one example use {what}[None, :]" if arr.ndim == 1 else ""
            raise ValueError(f"{what} must be 2-D (batch, {width}) for {owner}, "
                             f"got shape {arr.shape}{hint}")
        if arr.shape[1] != width:
            raise ValueError(f"{what} has {arr.shape[1]} columns but {owner} has {width}: "
                             f"expected shape (batch, {width}), got {arr.shape}")
        if arr.shape[0] == 0:
            raise ValueError(f"{what} is an empty batch (shape {arr.shape}); "
                             "give at least one example")
        # An unaligned pointer is undefined behaviour in the C (vector loads).
        return np.require(arr, self.dtype, ["C", "A"])

    def _inputs(self, X):
        X = self._inputs_as_rows(X)
        for layer, offset, width, name in self._embeddings:
            layer.check_indices(X[:, offset:offset + width], f"X[{name!r}]")
        return X

    def _embedding_inputs(self) -> list:
        """(Embedding, first column in X, width, input name) for each Embedding on an Input."""
        from ..lang.embedding import Embedding
        net, out = self.network, []
        starts, col = {}, 0
        for x, name in zip(net.inputs, net.input_names):
            starts[id(x)] = (col, x.n, name)
            col += x.n
        for app in net.layers:
            if isinstance(app.origin if app.origin is not None else app, Embedding) \
                    and id(app.input) in starts:
                out.append((app, *starts[id(app.input)]))
        return out

    def _inputs_as_rows(self, X):
        net = self.network
        if len(net.inputs) == 1:
            if len(self.in_shape) > 1:
                X = self._tensor(X, "X", self.in_shape, f"input layer {self.input_name!r}")
            return self._matrix(X, "X", self.n_in, f"input layer {self.input_name!r}")
        if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == self.n_in:
            return self._matrix(X, "X", self.n_in, "the inputs side by side")
        parts = self._parts(X, "X", net.input_names, "inputs")
        mats = []
        for name, x, A in zip(net.input_names, net.inputs, parts):
            owner = f"input layer {name!r}"
            if len(x.shape) > 1:
                A = self._tensor(A, f"X[{name!r}]", x.shape, owner)
            mats.append(self._matrix(A, f"X[{name!r}]", x.n, owner))
        self._same_rows(mats, "X", net.input_names)
        return np.require(np.concatenate(mats, axis=1), self.dtype, ["C", "A"])

    def _tensor(self, A, what: str, shape: tuple, owner: str):
        """A batch of tensors (batch, *shape) as a (batch, prod(shape)) view."""
        try:
            arr = A if isinstance(A, np.ndarray) else np.asarray(A)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{what} cannot be read as a numeric array: {exc}") from None
        want = "(batch, " + ", ".join(str(s) for s in shape) + ")"
        if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != tuple(shape):
            hint = f"; for one example use {what}[None]" if arr.shape == tuple(shape) else ""
            raise ValueError(f"{what} must have shape {want} for {owner}, got shape "
                             f"{arr.shape}{hint}")
        return arr.reshape(arr.shape[0], -1)

    def _targets(self, T, batch: int, what: str = "T"):
        """T as (batch, outputs) rows, or (batch, 1) class labels (``symnet.runtime.targets``);
        with several outputs a list or dict of arrays, joined side by side."""
        net = self.network
        if len(net.outputs) == 1:
            if len(self.out_shape) > 1:
                out = net.output_names[0]
                T = self._tensor(T, what, self.out_shape, f"output layer {out!r}")
            from .targets import labels_or_rows
            return labels_or_rows(self, T, batch, what)
        elif isinstance(T, np.ndarray) and T.ndim == 2 and T.shape[1] == self.n_out:
            T = self._matrix(T, "T", self.n_out, "the outputs side by side")
        else:
            parts = self._parts(T, "T", net.output_names, "outputs")
            mats = []
            for name, o, A in zip(net.output_names, net.outputs, parts):
                shape, owner = net._shapes[id(o)], f"output layer {name!r}"
                if len(shape) > 1:
                    A = self._tensor(A, f"T[{name!r}]", shape, owner)
                mats.append(self._matrix(A, f"T[{name!r}]", int(np.prod(shape)), owner))
            self._same_rows(mats, "T", net.output_names)
            T = np.require(np.concatenate(mats, axis=1), self.dtype, ["C", "A"])
        if T.shape[0] != batch:
            raise ValueError(f"T has {T.shape[0]} rows but X has {batch}: one target row "
                             "per example is needed")
        return T

    def _finite_data(self, X, T, after: str):
        """(X, T) as checked rows, with ValueError for NaN or inf in either."""
        X = self._inputs(X)
        guards.finite(X, "X", after)
        T = self._targets(T, X.shape[0])
        guards.finite(T, "T", after)
        return X, T

    @staticmethod
    def _parts(A, what: str, names: list, kind: str) -> list:
        """Arrays given as a list (declaration order) or a dict keyed by layer name."""
        if isinstance(A, dict):
            unknown = sorted(set(A) - set(names))
            missing = [n for n in names if n not in A]
            if unknown or missing:
                raise ValueError(f"{what} is keyed by {sorted(A)} but the network's {kind} are "
                                 f"{names}" + (f"; missing {missing}" if missing else "")
                                 + (f"; unknown {unknown}" if unknown else ""))
            return [A[n] for n in names]
        if isinstance(A, (list, tuple)):
            if len(A) != len(names):
                raise ValueError(f"{what} holds {len(A)} arrays but the network has "
                                 f"{len(names)} {kind} {names}")
            return list(A)
        raise ValueError(f"the network has {len(names)} {kind} {names}: give {what} as a list "
                         f"in that order or a dict keyed by those names, got {type(A).__name__}")

    @staticmethod
    def _same_rows(mats: list, what: str, names: list):
        rows = [m.shape[0] for m in mats]
        if len(set(rows)) != 1:
            raise ValueError(f"the arrays of {what} have different numbers of rows: "
                             + ", ".join(f"{n}: {r}" for n, r in zip(names, rows)))

    # ---------------------------------------------------------------- kernels
    def forward(self, X):
        """The network's output for X of shape (batch, inputs) → (batch, outputs).

        With several inputs X is a list (declaration order) or a dict keyed by
        input name; with several outputs the result is a list of arrays."""
        X = self._inputs(X)
        n, rt, rows = X.shape[0], self.runtime, self.rows_per_call
        if self._stateful:
            self._train_mode(False)
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
        n, total, rows = X.shape[0], 0.0, self._rows
        if self._stateful:
            training = not getattr(self, "_evaluating", False)
            self._train_mode(training)
            if training:
                self._check_batch(min(n, rows))
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
        with self._lock:
            loss = self._loss_grad(X, T)
            return loss, {k: v.copy() for k, v in self._gviews.items()}

    def loss_grad_rows(self, X, T) -> float:
        """The loss of checked rows (``as_inputs``, ``as_targets``), their mean
        gradients into ``grad``, in calls of at most ``rows_per_call`` examples; the
        caller holds ``lock``."""
        n, rows, rt = X.shape[0], self.rows_per_call, self.runtime
        if self._stateful:
            self._train_mode(True)
            self._check_batch(min(n, rows))
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

    _loss_grad = loss_grad_rows

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
                and not self._embeddings:
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
        X = self._inputs(X)
        T = self._targets(T, X.shape[0])
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
        X = self._inputs(X)
        T = self._targets(T, X.shape[0])
        lr = self._lr(lr)
        opt = for_model(self, name, momentum, betas, eps,
                        0.0 if weight_decay is None else weight_decay, clip_norm)
        self._acquire()
        try:
            loss = self._loss_grad(X, T)
            if math.isfinite(loss) and np.isfinite(self._grad).all():
                opt.apply_locked(self, lr)
            else:
                loss = math.nan
        finally:
            self._release()
        if not math.isfinite(loss):
            return self._not_taken(X, T)
        if self._stateful:     # Dropout: the next step's masks; BatchNorm: running statistics
            self._after_steps(self.runtime.work, min(X.shape[0], self._rows), 1)
        return loss

    def _not_taken(self, X, T) -> float:
        """After a step the C refused (a NaN or inf loss or gradient; the parameters
        are unchanged): ValueError when the data holds NaN or inf, else a warning and
        NaN (the network overflowed: too large a step size or inputs)."""
        after = "the step was not taken (the parameters are unchanged)"
        rows = isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == self.n_in
        X = X if rows else self._inputs(X)     # rows already checked, or as given
        guards.finite(X, "X", after)
        rows = isinstance(T, np.ndarray) and T.ndim == 2 and T.shape[1] == self.n_out
        guards.finite(T if rows else self._targets(T, X.shape[0]), "T", after)
        warnings.warn("the step was not taken: the loss or a gradient is NaN or inf for "
                      "this batch (an overflow: try a smaller learning rate or scale the "
                      "inputs); the parameters are unchanged", RuntimeWarning, stacklevel=3)
        return math.nan

    def _stateful_step(self, X, T, lr) -> float:
        """``step`` of a network with Dropout or BatchNorm: training mode, the step, then
        the next step's masks and the running statistics of this one."""
        n = self._inputs(X).shape[0]      # checked here, taken as given by step
        self._check_batch(n)
        self._check_whole(n)
        self._train_mode(True)
        self._stateful = False
        try:
            loss = self.step(X, T, lr)
        finally:
            self._stateful = True
        self._after_steps(self.runtime.work, min(n, self._rows), 1)
        return loss

    def __reduce__(self):
        """Pickling and ``copy.deepcopy``: the network description (the same safe text
        ``save`` writes) and the parameters; the compiled module is loaded from the
        cache (or rebuilt) on the other side."""
        desc = json.dumps(self.network.describe(), sort_keys=True)
        opt = None if self._optimizer is None else self._optimizer.arrays()
        return _rebuild, (type(self), type(self.network), desc, self.dtype.name,
                          {k: np.array(v) for k, v in self.params.items()}, self._init, opt,
                          self.backend)

    def __repr__(self):
        extra = "" if self.backend == "c" else f" backend={self.backend}"
        return f"<symnet.Model {self.network!r} dtype={self.dtype.name}{extra}>"

    # the public names of the checks and of the layers with a training mode, for the
    # modules that drive the model
    set_training = _train_mode
    advance_masks = _advance
    after_steps = _after_steps
    check_batch = _check_batch

    @property
    def dropout_states(self) -> list:
        """The (seed, step, training) arrays of the Dropout layers (views into theta)."""
        return self._rngs

    @property
    def batchnorms(self) -> list:
        """Per BatchNorm layer: name, layer, momentum, C, S and views mean, var, mode."""
        return self._bns

    @property
    def has_dropout(self) -> bool:
        return bool(self._rngs)

    @property
    def stateful(self) -> bool:
        """A layer with a training mode (Dropout, BatchNorm)."""
        return self._stateful

    as_inputs = _inputs
    as_targets = _targets
    as_matrix = _matrix
