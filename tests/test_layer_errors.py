"""Every refusal of a custom activation, layer or loss: a ValueError at
declaration that names the layer and the culprit; and the kink convention."""

import numpy as np
import pytest
import sympy as sp

import symnet as sn

z = sp.Symbol("z")
o, t = sp.symbols("o t")
PARAMS = {"W": ("out", "in")}


def dot(W, x, i, j):
    return sn.sum_j(W[i, j] * x[j])


# --------------------------------------------------------------- activations

@pytest.mark.parametrize("act, culprit", [
    (sp.floor(z), "floor"), (sp.ceiling(z), "ceiling"), (sp.sign(z), "sign"),
    (lambda z: z + sp.frac(z), "frac"), (lambda z: sp.Heaviside(z), "Heaviside"),
    (lambda z: round(z), "round"),
    (lambda z: sp.Function("f")(z), "unknown function f"),
    (lambda z: sp.gamma(z), "polygamma"),
    (z * sp.Symbol("alpha"), "alpha"),
    (lambda z: z * sp.Symbol("alpha"), "alpha"),
    (lambda z: "tanh", "sympy expression"),
    (42, "activation must be"),
])
def test_activation_refused_naming_layer_and_culprit(act, culprit):
    with pytest.raises(ValueError, match=r"layer 'Hx'") as info:
        sn.Dense(3, act, name="Hx")
    assert culprit in str(info.value)


def test_unnamed_layer_is_named_by_its_kind():
    with pytest.raises(ValueError, match=r"'Dense\(3\)'.*floor"):
        sn.Dense(3, sp.floor(z))


# --------------------------------------------------------------- sn.Layer

@pytest.mark.parametrize("formula, params, culprit", [
    (lambda x, W, i, j: dot(W, x, i, j) + sp.Symbol("alpha"), PARAMS, "unknown symbol alpha"),
    (lambda x, i, j: sp.IndexedBase("V")[i, j] * x[j], {}, "unknown array 'V'"),
    (lambda x, W, i, j: W[i, j] * x[j], PARAMS, "index j is used outside any sum"),
    (lambda x, W, i, j: dot(W, x, i, j) * j, PARAMS, "index j is used as a number"),
    (lambda x, W, i, j: sp.Sum(W[i, j] * x[i], (i, 0, sn.n_in - 1)), PARAMS, "output index i"),
    (lambda x, W, i, j, k: sn.sum_j(x[j] * sn.sum_k(W[i, k] * x[k])), PARAMS,
     "whole summand"),
    (lambda x, W, i, j: sn.sum_j(W[i] * x[j]), PARAMS, "has 1 indices but W has 2"),
    (lambda x, W, i, j: sn.sum_j(W[i, 0] * x[j]), PARAMS, "indices must be i, j or k"),
    (lambda x, W, i, j: sp.floor(dot(W, x, i, j)), PARAMS, "floor"),
    (lambda x, W, i, j: sp.sign(dot(W, x, i, j)), PARAMS, "sign"),
    (lambda x, W, i, j: sp.Function("g")(dot(W, x, i, j)), PARAMS, "unknown function g"),
    (lambda x, W, i, j: sp.loggamma(dot(W, x, i, j)), PARAMS, "no C99 spelling"),
    (lambda W, i, j: sn.sum_j(W[i, j]), PARAMS, "does not use its input x"),
    (lambda x, i: x + 1, {}, "x must be indexed"),
    (lambda x, W, i, j: sp.Sum(W[i, j] * x[j], (j, 1, sn.n_in - 1)), PARAMS, "from 0 to n_in"),
    (lambda x, y, i: x[i] * y[i], {}, "formula argument 'y'"),
    (lambda x, i, j: x[j] + "a", {}, "failed on sympy arguments"),
    (lambda x, i: [x[i]], {}, "must return a sympy expression"),
    ("x[i]", {}, "formula must be a Python function"),
    (lambda x, W, i, j: dot(W, x, i, j), {"W": ("out", "sideways")}, "has dims"),
    (lambda x, i: x[i], {"x": ("out",)}, "parameter name 'x'"),
    (lambda x, i: x[i], ["W"], "params must be a dict"),
])
def test_layer_refused_at_declaration(formula, params, culprit):
    with pytest.raises(ValueError, match=r"layer 'L'") as info:
        sn.Layer(3, formula, params=params, name="L")
    assert culprit in str(info.value)


