"""Dilated convolutions (PyTorch's dilation): Conv1d/Conv2d with taps d apart, with
stride and padding.  Gradients against central differences, the loop reference and
PyTorch; bad input, save/load, summary, training."""

import numpy as np
import pytest

import symnet as sn
from conv_cases import assert_matches_torch, build, case_tests

CASES = {
    "d2_pad2": ((2, 9, 8), lambda: [
        sn.Conv2d(3, 3, dilation=2, padding=2, activation="tanh"), sn.Flatten(),
        sn.Dense(2)]),
    "rect_stride_pad_then_pool": ((2, 10, 11), lambda: [
        sn.Conv2d(3, (2, 3), stride=(1, 2), padding=(1, 2), dilation=(3, 2),
                  activation="relu"),
        sn.MaxPool2d(2), sn.Conv2d(2, 2, dilation=(1, 2), activation="tanh"), sn.Flatten(),
        sn.Dense(2)]),
    "same": ((1, 7, 7), lambda: [
        sn.Conv2d(2, 3, dilation=3, padding="same", activation="tanh"),
        sn.Conv2d(2, 3, dilation=2, padding="same"), sn.Flatten(), sn.Dense(2)]),
    "conv1d": ((3, 17), lambda: [
        sn.Conv1d(4, 3, stride=2, padding=3, dilation=3, activation="tanh"),
        sn.Conv1d(2, 2, dilation=2, activation="relu"), sn.Flatten(), sn.Dense(2)]),
}


def _build(name, **kw):
    return build(CASES[name], **kw)


# every case against float64 central differences and against the loop reference
test_gradients_match_central_differences, test_loss_and_gradients_match_the_loop_reference = \
    case_tests(CASES)


def test_forward_equals_per_tap_slices():
    """Z = Σ over taps of W[:, :, u, v] applied to the input shifted by (u·d, v·d): numpy
    slices, not loops over positions."""
    net = sn.Network(sn.Input((2, 8, 9)), sn.Conv2d(3, (2, 3), dilation=(3, 2)), loss="mse")
    model = net.compile(dtype="float64", seed=1)
    X = np.random.default_rng(1).normal(size=(2, 2, 8, 9))
    W, b = model.params["W1"], model.params["b1"]
    OH, OW = 8 - 3 * 1, 9 - 2 * 2
    Z = np.zeros((2, 3, OH, OW)) + b[None, :, None, None]
    for u in range(2):
        for v in range(3):
            Z += np.einsum("ck,bkyx->bcyx", W[:, :, u, v],
                           X[:, :, 3 * u:3 * u + OH, 2 * v:2 * v + OW])
    np.testing.assert_allclose(model.forward(X), Z, rtol=1e-12)


@pytest.mark.parametrize("dims", [1, 2])
def test_against_pytorch(dims):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    if dims == 2:
        net = sn.Network(sn.Input((2, 12, 11)),
                         sn.Conv2d(4, 3, stride=2, padding=2, dilation=2, activation="relu"),
                         sn.Conv2d(3, (2, 3), padding=(1, 2), dilation=(2, 3)),
                         sn.Flatten(), sn.Dense(5), loss="softmax_cross_entropy")
        shape, conv = (2, 12, 11), F.conv2d
        a = {"stride": 2, "padding": 2, "dilation": 2}
        c = {"padding": (1, 2), "dilation": (2, 3)}
    else:
        net = sn.Network(sn.Input((2, 19)),
                         sn.Conv1d(4, 3, stride=2, padding=2, dilation=2, activation="relu"),
                         sn.Conv1d(3, 2, padding=3, dilation=3),
                         sn.Flatten(), sn.Dense(5), loss="softmax_cross_entropy")
        shape, conv = (2, 19), F.conv1d
        a = {"stride": 2, "padding": 2, "dilation": 2}
        c = {"padding": 3, "dilation": 3}
    model = net.compile(dtype="float64", seed=9)
    rng = np.random.default_rng(9)
    X, T = rng.normal(size=(4, *shape)), np.eye(5)[rng.integers(0, 5, 4)]
    P = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.params.items()}
    h = F.relu(conv(torch.tensor(X), P["W1"], P["b1"], **a))
    h = conv(h, P["W2"], P["b2"], **c).flatten(1)
    o = h @ P["W4"].T + P["b4"]
    assert_matches_torch(model, X, T, P, o)


