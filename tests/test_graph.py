"""Networks as any composition: residual, two-input, two-output, shared-weight
and unrolled recurrent networks.

Every gradient is checked three ways: float64 central differences
(tests/gradcheck.py), an independent numpy back-propagation written here by
hand, and PyTorch's autograd on the same forward pass when torch is
installed.  The forward passes below are written once for numpy and torch
(``xp``); the numpy gradients are not taken from them but derived by hand.
"""

import json

import numpy as np
import pytest
from gradcheck import check

import symnet as sn

try:
    import torch
except ImportError:   # optional: the torch comparisons skip
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


# ----------------------------------------------------------- array helpers

def _xp(a):
    return torch if torch is not None and isinstance(a, torch.Tensor) else np


def tanh(z):
    return _xp(z).tanh(z)


def sigmoid(z):
    return 1 / (1 + _xp(z).exp(-z))


def mse(O, T):
    return ((O - T) ** 2).mean(1).mean(0)


def bce(O, T):
    xp = _xp(O)
    return (-(T * xp.log(O) + (1 - T) * xp.log(1 - O))).mean(1).mean(0)


def softmax_xent(O, T):
    xp = _xp(O)
    m = O.max(1, keepdims=True) if xp is np else O.max(1, keepdim=True).values
    lse = m[:, 0] + xp.log(xp.exp(O - m).sum(1))
    return (lse * T.sum(1) - (T * O).sum(1)).mean(0)


def softmax(O):
    e = np.exp(O - O.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def dense(X, W, b):
    return X @ W.T + b


def torch_grads(loss_fn, params: dict, *data):
    """∂loss/∂params by PyTorch autograd, in float64."""
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    td = [torch.tensor(d, dtype=torch.float64) for d in data]
    L = loss_fn(tp, *td)
    L.backward()
    return float(L.detach()), {k: v.grad.numpy() for k, v in tp.items()}


def assert_grads(got: dict, want: dict, rtol=1e-9, atol=1e-12):
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol, err_msg=k)


# ------------------------------------------------------------ residual net

def residual_net():
    I = sn.Input(3, name="I")
    H1 = sn.Dense(3, "tanh", name="H1")(I)
    R = sn.Add(name="R")([I, H1])
    O = sn.Dense(2, name="O")(R)
    return sn.Network(I, O, loss="mse")


def residual_loss(p, X, T):
    H1 = tanh(dense(X, p["W1"], p["b1"]))
    return mse(dense(X + H1, p["W3"], p["b3"]), T)


def residual_numpy(p, X, T):
    B = X.shape[0]
    H1 = np.tanh(dense(X, p["W1"], p["b1"]))
    R = X + H1
    O = dense(R, p["W3"], p["b3"])
    dO = 2 * (O - T) / (B * O.shape[1])
    dR = dO @ p["W3"]
    dz1 = dR * (1 - H1 ** 2)          # ∂L/∂H1 = ∂L/∂R (from R)
    return {"W1": dz1.T @ X, "b1": dz1.sum(0), "W3": dO.T @ R, "b3": dO.sum(0)}


# ----------------------------------------------------------- two-input net

def two_input_net():
    A, Bi = sn.Input(3, name="A"), sn.Input(2, name="B")
    HA = sn.Dense(4, "tanh", name="HA")(A)
    HB = sn.Dense(4, "sigmoid", name="HB")(Bi)
    G = sn.Multiply(name="G")([HA, HB])
    C = sn.Concatenate(name="C")([G, HA])
    O = sn.Dense(3, name="O")(C)
    return sn.Network([A, Bi], O, loss="softmax_cross_entropy")


def two_input_forward(p, A, Bi):
    HA = tanh(dense(A, p["W1"], p["b1"]))
    HB = sigmoid(dense(Bi, p["W2"], p["b2"]))
    G = HA * HB
    xp = _xp(A)
    C = xp.concatenate([G, HA], 1) if xp is np else torch.cat([G, HA], 1)
    return HA, HB, G, C, dense(C, p["W5"], p["b5"])


def two_input_loss(p, A, Bi, T):
    return softmax_xent(two_input_forward(p, A, Bi)[-1], T)


def two_input_numpy(p, A, Bi, T):
    HA, HB, _, C, O = two_input_forward(p, A, Bi)
    dO = (softmax(O) * T.sum(1, keepdims=True) - T) / A.shape[0]
    dC = dO @ p["W5"]
    dG = dC[:, :4]
    dHA = dC[:, 4:] + dG * HB          # from C and from G
    dHB = dG * HA
    dz1 = dHA * (1 - HA ** 2)
    dz2 = dHB * HB * (1 - HB)
    return {"W1": dz1.T @ A, "b1": dz1.sum(0), "W2": dz2.T @ Bi, "b2": dz2.sum(0),
            "W5": dO.T @ C, "b5": dO.sum(0)}


# ---------------------------------------------------------- two-output net

WEIGHTS = {"O1": 1.0, "O2": 0.5}


def two_output_net():
    I = sn.Input(3, name="I")
    H1 = sn.Dense(5, "tanh", name="H1")(I)
    O1 = sn.Dense(2, "sigmoid", name="O1")(H1)
    O2 = sn.Dense(3, name="O2")(H1)
    return sn.Network(I, [O1, O2], loss={"O1": "bce", "O2": "mse"}, loss_weights=WEIGHTS)


def two_output_loss(p, X, T1, T2):
    H1 = tanh(dense(X, p["W1"], p["b1"]))
    O1 = sigmoid(dense(H1, p["W2"], p["b2"]))
    O2 = dense(H1, p["W3"], p["b3"])
    return WEIGHTS["O1"] * bce(O1, T1) + WEIGHTS["O2"] * mse(O2, T2)


def two_output_numpy(p, X, T1, T2):
    B = X.shape[0]
    H1 = np.tanh(dense(X, p["W1"], p["b1"]))
    O1 = sigmoid(dense(H1, p["W2"], p["b2"]))
    O2 = dense(H1, p["W3"], p["b3"])
    dz2 = WEIGHTS["O1"] * (O1 - T1) / (B * 2)          # sigmoid + BCE
    dO2 = WEIGHTS["O2"] * 2 * (O2 - T2) / (B * 3)
    dH1 = dz2 @ p["W2"] + dO2 @ p["W3"]                # from O1 + from O2
    dz1 = dH1 * (1 - H1 ** 2)
    return {"W1": dz1.T @ X, "b1": dz1.sum(0), "W2": dz2.T @ H1, "b2": dz2.sum(0),
            "W3": dO2.T @ H1, "b3": dO2.sum(0)}


# ------------------------------------------------------------- shared net

def shared_net():
    I = sn.Input(3, name="I")
    d = sn.Dense(3, "tanh", name="d")
    O = sn.Dense(2, name="O")(d(d(I)))
    return sn.Network(I, O, loss="mse")


def untied_net():
    return sn.Network(sn.Input(3, name="I"), sn.Dense(3, "tanh", name="d"),
                      sn.Dense(3, "tanh", name="d_2"), sn.Dense(2, name="O"), loss="mse")


