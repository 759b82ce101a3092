"""Compiled gradients, checked three ways: finite differences, an independent
numpy back-propagation, and float32 against float64."""

import zlib

import numpy as np
import pytest
from conftest import targets_for
from gradcheck import check

import numpy_reference as ref
import symnet as sn
from symnet.scalar.primitives import ACTIVATIONS

LOSSES = ["mse", "bce", "softmax_cross_entropy"]


def random_network(act: str, loss: str, seed: int):
    """Depth 1-5, widths 1-64; bce gets a sigmoid output, softmax ≥ 2 outputs."""
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 6))
    widths = [int(w) for w in rng.integers(1, 65, depth)]
    widths[-1] = min(widths[-1], 8)
    if loss == "softmax_cross_entropy":
        widths[-1] = max(widths[-1], 2)
    acts = [act] * depth
    if loss == "bce":
        acts[-1] = "sigmoid"
    n_in = int(rng.integers(1, 17))
    layers = [sn.Dense(w, a, bias=bool(rng.integers(0, 4))) for w, a in zip(widths, acts)]
    return sn.Network(sn.Input(n_in), *layers, loss=loss), acts, n_in, widths[-1]


def reference_params(model):
    return {k: np.array(v, dtype=np.float64) for k, v in model.params.items()}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_gradients_match_finite_differences_and_numpy(act, loss):
    seed = zlib.crc32(f"{act}-{loss}".encode()) % 1000
    net, acts, n_in, n_out = random_network(act, loss, seed)
    model = net.compile(dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    # He/Glorot initialisation keeps activations moderate; shift away from zero bias.
    for k, v in model.params.items():
        if k.startswith("b"):
            model.params[k] = rng.normal(0, 0.3, v.shape)
    batch = int(rng.integers(1, 9))
    X = rng.normal(size=(batch, n_in))
    T = targets_for(loss, rng, batch, n_out)

    loss_value, grads = check(model, X, T, rtol=1e-6)

    p = reference_params(model)
    np.testing.assert_allclose(model.forward(X), ref.forward(p, X, acts), rtol=1e-10,
                               atol=1e-12)
    L_ref, g_ref = ref.loss_and_grad(p, X, T, acts, loss)
    assert loss_value == pytest.approx(L_ref, rel=1e-10, abs=1e-12)
    for k in g_ref:
        np.testing.assert_allclose(grads[k], g_ref[k], rtol=1e-8, atol=1e-11,
                                   err_msg=f"gradient {k}")


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_float32_agrees_with_float64(act):
    net = sn.Network(sn.Input(5), sn.Dense(16, act), sn.Dense(12, act), sn.Dense(3),
                     loss="softmax_cross_entropy")
    m64 = net.compile(dtype="float64", seed=3)
    m32 = net.compile(dtype="float32", seed=3)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 5))
    T = np.eye(3)[rng.integers(0, 3, 10)]
    np.testing.assert_allclose(m32.forward(X), m64.forward(X), rtol=1e-4, atol=1e-5)
    L32, g32 = m32.loss_and_grad(X, T)
    L64, g64 = m64.loss_and_grad(X, T)
    assert L32 == pytest.approx(L64, rel=1e-5)
    for k in g64:
        scale = np.abs(g64[k]).max() + 1e-6
        assert np.abs(g32[k] - g64[k]).max() <= 1e-4 * scale, k
        assert g32[k].dtype == np.float32


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_equals_params_minus_lr_grads(dtype):
    net = sn.Network(sn.Input(4), sn.Dense(7, "tanh"), sn.Dense(2, "sigmoid"), loss="bce")
    model = net.compile(dtype=dtype, seed=1)
    rng = np.random.default_rng(2)
    X, T = rng.normal(size=(6, 4)), rng.uniform(size=(6, 2))
    before = {k: v.copy() for k, v in model.params.items()}
    L, grads = model.loss_and_grad(X, T)
    L_step = model.step(X, T, lr=0.3)
    assert L_step == pytest.approx(L, rel=1e-6)
    tol = 1e-6 if dtype == "float32" else 1e-14
    for k in before:
        expected = before[k] - np.asarray(0.3, dtype) * grads[k]
        np.testing.assert_allclose(model.params[k], expected, rtol=tol, atol=tol)


def test_relu_derivative_at_zero_is_zero():
    """sympy's Heaviside(0) = 1/2 must not leak: ReLU'(0) = 0."""
    net = sn.Network(sn.Input(1), sn.Dense(1, "relu", bias=False), sn.Dense(1, bias=False),
                     loss="mse")
    model = net.compile(dtype="float64")
    model.params["W1"] = [[1.0]]
    model.params["W2"] = [[1.0]]
    _, g = model.loss_and_grad(np.array([[0.0]]), np.array([[1.0]]))
    assert g["W1"][0, 0] == 0.0
    assert "0.5" not in model.c_source.split("Forward pass")[1]


def test_large_batch_is_chunked_consistently():
    net = sn.Network(sn.Input(3), sn.Dense(5, "tanh"), sn.Dense(2), loss="mse")
    m = net.compile(dtype="float64")
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    L, g = m.loss_and_grad(X, T)
    old = m.rows_per_call  # examples per kernel call (symnet.guards.rows_per_call)
    m.rows_per_call = 7
    try:
        L2, g2 = m.loss_and_grad(X, T)
        np.testing.assert_allclose(m.forward(X)[:7], m.forward(X[:7]))
        assert m.loss(X, T) == pytest.approx(L, rel=1e-12)
    finally:
        m.rows_per_call = old
    assert L2 == pytest.approx(L, rel=1e-12)
    for k in g:
        np.testing.assert_allclose(g2[k], g[k], rtol=1e-10, atol=1e-14)
