"""Reference training steps that symnet's compiled step is measured against.

Everything here is independent of symnet's compiler: the workloads, their data and
initial parameters, one training step written with plain numpy back-propagation, and
the same step in PyTorch (eager and ``torch.compile``), JAX (``jax.jit``) and PyTensor
(``pytensor.function``) when those are installed. The optional frameworks are imported
only inside their factories, so importing this module costs numpy alone.

Conventions (the same as symnet's): ``X`` is (batch, in); ``W_k`` is (out, in); ``b_k``
is (out,); ``H_k = f_k(H_{k-1} W_k^T + b_k)``; the loss is the batch mean of the
per-example loss (``mse`` = mean over outputs of (o - t)^2; ``softmax_cross_entropy``
= -sum_k t_k log softmax(o)_k, target rows are probabilities); one step is
forward + backward + plain SGD ``W -= lr * grad``, float32 throughout.

Every ``make_<framework>_step(workload, params, X, T, lr)`` copies ``params`` and
returns a zero-argument callable that performs one step in place on that copy; the
callable carries ``.params()`` (a dict of numpy copies of its current parameters) and
``.reference`` (its name). A factory raises ImportError when its framework is missing
and ``ReferenceUnavailable`` when the framework is there but the step cannot be built;
``make_reference_steps`` collects whatever works.

>>> wl = WORKLOADS["tiny"]
>>> X, T = make_data(wl)
>>> step = make_numpy_step(wl, init_params(wl), X, T, lr=0.1)
>>> step()
>>> sorted(step.params())
['W1', 'W2', 'W3', 'b1', 'b2', 'b3']
"""

from __future__ import annotations

import gc
import importlib.util
import statistics
import time
from dataclasses import dataclass
from functools import partial

import numpy as np

F32 = np.float32


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """One benchmark network: layer sizes (input first), activations, loss, batch."""

    name: str
    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    loss: str
    batch: int

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def param_names(self) -> list[str]:
        """``["W1", "b1", "W2", "b2", ...]``, the order every reference uses."""
        return [f"{p}{k}" for k in range(1, self.n_layers + 1) for p in ("W", "b")]


_CLASSIFIER = ("relu", "relu", "linear")

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("tiny", (2, 8, 8, 1), ("tanh", "tanh", "sigmoid"), "mse", 4),
        Workload("small", (64, 128, 64, 10), _CLASSIFIER, "softmax_cross_entropy", 32),
        Workload("medium", (784, 256, 128, 10), _CLASSIFIER, "softmax_cross_entropy", 128),
        Workload("large", (1024, 1024, 1024, 10), _CLASSIFIER, "softmax_cross_entropy", 256),
    )
}

ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid")
LOSSES = ("mse", "softmax_cross_entropy")


def _check_workload(workload: Workload) -> None:
    if len(workload.activations) != workload.n_layers:
        raise ValueError(
            f"workload {workload.name!r}: {workload.n_layers} layers but "
            f"{len(workload.activations)} activations"
        )
    for act in workload.activations:
        if act not in ACTIVATIONS:
            raise ValueError(f"workload {workload.name!r}: activation {act!r} not in {ACTIVATIONS}")
    if workload.loss not in LOSSES:
        raise ValueError(f"workload {workload.name!r}: loss {workload.loss!r} not in {LOSSES}")


