"""General index-notation layers (sn.Layer) and custom losses: the compiled
forward pass against numpy, the compiled gradients against finite differences."""

import numpy as np
import pytest
import sympy as sp
from gradcheck import check

import symnet as sn
from symnet.scalar.primitives import sigmoid


def np_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def rbf(units):
    return sn.Layer(units, lambda x, C, beta, i, j:
                    sp.exp(-beta[i] * sn.sum_j((x[j] - C[i, j]) ** 2)),
                    params={"C": ("out", "in"), "beta": ("out",)},
                    init={"C": "normal", "beta": 0.5}, name="R")


def np_rbf(p, n, X):
    C, beta = p[f"C{n}"], p[f"beta{n}"]
    return np.exp(-beta * ((X[:, None, :] - C[None]) ** 2).sum(-1))


def gated(units):
    return sn.Layer(units, lambda x, A, B, i, j:
                    sigmoid(sn.sum_j(A[i, j] * x[j])) * sp.tanh(sn.sum_j(B[i, j] * x[j])),
                    params={"A": ("out", "in"), "B": ("out", "in")}, name="G")


def np_gated(p, n, X):
    return np_sigmoid(X @ p[f"A{n}"].T) * np.tanh(X @ p[f"B{n}"].T)


def quadratic(units):
    return sn.Layer(units, lambda x, Q, W, i, j, k:
                    sn.sum_j(sn.sum_k(Q[i, j, k] * x[j] * x[k])) + sn.sum_j(W[i, j] * x[j]),
                    params={"Q": ("out", "in", "in"), "W": ("out", "in")}, name="Qd")


def np_quadratic(p, n, X):
    return np.einsum("ijk,bj,bk->bi", p[f"Q{n}"], X, X) + X @ p[f"W{n}"].T


EPS = sp.Rational(1, 10)


def normalising(units):
    return sn.Layer(units, lambda z, i, j: z[i] / sp.sqrt(sn.sum_j(z[j] ** 2) + EPS),
                    linear="W", name="Nm")


def np_normalising(p, n, X):
    Z = X @ p[f"W{n}"].T
    return Z / np.sqrt((Z ** 2).sum(1, keepdims=True) + 0.1)


LAYERS = {"rbf": (rbf, np_rbf), "gated": (gated, np_gated),
          "quadratic": (quadratic, np_quadratic), "normalising": (normalising, np_normalising)}


@pytest.fixture(scope="module", params=list(LAYERS))
def middle(request):
    """Input(3) → tanh(3) → the layer (5) → linear(2), mse: the layer's input
    gradient and its parameters' gradients both matter."""
    make, ref = LAYERS[request.param]
    net = sn.Network(sn.Input(3), sn.Dense(3, "tanh"), make(5), sn.Dense(2), loss="mse")
    return net.compile(dtype="float64", seed=4), ref


def test_layer_forward_matches_numpy(middle):
    model, ref = middle
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 3))
    p = {k: np.array(v) for k, v in model.params.items()}
    H1 = np.tanh(X @ p["W1"].T + p["b1"])
    H2 = ref(p, 2, H1)
    np.testing.assert_allclose(model.forward(X), H2 @ p["W3"].T + p["b3"], rtol=1e-12,
                               atol=1e-12)


def test_layer_gradients_match_finite_differences(middle):
    model, _ = middle
    rng = np.random.default_rng(1)
    for k, v in model.params.items():             # move off the initial values
        model.params[k] = v + rng.normal(0, 0.2, v.shape)
    X, T = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    check(model, X, T, rtol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_as_first_and_output_layer(name):
    """The layer reads the network input and its loss is fused into it."""
    make, ref = LAYERS[name]
    net = sn.Network(sn.Input(4), make(3), loss="mse")
    model = net.compile(dtype="float64", seed=2)
    rng = np.random.default_rng(3)
    X, T = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    p = {k: np.array(v) for k, v in model.params.items()}
    np.testing.assert_allclose(model.forward(X), ref(p, 1, X), rtol=1e-12, atol=1e-12)
    check(model, X, T, rtol=1e-6)


def test_contractions_become_matrix_products():
    net = sn.Network(sn.Input(3), gated(4), quadratic(2), loss="mse")
    plan_ops = __import__("symnet.plan.lower", fromlist=["plan"]).plan(net.graph()).forward
    kinds = [type(op).__name__ for op in plan_ops]
    # gated: two contractions; quadratic: one contraction (W) + one double-sum loop (Q)
    assert kinds.count("MatMul") == 3
    c = sn.Network(sn.Input(3), quadratic(2), loss="mse").compile(dtype="float64")
    assert "for (int k = 0; k < 3; k++)" in c.c_source


def test_dense_is_a_layer_formula():
    """Dense goes through the same translation as sn.Layer: one contraction."""
    a = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), loss="mse")
    b = sn.Network(sn.Input(3), sn.Layer(4, lambda x, W, b, i, j:
                                         sp.tanh(sn.sum_j(W[i, j] * x[j]) + b[i]),
                                         params={"W": ("out", "in"), "b": ("out",)}),
                   loss="mse")
    na, nb = a.graph().nodes[0], b.graph().nodes[0]
    assert na.outer == nb.outer
    assert [r.contraction for r in na.reductions] == [r.contraction for r in nb.reductions]