def shared_loss(p, X, T):
    H = tanh(dense(tanh(dense(X, p["W1"], p["b1"])), p["W1"], p["b1"]))
    return mse(dense(H, p["W3"], p["b3"]), T)


# ------------------------------------------------------------------- RNN

STEPS, FEAT, UNITS = 4, 2, 5


def rnn_net():
    S = sn.Input((STEPS, FEAT), name="S")
    h = sn.recurrent.unroll(sn.recurrent.RNNCell(UNITS, "tanh"), STEPS)(S)
    return sn.Network(S, sn.Dense(1, name="O")(h), loss="mse")


def rnn_loss(p, X, T):
    h = 0
    for t in range(STEPS):
        z = dense(X[:, t], p["W2"], p["b2"])
        h = tanh(z if t == 0 else z + h @ p["U2"].T)
    return mse(dense(h, p["W9"], p["b9"]), T)


def rnn_bptt(p, X, T):
    """Back-propagation through time, by hand."""
    B = X.shape[0]
    hs = [np.zeros((B, UNITS))]
    for t in range(STEPS):
        hs.append(np.tanh(dense(X[:, t], p["W2"], p["b2"]) + hs[-1] @ p["U2"].T))
    O = dense(hs[-1], p["W9"], p["b9"])
    dO = 2 * (O - T) / B
    g = {"W9": dO.T @ hs[-1], "b9": dO.sum(0), "W2": 0, "U2": 0, "b2": 0}
    dh = dO @ p["W9"]
    for t in range(STEPS, 0, -1):
        dz = dh * (1 - hs[t] ** 2)
        g["W2"] = g["W2"] + dz.T @ X[:, t - 1]
        g["U2"] = g["U2"] + dz.T @ hs[t - 1]
        g["b2"] = g["b2"] + dz.sum(0)
        dh = dz @ p["U2"]
    return g


# ------------------------------------------------------------------ data

def data(rng, B=6):
    return {
        "residual": ([rng.normal(size=(B, 3))], [rng.normal(size=(B, 2))]),
        "two_input": ([rng.normal(size=(B, 3)), rng.normal(size=(B, 2))],
                      [np.eye(3)[rng.integers(0, 3, B)]]),
        "two_output": ([rng.normal(size=(B, 3))],
                       [rng.uniform(0.05, 0.95, (B, 2)), rng.normal(size=(B, 3))]),
        "shared": ([rng.normal(size=(B, 3))], [rng.normal(size=(B, 2))]),
        "rnn": ([rng.normal(size=(B, STEPS, FEAT))], [rng.normal(size=(B, 1))]),
    }


CASES = {
    "residual": (residual_net, residual_loss, residual_numpy),
    "two_input": (two_input_net, two_input_loss, two_input_numpy),
    "two_output": (two_output_net, two_output_loss, two_output_numpy),
    "shared": (shared_net, shared_loss, None),
    "rnn": (rnn_net, rnn_loss, rnn_bptt),
}


def _model(case, seed=3):
    model = CASES[case][0]().compile(dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    for k, v in model.params.items():      # non-zero biases, so every term matters
        model.params[k] = rng.normal(0, 0.6, v.shape)
    return model


def _call(model, Xs, Ts):
    X = Xs if len(Xs) > 1 else Xs[0]
    T = Ts if len(Ts) > 1 else Ts[0]
    return X, T


@pytest.mark.parametrize("case", list(CASES))
def test_central_differences(case, rng):
    model = _model(case)
    Xs, Ts = data(rng)[case]
    X, T = _call(model, Xs, Ts)
    check(model, X, T)


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][2] is not None])
def test_numpy_reference(case, rng):
    model = _model(case)
    Xs, Ts = data(rng)[case]
    X, T = _call(model, Xs, Ts)
    loss, grads = model.loss_and_grad(X, T)
    p = {k: v.copy() for k, v in model.params.items()}
    want = CASES[case][2](p, *Xs, *Ts)
    assert_grads(grads, want)
    assert loss == pytest.approx(float(CASES[case][1](p, *Xs, *Ts)), rel=1e-12)


@needs_torch
@pytest.mark.parametrize("case", list(CASES))
def test_pytorch(case, rng):
    model = _model(case)
    Xs, Ts = data(rng)[case]
    X, T = _call(model, Xs, Ts)
    loss, grads = model.loss_and_grad(X, T)
    want_loss, want = torch_grads(CASES[case][1], dict(model.params), *Xs, *Ts)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert_grads(grads, want)


