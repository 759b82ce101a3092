"""User text never becomes C code: names are plain identifiers the kernel does
not already use, expressions use only functions with a C spelling, and
anything shown in a comment cannot close it."""

import re

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import symnet as sn
from symnet.backend.c.emit import CPrinter, c_comment

HOSTILE = ["a*/b", "/*", "*/", "x\n#define y", "a\x00", "W1 ", " ", "", "a.b", "a-b", "a;b",
           "ǅ", "é", 123, b"bytes", 1.5]
C_KEYWORDS = ["int", "inline", "restrict", "_Bool", "sizeof", "typedef", "goto", "static"]
C_LIBRARY = ["exp", "tanh", "expf", "log1p", "fabs", "sqrtl", "NAN", "INFINITY", "HUGE_VAL",
             "NULL", "memset", "size_t", "linux", "unix", "M_PI", "errno", "isnan"]
KERNEL_LOCALS = ["o", "m", "s", "g", "p", "st", "to", "lse", "b", "i", "j", "k", "batch",
                 "work", "params", "grads", "lr", "loss", "inv_batch"]
DERIVED = ["t0", "t12", "z_H1", "delta_O", "dL_dH1", "g_W1", "_Private", "__x", "sn_mm_nt",
           "symnet_abc"]


@pytest.mark.parametrize("name", HOSTILE + ["T"])
def test_names_refused_at_declaration(name):
    """Only what is not a plain ASCII identifier is refused (and T, the targets)."""
    with pytest.raises(ValueError, match="name"):
        sn.Dense(3, name=name)
    with pytest.raises(ValueError, match="name"):
        sn.Input(3, name=name)


def _chain(names, loss="softmax_cross_entropy"):
    acts = ["tanh", "relu", "sigmoid", "softplus", "elu"]
    layers = [sn.Dense(3, acts[k % len(acts)], name=n) for k, n in enumerate(names[1:-1])]
    return sn.Network(sn.Input(2, name=names[0]), *layers, sn.Dense(2, name=names[-1]),
                      loss=loss)


ALL = C_KEYWORDS + C_LIBRARY + KERNEL_LOCALS + [d for d in DERIVED if d != "g_W1"] + [
    "out", "X", "loss", "lr", "log", "work", "for", "lambda", "cur", "Ib", "Tb", "y", "beta1",
    "sn_u_exp", "hyper", "main", "idx", "adam_b1"]


@pytest.mark.parametrize("start", range(0, len(ALL), 5))
def test_names_the_c_uses_are_legal_and_compute_like_default_names(start):
    """Names the kernel's C already means something by are written sn_u_<name> there;
    the network computes exactly what the same network with default names does."""
    names = ALL[start:start + 5]
    names = names + [f"L{k}" for k in range(3 - len(names))] if len(names) < 3 else names
    a = _chain(names).compile(dtype="float64", seed=4)
    b = _chain(["I"] + [f"H{k}" for k in range(1, len(names) - 1)] + ["O"]).compile(
        dtype="float64", seed=4)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 2))
    T = np.eye(2)[rng.integers(0, 2, 5)]
    np.testing.assert_array_equal(a.forward(X), b.forward(X))
    (la, ga), (lb, gb) = a.loss_and_grad(X, T), b.loss_and_grad(X, T)
    assert la == lb
    for k in ga:
        np.testing.assert_array_equal(ga[k], gb[k])


def test_model_named_out_X_loss_lr_compiles_and_trains():
    I = sn.Input(2, name="X")
    H = sn.Dense(8, "tanh", name="out")(I)
    H = sn.Dense(8, "tanh", name="lr")(H)
    O = sn.Dense(1, "sigmoid", name="loss")(H)
    model = sn.Network(I, O, loss="bce").compile(dtype="float64", seed=0)
    X, T = sn.datasets.xor()
    hist = model.fit(X, T, method="sd", epochs=2000, lr=2.0, progress=False)
    assert hist.loss[-1] < 0.1 * hist.loss[0]
    assert "sn_u_loss" in model.c_source and "sn_u_lr" in model.c_source


def test_a_derived_name_that_really_collides_is_refused():
    """A layer named z_H1 next to a layer H1 would be H1's sum in the derivation."""
    net = sn.Network(sn.Input(2), sn.Dense(3, name="H1"), sn.Dense(3, name="z_H1"),
                     sn.Dense(1), loss="mse")
    with pytest.raises(ValueError, match="z_H1"):
        net.compile()


def _pair(names, act_loss):
    """The network with the given names, and the same with default names."""
    acts, loss = act_loss
    def build(named):
        layers = [sn.Dense(3, a, name=n if named else None) for a, n in zip(acts, names[1:])]
        return sn.Network(sn.Input(2, name=names[0] if named else None), *layers,
                          sn.Dense(2, name=names[-1] if named else None), loss=loss)
    return build(True), build(False)


