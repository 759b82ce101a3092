"""One gradient checker for every test: central differences in float64.

``check(model, X, T)`` compares the compiled gradient with
(L(θ + εv) − L(θ − εv)) / 2ε along random directions v, and element by
element on a random sample of each parameter; it fails with the parameter,
both values and the tolerance.
"""

import numpy as np


def _set(model, theta):
    model._theta[...] = theta


def check(model, X, T, rtol=1e-6, eps=1e-6, directions=3, elements=12, seed=0):
    assert model.dtype == np.float64, "finite differences need float64"
    rng = np.random.default_rng(seed)
    loss, grads = model.loss_and_grad(X, T)
    # Rounding floor of a central difference: the two losses each carry a
    # relative error of ~1e-15 (sums over the batch and outputs), so their
    # difference over 2ε is uncertain by about 1e-15·|L|/ε.
    noise = 1e-15 * max(abs(loss), 1.0) / eps
    theta0 = model._theta.copy()
    names = list(model.params)
    flat_g = np.concatenate([grads[k].ravel() for k in names])
    try:
        for _ in range(directions):
            v = rng.normal(size=theta0.shape)
            _set(model, theta0 + eps * v)
            lp = model.loss(X, T)
            _set(model, theta0 - eps * v)
            lm = model.loss(X, T)
            fd, an = (lp - lm) / (2 * eps), float(flat_g @ v)
            err = abs(fd - an) / max(abs(fd), abs(an), 1e-8)
            assert err <= rtol or abs(fd - an) < noise, (f"directional derivative: compiled {an!r}, finite "
                                 f"difference {fd!r}, relative error {err:.2e} > {rtol}")
        offset = 0
        for k in names:
            size = grads[k].size
            for e in rng.choice(size, min(size, elements), replace=False):
                d = np.zeros_like(theta0)
                d[offset + e] = eps
                _set(model, theta0 + d)
                lp = model.loss(X, T)
                _set(model, theta0 - d)
                lm = model.loss(X, T)
                fd, an = (lp - lm) / (2 * eps), grads[k].ravel()[e]
                err = abs(fd - an) / max(abs(fd), abs(an), 1e-7)
                assert err <= rtol or abs(fd - an) < noise, (
                    f"{k}.flat[{e}]: compiled {an!r}, finite difference {fd!r}, "
                    f"relative error {err:.2e} > {rtol}")
            offset += size
    finally:
        _set(model, theta0)
    return loss, grads