def test_shared_layer_has_one_parameter_set_and_the_sum_of_untied_gradients(rng):
    shared = shared_net().compile(dtype="float64", seed=1)
    untied = untied_net().compile(dtype="float64", seed=1)
    assert list(shared.params) == ["W1", "b1", "W3", "b3"]
    assert list(untied.params) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    for k in ("W1", "b1", "W3", "b3"):
        shared.params[k] = rng.normal(0, 0.7, shared.params[k].shape)
    for k, v in (("W1", "W1"), ("b1", "b1"), ("W2", "W1"), ("b2", "b1"), ("W3", "W3"),
                 ("b3", "b3")):
        untied.params[k] = shared.params[v]
    X, T = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    np.testing.assert_array_equal(shared.forward(X), untied.forward(X))
    _, gs = shared.loss_and_grad(X, T)
    _, gu = untied.loss_and_grad(X, T)
    np.testing.assert_allclose(gs["W1"], gu["W1"] + gu["W2"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gs["b1"], gu["b1"] + gu["b2"], rtol=1e-12, atol=1e-15)
    # the same sum, but not the same code: the untied network runs its batch in chunks
    # (symnet.plan.schedule.halves), the shared one cannot, so the order of the additions
    # may differ in the last bit (it did under the sanitizers' flags)
    np.testing.assert_allclose(gs["W3"], gu["W3"], rtol=1e-14, atol=1e-16)


def test_shared_layer_on_inputs_of_another_shape_is_refused():
    """A layer used again must fit its one set of parameters: Dense(3) on 4 features,
    then on its own 3, compiled and ran with the 3x4 weights read as 3x3 before."""
    d = sn.Dense(3, name="d")
    with pytest.raises(ValueError, match=r"^layer 'd_2' is a second use of layer 'd', "
                                         r"whose parameters it shares, but its input \(3,\) "
                                         r"needs W1 of shape \(3, 3\), where 'd' has \(3, 4\)"):
        sn.Network(sn.Input(4), d, d, sn.Dense(1), loss="mse").compile(seed=0)
    a, b, e = sn.Input(4, name="a"), sn.Input(6, name="b"), sn.Dense(3, name="e")
    with pytest.raises(ValueError, match=r"'e_2' .* input \(6,\) needs W1 of shape "
                                         r"\(3, 6\), where 'e' has \(3, 4\)"):
        sn.Network([a, b], sn.Add()([e(a), e(b)]), loss="mse").param_shapes()
    # parameters that do not depend on the shape: Pointwise over two lengths, pooling
    p, s1, s2 = sn.Pointwise(3, name="p"), sn.Input((4, 2), name="s1"), sn.Input((5, 2),
                                                                              name="s2")
    assert sn.Network([s1, s2], [p(s1), p(s2)], loss="mse").param_shapes() == \
        {"W1": (3, 2), "b1": (3,)}


def test_functional_single_path_equals_sequential_bit_for_bit(rng):
    seq = sn.Network(sn.Input(4), sn.Dense(8, "tanh"), sn.Dense(3, "sigmoid"), loss="bce")
    I = sn.Input(4)
    O = sn.Dense(3, "sigmoid")(sn.Dense(8, "tanh")(I))
    fun = sn.Network(I, O, loss="bce")
    assert fun.describe() == seq.describe()
    a, b = seq.compile(seed=5), fun.compile(seed=5)
    assert a.c_source == b.c_source
    X, T = rng.normal(size=(9, 4)), rng.uniform(size=(9, 3))
    np.testing.assert_array_equal(a.forward(X), b.forward(X))
    la, ga = a.loss_and_grad(X, T)
    lb, gb = b.loss_and_grad(X, T)
    assert la == lb
    for k in ga:
        np.testing.assert_array_equal(ga[k], gb[k])


# ----------------------------------------------------------- calling forms

def test_lists_and_dicts_give_the_same_results(rng):
    model = _model("two_input")
    A, B = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    T = np.eye(3)[rng.integers(0, 3, 5)]
    np.testing.assert_array_equal(model.forward([A, B]), model.forward({"B": B, "A": A}))
    assert model.loss([A, B], T) == model.loss({"A": A, "B": B}, T)
    out = _model("two_output").forward(A)
    assert isinstance(out, list) and [o.shape for o in out] == [(5, 2), (5, 3)]
    m2 = _model("two_output")
    T1, T2 = rng.uniform(0.1, 0.9, (5, 2)), rng.normal(size=(5, 3))
    assert m2.loss(A, [T1, T2]) == m2.loss(A, {"O2": T2, "O1": T1})


def test_bad_lists_and_dicts_are_refused(rng):
    model = _model("two_input")
    A, B = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    with pytest.raises(ValueError, match=r"missing \['B'\]"):
        model.forward({"A": A})
    with pytest.raises(ValueError, match="holds 1 arrays but the network has 2 inputs"):
        model.forward([A])
    with pytest.raises(ValueError, match=r"X\['B'\] has 3 columns"):
        model.forward([A, A])
    with pytest.raises(ValueError, match="different numbers of rows"):
        model.forward([A, B[:3]])


def test_two_headed_network_trains(rng):
    model = two_output_net().compile(seed=0)
    X = rng.normal(size=(64, 3))
    T1 = (X[:, :2] > 0).astype(float)
    T2 = X @ rng.normal(size=(3, 3))
    before = model.loss(X, [T1, T2])
    hist = model.fit(X, {"O1": T1, "O2": T2}, epochs=40, batch_size=16, lr=0.3, seed=0,
                     progress=False)
    assert hist.loss[-1] < 0.5 * before
    assert model.loss(X, [T1, T2]) < 0.5 * before


def test_a_one_step_recurrence_zeroes_the_unused_gradient(rng):
    S = sn.Input((1, 2), name="S")
    h = sn.recurrent.unroll(sn.recurrent.RNNCell(3), 1)(S)
    model = sn.Network(S, sn.Dense(1, name="O")(h), loss="mse").compile(dtype="float64")
    model.grad[...] = np.nan                      # stale values must not survive
    _, g = model.loss_and_grad(rng.normal(size=(4, 1, 2)), rng.normal(size=(4, 1)))
    np.testing.assert_array_equal(g["U2"], 0)
    assert all(np.isfinite(v).all() for v in g.values())


# ------------------------------------------------------------ graph checks

def test_cycle_is_refused():
    I = sn.Input(2, name="I")
    a = sn.Dense(2, name="a")(I)
    c = sn.Dense(2, name="c")(a)
    a.inputs = [c]                 # only by editing an application by hand
    with pytest.raises(ValueError, match="cycle: 'c' → 'a' → 'c'"):
        sn.Network(I, c)


def test_input_reaching_no_output_is_refused():
    I1, I2 = sn.Input(2, name="I1"), sn.Input(2, name="I2")
    O = sn.Dense(1, name="O")(I1)
    with pytest.raises(ValueError, match="input 'I2' does not reach any output"):
        sn.Network([I1, I2], O)


def test_output_not_depending_on_the_inputs_is_refused():
    I1, I2 = sn.Input(2, name="I1"), sn.Input(2, name="I2")
    O1, O2 = sn.Dense(1, name="O1")(I1), sn.Dense(1, name="O2")(I2)
    with pytest.raises(ValueError, match=r"output 'O2' depends on input 'I2', which is not"):
        sn.Network(I1, [O1, O2])


@pytest.mark.parametrize("merge", [sn.Add, sn.Multiply])
def test_width_mismatch_at_a_merge_names_the_layers(merge):
    I = sn.Input(3, name="I")
    a, c = sn.Dense(4, name="a")(I), sn.Dense(5, name="c")(I)
    M = merge(name="M")([a, c])
    with pytest.raises(ValueError, match=r"layer 'M' with inputs a \(4\), c \(5\): .*one width"):
        sn.Network(I, sn.Dense(1)(M))


def test_merge_called_on_one_input_is_refused():
    with pytest.raises(ValueError, match="merges two or more inputs"):
        sn.Add()(sn.Input(2))


def test_loss_dict_must_name_the_outputs():
    net = two_output_net
    with pytest.raises(ValueError, match=r"missing: \['O2'\]"):
        I = sn.Input(3)
        H = sn.Dense(2, name="H")(I)
        sn.Network(I, [sn.Dense(1, name="O1")(H), sn.Dense(1, name="O2")(H)],
                   loss={"O1": "mse"})
    with pytest.raises(ValueError, match="loss weight of output 'O1' must be a finite number"):
        I = sn.Input(3)
        H = sn.Dense(2, name="H")(I)
        sn.Network(I, [sn.Dense(1, name="O1")(H), sn.Dense(1, name="O2")(H)],
                   loss="mse", loss_weights={"O1": float("nan")})
    assert net().loss_weights == [1.0, 0.5]


# ---------------------------------------------------------- the derivation

def test_derivation_sums_deltas_over_consumers_and_uses():
    text = str(two_output_net().formulas())
    assert "dL_dH1 = dL_dH1 (from O1) + dL_dH1 (from O2)" in text
    assert "∂L/∂H1 = ∂L/∂H1 (from O1) + ∂L/∂H1 (from O2)" in text
    shared = str(shared_net().formulas())
    assert "∂L/∂W1 = Σ_uses ∂L/∂W1 = ∂L/∂W1 (at d) + ∂L/∂W1 (at d_2)" in shared
    rnn = rnn_net().formulas()
    assert "∂L/∂U2 = Σ_uses ∂L/∂U2 = ∂L/∂U2 (at h_2) + ∂L/∂U2 (at h_3) + ∂L/∂U2 (at h_4)" \
        in str(rnn)
    assert "∂L/∂W2 = Σ_uses ∂L/∂W2 = ∂L/∂W2 (at h_1) + ∂L/∂W2 (at h_2)" in str(rnn)
    assert "dL_dh_3 = dL_dh_3 (from h_4)" not in str(rnn)   # one reader: no sum line
    assert r"\frac{\partial L}{\partial H_{1}}" in two_output_net().formulas().latex()


def test_c_comments_name_the_contributions():
    src = two_output_net().compile(dtype="float64").c_source
    assert "dL_dH1[b,j] = Σ_i delta_O2[b,i]·W3[i,j] (from O2)" in src \
        or "dL_dH1[b,j] = Σ_i delta_O1[b,i]·W2[i,j] (from O1)" in src
    assert "dL_dH1[b,j] += Σ_i" in src


# ------------------------------------------------- merges of tensors (channels)

def tensor_net():
    I = sn.Input((2, 5, 5), name="I")
    a = sn.Conv2d(3, 3, padding=1, activation="tanh", name="a")(I)
    e = sn.Conv2d(2, 3, padding=1, activation="tanh", name="e")(I)
    C = sn.Concatenate(name="C")([a, e])                   # channels 3 + 2
    d = sn.Conv2d(5, 3, padding=1, activation="tanh", name="d")(C)
    R = sn.Add(name="R")([C, d])                           # a residual over the channels
    M = sn.Multiply(name="M")([R, d])
    O = sn.Dense(2, name="O")(sn.Flatten(name="F")(M))
    return sn.Network(I, O, loss="mse")


def tensor_loss(p, X, T):
    F = torch.nn.functional
    a = torch.tanh(F.conv2d(X, p["W1"], p["b1"], padding=1))
    e = torch.tanh(F.conv2d(X, p["W2"], p["b2"], padding=1))
    C = torch.cat([a, e], 1)
    d = torch.tanh(F.conv2d(C, p["W4"], p["b4"], padding=1))
    M = (C + d) * d
    return mse(dense(M.reshape(M.shape[0], -1), p["W8"], p["b8"]), T)


def test_tensor_merges_central_differences(rng):
    model = tensor_net().compile(dtype="float64", seed=2)
    assert model.network.shapes[2] == (5, 5, 5)
    X, T = rng.normal(size=(3, 2, 5, 5)), rng.normal(size=(3, 2))
    check(model, X, T)


@needs_torch
def test_tensor_merges_pytorch(rng):
    model = tensor_net().compile(dtype="float64", seed=2)
    X, T = rng.normal(size=(3, 2, 5, 5)), rng.normal(size=(3, 2))
    loss, grads = model.loss_and_grad(X, T)
    want_loss, want = torch_grads(tensor_loss, dict(model.params), X, T)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert_grads(grads, want)


def test_tensor_concatenate_needs_equal_spatial_shapes():
    I = sn.Input((2, 6, 6), name="I")
    a = sn.Conv2d(3, 3, name="a")(I)          # (3, 4, 4)
    e = sn.Conv2d(3, 1, name="e")(I)          # (3, 6, 6)
    with pytest.raises(ValueError, match=r"layer 'C' with inputs a \(3, 4, 4\), e \(3, 6, 6\)"):
        sn.Network(I, sn.Dense(1)(sn.Flatten()(sn.Concatenate(name="C")([a, e]))))


@pytest.mark.parametrize("case", ["two_input", "two_output", "shared", "rnn"])
def test_save_and_load_a_graph_network(case, tmp_path, rng):
    model = _model(case)
    path = tmp_path / "net.npz"
    model.save(path)
    back = sn.load(path)
    assert back.network.describe() == model.network.describe()
    assert list(back.params) == list(model.params)
    Xs, _ = data(rng)[case]
    X = Xs if len(Xs) > 1 else Xs[0]
    out, want = back.forward(X), model.forward(X)
    for a, b in zip(out if isinstance(out, list) else [out],
                    want if isinstance(want, list) else [want]):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------- sn.Layer of several inputs

def multi_layer_net():
    import sympy as sp
    X, H = sn.Input(3, name="X0"), sn.Input(4, name="H0")
    cell = sn.Layer(4, lambda x, h, W, U, V, b, i, j: sp.tanh(
        sn.sum_j(W[i, j] * x[j]) + sn.sum_j(U[i, j] * h[j]) + b[i]) + h[i] * sn.sum_j(V[j] * x[j] ** 2),
        params={"W": ("out", "x"), "U": ("out", "h"), "V": ("x",), "b": ("out",)},
        init={"V": "normal"}, inputs=("x", "h"), name="cell")
    C = cell([X, H])
    return sn.Network([X, H], sn.Dense(2, name="O")(C), loss="mse")


def multi_layer_loss(p, X, H, T):
    xp = _xp(X)
    C = tanh(dense(X, p["W1"], 0) + dense(H, p["U1"], 0) + p["b1"]) \
        + H * ((X ** 2) @ p["V1"])[:, None]
    del xp
    return mse(dense(C, p["W2"], p["b2"]), T)


def test_layer_of_two_inputs_by_name(rng):
    model = multi_layer_net().compile(dtype="float64", seed=4)
    assert {k: v.shape for k, v in model.params.items()} == {
        "W1": (4, 3), "U1": (4, 4), "V1": (3,), "b1": (4,), "W2": (2, 4), "b2": (2,)}
    X, H, T = rng.normal(size=(5, 3)), rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    check(model, [X, H], T)
    p = {k: v.copy() for k, v in model.params.items()}
    assert model.loss([X, H], T) == pytest.approx(multi_layer_loss(p, X, H, T), rel=1e-12)
    if torch is not None:
        _, grads = model.loss_and_grad({"X0": X, "H0": H}, T)
        assert_grads(grads, torch_grads(multi_layer_loss, p, X, H, T)[1])


def test_layer_of_two_inputs_checks_its_arguments():
    with pytest.raises(ValueError, match="does not use its input h"):
        sn.Layer(2, lambda x, h, i, j: x[i], inputs=("x", "h"))
    cell = sn.Layer(2, lambda x, h, i, j: x[i] + h[i], inputs=("x", "h"))
    with pytest.raises(ValueError, match="takes 2 input"):
        cell(sn.Input(2))
    with pytest.raises(ValueError, match="index i subscripts arrays of lengths 2 and 3"):
        X, H = sn.Input(2), sn.Input(3)
        sn.Network([X, H], cell([X, H])).graph()


def test_check_gradients_takes_lists_and_dicts(rng):
    model = _model("two_output")
    X = rng.normal(size=(4, 3))
    T = {"O1": rng.uniform(0.1, 0.9, (4, 2)), "O2": rng.normal(size=(4, 3))}
    assert sn.check_gradients(model, X, T, verbose=False) < 1e-6
    model32 = two_input_net().compile(dtype="float32", seed=0)
    err = sn.check_gradients(model32, [rng.normal(size=(4, 3)), rng.normal(size=(4, 2))],
                             np.eye(3)[[0, 1, 2, 0]], verbose=False)
    assert err < 1e-2


# --------------------------------------- an output that other layers also read

@pytest.mark.parametrize("first_loss", ["bce", "softmax_cross_entropy", "mse"])
def test_output_that_feeds_another_layer(first_loss, rng):
    I = sn.Input(3, name="I")
    H1 = sn.Dense(4, "tanh", name="H1")(I)
    O1 = sn.Dense(3, "sigmoid" if first_loss == "bce" else "linear", name="O1")(H1)
    O2 = sn.Dense(2, "tanh", name="O2")(O1)             # reads the first output
    net = sn.Network(I, [O1, O2], loss={"O1": first_loss, "O2": "mse"},
                     loss_weights={"O1": 0.7, "O2": 1.3})
    model = net.compile(dtype="float64", seed=0)
    for k, v in model.params.items():
        model.params[k] = rng.normal(0, 0.6, v.shape)
    X = rng.normal(size=(5, 3))
    T1 = np.eye(3)[[0, 1, 2, 1, 0]] if first_loss == "softmax_cross_entropy" else \
        rng.uniform(0.1, 0.9, (5, 3))
    T2 = rng.normal(size=(5, 2))
    check(model, X, [T1, T2])
    # numpy, by hand
    p = {k: v.copy() for k, v in model.params.items()}
    H = np.tanh(dense(X, p["W1"], p["b1"]))
    z1 = dense(H, p["W2"], p["b2"])
    O1v = sigmoid(z1) if first_loss == "bce" else z1
    O2v = np.tanh(dense(O1v, p["W3"], p["b3"]))
    dz3 = 1.3 * 2 * (O2v - T2) / (5 * 2) * (1 - O2v ** 2)
    dO1 = dz3 @ p["W3"]                                     # from O2
    if first_loss == "bce":
        dz1 = 0.7 * (O1v - T1) / (5 * 3) + dO1 * O1v * (1 - O1v)
    elif first_loss == "mse":
        dz1 = 0.7 * 2 * (O1v - T1) / (5 * 3) + dO1
    else:
        dz1 = 0.7 * (softmax(O1v) - T1) / 5 + dO1
    dH = dz1 @ p["W2"]
    dz0 = dH * (1 - H ** 2)
    want = {"W1": dz0.T @ X, "b1": dz0.sum(0), "W2": dz1.T @ H, "b2": dz1.sum(0),
            "W3": dz3.T @ O1v, "b3": dz3.sum(0)}
    _, grads = model.loss_and_grad(X, [T1, T2])
    assert_grads(grads, want)
    f = net.formulas()
    args = [X[:2], model.as_targets([T1, T2], 5)[:2], *model.params.values()]
    _, g2 = model.loss_and_grad(X[:2], [T1[:2], T2[:2]])
    for name in ("W1", "b2", "W3"):          # the explicit sympy gradients agree too
        np.testing.assert_allclose(f.lambdify(f"g_{name}", batch=2)(*args), g2[name],
                                   rtol=1e-9, atol=1e-12, err_msg=name)
    text = str(f)
    assert "∂L/∂O1 = ∂L/∂O1 (from the loss) + ∂L/∂O1 (from O2)" in text
    if first_loss != "softmax_cross_entropy":      # fused: δ_O1 gets the readers' part
        assert "(from the readers of O1)" in text


def test_an_image_and_a_vector_as_two_inputs(rng):
    img, vec = sn.Input((1, 5, 5), name="img"), sn.Input(3, name="vec")
    a = sn.Flatten(name="F")(sn.Conv2d(2, 3, activation="tanh", name="a")(img))   # 2·3·3
    h = sn.Dense(4, "tanh", name="h")(vec)
    O = sn.Dense(2, name="O")(sn.Concatenate(name="C")([a, h]))
    model = sn.Network([img, vec], O, loss="mse").compile(dtype="float64", seed=0)
    X = {"img": rng.normal(size=(4, 1, 5, 5)), "vec": rng.normal(size=(4, 3))}
    T = rng.normal(size=(4, 2))
    check(model, [X["img"], X["vec"]], T)
    # the image part alone, through the same weights by numpy
    p = model.params
    W, b = p["W1"], p["b1"]
    conv = np.zeros((4, 2, 3, 3))
    for y in range(3):
        for x in range(3):
            patch = X["img"][:, :, y:y + 3, x:x + 3].reshape(4, -1)
            conv[:, :, y, x] = patch @ W.reshape(2, -1).T + b
    C = np.concatenate([np.tanh(conv).reshape(4, -1), np.tanh(dense(X["vec"], p["W3"], p["b3"]))], 1)
    np.testing.assert_allclose(model.forward(X), dense(C, p["W5"], p["b5"]), rtol=1e-12)


def test_the_same_input_twice_is_refused():
    I = sn.Input(2, name="I")
    with pytest.raises(ValueError, match="the same Input is given twice"):
        sn.Network([I, I], sn.Dense(1)(I))


@pytest.mark.parametrize("module", ["lang.compose", "lang.merge", "lang.recurrent",
                                    "lang.layers_multi", "lang.dsl"])
def test_docstring_examples(module):
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(f"symnet.{module}"))
    assert result.attempted > 0 and result.failed == 0


