"""Every buffer an op of a plan reads was written earlier (tests/plan_reads.py), for networks
of every kind of layer; and LayerNorm on the network's input: its mean and 1/σ need no delta
(no ∂L/∂ of them is written), and none is computed."""

import pytest

import symnet as sn
from symnet.plan.lower import plan

import plan_reads

L, D = 4, 8


def _blocks():
    S = sn.Input((L, D), name="S")
    x = sn.TransformerBlock(2, 16, name="B1")(S)
    x = sn.TransformerBlock(2, 16, causal=True, name="B2")(x)
    return sn.Network(S, sn.Dense(3, name="O")(sn.Flatten(name="F")(x)),
                      loss="softmax_cross_entropy")


NETWORKS = {
    "layernorm on the input": lambda: sn.Network(
        sn.Input((L, D), name="S"), sn.LayerNorm(name="N"), sn.Flatten(), sn.Dense(3),
        loss="mse"),
    "rmsnorm on the input": lambda: sn.Network(
        sn.Input((L, D), name="S"), sn.RMSNorm(name="N"), sn.Flatten(), sn.Dense(3),
        loss="mse"),
    "softmax on the input": lambda: sn.Network(
        sn.Input(5), sn.Softmax(), sn.Dense(3), loss="mse"),
    "softmax layer": lambda: sn.Network(
        sn.Input(5), sn.Dense(6, "tanh"), sn.Softmax(), sn.Dense(3), loss="mse"),
    "dense": lambda: sn.Network(sn.Input(5), sn.Dense(6, "tanh"), sn.Dense(3), loss="mse"),
    "transformer blocks": _blocks,
    "attention": lambda: sn.Network(
        sn.Input((L, D), name="S"), sn.MultiHeadAttention(2, name="A"), sn.Flatten(),
        sn.Dense(2), loss="mse"),
    "conv and pooling": lambda: sn.Network(
        sn.Input((1, 8, 8)), sn.Conv2d(4, 3, activation="relu"), sn.MaxPool2d(2),
        sn.Flatten(), sn.Dense(3), loss="softmax_cross_entropy"),
    "batchnorm": lambda: sn.Network(
        sn.Input((2, 6)), sn.Conv1d(3, 1, activation="tanh"), sn.BatchNorm1d(),
        sn.Flatten(), sn.Dense(3), loss="mse"),
    "gru": lambda: sn.Network(sn.Input((5, 3), name="S"), sn.GRU(4), sn.Dense(2),
                              loss="mse"),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_read_buffer_is_written_before(name):
    plan_reads.check(plan(NETWORKS[name]().graph()))


def test_layernorm_on_the_input_computes_no_dead_delta():
    p = plan(NETWORKS["layernorm on the input"]().graph())
    names = {t for op in p.backward if hasattr(op, "stmts") for t, *_ in op.stmts}
    assert not any(n.startswith("delta_N_") for n in names), names


def test_the_check_finds_a_read_of_an_unwritten_buffer():
    p = plan(NETWORKS["dense"]().graph())
    ops = [op for op in p.forward + p.backward if getattr(op, "C", None) != "dL_dH1"]
    assert any(b == "dL_dH1" for b, _ in plan_reads.unwritten_reads(p, ops))


@pytest.mark.parametrize("name", ["attention", "transformer blocks", "softmax layer"])
def test_a_softmax_sends_no_gradient_through_its_maximum(name):
    """x − max: the softmax is the same for any shift, so ∂L/∂max = 0 and the plan has no
    pass for it nor for its argmax (a Route); the gradients themselves are checked against
    PyTorch, numpy and central differences in tests/test_attention.py and test_norm.py."""
    from symnet.plan.ops import Route
    p = plan(NETWORKS[name]().graph())
    maxima = [n.name for n in p.graph.nodes if n.kind == "max"]
    assert maxima
    assert not any(isinstance(op, Route) for op in p.backward)
    written = {t for op in p.backward if hasattr(op, "stmts") for t, *_ in op.stmts}
    assert not any(m in t for m in maxima for t in written), written
