"""1-D pooling (MaxPool1d, AvgPool1d) on (channels, length) inputs: gradients checked
against central differences, the loop reference and PyTorch; ties, bad input, save/load,
summary, training."""

import numpy as np
import pytest

import symnet as sn
from conv_reference import loss_and_grad as reference
from conv_cases import assert_matches_torch, build, case_tests

CASES = {
    "max_overlapping_then_avg": ((2, 13), lambda: [
        sn.Conv1d(3, 3, activation="tanh"), sn.MaxPool1d(3, stride=2), sn.AvgPool1d(2),
        sn.Flatten(), sn.Dense(2)]),
    "avg_stride1_then_max": ((3, 10), lambda: [
        sn.Conv1d(2, 2, padding=1, activation="relu"), sn.AvgPool1d(3, stride=1),
        sn.MaxPool1d(2), sn.Flatten(), sn.Dense(3, "tanh")]),
    # rows of ≥ 8 outputs: the max-pool backward's vectorised row form (windows apart)
    # and the accumulating form (windows overlap), a stride larger than the kernel
    "long_rows": ((2, 41), lambda: [
        sn.Conv1d(3, 2, activation="tanh"), sn.MaxPool1d(2), sn.MaxPool1d(3, stride=2),
        sn.AvgPool1d(2, stride=3), sn.Flatten(), sn.Dense(2)]),
    "pool_first": ((2, 9), lambda: [
        sn.MaxPool1d(2, stride=1), sn.Conv1d(2, 3, stride=2, activation="tanh"),
        sn.Flatten(), sn.Dense(2)]),
}


def _build(name, **kw):
    return build(CASES[name], **kw)


# every case against float64 central differences and against the loop reference
test_gradients_match_central_differences, test_loss_and_gradients_match_the_loop_reference = \
    case_tests(CASES)


def test_forward_equals_numpy_windows():
    """The pooled values themselves, from slices (not the loop reference)."""
    net = sn.Network(sn.Input((2, 11)), sn.MaxPool1d(3, stride=2), loss="mse")
    avg = sn.Network(sn.Input((2, 11)), sn.AvgPool1d(4, stride=3), loss="mse")
    X = np.random.default_rng(3).normal(size=(4, 2, 11))
    got = net.compile(dtype="float64").forward(X)
    assert got.shape == (4, 2, 5)
    np.testing.assert_array_equal(got, np.stack([X[:, :, 2 * i:2 * i + 3].max(axis=2)
                                                 for i in range(5)], axis=2))
    got = avg.compile(dtype="float64").forward(X)
    assert got.shape == (4, 2, 3)
    np.testing.assert_allclose(got, np.stack([X[:, :, 3 * i:3 * i + 4].mean(axis=2)
                                              for i in range(3)], axis=2), rtol=1e-14)


