"""symnet.plan.fuse.fuse_loops: two element loops in a row over the same indices run as
one (the softmax's exponentials and their Σ; its gradient's two element passes; a
residual after an activation).  Off by default (symnet.plan.lower.FUSE_LOOPS: measured,
the joined loops cost the transformer's step); these tests turn it on.  The fused C gives the same numbers as the C without the
rewrite, to the rounding of the vectorised exponential (a loop that GCC vectorised
differently calls the vector e^x of libmvec or the scalar one), in float64 and float32,
every gradient; and the rewrite refuses
loops whose second reads the first's target at another point."""

import numpy as np
import pytest

import symnet as sn
import symnet.plan.lower as lower
from symnet.ir import nodes as ir
from symnet.plan.fuse import _joined
from symnet.plan.ops import Loop
from own_cache import own_cache

L, D = 5, 8


def _network():
    S = sn.Input((L, D), name="S")
    x = sn.TransformerBlock(2, 16, name="B1")(S)
    x = sn.TransformerBlock(2, 16, causal=True, name="B2")(x)
    return sn.Network(S, sn.Dense(3, name="O")(sn.Flatten(name="F")(x)),
                      loss="softmax_cross_entropy")


def _targets(ops):
    return [{t for t, *_ in op.stmts} for op in ops if isinstance(op, Loop)]


@pytest.fixture(autouse=True)
def _joined_loops(monkeypatch):
    monkeypatch.setattr(lower, "FUSE_LOOPS", True)


def test_off_by_default(monkeypatch):
    monkeypatch.setattr(lower, "FUSE_LOOPS", False)
    p = lower.plan(_network().graph())
    assert {"B1_att_e", "z_B1_att_z"} not in _targets(p.forward)
    assert not any({"B1_att_e", "z_B1_att_z"} <= t for t in _targets(p.forward))


def test_the_exponentials_and_their_sum_are_one_loop():
    p = lower.plan(_network().graph())
    assert {"B1_att_e", "z_B1_att_z"} in _targets(p.forward)
    assert any({"dL_dB2_att_e", "dL_dB2_att_s"} <= t for t in _targets(p.backward))
    # under other index names: ∂L/∂(the residual) += δ of LayerNorm's mean (b, a, e),
    # then its copies to the block's input and the attention (b, i, x) and the bias sum
    # of the attention's output projection (b, tq, i)
    assert any({"dL_dB2_res1", "dL_dB1", "dL_dB2_att", "g_co9"} <= t
               for t in _targets(p.backward))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_c_gives_the_same_numbers(dtype, monkeypatch, rng, tmp_path):
    fused = _network().compile(dtype=dtype, seed=0)
    monkeypatch.setattr(lower, "FUSE_LOOPS", False)
    monkeypatch.setenv("SYMNET_CACHE_DIR", own_cache(tmp_path))   # not the fused module
    plain = _network().compile(dtype=dtype, seed=0)
    assert len(plain.c_source) > len(fused.c_source)      # the rewrite did something
    new = {k: rng.normal(scale=0.5, size=v.shape).astype(dtype)
           for k, v in fused.params.items()}
    fused.params.update(new)
    plain.params.update(new)
    X = rng.normal(size=(6, L, D)).astype(dtype)
    T = np.eye(3, dtype=dtype)[rng.integers(0, 3, 6)]
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(fused.forward(X), plain.forward(X), rtol=tol)
    lf, gf = fused.loss_and_grad(X, T)
    lp, gp = plain.loss_and_grad(X, T)
    assert lf == pytest.approx(lp, rel=tol)
    for name in gp:
        np.testing.assert_allclose(gf[name], gp[name], rtol=tol,
                                   atol=tol * np.abs(gp[name]).max(), err_msg=name)


def test_a_read_at_another_point_is_not_fused():
    p = lower.plan(_network().graph())
    syms = p.symbols
    point = (ir.BATCH, "i")
    loops = [(ir.BATCH, 4), ("i", 8)]
    x = ir.element(syms, "B1_att_e", *point)
    a = Loop(loops, [("dL_dB1_att_e", point, "=", 2 * x)], "a")
    same = ir.element(syms, "dL_dB1_att_e", *point)
    b = Loop(loops, [("dL_dB1_att_s", point, "=", 3 * same)], "b")
    assert _joined(p, a, b) is not None
    other = ir.element(syms, "dL_dB1_att_e", ir.BATCH, ir.Affine((("i", 1),), 1))
    b2 = Loop(loops, [("dL_dB1_att_s", point, "=", 3 * other)], "b")
    assert _joined(p, a, b2) is None
    # the first reading what the second writes: not joined either
    a2 = Loop(loops, [("dL_dB1_att_e", point, "=", 2 * ir.element(syms, "dL_dB1_att_s",
                                                                    *point))], "a")
    assert _joined(p, a2, b) is None


def test_a_loop_that_reads_its_indices_as_numbers_keeps_them():
    """Dropout's counter is its element's index (8·a0 + a1), read as a number, not through
    an array: after a LayerNorm over other index names the two loops stay apart (joined,
    the C read a0 and a1 that the joined loop does not declare: gcc refused it)."""
    net = sn.Network(sn.Input(6, dtype="int"), sn.Embedding(10, 8), sn.LayerNorm(),
                     sn.Dropout(0.5), sn.Flatten(), sn.Dense(4), loss="softmax_cross_entropy")
    model = net.compile(dtype="float64", seed=0)
    X = np.random.default_rng(0).integers(0, 10, (16, 6))
    T = np.eye(4)[X[:, 0] % 4]
    loss, grads = model.loss_and_grad(X, T)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    # training drops about half of the LayerNorm's outputs: the loss differs from eval's
    assert loss != pytest.approx(model.evaluate(X, T)["loss"], rel=1e-6)