def test_step_takes_lists_and_dicts_like_the_packed_arrays(rng):
    a, b = _model("two_input"), _model("two_input")
    A, B = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    T = np.eye(3)[rng.integers(0, 3, 6)]
    la = a.step([A, B], T, lr=0.1)
    lb = b.step({"B": B, "A": A}, T, lr=0.1)
    assert la == lb
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert a.loss([A, B], T) < la          # one step downhill


def test_unroll_returning_every_step(rng):
    S = sn.Input((3, 2), name="S")
    hs = sn.recurrent.unroll(sn.recurrent.RNNCell(4, "tanh"), 3, return_sequences=True)(S)
    assert [h.name for h in hs] == ["h_1", "h_2", "h_3"]
    O = sn.Dense(2, name="O")(sn.Concatenate(name="C")(hs))
    model = sn.Network(S, O, loss="mse").compile(dtype="float64", seed=0)
    X, T = rng.normal(size=(5, 3, 2)), rng.normal(size=(5, 2))
    check(model, X, T)
    p = model.params
    h, H = np.zeros((5, 4)), []
    for t in range(3):
        h = np.tanh(X[:, t] @ p["W2"].T + h @ p["U2"].T + p["b2"])
        H.append(h)
    np.testing.assert_allclose(model.forward(X), dense(np.concatenate(H, 1), p["W8"], p["b8"]),
                               rtol=1e-12)


