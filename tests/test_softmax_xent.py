"""Softmax cross-entropy derived from its log-sum-exp formula (symnet.derive.coupled):
finite and right for logits of ±1e3 in float32 and float64, on both backends, with
targets as rows and as class labels; without the derived stability rewrite the same
float32 step overflows (so the rewrite is what keeps it finite)."""

import numpy as np
import pytest

import symnet as sn
from symnet.derive import coupled
from own_cache import own_cache


def _net():
    return sn.Network(sn.Input(2, name="I"), sn.Dense(4, name="O"),
                      loss="softmax_cross_entropy")


def _reference(X, W, b, T):
    """Loss and (g_W, g_b) in float64 with the max subtracted (numpy, independent)."""
    O = X @ W.T + b
    m = O.max(1, keepdims=True)
    lse = m + np.log(np.exp(O - m).sum(1, keepdims=True))
    loss = np.mean((lse[:, 0] * T.sum(1)) - (T * O).sum(1))
    dO = (np.exp(O - lse) * T.sum(1, keepdims=True) - T) / len(X)
    return loss, dO.T @ X, dO.sum(0)


def _large(dtype, backend):
    model = _net().compile(dtype=dtype, seed=0, backend=backend, tune="off")
    # logits about ±1e3: exp overflows float32 (and float64) without the rewrite
    model.params["W1"][...] = np.array([[400.0, 300.0], [390.0, 310.0],
                                        [-500.0, 0.0], [402.0, 301.0]])
    model.params["b1"][...] = np.array([5.0, 0.0, -3.0, 0.0])
    X = np.array([[1.5, 1.0], [1.0, 1.5], [-1.0, 2.0]]).astype(dtype)
    y = np.array([0, 3, 1])
    return model, X, y


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logits_of_a_thousand_stay_finite_and_right(dtype, backend):
    model, X, y = _large(dtype, backend)
    W = model.params["W1"].astype(np.float64)
    b = model.params["b1"].astype(np.float64)
    O = model.forward(X).astype(np.float64)
    assert np.abs(O).max() > 900
    rows = np.eye(4)[y]
    soft = np.array([[0.7, 0.1, 0.0, 0.2], [0.0, 0.5, 0.0, 0.5], [0.25] * 4])
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for T in (rows, y, soft):
        want_L, want_gW, want_gb = _reference(X.astype(np.float64), W, b,
                                              rows if T is y else T)
        L, g = model.loss_and_grad(X, T.astype(dtype) if T is not y else T)
        assert np.isfinite(L) and all(np.all(np.isfinite(v)) for v in g.values())
        assert L == pytest.approx(want_L, rel=rtol, abs=rtol * 1e3)
        np.testing.assert_allclose(g["b1"], want_gb, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(g["W1"], want_gW, rtol=rtol, atol=rtol * 1e2)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_without_the_rewrite_float32_overflows(monkeypatch, tmp_path, backend):
    """The derived rule itself, exp(O)/Σ exp(O), is inf/inf at logits of 1e3: the
    stability rewrite of derive is what the backends owe their finite numbers to."""
    from symnet.backend.c import build
    monkeypatch.setenv("SYMNET_CACHE_DIR", own_cache(tmp_path))   # derived again, apart
    monkeypatch.setattr(build, "lookup", lambda key: None)
    monkeypatch.setattr(coupled, "logsumexp", lambda rule: rule)
    model, X, y = _large("float32", backend)
    L, g = model.loss_and_grad(X, y)
    assert not (np.isfinite(L) and np.all(np.isfinite(g["W1"])))


def test_labels_and_one_hot_rows_give_the_same_step():
    net = _net()
    a = net.compile(dtype="float64", seed=3)
    b = net.compile(dtype="float64", seed=3)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(5, 2)), rng.integers(0, 4, 5)
    for _ in range(3):
        a.step(X, y, lr=0.1)
        b.step(X, np.eye(4)[y], lr=0.1)
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-13, atol=1e-15)
