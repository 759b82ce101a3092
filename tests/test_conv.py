"""Convolution, pooling and tensor layers: gradients checked three ways, errors, users' paths."""

import numpy as np
import pytest
import sympy as sp

import symnet as sn
from conv_reference import loss_and_grad as reference
from conv_reference import conv2d as ref_conv2d
from conv_cases import assert_matches_torch, build, case_tests
from gradcheck import check

# Each case: input shape and a function giving the layers (tests/conv_cases.py builds it).
CASES = {
    "conv_stride2_pad1": ((2, 7, 6), lambda: [
        sn.Conv2d(3, 3, stride=2, padding=1, activation="tanh"), sn.Flatten(), sn.Dense(2)]),
    "conv_pool_conv": ((2, 8, 8), lambda: [
        sn.Conv2d(3, 3, padding="same", activation="relu"), sn.MaxPool2d(2),
        sn.Conv2d(2, 2, activation="tanh"), sn.AvgPool2d(3, stride=1), sn.Flatten(),
        sn.Dense(3)]),
    "rect_kernel_pool_stride": ((1, 6, 9), lambda: [
        sn.Conv2d(2, (2, 3), stride=(1, 2), padding=(1, 0), activation="tanh"),
        sn.MaxPool2d(3, stride=2), sn.Flatten(), sn.Dense(2, "tanh")]),
    # the convolution kernels' other paths: 10 and 9 output channels (register tiles of 8
    # rows and a remainder), 18×16 and 9×8 positions (column tiles of 32 and a remainder),
    # the second convolution's weight gradient with its delta transposed (few positions),
    # pooling rows of 9 outputs (the vectorised row form) and of 4 (per element)
    "wide_channels": ((2, 16, 18), lambda: [
        sn.Conv2d(10, 3, padding="same", activation="relu"), sn.MaxPool2d(2),
        sn.Conv2d(9, 3, padding=1, activation="tanh"), sn.MaxPool2d(2), sn.Flatten(),
        sn.Dense(3)]),
    "conv1d": ((3, 11), lambda: [
        sn.Conv1d(4, 3, stride=2, padding=2, activation="tanh"),
        sn.Conv1d(2, 2, activation="relu"), sn.Flatten(), sn.Dense(2)]),
}


def _build(name, **kw):
    return build(CASES[name], **kw)


# every case against float64 central differences and against the loop reference
test_gradients_match_central_differences, test_loss_and_gradients_match_the_loop_reference = \
    case_tests(CASES)


def test_rectangular_conv_matches_per_axis_loops():
    """Kernel (2, 3), stride (1, 2), padding (1, 0): forward against loops written here."""
    net = sn.Network(sn.Input((2, 5, 9)), sn.Conv2d(3, (2, 3), stride=(1, 2), padding=(1, 0)),
                     sn.Flatten(), sn.Dense(1), loss="mse")
    model = net.compile(dtype="float64", seed=2)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2, 2, 5, 9))
    W, b = model.params["W1"], model.params["b1"]
    OH, OW = (5 + 2 - 2) // 1 + 1, (9 - 3) // 2 + 1
    Z = np.zeros((2, 3, OH, OW))
    for n in range(2):
        for c in range(3):
            for y in range(OH):
                for x in range(OW):
                    s = b[c]
                    for k in range(2):
                        for u in range(2):
                            for v in range(3):
                                iy, ix = y + u - 1, 2 * x + v
                                if 0 <= iy < 5:
                                    s += W[c, k, u, v] * X[n, k, iy, ix]
                    Z[n, c, y, x] = s
    expect = Z.reshape(2, -1) @ model.params["W3"].T + model.params["b3"]
    np.testing.assert_allclose(model.forward(X), expect, rtol=1e-12)
    check(model, X, rng.normal(size=(2, 1)))


