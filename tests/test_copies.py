"""symnet.plan.copies.elide_copies: a loop that only copies a gradient through a sum
(a residual connection's ``dL_dB2_res1 = dL_dB2; dL_dB2_ff2 = dL_dB2``) goes, its
targets made names of the source's memory, where nothing writes either while the other
is read.  The results are the bits of the plan with the copies; a copy that another op
would overwrite while it is still read stays."""

import copy
import dataclasses

import numpy as np
import pytest

import symnet as sn
import symnet.plan.lower as lower
from symnet.ir import nodes as ir
import symnet.plan.copies as copies
from symnet.plan.copies import elide_copies
from symnet.plan.fuse import _root
from symnet.plan.ops import Loop, MatMul

from same_bits import assert_same_training
from own_cache import own_cache


def _transformer(blocks=2):
    S = sn.Input((6, 16), name="S")
    x = S
    for k in range(blocks):
        x = sn.TransformerBlock(2, 32, name=f"B{k + 1}")(x)
    return sn.Network(S, sn.Dense(10, name="O")(sn.Flatten(name="F")(x)),
                      loss="softmax_cross_entropy")


def _residual_mlp():
    """A vector network: its weight gradients run after its chunks (schedule.halves).
    H2 is linear, so its delta is ∂L/∂H2 itself, a copy of ∂L/∂R2 as ∂L/∂R1 is, and the
    product that adds δ_H2·W2 into ∂L/∂R1 reads δ_H2: one of the two copies must stay (64
    wide: that product's later column tiles would read rows of δ_H2 that its first tile
    of the same rows had overwritten)."""
    x = sn.Input(12, name="X")
    h = sn.Dense(64, "tanh", name="H1")(x)
    r1 = sn.Add(name="R1")([h, sn.Dense(64, name="P")(x)])
    r2 = sn.Add(name="R2")([sn.Dense(64, name="H2")(r1), r1])
    return sn.Network(x, sn.Dense(4, name="O")(r2), loss="softmax_cross_entropy")


def _residual_conv():
    x = sn.Input((2, 8, 8), name="X")
    c = sn.Conv2d(4, 3, padding=1, activation="relu", name="C1")(x)
    r = sn.Add(name="R")([sn.Conv2d(4, 3, padding=1, activation="tanh", name="C2")(c), c])
    return sn.Network(x, sn.Dense(10, name="O")(sn.Flatten(name="F")(r)),
                      loss="softmax_cross_entropy")


def _is_copy(p, op):
    return isinstance(op, Loop) and all(
        kind == "=" and expr.is_Symbol and expr in p.symbols
        and p.symbols[expr].array != target for target, _, kind, expr in op.stmts)


def _plain(monkeypatch):
    monkeypatch.setattr(lower, "elide_copies", lambda p, ops, before: ops)


def test_the_residual_stream_keeps_one_gradient(monkeypatch):
    p = lower.plan(_transformer().graph())
    assert not any(_is_copy(p, op) for op in p.backward)
    # ∂L/∂ of both blocks' sums and of what they add: one memory, ∂L/∂B2's
    stream = ["dL_dB2_res1", "dL_dB2_ff2", "dL_dB1", "dL_dB2_att", "dL_dB1_res1",
              "dL_dB1_ff2", "dL_dB1_att"]
    assert {_root(p, n) for n in stream} == {"dL_dB2"}
    assert all(p.buffers[n].kind == "alias" for n in stream)
    _plain(monkeypatch)
    q = lower.plan(_transformer().graph())
    copies = [op for op in q.backward if _is_copy(q, op)]
    # B2's two sums and B1's second: two copies each; B1's first: ∂L/∂B1_att alone
    # (its other term, ∂L/∂S, is not derived)
    assert sorted(len(op.stmts) for op in copies) == [1, 2, 2, 2]
    assert q.work_per_row > p.work_per_row


