"""Sums that need no zeroing (symnet.plan.overwrite): which zeroings go, which stay, and
the same results from the C and the NumPy backend, which both read the rewritten plan."""

import re

import numpy as np

import symnet as sn
from symnet.plan.lower import plan
from symnet.plan.ops import Loop, Zero


def attention_net():
    S = sn.Input((7, 6), name="S")
    x = sn.TransformerBlock(2, 8, name="B")(S)
    return sn.Network(S, sn.Dense(3, name="O")(sn.Flatten(name="F")(x)),
                      loss="softmax_cross_entropy")


def test_zeroings_that_go_and_stay():
    p = plan(attention_net().graph())
    zeroed = {op.buffer for op in p.forward + p.backward if isinstance(op, Zero)}
    loops = [op for op in p.forward + p.backward if isinstance(op, Loop)]
    fresh = set().union(*(op.fresh for op in loops))
    stored = {t for op in loops for t, _, kind, _ in op.stmts if kind == "="}
    # sums over one index, stored whole: the scores and weighted sum (products), the
    # softmax's row sums (a loop with its sum in a local), the probabilities' gradient
    assert {"z_B_att_s", "z_B_att_a", "z_B_att_z", "dL_dB_att_p"} <= fresh
    # element formulas over every index of their target: "+=" became "="
    assert {"dL_dB_att_e", "dL_dB_att_s"} <= stored
    # and the loops' comments (the C's) say so, for stored and fresh targets alike
    for op in loops:
        for target, index, kind, _ in op.stmts:
            said = f"{target}[{','.join(map(str, index))}]"
            if (kind == "=" or target in op.fresh) and said in op.comment:
                assert f"{said} +=" not in op.comment and f"{said} =" in op.comment, said
    assert not (fresh | {"dL_dB_att_e", "dL_dB_att_s"}) & zeroed
    # two loops write the projections' gradient in pieces, ∂L/∂V, then ∂L/∂K and ∂L/∂Q
    # (symnet.plan.overwrite._spread): each element once, no zeroing, every piece stores
    assert "dL_dB_att_qkv" not in zeroed
    writers = [op for op in loops if any(t == "dL_dB_att_qkv" for t, *_ in op.stmts)]
    assert len(writers) == 2 and all("dL_dB_att_qkv" in op.fresh for op in writers)
    # a maximum starts from −∞ (Fill), and a gradient summed over the batch from 0
    assert "z_B_att_m" not in fresh and "g_W1" not in fresh | stored


def test_c_and_numpy_backends_agree(rng):
    """LayerNorm and softmax over rows (the NumPy backend runs no per-position products)."""
    S = sn.Input((7, 6), name="S")
    x = sn.Softmax(name="P")(sn.LayerNorm(name="N")(S))
    net = sn.Network(S, sn.Dense(3, name="O")(sn.Flatten(name="F")(x)),
                     loss="softmax_cross_entropy")
    loops = [op for op in plan(net.graph()).backward if isinstance(op, Loop)]
    assert any(op.fresh for op in loops) and any(k == "=" for op in loops
                                                  for _, _, k, _ in op.stmts)
    c = net.compile(dtype="float64", seed=1)
    npy = net.compile(dtype="float64", seed=1, backend="numpy")
    X = rng.normal(size=(5, 7, 6))
    T = np.eye(3)[rng.integers(0, 3, 5)]
    np.testing.assert_allclose(npy.forward(X), c.forward(X), rtol=1e-12, atol=1e-14)
    lc, gc = c.loss_and_grad(X, T)
    ln, gn = npy.loss_and_grad(X, T)
    assert ln == np.float64(lc) or abs(ln - lc) <= 1e-12 * abs(lc)
    for name, ref in gc.items():
        np.testing.assert_allclose(gn[name], ref, rtol=1e-10, atol=1e-12, err_msg=name)


def gru_net(steps=3):
    S = sn.Input((steps, 2), name="S")
    return sn.Network(S, sn.GRU(4), sn.Dense(2, name="O"), loss="mse")


def test_gate_pieces_that_tile_a_row_store():
    """A gated cell's gates write ∂L/∂ of their stacked pre-activations at [b, i],
    [b, i + H], [b, i + 2H]: pieces that tile the row, so that row needs no zeroing;
    ∂L/∂ of the whole sequence's projection, of which each step writes its own row
    (symnet.plan.overwrite._spread), needs none either."""
    p = plan(gru_net().graph())
    zeroed = {op.buffer for op in p.backward if isinstance(op, Zero)}
    assert not {"dL_dh_2_gh", "dL_dh_3_gh", "dL_dh_gx"} & zeroed
    loop = next(op for op in p.backward if isinstance(op, Loop)
                and any(t == "dL_dh_3_gh" for t, *_ in op.stmts))
    kinds = [kind for t, _, kind, _ in loop.stmts if t == "dL_dh_3_gh"]
    assert kinds == ["=", "=", "="]
    assert "dL_dh_3_gh[b,i + 64] =" not in loop.comment     # H = 4
    assert "dL_dh_3_gh[b,i + 4] =" in loop.comment and "dL_dh_3_gh[b,i + 8] =" in loop.comment
    assert [kind for t, _, kind, _ in loop.stmts if t == "dL_dh_gx"] == ["="] * 3


