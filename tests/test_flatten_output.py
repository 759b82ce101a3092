"""A network whose output is a Flatten of a convolution: the loss's ∂ℓ/∂O reaches the
layer below (the view shares its gradient's memory), on the C and NumPy backends."""
import numpy as np
import pytest

import symnet as sn


def _net(loss):
    I = sn.Input((1, 6, 40), name="I")
    H = sn.Conv2d(7, (3, 5), name="H")(I)
    O = sn.Flatten(name="O")(H)
    return sn.Network(I, O, loss=loss)


def _central(model, X, T, name, idx, h=1e-6):
    p = model.params[name]
    p[idx] += h
    model.params[name] = p
    up = model.loss(X, T)
    p[idx] -= 2 * h
    model.params[name] = p
    down = model.loss(X, T)
    p[idx] += h
    model.params[name] = p
    return (up - down) / (2 * h)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_flatten_output_gradients_equal_central_differences(backend):
    model = _net("mse").compile(dtype="float64", seed=0, backend=backend)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 1, 6, 40))
    T = rng.normal(size=(3, 7 * 4 * 36))
    _, g = model.loss_and_grad(X, T)
    for name in ("W1", "b1"):
        assert np.abs(g[name]).max() > 1e-3
        for idx in [(0,) * g[name].ndim, tuple(s - 1 for s in g[name].shape)]:
            fd = _central(model, X, T, name, idx)
            assert g[name][idx] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_flatten_output_gradient_equals_numpy_back_propagation():
    """∂L/∂b of the mse loss of a flattened convolution, written out in numpy:
    ∂L/∂b_c = (1/B) Σ_b Σ_(y,x) 2 (O − T) / n_out over channel c."""
    model = _net("mse").compile(dtype="float64", seed=1)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4, 1, 6, 40))
    T = rng.normal(size=(4, 1008))
    O = model.forward(X)
    _, g = model.loss_and_grad(X, T)
    d = (2.0 * (O - T) / 1008).reshape(4, 7, 4, 36)
    np.testing.assert_allclose(g["b1"], d.sum(axis=(0, 2, 3)) / 4, rtol=1e-12)