def test_the_c_declares_the_aliases_and_copies_nothing():
    model = _transformer().compile(dtype="float32", seed=0)
    src = model.c_source
    assert "real *dL_dB2_ff2 = dL_dB2;" in src
    assert "dL_dB2_ff2[b * 96 + i * 16 + x] = dL_dB2[" not in src
    assert "dL_dB2_res1[" in src      # still read and added into, as dL_dB2's memory


def _compare(make, dtype, shape, batch, monkeypatch, tmp_path, rng, elided=True):
    """The network compiled with and without the rewrite: the same forward, loss,
    gradients and parameters after three steps (``elided``: whether any copy went).  Every
    product on symnet's tiles: the plain build's cache of its own times its products
    afresh, and could send one to OpenBLAS that the other build runs on the tiles."""
    monkeypatch.setenv("SYMNET_BLAS", "0")
    fast = make().compile(dtype=dtype, seed=0)
    _plain(monkeypatch)
    monkeypatch.setenv("SYMNET_CACHE_DIR", own_cache(tmp_path))   # not the same module
    plain = make().compile(dtype=dtype, seed=0)
    assert (fast.c_source != plain.c_source) == elided
    new = {k: rng.normal(scale=0.3, size=v.shape).astype(dtype)
           for k, v in fast.params.items()}
    fast.params.update(new)
    plain.params.update(new)
    X = rng.normal(size=(batch, *shape)).astype(dtype)
    T = np.eye(10, dtype=dtype)[rng.integers(0, 10, batch)][:, :plain.n_out]
    assert_same_training(fast, plain, X, T)


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_the_same_bits_in_a_transformer(dtype, monkeypatch, tmp_path, rng):
    """Batch 20: the pass in chunks of 8 examples, on two threads."""
    _compare(_transformer, dtype, (6, 16), 20, monkeypatch, tmp_path, rng)


def test_the_same_bits_in_a_residual_vector_network(monkeypatch, tmp_path, rng):
    _compare(_residual_mlp, "float64", (12,), 9, monkeypatch, tmp_path, rng)


def test_the_same_bits_in_a_residual_conv_network(monkeypatch, tmp_path, rng):
    _compare(_residual_conv, "float64", (2, 8, 8), 5, monkeypatch, tmp_path, rng)


def test_the_numpy_backend_reads_the_aliases(rng):
    model = _transformer(1).compile(dtype="float64", seed=0)
    ref = _transformer(1).compile(dtype="float64", seed=0, backend="numpy")
    ref.params.update(model.params)
    X = rng.normal(size=(5, 6, 16))
    T = np.eye(10)[rng.integers(0, 10, 5)]
    lc, gc = model.loss_and_grad(X, T)
    ln, gn = ref.loss_and_grad(X, T)
    assert np.isclose(lc, ln, rtol=1e-12)
    for name in gc:
        np.testing.assert_allclose(gc[name], gn[name], rtol=1e-9, atol=1e-12, err_msg=name)


# ---------------------------------------------------------------- when a copy must stay
@pytest.fixture(scope="module")
def plain_plan():
    mp = pytest.MonkeyPatch()
    mp.setattr(lower, "elide_copies", lambda p, ops, before: ops)
    try:
        p = lower.plan(_transformer(1).graph())
    finally:
        mp.undo()
    # the loop of B1's second sum: dL_dB1_res1 = dL_dB1; dL_dB1_ff2 = dL_dB1
    loop = next(op for op in p.backward if _is_copy(p, op) and len(op.stmts) == 2
                and {t for t, *_ in op.stmts} == {"dL_dB1_res1", "dL_dB1_ff2"})
    return p, loop


def _touch(p, loop, target, source, kind="="):
    """A loop over the copy's points: target (kind)= 2·source."""
    names = tuple(n for n, _ in loop.indices)
    return Loop(loop.indices, [(target, names, kind, 2 * ir.element(p.symbols, source, *names))],
                f"{target} {kind} 2·{source}")


