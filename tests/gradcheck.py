"""One gradient checker for every test: central differences in float64.

``check(model, X, T)`` compares the compiled gradient with the derivative of
the loss along random directions v, and element by element on a random
sample of each parameter; it fails with the parameter, both values and the
tolerance.

The derivative is a Richardson-extrapolated central difference,
(4·D(ε/2) − D(ε))/3 with D(h) = (L(θ + hv) − L(θ − hv))/2h, whose truncation
error is O(ε⁴) instead of O(ε²): activations such as sin(z)·z⁴ have third
derivatives large enough to spoil a plain central difference at 1e-6.
"""

import numpy as np


def _set(model, theta):
    model.theta[...] = theta


def _derivative(model, X, T, theta0, v, eps):
    def D(h):
        _set(model, theta0 + h * v)
        lp = model.loss(X, T)
        _set(model, theta0 - h * v)
        lm = model.loss(X, T)
        return (lp - lm) / (2 * h)
    return (4 * D(eps / 2) - D(eps)) / 3


def check(model, X, T, rtol=1e-6, eps=1e-6, directions=3, elements=12, seed=0):
    assert model.dtype == np.float64, "finite differences need float64"
    rng = np.random.default_rng(seed)
    loss, grads = model.loss_and_grad(X, T)
    # Rounding floor: each loss carries a relative error of ~1e-15 (sums over
    # the batch and outputs), so D(h) is uncertain by ~1e-15·|L|/h; the
    # extrapolation weighs D(ε/2) by 4/3, giving about 4e-15·|L|/ε in all.
    noise = 4e-15 * max(abs(loss), 1.0) / eps
    theta0 = model.theta.copy()
    # in the order of θ (frozen parameters, e.g. Dropout's state, lie at its end)
    base = model.theta.ctypes.data
    names = sorted(model.params, key=lambda k: model.params[k].ctypes.data - base)
    flat_g = np.concatenate([grads[k].ravel() for k in names])
    try:
        for _ in range(directions):
            v = rng.normal(size=theta0.shape)
            fd, an = _derivative(model, X, T, theta0, v, eps), float(flat_g @ v)
            err = abs(fd - an) / max(abs(fd), abs(an), 1e-8)
            assert err <= rtol or abs(fd - an) < noise, (
                f"directional derivative: compiled {an!r}, finite difference {fd!r}, "
                f"relative error {err:.2e} > {rtol}")
        offset = 0
        for k in names:
            size = grads[k].size
            for e in rng.choice(size, min(size, elements), replace=False):
                d = np.zeros_like(theta0)
                d[offset + e] = 1.0
                fd, an = _derivative(model, X, T, theta0, d, eps), grads[k].ravel()[e]
                err = abs(fd - an) / max(abs(fd), abs(an), 1e-7)
                assert err <= rtol or abs(fd - an) < noise, (
                    f"{k}.flat[{e}]: compiled {an!r}, finite difference {fd!r}, "
                    f"relative error {err:.2e} > {rtol}")
            offset += size
    finally:
        _set(model, theta0)
    return loss, grads