@pytest.mark.parametrize("case", ["residual", "two_input", "two_output", "shared", "rnn"])
def test_explicit_sympy_gradients_equal_the_compiled_ones(case, rng):
    model = _model(case)
    f = model.network.formulas()
    Xs, Ts = data(rng, B=2)[case]
    X, T = _call(model, Xs, Ts)
    loss, grads = model.loss_and_grad(X, T)
    Xp, Tp = model.as_inputs(X), model.as_targets(T, 2)       # side by side, as the C takes them
    args = [Xp.reshape(f.arguments(2)[0].shape), Tp, *model.params.values()]
    assert float(f.lambdify("L", batch=2)(*args)) == pytest.approx(loss, rel=1e-10)
    for name, g in grads.items():
        np.testing.assert_allclose(f.lambdify(f"g_{name}", batch=2)(*args), g, rtol=1e-9,
                                   atol=1e-12, err_msg=name)


def test_save_and_load_a_tensor_graph(tmp_path, rng):
    model = tensor_net().compile(dtype="float64", seed=2)
    model.save(tmp_path / "t.npz")
    back = sn.load(tmp_path / "t.npz")
    X = rng.normal(size=(2, 2, 5, 5))
    np.testing.assert_array_equal(back.forward(X), model.forward(X))


def _two_heads():
    A = sn.Input(3, name="A")
    h = sn.Dense(4, "tanh")(A)
    net = sn.Network(A, [sn.Dense(1, name="y")(h), sn.Dense(3, name="c")(h)],
                     loss={"y": "mse", "c": "softmax_cross_entropy"})
    rng = np.random.default_rng(0)
    X, y, c = rng.normal(size=(12, 3)), rng.normal(size=(12, 1)), rng.integers(0, 3, 12)
    return net.compile(dtype="float64", seed=0), X, y, c


