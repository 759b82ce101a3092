"""Derived formulas stay finite wherever the true value is finite: activations
written the naive way (exp ratios, log(1 + e^z)) at |z| up to 1e4, in float32
and float64, against a 50-digit mpmath reference of the naive formula."""

import mpmath
import numpy as np
import pytest
import sympy as sp

import symnet as sn
from symnet.scalar.primitives import stabilise

Z = np.array([-1e4, -1e3, -100.0, -89.0, -30.0, -1.0, 0.0, 0.5, 1.0, 30.0, 89.0, 100.0,
              1e3, 1e4])
E = sp.exp
NAIVE = {
    "softplus": lambda z: sp.log(1 + E(z)),
    "sigmoid": lambda z: 1 / (1 + E(-z)),
    "exp_ratio": lambda z: E(z) / (1 + E(z)),
    "logistic_density": lambda z: E(z) / (1 + E(z)) ** 2,
    "mish": lambda z: z * sp.tanh(sp.log(1 + E(z))),
    "log_sigmoid": lambda z: sp.log(1 / (1 + E(-z))),
    "swish": lambda z: z / (1 + E(-z)),
    "tanh_ratio": lambda z: sp.sinh(z) / sp.cosh(z),
    "two_exp_ratio": lambda z: E(z) / (E(z) + E(-z)),
    "two_exp_ratio_squared": lambda z: E(-2 * z) / (E(z) + E(-z)) ** 2,
    "log_two_exps": lambda z: sp.log(E(z) + E(-z)),        # log 2cosh z, never a cosh
    "log_two_exps_skew": lambda z: sp.log(E(z) + E(2 * z)),
}


def reference(f):
    """f and f′ from the naive formula, evaluated with 120 digits."""
    z = sp.Symbol("z", real=True)
    e = f(z)
    val = sp.lambdify(z, e, "mpmath")
    der = sp.lambdify(z, sp.diff(e, z), "mpmath")
    mpmath.mp.dps = 120   # log(1 + e^−100) needs ~60 digits to keep 16
    return ([float(val(mpmath.mpf(v))) for v in Z], [float(der(mpmath.mpf(v))) for v in Z])