@pytest.mark.parametrize("make, message", [
    (lambda: sn.Conv2d(2, 3, dilation=0, name="C"),
     r"layer 'C' \(Conv2d\(2\)\): dilation must be an integer ≥ 1, got 0"),
    (lambda: sn.Conv1d(2, 3, dilation=(2, 2)), r"dilation needs 1 number, got \(2, 2\)"),
    (lambda: sn.Network(sn.Input((1, 6, 6)), sn.Conv2d(2, 3, dilation=3), loss="mse"),
     r"layer 'O' \(Conv2d\(2\)\): the kernel \(3 dilated by 3: 7\) is larger than the padded "
     r"input \(6 \+ 2·0 = 6\)"),
    (lambda: sn.Network(sn.Input((1, 4)), sn.Conv1d(2, 4, dilation=2, padding=1), loss="mse"),
     r"the kernel \(4 dilated by 2: 7\) is larger than the padded input \(4 \+ 2·1 = 6\)"),
    (lambda: sn.Conv2d(2, 4, dilation=2, padding="same"),
     r"padding='same' needs stride 1 and an odd kernel"),
])
def test_bad_dilation_names_the_layer(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_round_trip(tmp_path, dtype):
    net, model, X, T = _build("rect_stride_pad_then_pool", dtype=dtype)
    X = X.astype(dtype)
    model.save(tmp_path / "d.npz")
    again = sn.load(tmp_path / "d.npz")
    assert again.network.describe() == net.describe()
    assert [d.get("dilation") for d in net.describe()["layers"][:3]] == [[3, 2], None, [1, 2]]
    np.testing.assert_array_equal(again.forward(X), model.forward(X))
    (L0, g0), (L1, g1) = model.loss_and_grad(X, T), again.loss_and_grad(X, T)
    assert L0 == L1 and all(np.array_equal(g0[k], g1[k]) for k in g0)


def test_undilated_convolutions_describe_themselves_as_before():
    assert "dilation" not in sn.Conv2d(2, 3).describe()
    assert sn.Conv2d(2, 3, dilation=(1, 1)).describe() == sn.Conv2d(2, 3).describe()


def test_summary_counts_the_dilated_convolution_like_any_other():
    """The flops of a convolution do not depend on the spacing of its taps."""
    def rows(dilation):
        net = sn.Network(sn.Input((2, 9, 9)), sn.Conv2d(3, 3, padding=dilation,
                                                        dilation=dilation),
                         sn.Conv2d(4, 3, padding=dilation, dilation=dilation),
                         sn.Flatten(), sn.Dense(1), loss="mse")
        return net.compile().summary(batch_size=2).layers[:2]
    plain, dilated = rows(1), rows(2)
    assert [r.shapes for r in dilated] == ["(2, 9, 9) → (3, 9, 9)", "(3, 9, 9) → (4, 9, 9)"]
    first = 2 * 2 * 3 * 9 * 9 * 2 * 9
    assert [r.flops_forward for r in dilated] == [r.flops_forward for r in plain] == \
        [first, 2 * 2 * 4 * 9 * 9 * 3 * 9]
    assert [r.flops_backward for r in dilated] == [r.flops_backward for r in plain]


def test_float32_agrees_and_training_reduces_the_loss():
    net, m64, X, T = _build("rect_stride_pad_then_pool", loss="softmax_cross_entropy")
    m32 = net.compile(dtype="float32")
    for k in m64.params:
        m32.params[k] = m64.params[k]
    L64, g64 = m64.loss_and_grad(X, T)
    L32, g32 = m32.loss_and_grad(X, T)
    assert L32 == pytest.approx(L64, rel=1e-5)
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=2e-3, atol=1e-5, err_msg=k)
    # the finite-difference check of a float32 model, on a smooth network (tanh, linear:
    # no ReLU or max kinks for the differences to step across)
    _, m_s, X_s, T_s = _build("same", dtype="float32")
    assert sn.check_gradients(m_s, X_s, T_s, verbose=False) < 1e-3
    rng = np.random.default_rng(0)
    Xb = rng.normal(size=(24, 2, 10, 11)).astype(np.float32)
    Tb = np.eye(2)[rng.integers(0, 2, 24)]
    for method in ("sd", "sgd", "minibatch"):
        m = net.compile(dtype="float32", seed=1)
        before = m.loss(Xb, Tb)
        m.fit(Xb, Tb, method=method, epochs=15, lr=0.05,
              **({"batch_size": 8} if method == "minibatch" else {}), seed=0,
              progress=False)
        assert m.loss(Xb, Tb) < 0.9 * before, method