def test_class_labels_for_one_of_several_outputs_are_its_one_hot_rows():
    """T['c'] = labels (N,) was refused where the output is one of several ("must be 2-D
    (batch, 3) ... for one example use T['c'][None, :]"); one output alone took them."""
    m, X, y, c = _two_heads()
    rows = np.eye(3)[c]
    L1, g1 = m.loss_and_grad(X, {"y": y, "c": c})
    L2, g2 = m.loss_and_grad(X, {"y": y, "c": rows})
    assert L1 == L2 and all(np.array_equal(g1[k], g2[k]) for k in g2)
    assert m.loss(X, [y, c.reshape(-1, 1)]) == L2                  # (N, 1) labels too
    with pytest.raises(ValueError, match=r"T\['c'\] holds class labels for output layer 'c', "
                                         r"which has 3 classes: label 3 at row 1"):
        m.loss(X, {"y": y, "c": np.where(np.arange(12) == 1, 3, c)})


def test_evaluate_of_several_outputs_gives_each_ones_metrics():
    """model.evaluate failed on a network of several outputs (numpy: "inhomogeneous
    shape"): forward gives a list there."""
    m, X, y, c = _two_heads()
    got = m.evaluate(X, {"y": y, "c": c})
    O_y, O_c = m.predict(X)
    assert got["loss"] == pytest.approx(m.loss(X, {"y": y, "c": c}), rel=1e-12)
    assert got["y_mse"] == pytest.approx(np.mean((O_y - y) ** 2), rel=1e-12)
    assert got["y_mae"] == pytest.approx(np.mean(np.abs(O_y - y)), rel=1e-12)
    assert got["c_accuracy"] == np.mean(O_c.argmax(axis=1) == c)
    assert sorted(got) == ["c_accuracy", "loss", "y_mae", "y_mse"]


def _evaluated_after_each_epoch(model, *data):
    """A callback, and the list it fills: model.evaluate on each (X, T) of ``data`` after
    every epoch (the parameters fit ends the epoch with)."""
    seen = []
    return (lambda h: seen.append([model.evaluate(X, T) for X, T in data])), seen


@pytest.mark.parametrize("method", ["minibatch", "sgd", "sd"])
def test_history_of_several_outputs_has_each_ones_metrics_of_every_epoch(method):
    """The History of several outputs held only the total loss (Keras's has
    "<output>_accuracy", "val_<output>_accuracy", ...): now each output's metrics per
    epoch, those model.evaluate gives on the training and the validation data with the
    parameters at the end of the epoch; attributes and to_dict() keys, as the fields."""
    m, X, y, c = _two_heads()
    rng = np.random.default_rng(1)
    Xv, yv, cv = rng.normal(size=(7, 3)), rng.normal(size=(7, 1)), rng.integers(0, 3, 7)
    train, val = (X, {"y": y, "c": c}), (Xv, {"y": yv, "c": cv})
    after, seen = _evaluated_after_each_epoch(m, train, val)
    hist = m.fit(*train, method=method, epochs=4, batch_size=5, lr=0.3, seed=0,
                 validation_data=val, callbacks=[after], progress=False)
    keys = ["y_mse", "y_mae", "c_accuracy"]
    assert list(hist.per_output) == keys + ["val_" + k for k in keys]
    d = hist.to_dict()
    for k in keys:
        for prefix, part in (("", 0), ("val_", 1)):
            want = [s[part][k] for s in seen]
            got = getattr(hist, prefix + k)
            assert got is hist.per_output[prefix + k] and d[prefix + k] == got
            if k == "c_accuracy":
                assert got == want
            else:
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    np.testing.assert_allclose(hist.val_loss, [s[1]["loss"] for s in seen], rtol=1e-12)
    assert len(set(hist.y_mse)) == 4 and len(hist.loss) == 4
    assert hist.accuracy == hist.val_accuracy == []     # one output's fields
    assert "val_c_accuracy" in str(hist) and "c_accuracy" in dir(hist)
    json.dumps(d)
    with pytest.raises(AttributeError, match=r"no attribute 'c_acc'; its per-output metrics: "
                                             r"y_mse, y_mae, c_accuracy, val_y_mse"):
        _ = hist.c_acc


def test_history_of_several_outputs_without_validation_and_with_a_class_per_position():
    """A softmax cross-entropy output (5, 3) with labels (N, 5) beside a bce head and
    Dropout in the trunk: each output's training metrics per epoch equal evaluate's (in
    evaluation mode, the accuracy over every position); no val_ entries without
    validation data; validation_split measures the held-out rows."""
    S = sn.Input((5, 4), name="S")
    x = sn.Dropout(0.3, name="D")(sn.Pointwise(8, "tanh", name="P")(S))
    tags = sn.Pointwise(3, name="tags")(x)
    flag = sn.Dense(1, "sigmoid", name="flag")(sn.Flatten(name="F")(x))
    net = sn.Network(S, [tags, flag], loss={"tags": "softmax_cross_entropy", "flag": "bce"})
    model = net.compile(dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 5, 4))
    T = {"tags": (X[..., 0] > 0).astype(int) + (X[..., 1] > 0), "flag": X[:, :1, 2] > 0}
    after, seen = _evaluated_after_each_epoch(model, (X, T))
    hist = model.fit(X, T, epochs=3, batch_size=8, lr=0.5, seed=0, callbacks=[after],
                     progress=False)
    assert sorted(hist.per_output) == ["flag_accuracy", "tags_accuracy"]
    assert hist.tags_accuracy == [s[0]["tags_accuracy"] for s in seen]
    assert hist.flag_accuracy == [s[0]["flag_accuracy"] for s in seen]
    tags_now = model.predict_classes(X)[0]
    assert hist.tags_accuracy[-1] == float((tags_now == T["tags"]).mean())
    held = {k: v[24:] for k, v in T.items()}
    after, seen = _evaluated_after_each_epoch(model, (X[:24], {k: v[:24] for k, v in
                                                               T.items()}), (X[24:], held))
    hist = model.fit(X, T, epochs=2, batch_size=8, lr=0.5, seed=0, callbacks=[after],
                     validation_split=0.2, progress=False)
    for k in ("tags_accuracy", "flag_accuracy"):
        assert hist.per_output[k] == [s[0][k] for s in seen]
        assert hist.per_output["val_" + k] == [s[1][k] for s in seen]