def _elide(plain_plan, ops_of, before=()):
    p, loop = plain_plan
    p = copy.deepcopy(p)
    ops = ops_of(p, loop)
    return p, ops, elide_copies(p, ops, list(before))


def test_a_copy_alone_goes(plain_plan):
    p, ops, out = _elide(plain_plan, lambda p, L: [L])
    assert out == []
    assert _root(p, "dL_dB1_ff2") == _root(p, "dL_dB1_res1") == "dL_dB1"


@pytest.mark.parametrize("case", ["source written, target read later",
                                  "target written, source read later",
                                  "target written, the other target read later",
                                  "one op writes the target and reads the source",
                                  "target touched before the copy"])
def test_a_copy_read_after_the_other_is_written_stays(plain_plan, case):
    def ops_of(p, L):
        res1, ff2, src = "dL_dB1_res1", "dL_dB1_ff2", "dL_dB1"
        if case == "source written, target read later":
            return [L, _touch(p, L, src, "B1", "+="), _touch(p, L, "B1_ff2", ff2)]
        if case == "target written, source read later":
            return [L, _touch(p, L, ff2, "B1", "+="), _touch(p, L, "B1_ff2", src)]
        if case == "target written, the other target read later":
            return [L, _touch(p, L, res1, "B1", "+="), _touch(p, L, "B1_ff2", ff2)]
        if case == "one op writes the target and reads the source":
            return [L, _touch(p, L, ff2, src, "+=")]
        return [_touch(p, L, "B1_ff2", ff2), L]
    p, ops, out = _elide(plain_plan, ops_of)
    assert out == ops
    assert p.buffers["dL_dB1_ff2"].kind == p.buffers["dL_dB1_res1"].kind == "work"


def test_reads_then_writes_in_order_go(plain_plan):
    """The feed-forward's backward reads ∂L/∂B1_ff2, then LayerNorm's adds into
    ∂L/∂B1_res1: one memory."""
    def ops_of(p, L):
        return [L, _touch(p, L, "B1_ff2", "dL_dB1_ff2"),
                _touch(p, L, "dL_dB1_res1", "B1", "+="), _touch(p, L, "B1_ff2", "dL_dB1_res1")]
    p, ops, out = _elide(plain_plan, ops_of)
    assert out == ops[1:]


def test_a_weight_gradient_read_counts_where_the_schedule_runs_it(plain_plan):
    """A tensor network's chunks keep their weight gradients' products in the pass's
    order; a vector network's run after the chunks, so there the target is read last."""
    def ops_of(p, L):
        grad = next(b for b in p.buffers.values() if b.kind == "grad" and len(b.shape) == 2)
        gw = MatMul("tn", grad.name, "dL_dB1_ff2", "B1_ff2", grad.shape[0], grad.shape[1],
                    "batch * 6", False, "g = Σ δ·x")
        return [L, gw, _touch(p, L, "dL_dB1_res1", "B1", "+=")]
    p, ops, out = _elide(plain_plan, ops_of)
    assert out == ops[1:]
    mp = pytest.MonkeyPatch()
    mp.setattr(copies, "is_tensor", lambda p: False)
    try:
        p, ops, out = _elide(plain_plan, ops_of)
    finally:
        mp.undo()
    assert out == ops


def test_a_target_read_after_the_pass_stays(monkeypatch):
    """∂L/∂ of the input (model.input_grad) is read after the pass: never an alias."""
    x = sn.Input(12, name="X")
    r = sn.Add(name="R")([sn.Dense(12, "tanh", name="H")(x), x])
    net = sn.Network(x, sn.Dense(4, name="O")(r), loss="softmax_cross_entropy")
    p = lower.plan(dataclasses.replace(net.graph(), grad_inputs=True))
    assert p.buffers["dL_dX"].kind == "work"
    assert lower.plan(net.graph()).buffers.get("dL_dX") is None
