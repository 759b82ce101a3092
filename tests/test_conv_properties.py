"""Property test: random convolution geometries against the loop reference."""

import numpy as np
import pytest

import symnet as sn
from conv_reference import loss_and_grad as reference

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=10, deadline=None, derandomize=True)
@hypothesis.given(cin=st.integers(1, 3), cout=st.integers(1, 3), h=st.integers(3, 7),
                  w=st.integers(3, 7), k=st.integers(1, 3), stride=st.integers(1, 3),
                  pad=st.integers(0, 2), pool=st.sampled_from(["", "maxpool", "avgpool"]))
def test_random_geometries_match_the_loop_reference(cin, cout, h, w, k, stride, pad, pool):
    hypothesis.assume(k <= h + 2 * pad and k <= w + 2 * pad)
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    pool = pool if oh >= 2 and ow >= 2 else ""
    layers = [sn.Conv2d(cout, k, stride=stride, padding=pad, activation="tanh")]
    layers += [{"maxpool": sn.MaxPool2d, "avgpool": sn.AvgPool2d}[pool](2, stride=1)] \
        if pool else []
    net = sn.Network(sn.Input((cin, h, w)), *layers, sn.Flatten(), sn.Dense(2), loss="mse")
    model = net.compile(dtype="float64", seed=cin + h)
    rng = np.random.default_rng(h * w)
    X, T = rng.normal(size=(2, cin, h, w)), rng.normal(size=(2, 2))
    d = len(layers) + 2
    ref = [("conv", model.params["W1"], model.params["b1"], stride, pad, "tanh")]
    ref += [(pool, 2, 1)] if pool else []
    ref += [("flatten",), ("dense", model.params[f"W{d}"], model.params[f"b{d}"], "linear")]
    L_ref, g_ref = reference(ref, X, T)
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(L_ref, rel=1e-12)
    np.testing.assert_allclose(g["W1"], g_ref[0][0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g["b1"], g_ref[0][1], rtol=1e-9, atol=1e-12)


@hypothesis.settings(max_examples=12, deadline=None, derandomize=True)
@hypothesis.given(cin=st.integers(1, 3), length=st.integers(2, 14), k=st.integers(1, 4),
                  stride=st.one_of(st.none(), st.integers(1, 4)),
                  kind=st.sampled_from(["maxpool", "avgpool"]), conv_first=st.booleans())
def test_random_1d_pools_match_the_loop_reference(cin, length, k, stride, kind, conv_first):
    """MaxPool1d / AvgPool1d over random lengths, kernels and strides (None: the kernel),
    after a convolution (parameters below) or straight on the input."""
    n = length - 1 if conv_first else length     # the pool's input length
    hypothesis.assume(k <= n)
    pool = {"maxpool": sn.MaxPool1d, "avgpool": sn.AvgPool1d}[kind](k, stride=stride)
    first = [sn.Conv1d(2, 2, activation="tanh")] if conv_first else []
    net = sn.Network(sn.Input((cin, length)), *first, pool, sn.Flatten(), sn.Dense(2),
                     loss="mse")
    model = net.compile(dtype="float64", seed=cin + length)
    rng = np.random.default_rng(length * k)
    X, T = rng.normal(size=(2, cin, length)), rng.normal(size=(2, 2))
    d = len(first) + 3
    ref = [("conv", model.params["W1"], model.params["b1"], 1, 0, "tanh")] if conv_first \
        else []
    ref += [(kind, k, k if stride is None else stride), ("flatten",),
            ("dense", model.params[f"W{d}"], model.params[f"b{d}"], "linear")]
    L_ref, g_ref = reference(ref, X, T)
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(L_ref, rel=1e-12)
    np.testing.assert_allclose(g[f"W{d}"], g_ref[-1][0], rtol=1e-9, atol=1e-12)
    if conv_first:
        np.testing.assert_allclose(g["W1"], g_ref[0][0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g["b1"], g_ref[0][1], rtol=1e-9, atol=1e-12)