def test_max_pool_routes_ties_to_the_first_element():
    """H1[x] = X[x] (kernel [1, 0]) has ties in both windows of 3; ∂L/∂W1[0,0,1] reads
    X one past the element that got the gradient, so it tells first from last."""
    net = sn.Network(sn.Input((1, 7)), sn.Conv1d(1, 2, bias=False), sn.MaxPool1d(3),
                     sn.Flatten(), sn.Dense(1), loss="mse")
    model = net.compile(dtype="float64")
    model.params["W1"] = np.array([[[1.0, 0.0]]])
    model.params["W4"] = np.array([[1.0, 10.0]])
    model.params["b4"] = np.zeros(1)
    X = np.array([[[1.0, 2.0, 2.0, 5.0, 0.0, 5.0, 7.0]]])   # H1 = 1 2 2 | 5 0 5
    L, g = model.loss_and_grad(X, np.zeros((1, 1)))
    O = 2.0 + 10.0 * 5.0
    assert L == pytest.approx(O ** 2)
    # first of each tie: positions 1 and 3 (the last would give X[3] + 10·X[6] = 75)
    assert g["W1"][0, 0, 1] == pytest.approx(2 * O * (X[0, 0, 2] + 10 * X[0, 0, 4]))
    assert g["W1"][0, 0, 0] == pytest.approx(2 * O * (X[0, 0, 1] + 10 * X[0, 0, 3]))
    _, gr = reference([("conv", model.params["W1"], np.zeros(1), 1, 0, "linear"),
                       ("maxpool", 3, 3), ("flatten",),
                       ("dense", model.params["W4"], model.params["b4"], "linear")],
                      X, np.zeros((1, 1)))
    np.testing.assert_allclose(g["W1"], gr[0][0])
    assert "first (v) where" in str(net.formulas())


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net = sn.Network(sn.Input((2, 17)), sn.Conv1d(4, 3, padding=1, activation="relu"),
                     sn.MaxPool1d(3, stride=2), sn.Conv1d(3, 2, activation="tanh"),
                     sn.AvgPool1d(2), sn.Flatten(), sn.Dense(5),
                     loss="softmax_cross_entropy")
    model = net.compile(dtype="float64", seed=7)
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4, 2, 17))
    T = np.eye(5)[rng.integers(0, 5, 4)]
    P = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.params.items()}
    h = F.relu(F.conv1d(torch.tensor(X), P["W1"], P["b1"], padding=1))
    h = F.max_pool1d(h, 3, stride=2)
    h = torch.tanh(F.conv1d(h, P["W3"], P["b3"]))
    h = F.avg_pool1d(h, 2).flatten(1)
    o = h @ P["W6"].T + P["b6"]
    assert_matches_torch(model, X, T, P, o)


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("make, message", [
    (lambda: sn.Network(sn.Input((2, 4, 4)), sn.MaxPool1d(2, name="P"), loss="mse"),
     r"layer 'P' \(MaxPool1d\(\(2,\)\)\): needs an input of shape \(channels, length\), "
     r"got \(2, 4, 4\)"),
    (lambda: sn.Network(sn.Input(10), sn.AvgPool1d(2), loss="mse"),
     r"layer 'O' \(AvgPool1d\(\(2,\)\)\): needs an input of shape \(channels, length\), "
     r"got \(10,\)"),
    (lambda: sn.Network(sn.Input((2, 8)), sn.MaxPool2d(2), loss="mse"),
     r"needs an input of shape \(channels, height, width\), got \(2, 8\)"),
    (lambda: sn.Network(sn.Input((3, 4)), sn.MaxPool1d(5), loss="mse"),
     r"layer 'O' \(MaxPool1d\(\(5,\)\)\): the kernel \(5\) is larger than the padded input "
     r"\(4 \+ 2·0 = 4\); input shape \(3, 4\)"),
    (lambda: sn.MaxPool1d(2, stride=0), r"MaxPool1d.*stride must be an integer ≥ 1, got 0"),
    (lambda: sn.AvgPool1d(0), r"AvgPool1d.*kernel_size must be an integer ≥ 1, got 0"),
    (lambda: sn.MaxPool1d((2, 2)), r"kernel_size needs 1 number, got \(2, 2\)"),
    (lambda: sn.AvgPool1d(2.5), r"kernel_size must be an integer ≥ 1, got 2.5"),
    (lambda: sn.Network(sn.Input((2, 8)), sn.MaxPool1d(2), sn.Dense(2), loss="mse"),
     r"takes a vector input but the layer below gives shape \(2, 4\)"),
])
def test_bad_declarations_name_the_layer(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_batches_of_the_wrong_shape_are_refused():
    model = sn.Network(sn.Input((2, 8), name="I"), sn.MaxPool1d(2), sn.Flatten(),
                       sn.Dense(1), loss="mse").compile()
    with pytest.raises(ValueError, match=r"X must have shape \(batch, 2, 8\) for input "
                                         r"layer 'I', got shape \(3, 2, 9\)"):
        model.forward(np.zeros((3, 2, 9)))


# ------------------------------------------------------------------ the users' paths

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_round_trip(tmp_path, dtype):
    net, model, X, T = _build("long_rows", dtype=dtype)
    X = X.astype(dtype)
    model.save(tmp_path / "p.npz")
    again = sn.load(tmp_path / "p.npz")
    assert again.network.describe() == net.describe()
    assert [d["kind"] for d in net.describe()["layers"][1:4]] == \
        ["maxpool1d", "maxpool1d", "avgpool1d"]
    np.testing.assert_array_equal(again.forward(X), model.forward(X))
    (L0, g0), (L1, g1) = model.loss_and_grad(X, T), again.loss_and_grad(X, T)
    assert L0 == L1 and all(np.array_equal(g0[k], g1[k]) for k in g0)


def test_summary_shows_the_pooled_shapes():
    net = sn.Network(sn.Input((2, 13)), sn.Conv1d(3, 3), sn.MaxPool1d(3, stride=2),
                     sn.AvgPool1d(2), sn.Flatten(), sn.Dense(2), loss="mse")
    s = net.compile().summary(batch_size=4)
    rows = s.layers
    assert [r.shapes for r in rows[1:3]] == ["(3, 11) → (3, 5)", "(3, 5) → (3, 2)"]
    assert [(r.n_in, r.n_out) for r in rows[1:3]] == [(33, 15), (15, 6)]
    assert [r.params for r in rows[1:3]] == [0, 0]
    assert [r.flops_forward for r in rows[1:3]] == [0, 0]     # pooling is not counted
    text = str(s)
    assert "(3, 11) → (3, 5)" in text and "(3, 5) → (3, 2)" in text


def test_float32_agrees_and_training_reduces_the_loss():
    net, m64, X, T = _build("max_overlapping_then_avg", loss="softmax_cross_entropy")
    m32 = net.compile(dtype="float32")
    for k in m64.params:
        m32.params[k] = m64.params[k]
    assert sn.check_gradients(m32, X, T, verbose=False) < 1e-3
    rng = np.random.default_rng(0)
    Xb = rng.normal(size=(24, 2, 13)).astype(np.float32)
    Tb = np.eye(2)[rng.integers(0, 2, 24)]
    for method in ("sd", "sgd", "minibatch"):
        m = net.compile(dtype="float32", seed=1)
        before = m.loss(Xb, Tb)
        m.fit(Xb, Tb, method=method, epochs=15, batch_size=8, lr=0.05, seed=0,
              progress=False)
        assert m.loss(Xb, Tb) < 0.9 * before, method


def test_flatten_of_a_sequence_names_channel_and_position():
    net = sn.Network(sn.Input((3, 8), name="I"), sn.MaxPool1d(2, name="P"),
                     sn.Flatten(name="F"), sn.Dense(1), loss="mse")
    assert "F[b,c·4 + x] = P[b,c,x]   (a view: no copy)" in str(net.formulas())


@pytest.mark.parametrize("module", ["lang.conv", "io.files"])
def test_docstring_examples(module):
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(f"symnet.{module}"))
    assert result.attempted > 0 and result.failed == 0