def test_gate_pieces_that_do_not_tile_keep_their_zeros():
    """Two of three pieces (a row of 3H written at i and i + H only) leave H elements to
    the zeros: the rewrite refuses."""
    from symnet.plan import overwrite as ow
    p = plan(gru_net().graph())
    loop = next(op for op in p.backward if isinstance(op, Loop)
                and any(t == "dL_dh_3_gh" for t, *_ in op.stmts))
    mine = [k for k, (t, *_) in enumerate(loop.stmts) if t == "dL_dh_3_gh"]
    stmts = [(t, i, "+=", e) for t, i, _, e in loop.stmts]
    two = Loop(loop.indices, [s for k, s in enumerate(stmts) if k != mine[-1]], loop.comment)
    assert ow._fresh_pieces(p, two, "dL_dh_3_gh", mine[:2]) is None
    three = Loop(loop.indices, stmts, loop.comment)
    assert ow._fresh_pieces(p, three, "dL_dh_3_gh", mine) is three


def test_gru_c_and_numpy_backends_agree_with_gates_stored(rng):
    X, T = rng.normal(size=(5, 3, 2)), rng.normal(size=(5, 2))
    c = gru_net().compile(dtype="float64", seed=1)
    n = gru_net().compile(backend="numpy", dtype="float64", seed=1)
    n.params.update({k: v.copy() for k, v in c.params.items()})
    (lc, gc), (ln, gn) = c.loss_and_grad(X, T), n.loss_and_grad(X, T)
    assert abs(lc - ln) <= 1e-12 * abs(ln)
    for k in gc:
        np.testing.assert_allclose(gc[k], gn[k], rtol=1e-11, atol=1e-14)


def _qkv_writers(p):
    """Copies of the loops that write attention's ∂L/∂qkv, as lower made them (adding)."""
    import dataclasses
    out = []
    for op in p.backward:
        if isinstance(op, Loop) and any(t == "dL_dB_att_qkv" for t, *_ in op.stmts):
            stmts = [(t, i, "+=" if t == "dL_dB_att_qkv" else k, e) for t, i, k, e in op.stmts]
            comment = re.sub(r"(dL_dB_att_qkv\[[^\]]*\]) =", r"\1 +=", op.comment)
            out.append(dataclasses.replace(op, stmts=stmts, comment=comment,
                                           fresh=set(op.fresh) - {"dL_dB_att_qkv"}))
    return out


def test_pieces_that_do_not_cover_or_overlap_keep_their_zeros():
    """∂L/∂V alone leaves ∂L/∂Q and ∂L/∂K to the zeros, and ∂L/∂V twice reaches its
    elements twice: the rewrite refuses both; ∂L/∂V then ∂L/∂K and ∂L/∂Q it takes."""
    from symnet.plan import overwrite as ow
    p = plan(attention_net().graph())
    v, kq = _qkv_writers(p)
    assert not ow._spread(p, [_qkv_writers(p)[0]], "dL_dB_att_qkv")
    assert not ow._spread(p, [_qkv_writers(p)[0], _qkv_writers(p)[0]], "dL_dB_att_qkv")
    assert not ow._spread(p, [_qkv_writers(p)[1]], "dL_dB_att_qkv")
    assert ow._spread(p, [v, kq], "dL_dB_att_qkv")
    assert "dL_dB_att_qkv" in v.fresh and "dL_dB_att_qkv" in kq.fresh
    assert "dL_dB_att_qkv[b,tq,hd*3 + e] += Σ_tk" in _qkv_writers(p)[1].comment
    assert "dL_dB_att_qkv[b,tq,hd*3 + e] = Σ_tk" in kq.comment


def test_attention_pieces_store_in_the_c():
    """No zeroing of ∂L/∂qkv, and each of its three products stores (accumulate = 0)."""
    src = attention_net().compile(dtype="float32").c_source
    assert "memset(dL_dB_att_qkv" not in src
    calls = [line for line in src.splitlines()
             if "sn_small_mm(" in line and ", dL_dB_att_qkv + " in line]
    assert len(calls) == 3 and all(line.endswith(", 0);") for line in calls), calls


def test_attention_c_numpy_and_central_differences_agree(rng):
    """The pieces stored: the C against the NumPy backend (which zeroes only the elements
    a fresh statement writes) in float64 at 1e-12, against central differences, and the
    float32 C against the float64 one."""
    from gradcheck import check
    net = attention_net()
    c = net.compile(dtype="float64", seed=1)
    npy = net.compile(dtype="float64", seed=1, backend="numpy")
    npy.params.update({k: v.copy() for k, v in c.params.items()})
    X = rng.normal(size=(3, 7, 6))
    T = np.eye(3)[rng.integers(0, 3, 3)]
    (lc, gc), (ln, gn) = c.loss_and_grad(X, T), npy.loss_and_grad(X, T)
    assert abs(lc - ln) <= 1e-12 * abs(ln)
    for k in gc:
        np.testing.assert_allclose(gc[k], gn[k], rtol=1e-12, atol=1e-14, err_msg=k)
    check(c, X, T)
    f = net.compile(dtype="float32", seed=1)
    f.params.update({k: v.astype(np.float32) for k, v in c.params.items()})
    lf, gf = f.loss_and_grad(X.astype(np.float32), T.astype(np.float32))
    assert abs(lf - lc) <= 1e-5 * abs(lc)
    for k in gc:
        np.testing.assert_allclose(gf[k], gc[k], rtol=2e-3, atol=2e-5 * np.abs(gc[k]).max(),
                                   err_msg=k)