def test_history_of_one_output_is_as_before():
    """One output: no per-output entries (its accuracy is the History's own field)."""
    m = sn.Network(sn.Input(3), sn.Dense(3), loss="softmax_cross_entropy").compile(
        dtype="float64", seed=0)
    X, c = np.random.default_rng(0).normal(size=(12, 3)), np.arange(12) % 3
    hist = m.fit(X, c, epochs=2, lr=0.1, validation_data=(X, c), progress=False)
    assert hist.per_output == {} and len(hist.accuracy) == len(hist.val_accuracy) == 2
    assert set(hist.to_dict()) == set(hist.__dataclass_fields__)


def test_predict_of_several_outputs_gives_each_its_own_loss_s_values():
    """predict on several outputs gave the raw list (the first output's loss decided:
    logits for a softmax head after an mse one), or failed ('list' object has no
    attribute 'max') with the softmax head first; in chunks, numpy's "inhomogeneous
    shape".  Now a list, each output by its own loss, chunked or not."""
    m, X, y, c = _two_heads()
    O_y, O_c = m.forward(X)
    E = np.exp(O_c - O_c.max(axis=1, keepdims=True))
    for P_y, P_c in (m.predict(X), m.predict(X, batch_size=5)):
        np.testing.assert_array_equal(P_y, O_y)
        np.testing.assert_allclose(P_c, E / E.sum(axis=1, keepdims=True), rtol=1e-14)
    for call in (m.predict_classes, m.predict_proba):
        with pytest.raises(ValueError, match=r"needs a classification loss .*; output 'y' "
                                             r"has loss mse: use predict, which gives each "
                                             r"output's values in a list"):
            call(X)
    A = sn.Input(3, name="A")
    h = sn.Dense(4, "tanh", name="h")(A)
    net = sn.Network(A, [sn.Dense(3, name="c")(h), sn.Dense(2, "sigmoid", name="d")(h)],
                     loss={"c": "softmax_cross_entropy", "d": "bce"})
    m2 = net.compile(dtype="float64", seed=0)
    O_c, O_d = m2.forward(X)
    for C_c, C_d in (m2.predict_classes(X), m2.predict_classes(X, batch_size=5)):
        np.testing.assert_array_equal(C_c, O_c.argmax(axis=1))
        np.testing.assert_array_equal(C_d, (O_d > 0.5).astype(int))
    P_c, P_d = m2.predict_proba(X)
    np.testing.assert_allclose(P_c.sum(axis=1), 1, rtol=1e-14)
    np.testing.assert_array_equal(P_d, O_d)


def test_softmax_cross_entropy_on_a_channels_first_output_is_a_class_per_pixel():
    """Its softmax ran over all C·H·W numbers of an example (one class among them) while
    predict took it over axis 1.  A convolution's output (C, H, W) takes a class per
    pixel over its channels (tests/test_position_classes.py); Flatten and a Dense still
    give one class per example."""
    shape = (1, 4, 4)
    net = sn.Network(sn.Input(shape), sn.Conv2d(3, 3, padding=1, name="P"),
                     loss="softmax_cross_entropy")
    model = net.compile(dtype="float64", seed=0)
    assert model.predict_classes(np.zeros((2, *shape))).shape == (2, 4, 4)
    net = sn.Network(sn.Input(shape), sn.Conv2d(3, 3, padding=1, name="P"), sn.Flatten(),
                     sn.Dense(3), loss="softmax_cross_entropy")          # one class per example
    assert net.compile(dtype="float64", seed=0).predict(np.zeros((2, *shape))).shape == (2, 3)


def test_a_mistyped_output_name_in_a_dict_of_losses_is_refused():
    """{'out': 'bce'} for an output named 'O' made a network of one data term named
    'out' (any key that is not an output meant terms), which skipped the check of bce
    on a linear output and trained on none of the outputs' targets as written."""
    with pytest.raises(ValueError, match=r"loss names outputs \['out'\]; the outputs are "
                                         r"\['O'\] \(unknown: \['out'\]\) \(missing: \['O'\]\); "
                                         r"loss terms under names of their own need a sympy "
                                         r"formula"):
        sn.Network(sn.Input(2), sn.Dense(1), loss={"out": "bce"})
    with pytest.raises(ValueError, match=r"unknown: \['Q'\]"):
        sn.Network(sn.Input(2), sn.Dense(1), loss={"O": "mse", "Q": "mse"})
    assert sn.Network(sn.Input(2), sn.Dense(1), loss={"O": "mse"}).loss_names == ["mse"]


def _sequence_heads(first_flat: bool):
    """Two outputs of one sequence layer P (5, 8): per-position values (5, 3) and one
    number read through Flatten → Dense."""
    S = sn.Input((5, 4), name="S")
    x = sn.Pointwise(8, "tanh", name="P")(S)
    seq = sn.Pointwise(3, name="A")(x)
    one = sn.Dense(1, name="B")(sn.Flatten(name="F")(x))
    return sn.Network(S, [one, seq] if first_flat else [seq, one], loss="mse")


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("first_flat", [False, True])
def test_several_outputs_of_several_axes_read_their_own_targets(backend, first_flat):
    """With several outputs T is their targets side by side, (batch, 15 + 1); an output
    (5, 3) read T[b, tq, i] at b·16 + tq + i (the column stride of one, not 3), and a
    second one ignored its positions: the loss was 2.44 where numpy gives 3.42.  The
    NumPy backend failed ('too many indices')."""
    from gradcheck import check
    net = _sequence_heads(first_flat)
    model = net.compile(dtype="float64", seed=0, backend=backend)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 5, 4))
    T = {"A": rng.standard_normal((6, 5, 3)), "B": rng.standard_normal((6, 1))}
    outs = dict(zip(net.output_names, model.forward(X)))
    want = np.mean((outs["A"] - T["A"]) ** 2) + np.mean((outs["B"] - T["B"]) ** 2)
    assert model.loss(X, T) == pytest.approx(want, rel=1e-12)
    # P is read by A and by the Flatten: ∂L/∂P is the sum of both readers' parts (the
    # second reader's '=' overwrote the first's: the gradients disagreed with central
    # differences in sign)
    check(model, X, T)
    ev = model.evaluate(X, T)        # failed: 'cannot reshape array of size 96 into (5, 3)'
    assert ev["A_mse"] == pytest.approx(np.mean((outs["A"] - T["A"]) ** 2), rel=1e-12)


