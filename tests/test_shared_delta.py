"""A tensor node whose output is its sum plus a bias (attention's projections, a
Pointwise without activation) has δ = ∂L/∂output element for element: the delta
shares that gradient's buffer (symnet.plan.lower), no loop copies it, and the
gradients stay those of central differences."""

import numpy as np

import symnet as sn
from symnet.plan.lower import plan
from symnet.plan.ops import Loop

from gradcheck import check


def _net():
    S = sn.Input((5, 6), name="S")
    a = sn.MultiHeadAttention(2, name="A")(S)
    h = sn.Pointwise(4, name="P")(a)
    return sn.Network(S, sn.Dense(2, name="O")(sn.Flatten(name="F")(h)), loss="mse")


def test_delta_shares_the_upstream_buffer():
    p = plan(_net().graph())
    for delta, upstream in (("delta_A_qkv", "dL_dA_qkv"), ("delta_A", "dL_dA"),
                            ("delta_P", "dL_dP")):
        assert p.buffers[delta].kind == "alias" and p.buffers[delta].alias == upstream
    written = {t for op in p.backward if isinstance(op, Loop) for t, *_ in op.stmts}
    assert not written & {"delta_A_qkv", "delta_A", "delta_P"}
    # the bias gradients are still summed from the upstream gradient
    assert {"g_c1", "g_co1", "g_b2"} <= written


def test_gradients_against_differences(rng):
    model = _net().compile(dtype="float64", seed=2)
    X, T = rng.normal(size=(3, 5, 6)), rng.normal(size=(3, 2))
    check(model, X, T)