def test_max_pool_routes_ties_to_the_first_element():
    net = sn.Network(sn.Input((1, 4, 4)), sn.MaxPool2d(2), sn.Flatten(), sn.Dense(1),
                     loss="mse")
    model = net.compile(dtype="float64")
    model.params["W3"] = np.ones((1, 4))
    model.params["b3"] = np.zeros(1)
    net2 = sn.Network(sn.Input((1, 4, 4)), sn.Conv2d(1, 1, bias=False), sn.MaxPool2d(2),
                      sn.Flatten(), sn.Dense(1), loss="mse")
    m2 = net2.compile(dtype="float64")
    m2.params["W1"] = np.ones((1, 1, 1, 1))
    m2.params["W4"] = np.ones((1, 4))
    m2.params["b4"] = np.zeros(1)
    X = np.zeros((1, 1, 4, 4))
    X[0, 0, 0, 1] = X[0, 0, 1, 0] = 2.0     # a tie in the first window
    X[0, 0, 3, 3] = 1.0
    # L = (Σ max − t)²; ∂L/∂W1 = Σ over windows of 2(O − t)·(the routed input)
    L, g = m2.loss_and_grad(X, np.zeros((1, 1)))
    assert L == pytest.approx((2.0 + 0 + 0 + 1.0) ** 2)
    assert g["W1"].ravel()[0] == pytest.approx(2 * 3.0 * 3.0)
    ref = [("conv", m2.params["W1"], np.zeros(1), 1, 0, "linear"), ("maxpool", 2, 2),
           ("flatten",), ("dense", m2.params["W4"], m2.params["b4"], "linear")]
    # the reference routes each window's gradient to its first maximum: same gradient
    _, gr = reference(ref, X, np.zeros((1, 1)))
    np.testing.assert_allclose(g["W1"], gr[0][0])
    # the compiled route itself: perturbing the first of the tied elements moves O
    eps = 1e-3
    Xp = X.copy()
    Xp[0, 0, 0, 1] += eps
    assert model.forward(Xp)[0, 0] - model.forward(X)[0, 0] == pytest.approx(eps)


def test_depthwise_convolution_written_by_the_user_equals_numpy():
    c, y, x, u, v = sn.indices("c y x u v")
    dw = sn.Layer((3, 4, 5), lambda X, K: sp.Sum(K[c, u, v] * X[c, y + u, x + v],
                                                  (u, 0, 2), (v, 0, 1)),
                  index=(c, y, x), params={"K": (3, 3, 2)}, name="D")
    net = sn.Network(sn.Input((3, 6, 6)), dw, sn.Flatten(), sn.Dense(2), loss="mse")
    model = net.compile(dtype="float64", seed=4)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(2, 3, 6, 6))
    K = rng.normal(size=(3, 3, 2))
    model.params["K1"] = K
    H = np.zeros((2, 3, 4, 5))
    for n in range(2):
        for ch in range(3):
            for yy in range(4):
                for xx in range(5):
                    H[n, ch, yy, xx] = sum(K[ch, a, d] * X[n, ch, yy + a, xx + d]
                                           for a in range(3) for d in range(2))
    expect = H.reshape(2, -1) @ model.params["W3"].T + model.params["b3"]
    np.testing.assert_allclose(model.forward(X), expect, rtol=1e-12)
    check(model, X, rng.normal(size=(2, 2)))