def make_data(workload: Workload, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One batch ``(X, T)`` of float32 data: X standard normal; T one-hot rows for
    ``softmax_cross_entropy``, values in (0.05, 0.95) for ``mse``."""
    _check_workload(workload)
    rng = np.random.default_rng(seed)
    n_in, n_out, batch = workload.sizes[0], workload.sizes[-1], workload.batch
    X = rng.standard_normal((batch, n_in)).astype(F32)
    if workload.loss == "softmax_cross_entropy":
        T = np.zeros((batch, n_out), F32)
        T[np.arange(batch), rng.integers(0, n_out, batch)] = 1
    else:
        T = rng.uniform(0.05, 0.95, (batch, n_out)).astype(F32)
    return X, T


def init_params(workload: Workload, seed: int = 0) -> dict[str, np.ndarray]:
    """Glorot-uniform ``W_k`` (out, in) and small uniform ``b_k`` (out,), float32.

    The biases are not zero so that a gradient check also exercises their values."""
    _check_workload(workload)
    rng = np.random.default_rng(seed + 1)
    params = {}
    for k, (n_in, n_out) in enumerate(zip(workload.sizes[:-1], workload.sizes[1:]), 1):
        limit = np.sqrt(6.0 / (n_in + n_out))
        params[f"W{k}"] = rng.uniform(-limit, limit, (n_out, n_in)).astype(F32)
        params[f"b{k}"] = rng.uniform(-0.1, 0.1, n_out).astype(F32)
    return params


def flops_per_step(workload: Workload) -> int:
    """Floating point operations of one step, counting the matrix products only.

    Each layer does 2*batch*in*out per product: one product forward, two backward
    (weight gradient and input gradient), except that the first layer's input
    gradient is never needed."""
    per_product = [
        2 * workload.batch * i * o for i, o in zip(workload.sizes[:-1], workload.sizes[1:])
    ]
    return 3 * sum(per_product) - per_product[0]


# --------------------------------------------------------------------------- plumbing


class ReferenceUnavailable(RuntimeError):
    """The framework imports but this reference step cannot be built here.

    Example: ``torch.compile`` failing because no C++ compiler is found. The message
    says what failed; the benchmark reports it and carries on without that column."""


def _finish(step, read, name: str):
    """Attach ``.params()`` and ``.reference`` to a step function (no call overhead)."""
    step.params = read
    step.reference = name
    return step


def _copy_params(workload: Workload, params: dict[str, np.ndarray]) -> list[np.ndarray]:
    out = []
    for k, name in enumerate(workload.param_names()):
        layer = k // 2
        n_in, n_out = workload.sizes[layer], workload.sizes[layer + 1]
        shape = (n_out, n_in) if name[0] == "W" else (n_out,)
        arr = np.array(params[name], dtype=F32, copy=True, order="C")
        if arr.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
        out.append(arr)
    return out


def _as_data(workload: Workload, X, T) -> tuple[np.ndarray, np.ndarray]:
    X = np.array(X, dtype=F32, copy=True, order="C")
    T = np.array(T, dtype=F32, copy=True, order="C")
    n_in, n_out = workload.sizes[0], workload.sizes[-1]
    if X.ndim != 2 or X.shape[1] != n_in or T.shape != (X.shape[0], n_out):
        raise ValueError(
            f"workload {workload.name!r}: X must be (batch, {n_in}) and T (batch, {n_out}); "
            f"got X {X.shape}, T {T.shape}"
        )
    return X, T


# --------------------------------------------------------------------------- numpy


def make_numpy_step(workload: Workload, params, X, T, lr: float):
    """Plain numpy back-propagation, float32, every buffer allocated once up front.

    Hand-written the way a careful numpy user would: activations in place, ``lr``
    folded into the output delta (back-propagation is linear in it, so every
    gradient comes out already scaled by ``lr``), ``out=`` on every ufunc and
    matrix product, no input gradient for the first layer."""
    _check_workload(workload)
    X, T = _as_data(workload, X, T)
    flat = _copy_params(workload, params)
    Ws, bs = flat[0::2], flat[1::2]
    acts = workload.activations
    n = workload.n_layers
    batch, n_out = X.shape[0], workload.sizes[-1]
    widths = workload.sizes[1:]
    A = [np.empty((batch, w), F32) for w in widths]  # post-activation of each layer
    D = [np.empty((batch, w), F32) for w in widths]  # lr * dL/dH, then lr * dL/dZ
    tmp = [np.empty((batch, w), F32) for w in widths]
    mask = [np.empty((batch, w), bool) for w in widths]
    gW = [np.empty_like(W) for W in Ws]
    gb = [np.empty_like(b) for b in bs]
    row = np.empty((batch, 1), F32)
    inputs = [X] + A[:-1]
    mse_scale = 2.0 * lr / (batch * n_out)
    sce_scale = lr / batch

    def step():
        # forward: A_k = f(A_{k-1} W_k^T + b_k), in place
        for k in range(n):
            a = A[k]
            np.matmul(inputs[k], Ws[k].T, out=a)
            a += bs[k]
            act = acts[k]
            if act == "relu":
                np.maximum(a, 0, out=a)
            elif act == "tanh":
                np.tanh(a, out=a)
            elif act == "sigmoid":  # 1/(1+exp(-z)) as 0.5*tanh(z/2)+0.5: no overflow
                a *= 0.5
                np.tanh(a, out=a)
                a *= 0.5
                a += 0.5
        # output delta: lr * dL/dO
        o, d = A[-1], D[-1]
        if workload.loss == "mse":
            np.subtract(o, T, out=d)
            d *= mse_scale
        else:  # softmax(o) - t (target rows sum to 1), times lr / batch
            np.max(o, axis=1, keepdims=True, out=row)
            np.subtract(o, row, out=d)
            np.exp(d, out=d)
            np.sum(d, axis=1, keepdims=True, out=row)
            d /= row
            d -= T
            d *= sce_scale
        # backward, last layer first; each W_k is updated after its delta has been sent down
        for k in range(n - 1, -1, -1):
            a, d, act = A[k], D[k], acts[k]
            if act == "relu":
                np.greater(a, 0, out=mask[k])
                d *= mask[k]
            elif act == "tanh":
                t = tmp[k]
                np.multiply(a, a, out=t)
                np.subtract(1, t, out=t)
                d *= t
            elif act == "sigmoid":
                t = tmp[k]
                np.subtract(1, a, out=t)
                t *= a
                d *= t
            np.matmul(d.T, inputs[k], out=gW[k])
            np.sum(d, axis=0, out=gb[k])
            if k:
                np.matmul(d, Ws[k], out=D[k - 1])
            Ws[k] -= gW[k]
            bs[k] -= gb[k]

    names = workload.param_names()
    return _finish(step, lambda: {k: v.copy() for k, v in zip(names, flat)}, "numpy")


# --------------------------------------------------------------------------- torch


def _torch_loss_fn(workload: Workload):
    import torch
    import torch.nn.functional as F

    act_fns = {"linear": None, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}
    acts = [act_fns[a] for a in workload.activations]

    def loss_fn(ps, X, T):
        h = X
        for k, act in enumerate(acts):
            h = torch.addmm(ps[2 * k + 1], h, ps[2 * k].t())
            if act is not None:
                h = act(h)
        if workload.loss == "mse":
            return F.mse_loss(h, T)  # mean over batch and outputs = batch mean of the output mean
        return F.cross_entropy(h, T)  # probability targets: -sum t log softmax, batch mean

    return loss_fn


def make_torch_step(workload: Workload, params, X, T, lr: float):
    """PyTorch eager: forward, ``torch.autograd.grad``, one fused ``_foreach_add_`` update."""
    import torch

    _check_workload(workload)
    X, T = _as_data(workload, X, T)
    Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)
    ps = [torch.from_numpy(p).requires_grad_() for p in _copy_params(workload, params)]
    loss_fn = _torch_loss_fn(workload)
    no_grad = torch.no_grad

    def step():
        grads = torch.autograd.grad(loss_fn(ps, Xt, Tt), ps)
        with no_grad():
            torch._foreach_add_(ps, grads, alpha=-lr)

    names = workload.param_names()
    read = lambda: {k: p.detach().numpy().copy() for k, p in zip(names, ps)}
    return _finish(step, read, "torch")


def make_torch_compile_step(workload: Workload, params, X, T, lr: float):
    """``torch.compile`` of the whole step (``torch.func.grad`` + in-place update).

    Compiles in the factory, on throw-away copies of the parameters, so the first
    timed call is not the compile. Raises ReferenceUnavailable if compiling fails."""
    import torch

    _check_workload(workload)
    X, T = _as_data(workload, X, T)
    Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)
    ps = [torch.from_numpy(p) for p in _copy_params(workload, params)]
    grad_fn = torch.func.grad(_torch_loss_fn(workload))

    def train_step(ps, X, T):
        grads = grad_fn(ps, X, T)
        for p, g in zip(ps, grads):
            p.sub_(g, alpha=lr)

    compiled = torch.compile(train_step, dynamic=False)
    try:
        compiled([p.clone() for p in ps], Xt, Tt)
    except Exception as exc:  # the compiler stack fails in many ways; report, don't crash
        raise ReferenceUnavailable(f"torch.compile failed: {type(exc).__name__}: {exc}") from exc

    def step():
        compiled(ps, Xt, Tt)

    names = workload.param_names()
    read = lambda: {k: p.numpy().copy() for k, p in zip(names, ps)}
    return _finish(step, read, "torch.compile")


# --------------------------------------------------------------------------- jax


def make_jax_step(workload: Workload, params, X, T, lr: float):
    """``jax.jit`` of value_and_grad + update, parameters donated, waited for each step."""
    import jax
    import jax.numpy as jnp

    _check_workload(workload)
    X, T = _as_data(workload, X, T)
    act_fns = {"linear": None, "relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}
    acts = [act_fns[a] for a in workload.activations]
    lr32 = F32(lr)

    def loss_fn(ps, X, T):
        h = X
        for k, act in enumerate(acts):
            h = h @ ps[2 * k].T + ps[2 * k + 1]
            if act is not None:
                h = act(h)
        if workload.loss == "mse":
            return jnp.mean((h - T) ** 2)
        return -jnp.mean(jnp.sum(T * jax.nn.log_softmax(h, axis=1), axis=1))

    def train_step(ps, X, T):
        loss, grads = jax.value_and_grad(loss_fn)(ps, X, T)
        return tuple(p - lr32 * g for p, g in zip(ps, grads)), loss

    jitted = jax.jit(train_step, donate_argnums=0)
    Xj, Tj = jnp.asarray(X), jnp.asarray(T)
    flat = _copy_params(workload, params)
    jax.block_until_ready(jitted(tuple(jnp.array(p) for p in flat), Xj, Tj))  # compile now
    state = [tuple(jnp.array(p) for p in flat)]

    def step():
        state[0], _loss = jitted(state[0], Xj, Tj)
        jax.block_until_ready(state[0])

    names = workload.param_names()
    read = lambda: {k: np.array(p) for k, p in zip(names, state[0])}
    return _finish(step, read, "jax")


# --------------------------------------------------------------------------- pytensor


def make_pytensor_step(workload: Workload, params, X, T, lr: float, mode: str = "CVM"):
    """``pytensor.function`` with SGD updates on shared variables.

    ``mode="CVM"`` (the default here) compiles the graph to C, the closest peer of
    symnet; PyTensor 3's own default is ``"NUMBA"`` (registered as ``pytensor.numba``).
    Without a BLAS library to link (a pip install has none), PyTensor's C backend
    runs its matrix products through numpy instead of C BLAS calls."""
    import pytensor
    import pytensor.tensor as pt
    from pytensor.tensor.special import log_softmax

    _check_workload(workload)
    X, T = _as_data(workload, X, T)
    act_fns = {
        "linear": None,
        "relu": lambda z: pt.maximum(z, 0),
        "tanh": pt.tanh,
        "sigmoid": pt.sigmoid,
    }
    names = workload.param_names()
    shared = [pytensor.shared(p, name=k) for k, p in zip(names, _copy_params(workload, params))]
    Xs, Ts = pytensor.shared(X, name="X"), pytensor.shared(T, name="T")
    h = Xs
    for k, act in enumerate(workload.activations):
        h = pt.dot(h, shared[2 * k].T) + shared[2 * k + 1]
        if act_fns[act] is not None:
            h = act_fns[act](h)
    if workload.loss == "mse":
        loss = pt.mean((h - Ts) ** 2)
    else:
        loss = -pt.mean(pt.sum(Ts * log_softmax(h, axis=1), axis=1))
    grads = pytensor.grad(loss, shared)
    lr32 = pt.constant(F32(lr))
    updates = [(p, p - lr32 * g) for p, g in zip(shared, grads)]
    try:
        fn = pytensor.function([], [], updates=updates, mode=mode)
    except Exception as exc:
        raise ReferenceUnavailable(
            f"pytensor.function failed: {type(exc).__name__}: {exc}"
        ) from exc

    def step():
        fn()

    read = lambda: {k: s.get_value() for k, s in zip(names, shared)}
    return _finish(step, read, "pytensor" if mode == "CVM" else f"pytensor.{mode.lower()}")


# --------------------------------------------------------------------------- registry

# name -> (module that must be importable, factory)
REFERENCES = {
    "numpy": ("numpy", make_numpy_step),
    "torch": ("torch", make_torch_step),
    "torch.compile": ("torch", make_torch_compile_step),
    "jax": ("jax", make_jax_step),
    "pytensor": ("pytensor", make_pytensor_step),
    "pytensor.numba": ("pytensor", partial(make_pytensor_step, mode="NUMBA")),
}


def available_references() -> dict:
    """Name -> factory for the references whose framework is installed.

    Looks for the module without importing it (importing torch takes a second)."""
    return {
        name: factory
        for name, (module, factory) in REFERENCES.items()
        if importlib.util.find_spec(module) is not None
    }


def make_reference_steps(workload: Workload, params, X, T, lr: float, names=None):
    """Build every reference step that works here.

    Returns ``(steps, skipped)``: ``steps`` maps name -> step callable, ``skipped``
    maps name -> the reason it is missing (not installed, or failed to build)."""
    steps, skipped = {}, {}
    for name in names if names is not None else REFERENCES:
        module, factory = REFERENCES[name]
        try:
            steps[name] = factory(workload, params, X, T, lr)
        except ImportError as exc:
            skipped[name] = f"{module} not installed ({exc})"
        except ReferenceUnavailable as exc:
            skipped[name] = str(exc)
    return steps, skipped


# --------------------------------------------------------------------------- timing


#: calls each function makes before it is timed (at most WARM_MAX_S seconds of them): a
#: framework's first calls are not its steady state.  symnet's first passes time its choice
#: of threads (four alone, the first of them warming the caches, then three with: 25 and
#: 12.5 ms for the transformer's step on two cores); after one untimed call, the estimate
#: of a call's cost took passes alone, so each repeat timed two steps instead of three,
#: and the first repeats the passes still on trial
WARM_CALLS, WARM_MAX_S = 8, 0.5


def warm(fn) -> None:
    """``fn()`` WARM_CALLS times, or as many as WARM_MAX_S seconds hold (at least one)."""
    start = time.perf_counter()
    for _ in range(WARM_CALLS):
        fn()
        if time.perf_counter() - start > WARM_MAX_S:
            return


def time_call(fn, min_time: float = 0.2, repeats: int = 7) -> tuple[float, list[float]]:
    """Median microseconds per call of ``fn()``, and the per-repeat values.

    Untimed calls first (``warm``), then a warm-up that also estimates the cost; each of the
    ``repeats`` repeats runs ``fn`` enough times to last about ``min_time/repeats``
    seconds, and contributes its mean time per call. The garbage collector is off
    while timing, as in ``timeit``. Returns ``(median_us, per_repeat_us)``."""
    warm(fn)
    per_repeat = min_time / repeats
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < per_repeat:
        fn()
        calls += 1
    estimate = (time.perf_counter() - start) / calls
    inner = max(1, int(per_repeat / estimate))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        per_call = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            per_call.append((time.perf_counter() - start) / inner * 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(per_call), per_call


#: seconds each contestant's timed run waits first, so that the threads the one before
#: it left spinning (OpenMP's, OpenBLAS's, XLA's pools wait for work by spinning for
#: milliseconds) have gone to sleep: no framework is timed beside another's idle threads,
#: as no user runs it so; then, up to SETTLE_MAX_S, until this process's other threads
#: are idle (numpy's OpenBLAS spins about 0.1 s after a product: on two cores the next
#: contestant's second thread then shared a core with it, and symnet's medium step
#: measured 2.8 ms after numpy's turn against 1.4 ms after a pause of 0.3 s)
SETTLE_S = 0.03
SETTLE_MAX_S = 0.3


def settle() -> None:
    """Wait SETTLE_S, then until the process's other threads leave the cores alone."""
    from ..backend.c.tuning import own_threads_idle
    time.sleep(SETTLE_S)
    own_threads_idle(SETTLE_MAX_S)


def time_calls(fns: dict, min_time: float = 0.2, repeats: int = 7) -> dict:
    """Median microseconds per call of each ``fns[name]()``, timed in turns: each
    repeat runs every function once for about ``min_time/repeats`` seconds, so on a
    shared machine all of them meet the same moments of load and their ratios mean
    something; each run starts after ``settle()``.  Warm-up and garbage collector as in ``time_call``.

    >>> sorted(time_calls({"a": lambda: None, "b": lambda: None}, 0.01, 3))
    ['a', 'b']
    """
    per_repeat = min_time / repeats
    inner = {}
    for name, fn in fns.items():
        warm(fn)
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < per_repeat:
            fn()
            calls += 1
        inner[name] = max(1, int(per_repeat / ((time.perf_counter() - start) / calls)))
    out = {name: [] for name in fns}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in fns.items():
                n = inner[name]
                settle()
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                out[name].append((time.perf_counter() - start) / n * 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(v) for name, v in out.items()}


def product_gflops(name: str, seconds: float = 0.2, n: int = 1024) -> float | None:
    """float32 GFLOP/s of reference ``name``'s own n x n @ n x n product (PyTorch's
    ``torch.mm``, a ``jax.jit`` of ``a @ b``), median of 5 repeats; None where the
    library is not installed or has no such product here."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(F32)
    b = rng.standard_normal((n, n)).astype(F32)
    try:
        if name == "torch":
            import torch
            at, bt, ct = torch.from_numpy(a), torch.from_numpy(b), torch.empty(n, n)
            fn = lambda: torch.mm(at, bt, out=ct)
        elif name == "jax":
            import jax
            mm = jax.jit(lambda x, y: x @ y)
            aj, bj = jax.device_put(a), jax.device_put(b)
            fn = lambda: mm(aj, bj).block_until_ready()
        else:
            return None
    except ImportError:
        return None
    settle()
    median_us, _ = time_call(fn, min_time=seconds, repeats=5)
    return 2.0 * n**3 / (median_us * 1e-6) / 1e9


def measure_peak_gflops(seconds: float = 0.5, n: int = 1024) -> float:
    """float32 GFLOP/s of numpy's matrix product, n x n @ n x n, median of 5 repeats."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(F32)
    b = rng.standard_normal((n, n)).astype(F32)
    c = np.empty((n, n), F32)
    median_us, _ = time_call(lambda: np.matmul(a, b, out=c), min_time=seconds, repeats=5)
    return 2.0 * n**3 / (median_us * 1e-6) / 1e9