def test_same_sum_used_twice_is_one_reduction():
    L = sn.Layer(3, lambda x, W, i, j: sn.sum_j(W[i, j] * x[j]) * sp.exp(-sn.sum_j(W[i, j] * x[j])),
                 params={"W": ("out", "in")})
    node = sn.Network(sn.Input(2), L, loss="mse").graph().nodes[0]
    assert len(node.reductions) == 1


def test_float32_layer_model_checks_against_float64_twin(capsys):
    net = sn.Network(sn.Input(2), rbf(6), sn.Dense(1, "sigmoid"), loss="bce")
    model = net.compile(dtype="float32", seed=0)
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(8, 2)), rng.uniform(size=(8, 1))
    err = sn.check_gradients(model, X, T)
    out = capsys.readouterr().out
    assert err < 1e-3
    for name in ("C1", "beta1", "W2", "b2", "all"):
        assert name in out


def test_check_gradients_catches_a_wrong_gradient():
    """A corrupted compiled gradient must show up as a large error."""
    net = sn.Network(sn.Input(2), sn.Dense(3, "tanh"), sn.Dense(1), loss="mse")
    model = net.compile(dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(4, 2)), rng.normal(size=(4, 1))
    assert sn.check_gradients(model, X, T, verbose=False) < 1e-6
    true = model.loss_and_grad
    model.loss_and_grad = lambda X, T: (lambda r: (r[0], {k: v * (1.5 if k == "W1" else 1)
                                                          for k, v in r[1].items()}))(true(X, T))
    assert sn.check_gradients(model, X, T, verbose=False) > 0.2


# ------------------------------------------------------------------ custom losses

o, t = sp.symbols("o t")
CUSTOM_LOSSES = {
    "logistic": (sp.log(1 + sp.exp(-o * t)), lambda O, T: np.logaddexp(0, -O * T)),
    "logcosh": (sp.log(sp.cosh(o - t)), lambda O, T: np.log(np.cosh(O - T))),
    "quartic": (lambda o, t: (o - t) ** 4 / 4, lambda O, T: (O - T) ** 4 / 4),
}


@pytest.mark.parametrize("name", list(CUSTOM_LOSSES))
def test_custom_loss_value_and_gradients(name):
    spec, ref = CUSTOM_LOSSES[name]
    net = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.Dense(2), loss=spec)
    model = net.compile(dtype="float64", seed=5)
    rng = np.random.default_rng(6)
    X = rng.normal(size=(6, 3))
    T = rng.choice([-1.0, 1.0], size=(6, 2)) if name == "logistic" else rng.normal(size=(6, 2))
    expected = ref(model.forward(X), T).sum(1).mean()    # summed over outputs, batch mean
    assert model.loss(X, T) == pytest.approx(expected, rel=1e-12)
    check(model, X, T, rtol=1e-6)


# ------------------------------------------------------------------ examples

def _example(name):
    import runpy
    from pathlib import Path
    return runpy.run_path(str(Path(__file__).parent.parent / "examples" / f"{name}.py"),
                          run_name="example")


def test_rbf_example_separates_the_moons():
    assert _example("rbf")["main"](epochs=150) >= 0.95


def test_gated_example_learns_digits():
    assert _example("gated")["main"](epochs=15) >= 0.93


def test_elementwise_layer_without_sums():
    """h_i = a_i·tanh(x_i) + c_i·x_i: only the outer formula, x[b,i] read directly."""
    L = sn.Layer(3, lambda x, a, c, i: a[i] * sp.tanh(x[i]) + c[i] * x[i],
                 params={"a": "out", "c": "out"}, init={"a": 1.0, "c": 0.5}, name="E")
    net = sn.Network(sn.Input(2), sn.Dense(3, "tanh"), L, sn.Dense(2), loss="mse")
    model = net.compile(dtype="float64", seed=0)
    rng = np.random.default_rng(7)
    X, T = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    p = {k: np.array(v) for k, v in model.params.items()}
    H1 = np.tanh(X @ p["W1"].T + p["b1"])
    H2 = p["a2"] * np.tanh(H1) + p["c2"] * H1
    np.testing.assert_allclose(model.forward(X), H2 @ p["W3"].T + p["b3"], rtol=1e-12)
    check(model, X, T, rtol=1e-6)