def test_user_tensor_layer_with_padding_and_nonlinear_summand():
    """A padded user formula (zero outside) and a summand that sympy differentiates."""
    c, y, u = sn.indices("c y u")
    lay = sn.Layer((2, 5), lambda x, A: sp.tanh(sp.Sum(A[c, u] * x[c, y + u - 1] ** 3,
                                                       (u, 0, 2))),
                   index=(c, y), params={"A": (2, 3)})
    net = sn.Network(sn.Input((2, 5)), lay, sn.Flatten(), sn.Dense(1), loss="mse")
    model = net.compile(dtype="float64", seed=1)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3, 2, 5))
    A = model.params["A1"]
    H = np.zeros((3, 2, 5))
    for n in range(3):
        for ch in range(2):
            for yy in range(5):
                H[n, ch, yy] = np.tanh(sum(A[ch, a] * X[n, ch, yy + a - 1] ** 3
                                           for a in range(3) if 0 <= yy + a - 1 < 5))
    expect = H.reshape(3, -1) @ model.params["W3"].T + model.params["b3"]
    np.testing.assert_allclose(model.forward(X), expect, rtol=1e-12)
    check(model, X, rng.normal(size=(3, 1)))


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net = sn.Network(sn.Input((2, 9, 9)), sn.Conv2d(4, 3, stride=2, padding=1,
                                                   activation="relu"),
                     sn.MaxPool2d(2), sn.Conv2d(3, 2, padding=1, activation="tanh"),
                     sn.AvgPool2d(2), sn.Flatten(), sn.Dense(5),
                     loss="softmax_cross_entropy")
    model = net.compile(dtype="float64", seed=5)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4, 2, 9, 9))
    T = np.eye(5)[rng.integers(0, 5, 4)]
    P = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.params.items()}
    h = F.relu(F.conv2d(torch.tensor(X), P["W1"], P["b1"], stride=2, padding=1))
    h = F.max_pool2d(h, 2)
    h = torch.tanh(F.conv2d(h, P["W3"], P["b3"], padding=1))
    h = F.avg_pool2d(h, 2).flatten(1)
    o = h @ P["W6"].T + P["b6"]
    assert_matches_torch(model, X, T, P, o)


def test_float32_agrees_with_float64_and_training_reduces_the_loss():
    net, m64, X, T = _build("conv_pool_conv", loss="softmax_cross_entropy")
    m32 = net.compile(dtype="float32")
    for k in m64.params:
        m32.params[k] = m64.params[k]
    assert sn.check_gradients(m32, X, T, verbose=False) < 1e-3   # via a float64 twin
    L64, g64 = m64.loss_and_grad(X, T)
    L32, g32 = m32.loss_and_grad(X, T)
    assert L32 == pytest.approx(L64, rel=1e-5)
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=2e-3, atol=1e-5, err_msg=k)
    rng = np.random.default_rng(0)
    Xb = rng.normal(size=(24, 2, 8, 8)).astype(np.float32)
    Tb = np.eye(3)[rng.integers(0, 3, 24)]
    for method in ("sd", "sgd", "minibatch"):
        m = net.compile(dtype="float32", seed=1)
        before = m.loss(Xb, Tb)
        hist = m.fit(Xb, Tb, method=method, epochs=15, lr=0.05,
                     **({"batch_size": 8} if method == "minibatch" else {}), seed=0,
                     progress=False)
        assert m.loss(Xb, Tb) < 0.9 * before, method
        assert hist.epochs == 15


def test_save_load_round_trip(tmp_path):
    net, model, X, _ = _build("conv1d")
    path = tmp_path / "m.npz"
    model.save(path)
    again = sn.load(path)
    np.testing.assert_array_equal(again.forward(X), model.forward(X))
    net2, model2, X2, _ = _build("conv_pool_conv")
    model2.save(path)
    np.testing.assert_array_equal(sn.load(path).forward(X2), model2.forward(X2))


def test_summary_counts_the_convolution_flops():
    net = sn.Network(sn.Input((1, 6, 6)), sn.Conv2d(2, 3), sn.Conv2d(4, 3), sn.Flatten(),
                     sn.Dense(1), loss="mse")
    s = net.compile().summary(batch_size=5)
    first = 2 * 5 * 2 * 4 * 4 * 1 * 9    # 2·B·out·OH·OW·in·kh·kw
    second = 2 * 5 * 4 * 2 * 2 * 2 * 9
    assert [r.flops_forward for r in s.layers[:2]] == [first, second]
    # the first layer's input needs no gradient: δ·W is left out there only
    assert [r.flops_backward for r in s.layers[:2]] == [first, 2 * second]