@pytest.mark.parametrize("names, act_loss", [
    (["x", "A", "C", "e", "B", "accumulate", "N"],
     (["tanh", "softplus", "elu", "sigmoid", "gelu"], "softmax_cross_entropy")),
    (["K", "M", "exp_", "INF", "c"], (["swish", "leaky_relu", "relu"], "mse")),
])
def test_unusual_but_allowed_names_compute_like_default_names(names, act_loss):
    named, plain = _pair(names, act_loss)
    a = named.compile(dtype="float64", seed=4)
    b = plain.compile(dtype="float64", seed=4)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 2))
    T = np.eye(2)[rng.integers(0, 2, 5)]
    np.testing.assert_array_equal(a.forward(X), b.forward(X))
    (la, ga), (lb, gb) = a.loss_and_grad(X, T), b.loss_and_grad(X, T)
    assert la == lb
    for k in ga:
        np.testing.assert_array_equal(ga[k], gb[k])


def _code_only(c_text: str) -> str:
    """The C with its /* */ comments removed."""
    return re.sub(r"/\*.*?\*/", " ", c_text, flags=re.S)


def test_undefined_functions_refused_at_declaration():
    z, o, t = sp.symbols("z o t")
    evil = sp.Function("evil */ int x; /*")
    with pytest.raises(ValueError, match="unknown function"):
        sn.Dense(3, lambda v: evil(v))
    with pytest.raises(ValueError, match="unknown function"):
        sn.Dense(3, sp.Function("f")(z) + z)
    with pytest.raises(ValueError, match="unknown function"):
        sn.Network(sn.Input(2), sn.Dense(1), loss=(o - t) ** 2 + evil(o))


def test_hostile_symbol_names_reach_comments_only():
    """A custom activation whose own symbol, srepr and str carry C."""
    x = sp.Symbol("x */ int evil; /* \n#define M 1 //")
    act = x * sp.tanh(x) + x ** 3 / 7
    assert "*/" in sp.srepr(act) and "*/" in str(act)
    net = sn.Network(sn.Input(2, name="In"), sn.Dense(3, act, name="Odd"), sn.Dense(1),
                     loss="mse")
    z = sp.Symbol("z")
    plain = sn.Network(sn.Input(2, name="In"), sn.Dense(3, z * sp.tanh(z) + z ** 3 / 7,
                                                        name="Odd"), sn.Dense(1), loss="mse")
    m, p = net.compile(dtype="float64"), plain.compile(dtype="float64")
    code = _code_only(m.c_source)
    assert "evil" not in code and "#define M 1" not in code and "*/" not in code
    X = np.random.default_rng(1).normal(size=(4, 2))
    np.testing.assert_array_equal(m.forward(X), p.forward(X))


def test_printer_refuses_symbols_that_are_not_identifiers():
    printer = CPrinter("float64", {}, plain_names=True)
    assert printer.doprint(sp.Symbol("t3") + 1) == "t3 + 1"
    with pytest.raises(ValueError, match="cannot appear in the generated C"):
        printer.doprint(sp.Symbol("a */ b") + 1)


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(alphabet="*/ \n\t\\?a#\"'", max_size=40) | st.text(max_size=40))
def test_comment_text_cannot_close_its_comment(text):
    wrapped = f"/* {c_comment(text)} */"
    assert _code_only(wrapped).strip() == ""
    assert "\n" not in wrapped


def test_layers_named_like_the_loop_indices_of_a_convolution():
    """Tensor loops use index names (c, y, x, ...): layers so named are written sn_u_..."""
    def net(names):
        return sn.Network(sn.Input((1, 6, 6), name=names[0]),
                          sn.Conv2d(2, 3, activation="relu", name=names[1]),
                          sn.MaxPool2d(2, name=names[2]), sn.Flatten(name=names[3]),
                          sn.Dense(3, name=names[4]), loss="softmax_cross_entropy")
    a = net(["x", "c", "y", "u", "v"]).compile(dtype="float64", seed=1)
    b = net(["I", "H1", "H2", "H3", "O"]).compile(dtype="float64", seed=1)
    X = np.random.default_rng(0).normal(size=(5, 1, 6, 6))
    y = np.array([0, 1, 2, 1, 0])
    np.testing.assert_array_equal(a.forward(X), b.forward(X))
    (la, ga), (lb, gb) = a.loss_and_grad(X, y), b.loss_and_grad(X, y)
    assert la == lb and all(np.array_equal(ga[k], gb[k]) for k in ga)