def test_linear_layer_formula_takes_z():
    with pytest.raises(ValueError, match=r"layer 'L'.*argument 'x'.*z = W·x"):
        sn.Layer(3, lambda x, i: x[i], linear="W", name="L")
    with pytest.raises(ValueError, match="declared twice"):
        sn.Layer(3, lambda z, W, i: z[i] * W[i], params={"W": "out"}, linear="W", name="L")


@pytest.mark.parametrize("init, culprit", [({"V": "ones"}, "not a parameter"),
                                           ({"W": "uniformish"}, "must be one of"),
                                           ({"W": True}, "must be one of"),
                                           ("ones", "init must be a dict")])
def test_layer_init_refused(init, culprit):
    with pytest.raises(ValueError, match=culprit):
        sn.Layer(3, lambda x, W, i, j: dot(W, x, i, j), params=PARAMS, init=init, name="L")


def test_sizes_checked_when_the_layer_meets_its_input():
    """x[i] and "in"-dim params indexed by i need as many inputs as outputs."""
    L = sn.Layer(3, lambda x, i: sp.tanh(x[i]), name="L")
    with pytest.raises(ValueError, match=r"layer 'L'.*x\[i\] needs as many inputs as outputs"):
        sn.Network(sn.Input(4), L, loss="mse").graph()
    sn.Network(sn.Input(3), L, loss="mse").graph()          # fine when they agree
    M = sn.Layer(3, lambda x, V, i, j: sn.sum_j(V[i, j] * x[j]), params={"V": ("out", "out")},
                 name="M")
    with pytest.raises(ValueError, match=r"layer 'M'.*index j runs to 4.*'out' of V has length 3"):
        sn.Network(sn.Input(4), M, loss="mse").graph()
    N = sn.Layer(3, lambda x, i, j: sp.Sum(x[j], (j, 0, 5)), name="N")
    with pytest.raises(ValueError, match=r"layer 'N'.*sum runs to 5.*4 elements"):
        sn.Network(sn.Input(4), N, loss="mse").graph()


def test_parameter_names_shared_between_layers_refused():
    def a():
        return sn.Layer(2, lambda x, C, i, j: sn.sum_j(C[i, j] * x[j]), params={"C": ("out", "in")})
    b = sn.Layer(2, lambda x, C1, i, j: sn.sum_j(C1[i, j] * x[j]), params={"C1": ("out", "in")})
    # ten distinct layers (one object used ten times would share one parameter set)
    net = sn.Network(sn.Input(2), b, *[a() for _ in range(10)], loss="mse")  # C1 of 1, C of 11
    with pytest.raises(ValueError, match=r"\['C11'\] are used by two layers"):
        net.graph()


# --------------------------------------------------------------- losses

@pytest.mark.parametrize("loss, culprit", [
    (sp.floor(o - t), "floor"), (sp.Abs(o - t) + sp.Symbol("lam"), "lam"),
    (lambda o, t: sp.Function("h")(o), "unknown function h"),
    (lambda o: o, "two arguments"),
])
def test_custom_loss_refused(loss, culprit):
    with pytest.raises(ValueError, match=culprit):
        sn.Network(sn.Input(2), sn.Dense(1), loss=loss)


# --------------------------------------------------------------- kinks

@pytest.mark.parametrize("act, slope", [
    (sp.Abs(z), {-2.0: -1.0, 0.0: 0.0, 2.0: 1.0}),
    (sp.Max(z, 0), {-2.0: 0.0, 0.0: 0.0, 2.0: 1.0}),
    (sp.Max(z, z / 4), {-2.0: 0.25, 0.0: 0.0, 2.0: 1.0}),
    (sp.Min(z, 1), {0.0: 1.0, 1.0: 0.0, 2.0: 0.0}),
])
def test_kink_derivative_is_zero_at_the_kink(act, slope):
    """h = f(0·x + b), loss o: ∂L/∂b = f′(b); at the kink f′ = 0 by convention."""
    model = sn.Network(sn.Input(1), sn.Dense(1, act), loss=o).compile(dtype="float64")
    model.params["W1"] = [[0.0]]
    for b, want in slope.items():
        model.params["b1"] = [b]
        _, g = model.loss_and_grad(np.ones((1, 1)), np.zeros((1, 1)))
        assert g["b1"][0] == want, (act, b)
    # no Heaviside(0) = 1/2 in the derived C (the threads' running average is not one)
    derived = "\n".join(line for line in model.c_source.splitlines() if "sn_took" not in line)
    assert "0.5" not in derived and "1.0/2.0" not in derived