def test_forward_keeps_the_input_batch_layout():
    net = sn.Network(sn.Input((1, 5, 5)), sn.Conv2d(2, 3, padding=1), loss="mse")
    model = net.compile(dtype="float64")
    X = np.random.default_rng(0).normal(size=(3, 1, 5, 5))
    out = model.forward(X)
    assert out.shape == (3, 2, 5, 5)
    b = model.params["b1"]
    expect = ref_conv2d(X, model.params["W1"], 1, 1) + b[None, :, None, None]
    np.testing.assert_allclose(out, expect, rtol=1e-12)


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("make, message", [
    (lambda: sn.Network(sn.Input((1, 3, 3)), sn.Conv2d(2, 5, padding=0), loss="mse"),
     r"layer 'O' \(Conv2d\(2\)\): the kernel \(5\) is larger than the padded input "
     r"\(3 \+ 2·0 = 3\)"),
    (lambda: sn.Conv2d(2, 3, stride=0), r"stride must be an integer ≥ 1, got 0"),
    (lambda: sn.Network(sn.Input((1, 4, 4)), sn.MaxPool2d(5), loss="mse"),
     r"kernel \(5\) is larger than the padded input"),
    (lambda: sn.Network(sn.Input(10), sn.Conv2d(2, 3), loss="mse"),
     r"needs an input of shape \(channels, height, width\), got \(10,\)"),
    (lambda: sn.Network(sn.Input((1, 4, 4)), sn.Conv2d(2, 3), sn.Dense(2), loss="mse"),
     r"layer 'O' takes a vector input but the layer below gives shape \(2, 2, 2\); "
     r"put sn.Flatten\(\) before it"),
    (lambda: sn.Network(sn.Input((3, 8)), sn.Conv2d(2, 3), loss="mse"),
     r"needs an input of shape \(channels, height, width\), got \(3, 8\)"),
    (lambda: sn.Conv2d(2, 4, padding="same"), r"padding='same' needs stride 1 and an odd"),
])
def test_bad_declarations_name_the_layer(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def _user(shape, formula, params, index="c y"):
    return sn.Layer(shape, formula, index=sn.indices(index), params=params, name="U")


def test_offsets_leaving_the_array_are_refused():
    c, y, u = sn.indices("c y u")
    # reads x[c, y + 2] for y up to 4: beyond length 5, and the summand is not zero there
    lay = _user((2, 5), lambda x, A: sp.Sum(A[c, u] + x[c, y + u], (u, 0, 2)), {"A": (2, 3)})
    with pytest.raises(ValueError, match=r"layer 'U': x\[c, u \+ y\] reaches positions "
                                         r"0\.\.6 of a dimension of length 5"):
        sn.Network(sn.Input((2, 5)), lay, sn.Flatten(), sn.Dense(1), loss="mse").graph()
    # a parameter read past its shape: channel count that does not match
    lay = _user((3, 5), lambda x, A: sp.Sum(A[c, u] * x[c, y], (u, 0, 2)), {"A": (2, 3)})
    with pytest.raises(ValueError, match=r"A\[c, u\] reaches positions 0\.\.2 of a dimension "
                                         r"of length 2"):
        sn.Network(sn.Input((3, 5)), lay, sn.Flatten(), sn.Dense(1), loss="mse").graph()
    lay = _user((2, 5), lambda x: x[c, y, 0], {})
    with pytest.raises(ValueError, match=r"x\[c, y, 0\] has 3 indices but x has shape \(2, 5\)"):
        sn.Network(sn.Input((2, 5)), lay, sn.Flatten(), sn.Dense(1), loss="mse").graph()


def test_sums_that_subscript_nothing_or_overflow_the_c_are_refused():
    c, y, u = sn.indices("c y u")
    lay = _user((2, 5), lambda x: sp.Sum(x[c, y], (u, 0, 2)), {})
    with pytest.raises(ValueError, match=r"layer 'U': the sum index u subscripts no array"):
        sn.Network(sn.Input((2, 5)), lay, sn.Flatten(), sn.Dense(1), loss="mse").graph()
    lay = _user((2, 5), lambda x: sp.Sum(x[c, y + u], (u, 0, 2 ** 31)), {})
    with pytest.raises(ValueError, match=r"the sum over u runs to 2147483648, beyond a C int"):
        sn.Network(sn.Input((2, 5)), lay, sn.Flatten(), sn.Dense(1), loss="mse").graph()


def test_batches_of_the_wrong_shape_are_refused():
    conv = sn.Network(sn.Input((2, 5, 5), name="I"), sn.Conv2d(2, 3), sn.Flatten(),
                      sn.Dense(1), loss="mse").compile()
    with pytest.raises(ValueError, match=r"X must have shape \(batch, 2, 5, 5\) for input "
                                         r"layer 'I', got shape \(4, 50\)"):
        conv.forward(np.zeros((4, 50)))
    with pytest.raises(ValueError, match=r"got shape \(4, 3, 5, 5\)"):   # channels
        conv.forward(np.zeros((4, 3, 5, 5)))
    with pytest.raises(ValueError, match=r"for one example use X\[None\]"):
        conv.forward(np.zeros((2, 5, 5)))
    dense = sn.Network(sn.Input(25, name="I"), sn.Dense(1), loss="mse").compile()
    with pytest.raises(ValueError, match=r"X must be 2-D \(batch, 25\).*got shape "
                                         r"\(4, 1, 5, 5\)"):
        dense.forward(np.zeros((4, 1, 5, 5)))


def test_conv1d_against_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net = sn.Network(sn.Input((3, 12)), sn.Conv1d(4, 3, stride=2, padding=1, activation="tanh"),
                     sn.Conv1d(2, 2), sn.Flatten(), sn.Dense(2),
                     loss="mse")
    model = net.compile(dtype="float64", seed=6)
    rng = np.random.default_rng(6)
    X, T = rng.normal(size=(3, 3, 12)), rng.normal(size=(3, 2))
    P = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.params.items()}
    h = torch.tanh(F.conv1d(torch.tensor(X), P["W1"], P["b1"], stride=2, padding=1))
    h = F.conv1d(h, P["W2"], P["b2"]).flatten(1)
    o = h @ P["W4"].T + P["b4"]
    loss = ((o - torch.tensor(T)) ** 2).mean()
    loss.backward()
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(loss.item(), rel=1e-10)
    for k, p in P.items():
        np.testing.assert_allclose(g[k], p.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=k)


