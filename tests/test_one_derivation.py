"""derive decides the gradients once: change one of its rules and the C the backends
run, the text of net.formulas() and the explicit sympy/numpy form all change together,
because each reads derive's terms (symnet.derive.chain.NodeGrad) and none re-derives.
Frozen layers and "no input gradient needed" are decided there too."""

import numpy as np
import sympy as sp
import pytest

import symnet as sn
from symnet.derive import chain
from own_cache import own_cache


def _net():
    return sn.Network(sn.Input(3, name="I"), sn.Dense(4, "tanh", name="H"),
                      sn.Dense(2, "sigmoid", name="O"), loss="mse")


def _views(net):
    """(C source, formulas text, explicit ∂L/∂b1 at a point, numpy-backend ∂L/∂b1)."""
    model = net.compile(dtype="float64", seed=0, backend="numpy")
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(2, 3)), rng.random((2, 2))
    f = net.formulas()
    g = f.lambdify("g_b1", batch=2)
    explicit = np.asarray(g(X, T, *(model.params[p] for p in model.params)), float)
    return model.c_source, str(f), explicit, model.loss_and_grad(X, T)[1]["b1"]


def test_a_changed_rule_reaches_the_c_the_formulas_and_the_explicit_form(monkeypatch):
    before = _views(_net())
    # the rule that writes φ(...) as the stored output (tanh′ = 1 − H²): turned off,
    # the derivative reads 1 − tanh(z)² instead, the same value
    monkeypatch.setattr(chain, "reuse_output", lambda expr, node: expr)
    plain = _views(_net())
    assert plain[0] != before[0] and plain[1] != before[1]
    np.testing.assert_allclose(plain[2], before[2], rtol=1e-12)
    np.testing.assert_allclose(plain[3], before[3], rtol=1e-12)
    # a rule that changes the value: every local derivative of an outer formula doubled
    simplest = chain.simplest
    monkeypatch.setattr(chain, "simplest", lambda expr: 2 * simplest(expr))
    doubled = _views(_net())
    assert doubled[0] != plain[0] and doubled[1] != plain[1]
    # δ_O doubles, and δ_H = 2·(δ_O·W2)·tanh′: ∂L/∂b1 is four times as large, in the
    # explicit form and in what the backend computes alike
    np.testing.assert_allclose(doubled[2], 4 * before[2], rtol=1e-12)
    np.testing.assert_allclose(doubled[3], 4 * before[3], rtol=1e-12)
    np.testing.assert_allclose(doubled[2], doubled[3], rtol=1e-12)


def _frozen_bottom():
    return sn.Network(sn.Input(3, name="I"), sn.Dense(4, "tanh", name="A", trainable=False),
                      sn.Dense(4, "relu", name="B", trainable=False),
                      sn.Dense(2, name="O"), loss="mse")


def test_frozen_layers_are_decided_in_derive():
    """No term of derive computes a frozen parameter's gradient, nor the deltas of the
    frozen layers at the bottom (nothing trainable below them wants them)."""
    graph = _frozen_bottom().graph()
    targets = {t.target for g in chain.derive(graph) for t in g.terms()}
    assert {"g_W3", "g_b3", "delta_O"} <= targets
    assert not targets & {"g_W1", "g_b1", "g_W2", "g_b2", "dL_dA", "dL_dB", "delta_A",
                          "delta_B", "dL_dI"}


def test_a_frozen_middle_layer_still_passes_its_delta_down():
    net = sn.Network(sn.Input(3, name="I"), sn.Dense(4, "tanh", name="A"),
                     sn.Dense(4, "relu", name="B", trainable=False),
                     sn.Dense(2, name="O"), loss="mse")
    targets = {t.target for g in chain.derive(net.graph()) for t in g.terms()}
    assert {"g_W1", "g_b1", "dL_dA", "delta_B"} <= targets
    assert not targets & {"g_W2", "g_b2"}
    model = net.compile(dtype="float64", seed=0)
    X, T = np.ones((2, 3)), np.zeros((2, 2))
    _, grads = model.loss_and_grad(X, T)
    assert np.any(grads["W1"] != 0) and not np.any(grads["W2"])


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_frozen_bottom_trains_the_top_only(backend):
    model = _frozen_bottom().compile(dtype="float64", seed=0, backend=backend)
    before = {k: v.copy() for k, v in model.params.items()}
    X = np.random.default_rng(0).normal(size=(5, 3))
    model.step(X, np.ones((5, 2)), lr=0.1)
    for k in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(model.params[k], before[k])
    assert np.any(model.params["W3"] != before["W3"])


# ------------------------------------------------- softmax cross-entropy, derived too

def _xent_net():
    return sn.Network(sn.Input(3, name="I"), sn.Dense(4, "tanh", name="H"),
                      sn.Dense(3, name="O"), loss="softmax_cross_entropy")


@pytest.fixture
def derive_afresh(monkeypatch, tmp_path):
    """The C backend derives every network again (its cache, keyed by the network's
    description, would hand back the module of the unchanged rule), into a cache
    folder of its own."""
    from symnet.backend.c import build
    monkeypatch.setenv("SYMNET_CACHE_DIR", own_cache(tmp_path))
    monkeypatch.setattr(build, "lookup", lambda key: None)


def _xent_views():
    """(C source, formulas text, explicit ∂L/∂b2, numpy-backend ∂L/∂b2, C ∂L/∂b2,
    C ∂L/∂b2 from class labels) of the softmax cross-entropy network."""
    net = _xent_net()
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2, 3))
    y = np.array([2, 0])
    T = np.eye(3)[y]
    c = net.compile(dtype="float64", seed=0, tune="off")
    numpy_model = net.compile(dtype="float64", seed=0, backend="numpy")
    f = net.formulas()
    explicit = np.asarray(f.lambdify("g_b2", batch=2)(X, T, *c.params.values()), float)
    return (c.c_source, str(f), explicit, numpy_model.loss_and_grad(X, T)[1]["b2"],
            c.loss_and_grad(X, T)[1]["b2"], c.loss_and_grad(X, y)[1]["b2"])