def _two_sequence_heads(**kw):
    S = sn.Input((4, 3), name="S")
    a = sn.Pointwise(2, "tanh", name="A")(S)
    b = sn.Pointwise(5, "relu", name="B")(S)
    c = sn.Concatenate(name="C", **kw)([a, b])
    return sn.Network(S, sn.Pointwise(3, name="O")(c), loss="softmax_cross_entropy")


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_concatenate_joins_two_sequences_along_their_features(backend, tmp_path):
    """Two sequences (4, 2) and (4, 5) are one of (4, 7), as Keras's Concatenate(axis=-1)
    (a bidirectional recurrence's two states, an embedding beside its features).  It
    used to join them along the first axis: refused for these widths, and for equal
    widths a sequence twice as long, silently."""
    net = _two_sequence_heads()
    assert net.shapes == [(4, 2), (4, 5), (4, 7), (4, 3)]
    model = net.compile(dtype="float64", seed=0, backend=backend)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((3, 4, 3)), rng.integers(0, 3, (3, 4))
    p = model.params
    A = np.tanh(X @ p["W1"].T + p["b1"])
    B = np.maximum(X @ p["W2"].T + p["b2"], 0)
    want = np.concatenate([A, B], -1) @ p["W4"].T + p["b4"]
    np.testing.assert_allclose(model.forward(X), want, rtol=1e-12, atol=1e-14)
    check(model, X, y)
    model.save(tmp_path / "m.npz")
    np.testing.assert_allclose(sn.load(tmp_path / "m.npz").forward(X), want, rtol=1e-12,
                               atol=1e-14)
    text = str(net.formulas())
    assert "C[b,i,x + 2] = B[b,i,x]   (x < 5)" in text
    assert "dL_dB[b,i,x] += dL_dC[b,i,x + 2]   (from C, x < 5)" in text


def test_concatenate_axis_zero_and_the_channels_of_images():
    S = sn.Input((4, 3))
    net = sn.Network(S, sn.Concatenate(axis=0)([sn.Pointwise(3)(S), S]), loss="mse")
    assert net.shapes[-1] == (8, 3)                       # one sequence after the other
    I = sn.Input((1, 4, 4))
    both = sn.Concatenate()([sn.Conv2d(2, 3, padding=1)(I), sn.Conv2d(3, 3, padding=1)(I)])
    assert sn.Network(I, both, loss="mse").shapes[-1] == (5, 4, 4)   # channels
    P, Q = sn.Input((1, 4, 4), name="P"), sn.Input((2, 4, 4), name="Q")
    assert sn.Network([P, Q], sn.Concatenate()([P, Q]), loss="mse").shapes[-1] == (3, 4, 4)
    x = sn.Conv1d(2, 3, padding=1)(sn.Input((1, 6)))      # (C, L) of a Conv1d: channels
    assert sn.Network(x.inputs[0], sn.Concatenate()([x, x]), loss="mse").shapes[-1] == (4, 6)
    with pytest.raises(ValueError, match=r"Concatenate: axis must be None \(the features\), 0 "
                                         r".* or -1 .*, got 1"):
        sn.Concatenate(axis=1)
    S5 = sn.Input((5, 3))
    with pytest.raises(ValueError, match=r"Concatenate joins these tensors along their last "
                                         r"axis and needs them equal in the others, got "
                                         r"\(4, 3\), \(5, 3\); Concatenate\(axis=0\)"):
        sn.Network([S, S5], sn.Concatenate()([S, S5]), loss="mse")


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _numpy_heads(p, X, loss="mse"):
    """The two heads of ``_joined_output``: tanh (sigmoid for bce, whose outputs are
    probabilities) and sigmoid of their affine maps."""
    first = np.tanh if loss == "mse" else _sigmoid
    return first(X @ p["W1"].T + p["b1"]), _sigmoid(X @ p["W2"].T + p["b2"])


def _joined_output(loss="mse", also_read=False):
    I = sn.Input(3, name="I")
    first = "tanh" if loss == "mse" else "sigmoid"
    J = sn.Concatenate(name="J")([sn.Dense(2, first, name="A")(I),
                                  sn.Dense(3, "sigmoid", name="B")(I)])
    if not also_read:
        return sn.Network(I, J, loss=loss)
    return sn.Network(I, [J, sn.Dense(1, name="O")(J)], loss={"J": loss, "O": "mse"},
                      loss_weights={"J": 0.5, "O": 1.0})


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_a_concatenate_as_the_output_with_an_element_loss(backend, loss):
    """Compiling failed with KeyError: 'dL_dJ' (and then a loss of None): the loss was
    composed into the output's formula, which a Concatenate does not have.  Its ∂ℓ/∂J
    is now written by the loss's loop and copied back to the pieces."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((6, 3))
    T = rng.uniform(0.1, 0.9, (6, 5))
    model = _joined_output(loss).compile(dtype="float64", seed=2, backend=backend)
    p = model.params
    A, B = _numpy_heads(p, X, loss)
    O = np.hstack([A, B])
    np.testing.assert_allclose(model.forward(X), O, rtol=1e-12, atol=1e-14)
    per = (O - T) ** 2 if loss == "mse" else -(T * np.log(O) + (1 - T) * np.log(1 - O))
    loss_value, grads = model.loss_and_grad(X, T)
    assert loss_value == pytest.approx(np.mean(per.sum(1) / 5), rel=1e-12)
    # back-propagation by hand: ∂ℓ/∂O, split at the join, through tanh and sigmoid
    dO = (2 * (O - T) if loss == "mse" else (O - T) / (O * (1 - O))) / (5 * len(X))
    dA = dO[:, :2] * ((1 - A ** 2) if loss == "mse" else A * (1 - A))
    dB = dO[:, 2:] * B * (1 - B)
    want = {"W1": dA.T @ X, "b1": dA.sum(0), "W2": dB.T @ X, "b2": dB.sum(0)}
    for name, g in want.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-14, err_msg=name)
    if backend == "c":
        check(model, X, T)
        net = _joined_output(loss)            # the derived rule on explicit elements
        f = net.formulas()
        assert "(stored: its pieces below copy it back)" in str(f)
        for name in ("g_W1", "g_b2"):
            got = f.lambdify(name, batch=len(X))(X, T, *model.params.values())
            np.testing.assert_allclose(got, want[name[2:]], rtol=1e-10, atol=1e-14)
        before = model.loss(X, T)
        model.fit(X, T, method="sd", epochs=50, lr=0.5, progress=False)
        assert model.loss(X, T) < 0.8 * before


def test_a_concatenate_output_that_another_layer_also_reads():
    """∂L/∂J sums the loss's part and the reader's, each output with its loss weight."""
    rng = np.random.default_rng(5)
    X, T = rng.standard_normal((4, 3)), rng.standard_normal((4, 6))
    model = _joined_output(also_read=True).compile(dtype="float64", seed=3)
    p = model.params
    J = np.hstack(_numpy_heads(p, X))
    O = J @ p["W4"].T + p["b4"]
    want = 0.5 * np.mean(((J - T[:, :5]) ** 2).sum(1) / 5) + np.mean((O - T[:, 5:]) ** 2)
    assert model.loss(X, T) == pytest.approx(want, rel=1e-12)
    check(model, X, T)
    numpy_model = _joined_output(also_read=True).compile(dtype="float64", seed=3,
                                                         backend="numpy")
    for name, g in numpy_model.loss_and_grad(X, T)[1].items():
        np.testing.assert_allclose(g, model.loss_and_grad(X, T)[1][name], rtol=1e-12,
                                   atol=1e-15, err_msg=name)
