"""Property: any composition of supported scalar functions, used as an
activation, compiles to gradients that equal central finite differences."""

import numpy as np
import sympy as sp
from gradcheck import check
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symnet as sn
from symnet.scalar.primitives import sigmoid, softplus

# Each maps a sub-expression u to a function of it, defined (and smooth) for all real u.
UNARY = {
    "tanh": sp.tanh, "sin": sp.sin, "sigmoid": sigmoid, "softplus": softplus,
    "exp(-u²)": lambda u: sp.exp(-u ** 2), "log(1+u²)": lambda u: sp.log(1 + u ** 2),
    "exp(tanh)": lambda u: sp.exp(sp.tanh(u)), "u²": lambda u: u ** 2,
    "u³/3": lambda u: u ** 3 / 3, "affine": lambda u: sp.Rational(1, 2) * u + 1,
    "sqrt(1+u²)": lambda u: sp.sqrt(1 + u ** 2), "atan": sp.atan,
    "naive softplus": lambda u: sp.log(1 + sp.exp(u)),
}
BINARY = {"+": lambda a, b: a + b, "*": lambda a, b: a * b}


def expressions(depth):
    leaf = st.just("z")
    if depth == 0:
        return leaf
    sub = expressions(depth - 1)
    return st.one_of(leaf,
                     st.tuples(st.sampled_from(sorted(UNARY)), sub),
                     st.tuples(st.sampled_from(sorted(BINARY)), sub, sub))


def build(tree, z):
    if tree == "z":
        return z
    if len(tree) == 2:
        return UNARY[tree[0]](build(tree[1], z))
    return BINARY[tree[0]](build(tree[1], z), build(tree[2], z))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=expressions(3).filter(lambda t: t != "z"), seed=st.integers(0, 10 ** 6))
def test_composed_activation_gradients(tree, seed):
    act = lambda z: build(tree, z)  # noqa: E731
    net = sn.Network(sn.Input(3), sn.Dense(4, act), sn.Dense(2, act), loss="mse")
    model = net.compile(dtype="float64", seed=seed % 1000)
    rng = np.random.default_rng(seed)
    X, T = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    check(model, X, T, rtol=1e-5)