def test_index_names_that_the_c_uses_are_refused():
    b, y = sn.indices("b y")
    with pytest.raises(ValueError, match=r"index name 'b' is not allowed"):
        sn.Layer((2, 3), lambda x: x[b, y], index=(b, y))


def test_an_array_named_like_a_loop_index_computes_like_any_other_name():
    """The input named c beside the index c: the array is written sn_u_c in the C."""
    def build(name):
        c, y = sn.indices("c y")
        lay = sn.Layer((2, 3), lambda x: x[c, y] ** 2, index=(c, y))
        return sn.Network(sn.Input((2, 3), name=name), lay, sn.Flatten(), sn.Dense(1),
                          loss="mse")
    a = build("c").compile(dtype="float64", seed=0)
    b = build("I").compile(dtype="float64", seed=0)
    assert "sn_u_c" in a.c_source
    X = np.random.default_rng(0).normal(size=(4, 2, 3))
    T = np.ones((4, 1))
    np.testing.assert_array_equal(a.forward(X), b.forward(X))
    (la, ga), (lb, gb) = a.loss_and_grad(X, T), b.loss_and_grad(X, T)
    assert la == lb and all(np.array_equal(ga[k], gb[k]) for k in ga)


@pytest.mark.parametrize("pool, rows", [(sn.MaxPool2d(2), True), (sn.MaxPool2d(3, stride=2), False),
                                        (sn.MaxPool2d((2, 3), stride=(2, 2)), False)])
