"""Check a model's compiled gradients against float64 central differences.

For users' own layers, activations and losses: sympy derived the backward
pass, this confirms it numerically on your data.

>>> import numpy as np, symnet as sn
>>> net = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.Dense(2), loss="mse")
>>> model = net.compile(dtype="float64", seed=0)
>>> rng = np.random.default_rng(0)
>>> err = sn.check_gradients(model, rng.normal(size=(5, 3)), rng.normal(size=(5, 2)),
...                          verbose=False)
>>> bool(err < 1e-6)
True
"""

from __future__ import annotations

import numpy as np


def _twin(model):
    """The same network and parameters in float64 (finite differences need it)."""
    if model.dtype == np.float64:
        return model
    twin = model.network.compile(dtype="float64", backend=model.backend)
    twin.theta[...] = model.theta
    return twin


def check_gradients(model, X, T, eps: float = 1e-6, elements: int = 20, seed: int = 0,
                    verbose: bool = True) -> float:
    """Worst relative error between the model's gradients and central differences.

    Each trainable parameter is checked on up to ``elements`` randomly chosen entries:
    (L(θ + ε·e) − L(θ − ε·e)) / 2ε, computed in float64 (a float64 twin of a
    float32 model, with the same parameters).  The error of one entry is
    |compiled − fd| / max(|compiled|, |fd|, 1e-6·largest gradient), so
    entries that are zero up to rounding do not dominate.  With ``verbose``
    one line per parameter is printed.  Expect ≲ 1e-6 for float64 models and
    ≲ 1e-3 for float32 ones; much more means a wrong derivative.  X and T
    may be lists or dicts for networks of several inputs or outputs.
    """
    def f64(A):   # lists or dicts (several inputs / outputs) as they are: the model reads them
        if isinstance(A, dict):
            return {k: np.asarray(v, dtype=np.float64) for k, v in A.items()}
        if isinstance(A, (list, tuple)):
            return [np.asarray(v, dtype=np.float64) for v in A]
        return np.asarray(A, dtype=np.float64)
    X, T = f64(X), f64(T)
    _, grads = model.loss_and_grad(X, T)
    ref = _twin(model)
    theta0 = ref.theta.copy()
    floor = 1e-6 * max((float(np.abs(g).max()) for g in grads.values() if g.size), default=1.0)
    floor = max(floor, 1e-12)
    rng = np.random.default_rng(seed)
    worst, report = 0.0, []
    try:
        for p in model.meta["params"]:
            if not p.get("trainable", True):
                continue                   # frozen: no gradient is computed for it
            name, offset = p["name"], p["offset"]
            g = np.asarray(grads[name], dtype=np.float64).ravel()
            picks = rng.choice(g.size, min(g.size, elements), replace=False)
            err_p, where = 0.0, None
            for e in picks:
                d = np.zeros_like(theta0)
                d[offset + e] = eps
                ref.theta[...] = theta0 + d
                lp = ref.loss(X, T)
                ref.theta[...] = theta0 - d
                lm = ref.loss(X, T)
                fd = (lp - lm) / (2 * eps)
                err = abs(g[e] - fd) / max(abs(g[e]), abs(fd), floor)
                if not np.isfinite(err):
                    err = np.inf
                if err >= err_p:
                    err_p, where = err, (int(e), float(g[e]), float(fd))
            worst = max(worst, err_p)
            report.append((name, err_p, where))
    finally:
        ref.theta[...] = theta0
    if verbose:
        for name, err, (e, an, fd) in report:
            print(f"{name:>10s}  worst relative error {err:.2e}  "
                  f"(flat[{e}]: compiled {an:.6g}, finite difference {fd:.6g})")
        print(f"{'all':>10s}  worst relative error {worst:.2e}")
    return float(worst)
