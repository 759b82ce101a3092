"""Pooling with padding (PyTorch semantics): max pooling pads with −∞, average pooling
with zeros that count in the average (count_include_pad=True); padding ≤ kernel // 2.
Gradients against central differences, the loop reference and PyTorch; bad input,
save/load, summary."""

import numpy as np
import pytest

import symnet as sn
from conv_cases import assert_matches_torch, build, case_tests

CASES = {
    "max2d_k3_s2_p1": ((2, 7, 6), lambda: [
        sn.Conv2d(3, 2, activation="tanh"), sn.MaxPool2d(3, stride=2, padding=1),
        sn.Flatten(), sn.Dense(2)]),
    "avg2d_rect": ((2, 6, 7), lambda: [
        sn.Conv2d(2, 1, activation="tanh"), sn.AvgPool2d((2, 3), stride=(1, 2),
                                                         padding=(1, 1)),
        sn.Flatten(), sn.Dense(2)]),
    "max2d_first_layer_and_avg": ((1, 6, 6), lambda: [
        sn.MaxPool2d(2, stride=1, padding=1), sn.Conv2d(2, 3, activation="relu"),
        sn.AvgPool2d(3, stride=2, padding=1), sn.Flatten(), sn.Dense(2)]),
    # rows of ≥ 8 outputs: padding keeps the max-pool backward off the row form
    "max1d_long_rows": ((2, 20), lambda: [
        sn.Conv1d(3, 2, activation="tanh"), sn.MaxPool1d(2, padding=1),
        sn.MaxPool1d(3, stride=1, padding=1), sn.Flatten(), sn.Dense(2)]),
    "avg1d": ((3, 11), lambda: [
        sn.Conv1d(2, 2, activation="tanh"), sn.AvgPool1d(4, stride=3, padding=2),
        sn.Flatten(), sn.Dense(3)]),
}


def _build(name, **kw):
    return build(CASES[name], **kw)


# every case against float64 central differences and against the loop reference
test_gradients_match_central_differences, test_loss_and_gradients_match_the_loop_reference = \
    case_tests(CASES)


def test_max_pads_with_minus_infinity_and_avg_counts_the_zeros():
    """All inputs negative: a zero-padded maximum would give 0 at the borders."""
    X = -1.0 - np.arange(2 * 5, dtype=float).reshape(1, 2, 5) / 10
    mx = sn.Network(sn.Input((2, 5)), sn.MaxPool1d(3, stride=2, padding=1), loss="mse")
    got = mx.compile(dtype="float64").forward(X)
    expect = np.stack([X[..., 0:2].max(-1), X[..., 1:4].max(-1), X[..., 3:5].max(-1)], -1)
    np.testing.assert_array_equal(got, expect)
    av = sn.Network(sn.Input((2, 5)), sn.AvgPool1d(3, stride=2, padding=1), loss="mse")
    got = av.compile(dtype="float64").forward(X)
    expect = np.stack([X[..., 0:2].sum(-1) / 3, X[..., 1:4].sum(-1) / 3,
                       X[..., 3:5].sum(-1) / 3], -1)
    np.testing.assert_allclose(got, expect, rtol=1e-15)
    X2 = -np.ones((1, 1, 3, 3))
    got = sn.Network(sn.Input((1, 3, 3)), sn.MaxPool2d(2, padding=1), loss="mse") \
        .compile(dtype="float64").forward(X2)
    np.testing.assert_array_equal(got, -np.ones((1, 1, 2, 2)))


@pytest.mark.parametrize("dims", [1, 2])
def test_against_pytorch(dims):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    if dims == 2:
        net = sn.Network(sn.Input((2, 9, 8)), sn.Conv2d(3, 2, activation="relu"),
                         sn.MaxPool2d(3, stride=2, padding=1), sn.Conv2d(2, 1),
                         sn.AvgPool2d((2, 3), stride=(2, 1), padding=(1, 1)), sn.Flatten(),
                         sn.Dense(4), loss="softmax_cross_entropy")
        shape, conv = (2, 9, 8), F.conv2d
        mx = (F.max_pool2d, {"kernel_size": 3, "stride": 2, "padding": 1})
        av = (F.avg_pool2d, {"kernel_size": (2, 3), "stride": (2, 1), "padding": (1, 1)})
    else:
        net = sn.Network(sn.Input((2, 15)), sn.Conv1d(3, 2, activation="relu"),
                         sn.MaxPool1d(3, stride=2, padding=1), sn.Conv1d(2, 1),
                         sn.AvgPool1d(4, stride=3, padding=2), sn.Flatten(),
                         sn.Dense(4), loss="softmax_cross_entropy")
        shape, conv = (2, 15), F.conv1d
        mx = (F.max_pool1d, {"kernel_size": 3, "stride": 2, "padding": 1})
        av = (F.avg_pool1d, {"kernel_size": 4, "stride": 3, "padding": 2})
    model = net.compile(dtype="float64", seed=8)
    rng = np.random.default_rng(8)
    X, T = rng.normal(size=(4, *shape)), np.eye(4)[rng.integers(0, 4, 4)]
    P = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.params.items()}
    h = mx[0](F.relu(conv(torch.tensor(X), P["W1"], P["b1"])), **mx[1])
    h = av[0](conv(h, P["W3"], P["b3"]), **av[1]).flatten(1)
    o = h @ P["W6"].T + P["b6"]
    assert model.forward(X).shape == tuple(o.shape)
    assert_matches_torch(model, X, T, P, o)