def test_softmax_cross_entropy_rules_reach_the_c_the_formulas_and_the_explicit_form(
        monkeypatch, derive_afresh):
    """Softmax cross-entropy is derived (symnet.derive.coupled) like every loss: its
    chain rule through the sums over the outputs and its log-sum-exp rewrite are
    rules of derive, and the C, net.formulas() and the explicit form all follow them."""
    from symnet.derive import coupled
    before = _xent_views()
    # dL_dO = softmax − t, independently: b2's gradient is its mean over the batch
    net = _xent_net()
    c = net.compile(dtype="float64", seed=0, tune="off")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2, 3))
    O = c.forward(X)
    P = np.exp(O - O.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    want = (P - np.eye(3)[[2, 0]]).mean(0)
    for got in before[2:]:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert "const real lse = " in before[0] and "lse_O[b]" in before[1]

    # without the stability rewrite: exp(O)/S where S = Σ exp(O), the same values
    logsumexp = coupled.logsumexp
    monkeypatch.setattr(coupled, "logsumexp", lambda rule: rule)
    plain = _xent_views()
    assert "const real lse = " not in plain[0] and "lse_O[b]" not in plain[1]
    assert "exp(o[k])/S)" in plain[0] and "exp(O[b,k])/S_O[b]" in plain[1]
    for got, was in zip(plain[2:], before[2:]):
        np.testing.assert_allclose(got, was, rtol=1e-12, atol=1e-15)

    # a rule that changes the value: the chain rule through the sums doubled
    monkeypatch.setattr(coupled, "logsumexp", logsumexp)
    chain_rule = coupled.chain_through_sums
    monkeypatch.setattr(coupled, "chain_through_sums",
                        lambda F, sums, o: 2 * chain_rule(F, sums, o))
    doubled = _xent_views()
    assert doubled[0] != before[0] and doubled[1] != before[1]
    for got in doubled[2:]:
        np.testing.assert_allclose(got, 2 * want, rtol=1e-12, atol=1e-15)


def test_a_repeated_formula_is_derived_by_sympy_once(monkeypatch):
    """The steps of an unrolled GRU differ only in the arrays they read: derive takes each
    step's local derivatives from the first step of that shape, and the terms are the same
    as derived node by node."""
    S = sn.Input((6, 3), name="S")
    net = sn.Network(S, sn.GRU(5, name="G"), sn.Dense(2, name="O"), loss="mse")
    graph = net.graph()
    calls = []
    simplest = chain.simplest
    monkeypatch.setattr(chain, "simplest", lambda expr: calls.append(1) or simplest(expr))
    alone = chain._derive(graph)          # no memo: every node by sympy
    n_alone = len(calls)
    calls.clear()
    shared = chain.derive(graph)
    assert n_alone > 0 and len(calls) * 3 < n_alone, (len(calls), n_alone)
    assert len(alone) == len(shared)
    for a, b in zip(alone, shared):
        ta, tb = a.terms(), b.terms()
        assert [t.target for t in ta] == [t.target for t in tb]
        for x, y in zip(ta, tb):
            if hasattr(x, "expr"):        # a Term (a Product has no formula of sympy's)
                assert x.index == y.index
                assert x.expr == y.expr or sp.simplify(x.expr - y.expr) == 0, (x, y)
            else:
                assert x == y


def test_relu_derivatives_test_the_stored_output_and_keep_their_gradients():
    """ReLU and leaky ReLU: the backward formula reads H > 0, not the sum below it; a
    formula that is not positive exactly where its argument is (|u|) keeps u > 0.  The
    gradients still match central differences where no unit sits at its kink."""
    u, h = sp.Symbol("u", real=True), sp.Symbol("H", real=True)
    relu = sp.Piecewise((u, u > 0), (0, True))
    leaky = sp.Piecewise((u, u > 0), (sp.Float(0.01) * u, True))
    absu = sp.Piecewise((u, u > 0), (-u, True))
    assert chain.sign_of_output(relu, h) == {u > 0: h > 0}
    assert chain.sign_of_output(leaky, h) == {u > 0: h > 0}
    assert chain.sign_of_output(absu, h) == {}
    assert chain.sign_of_output(sp.tanh(u), h) == {}

    net = sn.Network(sn.Input(3, name="I"), sn.Dense(5, "relu", name="H"),
                     sn.Dense(4, "leaky_relu", name="G"), sn.Dense(2, name="O"), loss="mse")
    text = str(net.formulas())
    assert "(1 if H[b,i] > 0 else 0)" in text and "(1 if G[b,i] > 0 else 0.01)" in text
    assert "z_H[b,i] > 0" not in text.split("Backward")[1]
    model = net.compile(dtype="float64", seed=1)
    rng = np.random.default_rng(2)
    X, T = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    _, grads = model.loss_and_grad(X, T)
    for name, value in model.params.items():
        num = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            orig = value[i]
            value[i] = orig + 1e-6
            model.params[name] = value
            up = model.loss(X, T)
            value[i] = orig - 1e-6
            model.params[name] = value
            down = model.loss(X, T)
            value[i] = orig
            model.params[name] = value
            num[i] = (up - down) / 2e-6
        np.testing.assert_allclose(grads[name], num, rtol=1e-6, atol=1e-8)