@pytest.fixture(scope="module", params=[(n, d) for n in NAIVE for d in ("float32", "float64")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case(request):
    """h = f(0·x + b), loss o: then L = f(b) and ∂L/∂b = f′(b), one b per call."""
    name, dtype = request.param
    net = sn.Network(sn.Input(1), sn.Dense(1, NAIVE[name]), loss=sp.Symbol("o"))
    model = net.compile(dtype=dtype)
    model.params["W1"] = [[0.0]]
    return name, dtype, model


def test_value_and_derivative_finite_and_right_at_extremes(case):
    name, dtype, model = case
    want_f, want_d = reference(NAIVE[name])
    rtol = 2e-6 if dtype == "float32" else 1e-13
    tiny = float(np.finfo(dtype).tiny) * 4
    X, T = np.ones((1, 1)), np.zeros((1, 1))
    for z, f, d in zip(Z, want_f, want_d):
        model.params["b1"] = [z]
        value = model.forward(X)[0, 0]
        loss, g = model.loss_and_grad(X, T)
        assert np.isfinite(value) and np.isfinite(loss) and np.isfinite(g["b1"][0]), (z, value,
                                                                                     g)
        assert value == pytest.approx(f, rel=rtol, abs=tiny), f"{name}({z})"
        assert loss == pytest.approx(f, rel=rtol, abs=tiny)
        # Derivatives are right to a few ulps *of 1*: σ′ is computed from the
        # stored output as H(1 − H) (no exp in the backward pass, as in the major
        # frameworks), which loses the relative accuracy of σ′(30) ≈ 9e-14.
        assert g["b1"][0] == pytest.approx(d, rel=rtol, abs=4 * float(np.finfo(dtype).eps)), \
            f"{name}′({z})"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_custom_logistic_loss_finite_at_extreme_outputs(dtype):
    o, t = sp.symbols("o t")
    net = sn.Network(sn.Input(1), sn.Dense(1, bias=False), loss=sp.log(1 + sp.exp(-o * t)))
    model = net.compile(dtype=dtype)
    model.params["W1"] = [[1.0]]
    X = Z[:, None]
    T = np.ones_like(X)
    loss, g = model.loss_and_grad(X, T)
    # L = mean softplus(−z); ∂L/∂W = mean(−σ(−z)·z)
    mpmath.mp.dps = 120
    want_l = float(sum(mpmath.log(1 + mpmath.exp(-mpmath.mpf(z))) for z in Z) / len(Z))
    want_g = float(sum(-mpmath.mpf(z) / (1 + mpmath.exp(mpmath.mpf(z))) for z in Z) / len(Z))
    rtol = 1e-5 if dtype == "float32" else 1e-12
    assert loss == pytest.approx(want_l, rel=rtol)
    assert g["W1"][0, 0] == pytest.approx(want_g, rel=rtol)


def test_rewrites():
    x = sp.Symbol("x", real=True)
    from symnet.scalar.primitives import sigmoid, softplus
    assert stabilise(sp.log(1 + sp.exp(x))) == softplus(x)
    assert stabilise(1 / (1 + sp.exp(-x))) == sigmoid(x)
    assert stabilise(sp.exp(x) / (1 + sp.exp(x))) == sigmoid(x)
    assert stabilise(sp.exp(x) / (1 + sp.exp(x)) ** 2) == sigmoid(x) * sigmoid(-x)
    assert stabilise(sp.log(sigmoid(x))) == -softplus(-x)
    assert stabilise(sp.log(1 - sigmoid(x))) == -softplus(x)
    assert stabilise(sp.diff(sp.log(1 + sp.exp(x)), x)) == sigmoid(x)
    assert not stabilise(sp.exp(2 * x) / (1 + sp.exp(x)) ** 3).has(sp.exp)
    assert stabilise(sp.log(sp.exp(x) + sp.exp(-x))) == sp.Abs(x) + softplus(-2 * sp.Abs(x))


R = np.array([-1e4, -1e3, -100.0, -89.0, -30.0, -2.0, -0.5, 0.0, 1e-3, 0.5, 2.0, 30.0, 89.0,
              100.0, 1e3, 1e4])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log_cosh_loss_finite_and_right_at_large_residuals(dtype):
    """ℓ = log(cosh(o − t)) overflows as written (cosh(100) = inf in float32); it is
    rewritten to |a| + softplus(−2|a|) − log 2, with derivative tanh(a)."""
    o, t = sp.symbols("o t")
    net = sn.Network(sn.Input(1), sn.Dense(1, bias=False), loss=sp.log(sp.cosh(o - t)))
    model = net.compile(dtype=dtype)
    model.params["W1"] = [[1.0]]
    mpmath.mp.dps = 120
    eps = float(np.finfo(dtype).eps)
    rtol = 2e-6 if dtype == "float32" else 1e-13
    for r in R:
        X, T = np.array([[r + 3.0]]), np.array([[3.0]])   # residual o − t = r
        rr = mpmath.mpf(float(X[0, 0])) - 3
        loss, g = model.loss_and_grad(X, T)
        want_l = float(mpmath.log(mpmath.cosh(rr)))
        want_g = float(mpmath.tanh(rr) * mpmath.mpf(float(X[0, 0])))   # ∂ℓ/∂W = tanh(a)·x
        assert np.isfinite(loss) and np.isfinite(g["W1"][0, 0]), r
        # right to a few ulps of 1 near 0 (the rewrite subtracts log 2), relative beyond
        assert loss == pytest.approx(want_l, rel=rtol, abs=4 * eps), r
        assert g["W1"][0, 0] == pytest.approx(want_g, rel=rtol, abs=4 * eps * abs(X[0, 0])), r
    assert stabilise(sp.log(sp.cosh(o))).has(sp.Abs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_on_logits_written_out_finite_at_extreme_outputs(dtype):
    """−t·log(1/(1 + e^−o)) − (1 − t)·log(1 − 1/(1 + e^−o)): σ written with exp, then
    its log, overflow as written; rewritten to t·softplus(−o) + (1 − t)·softplus(o)."""
    o, t = sp.symbols("o t")
    p = 1 / (1 + sp.exp(-o))
    net = sn.Network(sn.Input(1), sn.Dense(1, bias=False),
                     loss=-t * sp.log(p) - (1 - t) * sp.log(1 - p))
    model = net.compile(dtype=dtype)
    model.params["W1"] = [[1.0]]
    mpmath.mp.dps = 120
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for target in (0.0, 1.0):
        for z in Z:
            loss, g = model.loss_and_grad(np.array([[z]]), np.array([[target]]))
            zz = mpmath.mpf(z)
            want = float(mpmath.log(1 + mpmath.exp(-zz)) if target else
                         mpmath.log(1 + mpmath.exp(zz)))
            want_g = float((1 / (1 + mpmath.exp(-zz)) - target) * zz)
            assert np.isfinite(loss) and np.isfinite(g["W1"][0, 0]), (z, target)
            assert loss == pytest.approx(want, rel=rtol, abs=1e-30), (z, target)
            assert g["W1"][0, 0] == pytest.approx(want_g, rel=rtol, abs=4e-7 * abs(z)), z


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("act", [lambda z: sp.log(sp.cosh(z)), lambda z: sp.log(E(z) + E(-z))],
                         ids=["log_cosh", "log_two_exps"])
def test_rewritten_activation_under_a_rewritten_loss(act, backend):
    """Both rewritten to |·| + softplus(−2|·|) (− log 2): the loss fused with the output
    activation differentiated |softplus(...) + |z| − t| through re/im, which have no C
    spelling (the build failed).  Against numpy: ∂ℓ/∂z = tanh(o − t)·tanh(z)."""
    o, t = sp.symbols("o t")
    net = sn.Network(sn.Input(1), sn.Dense(1, act), loss=sp.log(sp.cosh(o - t)))
    model = net.compile(dtype="float64", backend=backend)
    model.params["W1"], model.params["b1"] = [[1.5]], [0.3]
    X, T = np.array([[0.7], [-2.0], [50.0], [-0.1]]), np.array([[0.1], [0.5], [3.0], [-1.0]])
    z = 1.5 * X + 0.3
    shift = np.log(2) if act(sp.Symbol("z")).has(sp.cosh) else 0.0
    out = np.logaddexp(z, -z) - shift
    loss, g = model.loss_and_grad(X, T)
    dz = np.tanh(out - T) * np.tanh(z) / len(X)
    assert loss == pytest.approx(np.mean(np.log(np.cosh(out - T))), rel=1e-13)
    assert g["W1"][0, 0] == pytest.approx(float((dz * X).sum()), rel=1e-12)
    assert g["b1"][0] == pytest.approx(float(dz.sum()), rel=1e-12)