def test_max_pool_backward_writes_once_only_where_windows_do_not_overlap(pool, rows):
    """The row form assigns each input gradient element once; overlapping windows
    (kernel 3, stride 2; or width 3, stride 2) must keep accumulating."""
    net = sn.Network(sn.Input((1, 17, 20)), sn.Conv2d(2, 1), pool, sn.Flatten(), sn.Dense(1),
                     loss="mse")
    src = net.compile(dtype="float64").c_source
    assert ("the windows do not overlap" in src) == rows
    assert ("const int better = e > best" in src) == (not rows)


@pytest.mark.parametrize("make, message", [
    (lambda: sn.Conv2d(8, 3, "relu"),
     r"^layer 'Conv2d\(8\)': stride must be an integer ≥ 1, got 'relu'; an activation goes "
     r"by name: activation='relu'$"),
    (lambda: sn.Conv2d(8, 3, 1, "full"), r"padding must be an integer ≥ 0, got 'full'$"),
    (lambda: sn.Conv2d(0, 3), r"^layer 'Conv2d': out_channels must be"),
    (lambda: sn.MaxPool2d(0), r"^layer 'MaxPool2d': kernel_size must be"),
])
def test_a_misplaced_or_refused_argument_is_said_plainly(make, message):
    """Conv2d(8, 3, "relu") put the activation where the stride goes; a refused first
    argument was shown as 'Conv2d(?)'."""
    with pytest.raises(ValueError, match=message):
        make()


def test_padding_valid_is_no_padding_as_in_pytorch():
    a = sn.Network(sn.Input((1, 6, 6)), sn.Conv2d(2, 3, padding="valid", name="C"),
                   loss="mse").compile(dtype="float64", seed=0)
    b = sn.Network(sn.Input((1, 6, 6)), sn.Conv2d(2, 3, padding=0, name="C"),
                   loss="mse").compile(dtype="float64", seed=0)
    X = np.random.default_rng(0).normal(size=(2, 1, 6, 6))
    assert a.network.describe() == b.network.describe()
    np.testing.assert_array_equal(a.forward(X), b.forward(X))
    assert a.forward(X).shape == (2, 2, 4, 4)


def test_an_image_batch_with_channels_last_is_pointed_to_channels_first():
    m = sn.Network(sn.Input((1, 6, 6), name="img"), sn.Conv2d(2, 3), sn.Flatten(),
                   sn.Dense(2), loss="mse").compile(dtype="float64", seed=0)
    X = np.random.default_rng(0).normal(size=(3, 6, 6, 1))
    with pytest.raises(ValueError, match=r"got shape \(3, 6, 6, 1\); channels come first, as "
                                         r"PyTorch's: np.transpose\(X, \(0, 3, 1, 2\)\)$"):
        m.forward(X)
    assert m.forward(np.transpose(X, (0, 3, 1, 2))).shape == (3, 2)   # the hint works
    seq = sn.Network(sn.Input((5, 3), name="s"), sn.GRU(2), loss="mse").compile(seed=0)
    with pytest.raises(ValueError, match=r"\(4, 3, 5\); its two axes swapped\? "
                                         r"np.swapaxes\(X, 1, 2\)$"):
        seq.forward(np.zeros((4, 3, 5)))


def test_a_batch_of_four_axes_rotated_gets_no_hint_meant_for_images():
    """The hints are for (C, H, W) and two-axis inputs; (A, B, C, D) rotated is neither, and
    np.swapaxes would not mend it."""
    m = sn.Network(sn.Input((2, 3, 4, 5), name="V"), sn.Flatten(), sn.Dense(1),
                   loss="mse").compile(dtype="float64", seed=0)
    with pytest.raises(ValueError, match=r"got shape \(1, 3, 4, 5, 2\)$"):
        m.forward(np.zeros((1, 3, 4, 5, 2)))