@pytest.mark.parametrize("make, message", [
    (lambda: sn.MaxPool2d(3, padding=2, name="P"),
     r"layer 'P' \(MaxPool2d\(\(3, 3\)\)\): padding 2 must be at most half the kernel size "
     r"\(3 // 2 = 1\), got padding=2"),
    (lambda: sn.AvgPool1d(1, padding=1), r"padding 1 must be at most half the kernel size "
                                         r"\(1 // 2 = 0\)"),
    (lambda: sn.AvgPool2d((2, 4), padding=(1, 3)), r"padding 3 must be at most half"),
    (lambda: sn.MaxPool1d(3, padding=-1), r"padding must be an integer ≥ 0, got -1"),
    (lambda: sn.MaxPool2d(3, padding=(1,)), r"padding needs 2 numbers, got \(1,\)"),
    (lambda: sn.MaxPool2d(3, padding="same"), r"padding must be an integer ≥ 0, got 'same'"),
])
def test_bad_padding_names_the_layer(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_output_sizes_follow_pytorch():
    # (L + 2p − k) // s + 1, the padding on both sides
    net = sn.Network(sn.Input((1, 10)), sn.MaxPool1d(4, stride=3, padding=2), loss="mse")
    assert net.compile().forward(np.zeros((1, 1, 10))).shape == (1, 1, 4)
    net = sn.Network(sn.Input((1, 5, 4)), sn.AvgPool2d((2, 3), padding=(1, 1)), loss="mse")
    assert net.compile().forward(np.zeros((1, 1, 5, 4))).shape == (1, 1, 3, 2)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_round_trip(tmp_path, dtype):
    net, model, X, T = _build("max2d_first_layer_and_avg", dtype=dtype)
    X = X.astype(dtype)
    model.save(tmp_path / "p.npz")
    again = sn.load(tmp_path / "p.npz")
    assert again.network.describe() == net.describe()
    assert [d.get("padding") for d in net.describe()["layers"]] == \
        [[1, 1], [0, 0], [1, 1], None, None]   # the convolution always says its own
    np.testing.assert_array_equal(again.forward(X), model.forward(X))
    (L0, g0), (L1, g1) = model.loss_and_grad(X, T), again.loss_and_grad(X, T)
    assert L0 == L1 and all(np.array_equal(g0[k], g1[k]) for k in g0)


def test_unpadded_pools_describe_themselves_as_before():
    """No padding key without padding: model files written before padding existed
    rebuild to the same description and load."""
    d = sn.MaxPool2d(2).describe()
    assert d == {"kind": "maxpool2d", "kernel_size": [2, 2], "stride": [2, 2], "name": None}


def test_summary_and_formulas_show_the_padding():
    net = sn.Network(sn.Input((2, 7, 6)), *CASES["max2d_k3_s2_p1"][1](), loss="mse")
    s = net.compile().summary(batch_size=2)
    assert s.layers[1].shapes == "(3, 6, 5) → (3, 3, 3)"
    text = str(net.formulas())
    assert "MaxPool2d((3, 3), stride (2, 2), padding (1, 1))" in text
    assert "z_H2[b,c,y,x] = max_u,v H1[b,c,y*2 + u - 1,x*2 + v - 1]   (u < 3, v < 3; " \
        "−∞ outside H1)" in text
    assert r"-\infty \text{ outside } H" in net.formulas().latex()
    plain = sn.Network(sn.Input((2, 7, 6)), sn.MaxPool2d(3, stride=2), loss="mse")
    assert "max_u,v I[b,c,y*2 + u,x*2 + v]   (u < 3, v < 3)\n" in str(plain.formulas())
