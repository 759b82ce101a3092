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


@hypothesis.settings(max_examples=15, deadline=None, derandomize=True)
@hypothesis.given(cin=st.integers(1, 3), length=st.integers(2, 14), k=st.integers(1, 4),
                  stride=st.one_of(st.none(), st.integers(1, 4)),
                  pad=st.integers(0, 2), kind=st.sampled_from(["maxpool", "avgpool"]),
                  conv_first=st.booleans())
def test_random_1d_pools_match_the_loop_reference(cin, length, k, stride, pad, kind,
                                                  conv_first):
    """MaxPool1d / AvgPool1d over random lengths, kernels, strides (None: the kernel) and
    paddings, after a convolution (parameters below) or straight on the input."""
    n = length - 1 if conv_first else length     # the pool's input length
    hypothesis.assume(pad <= k // 2 and k <= n + 2 * pad)
    pool = {"maxpool": sn.MaxPool1d, "avgpool": sn.AvgPool1d}[kind](k, stride=stride,
                                                                    padding=pad)
    first = [sn.Conv1d(2, 2, activation="tanh")] if conv_first else []
    net = sn.Network(sn.Input((cin, length)), *first, pool, sn.Flatten(), sn.Dense(2),
                     loss="mse")
    model = net.compile(dtype="float64", seed=cin + length)
    rng = np.random.default_rng(length * k)
    X, T = rng.normal(size=(2, cin, length)), rng.normal(size=(2, 2))
    d = len(first) + 3
    ref = [("conv", model.params["W1"], model.params["b1"], 1, 0, "tanh")] if conv_first \
        else []
    ref += [(kind, k, k if stride is None else stride, pad), ("flatten",),
            ("dense", model.params[f"W{d}"], model.params[f"b{d}"], "linear")]
    L_ref, g_ref = reference(ref, X, T)
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(L_ref, rel=1e-12)
    np.testing.assert_allclose(g[f"W{d}"], g_ref[-1][0], rtol=1e-9, atol=1e-12)
    if conv_first:
        np.testing.assert_allclose(g["W1"], g_ref[0][0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g["b1"], g_ref[0][1], rtol=1e-9, atol=1e-12)


@hypothesis.settings(max_examples=10, deadline=None, derandomize=True)
@hypothesis.given(h=st.integers(2, 7), w=st.integers(2, 7), kh=st.integers(1, 4),
                  kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
                  ph=st.integers(0, 2), pw=st.integers(0, 2),
                  kind=st.sampled_from(["maxpool", "avgpool"]))
def test_random_2d_padded_pools_match_the_loop_reference(h, w, kh, kw, sh, sw, ph, pw, kind):
    """MaxPool2d / AvgPool2d with per-axis kernels, strides and paddings, after a
    convolution whose gradients pass through the pool."""
    hypothesis.assume(ph <= kh // 2 and pw <= kw // 2 and kh <= h + 2 * ph
                      and kw <= w + 2 * pw)
    pool = {"maxpool": sn.MaxPool2d, "avgpool": sn.AvgPool2d}[kind](
        (kh, kw), stride=(sh, sw), padding=(ph, pw))
    net = sn.Network(sn.Input((2, h, w)), sn.Conv2d(2, 1, activation="tanh"), pool,
                     sn.Flatten(), sn.Dense(2), loss="mse")
    model = net.compile(dtype="float64", seed=h + w)
    rng = np.random.default_rng(h * w + kh)
    X, T = rng.normal(size=(2, 2, h, w)), rng.normal(size=(2, 2))
    ref = [("conv", model.params["W1"], model.params["b1"], 1, 0, "tanh"),
           (kind, (kh, kw), (sh, sw), (ph, pw)), ("flatten",),
           ("dense", model.params["W4"], model.params["b4"], "linear")]
    L_ref, g_ref = reference(ref, X, T)
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(L_ref, rel=1e-12)
    for name, want in (("W1", g_ref[0][0]), ("b1", g_ref[0][1]), ("W4", g_ref[3][0])):
        np.testing.assert_allclose(g[name], want, rtol=1e-9, atol=1e-12, err_msg=name)


@hypothesis.settings(max_examples=12, deadline=None, derandomize=True)
@hypothesis.given(dims=st.sampled_from([1, 2]), cin=st.integers(1, 2), n=st.integers(3, 9),
                  k=st.integers(1, 3), stride=st.integers(1, 3), pad=st.integers(0, 3),
                  dil=st.integers(1, 3))
def test_random_dilated_convolutions_match_the_loop_reference(dims, cin, n, k, stride, pad,
                                                              dil):
    """Conv1d / Conv2d with random dilation, stride and padding (the padded range clipped
    with a coefficient other than 1 on the kernel index)."""
    span = dil * (k - 1) + 1
    hypothesis.assume(span <= n + 2 * pad)
    shape = (cin, n) if dims == 1 else (cin, n, n - 1 if span <= n - 1 + 2 * pad else n)
    cls = sn.Conv1d if dims == 1 else sn.Conv2d
    net = sn.Network(sn.Input(shape), cls(2, k, stride=stride, padding=pad, dilation=dil,
                                          activation="tanh"),
                     sn.Flatten(), sn.Dense(2), loss="mse")
    model = net.compile(dtype="float64", seed=n + k)
    rng = np.random.default_rng(n * dil + pad)
    X, T = rng.normal(size=(2, *shape)), rng.normal(size=(2, 2))
    ref = [("conv", model.params["W1"], model.params["b1"], stride, pad, "tanh", dil),
           ("flatten",), ("dense", model.params["W3"], model.params["b3"], "linear")]
    L_ref, g_ref = reference(ref, X, T)
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(L_ref, rel=1e-12)
    np.testing.assert_allclose(g["W1"], g_ref[0][0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g["b1"], g_ref[0][1], rtol=1e-9, atol=1e-12)