# --------------------------------------------------------------- flags and sizes

@pytest.mark.parametrize("make, message", [
    (lambda: sn.Dense(3, "relu", bias="no", name="fc"),
     r"^layer 'fc': bias must be True or False, got 'no'$"),
    (lambda: sn.Dense(3, trainable="False", name="fc"),
     r"^layer 'fc': trainable must be True or False, got 'False'$"),
    (lambda: sn.Conv2d(4, 3, bias=0.0, name="c"),
     r"^layer 'c' \(Conv2d\(4\)\): bias must be True or False, got 0\.0$"),
    (lambda: sn.LayerNorm(bias="none", name="n"),
     r"^layer 'n' \(LayerNorm\(eps=1e-05\)\): bias must be True or False, got 'none'$"),
    (lambda: sn.RMSNorm(bias=None, name="n"),
     r"^layer 'n' \(RMSNorm\(eps=1e-06\)\): bias must be True or False, got None$"),
    (lambda: sn.Layer(2, lambda x, W, i, j: dot(W, x, i, j), params=PARAMS, name="L",
                      trainable="no"),
     r"^layer 'L': trainable must be True or False, got 'no'$"),
    (lambda: sn.TransformerBlock(2, 16, causal="no", name="B"),
     r"^TransformerBlock 'B': causal must be True or False, got 'no'$"),
    # PyTorch's argument orders: the second number lands in a flag
    (lambda: sn.MultiHeadAttention(8, 2, name="att"),
     r"^MultiHeadAttention 'att': causal must be True or False, got 2; PyTorch's "
     r"MultiheadAttention\(embed_dim, num_heads\) is sn\.MultiHeadAttention\(num_heads\)"),
    (lambda: sn.GRU(8, 4, name="g"),
     r"^layer 'g' \(GRU\): return_sequences must be True or False, got 4; PyTorch's "
     r"GRU\(input_size, hidden_size\) is sn\.GRU\(hidden_size\)"),
    (lambda: sn.LSTM(8, "yes"),
     r"^layer 'LSTM': return_sequences must be True or False, got 'yes'"),
])
def test_flags_must_be_true_or_false(make, message):
    """A flag's truth value is not read: bias="no" and GRU(8, 4) were taken as True."""
    with pytest.raises(ValueError, match=message):
        make()


def test_numpy_integers_are_sizes():
    """Sizes computed with numpy (np.int64) are integers like Python's."""
    k = np.arange(5)
    net = sn.Network(sn.Input((k[1], k[4], k[4])),
                     sn.Conv2d(k[2], k[3], stride=k[1], padding=k[1], name="c"),
                     sn.MaxPool2d(k[2]), sn.Flatten(), sn.Dense(k[3], name="O"), loss="mse")
    assert net.param_shapes() == {"W1": (2, 1, 3, 3), "b1": (2,), "W4": (3, 8), "b4": (3,)}
    S = sn.Input((np.int32(4), np.int64(6)))
    att = sn.Network(S, sn.MultiHeadAttention(np.int64(2)), loss="mse")
    assert att.param_shapes()["W1"] == (18, 6)
    gru = sn.Network(S, sn.GRU(np.uint8(3), num_layers=np.int64(2)), loss="mse")
    assert gru.shapes[-1] == (3,) and gru.param_shapes()["W7"] == (9, 3)
    with pytest.raises(ValueError, match=r"Dense units must be a positive integer, got "
                                         r"np\.int64\(0\)"):
        sn.Dense(np.int64(0))
    with pytest.raises(ValueError, match="must be a positive integer, got np.True_"):
        sn.Dense(np.True_)
