"""symnet.plan.fuse.fuse_epilogues: a layer's product and the loop after it that adds the
bias and applies a linear or relu activation run as one product whose
epilogue applies the loop's formula to each block of C as its sums finish
(templates/gemm.c.j2, sn_epi); symnet.plan.fuse.fuse_masks: the backward product of
∂L/∂H of a relu layer and the loop after it that multiplies by relu's derivative, the
same.  The C gives the bits of the C without the rewrite, on the plain-loop path of
small products, on the tiles (with and without the chunks' packed weights), on
OpenBLAS, and on more threads; the numpy backend reads the epilogue too; a loop whose
sum is read again later stays a loop."""

import dataclasses
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import symnet as sn
import symnet.plan.lower as lower
from symnet.ir import nodes as ir
from symnet.plan.fuse import fuse_epilogues, fuse_masks
from symnet.plan.ops import Loop, MatMul

from same_bits import assert_same_training
from own_cache import own_cache


CALL = re.compile(r"^ +sn_mm_nt_e\(", re.M)     # a call (not the wrapper's definition)
MASK = re.compile(r"^ +sn_mm_n[nt]_e\(.*, 2\);$", re.M)     # a call with the mask


def _mlp(width=48):
    return sn.Network(sn.Input(40), sn.Dense(width, "relu", name="H1"),
                      sn.Dense(width, "leaky_relu", name="H2"),
                      sn.Dense(32, "tanh", name="H3"), sn.Dense(10, name="O"),
                      loss="softmax_cross_entropy")


def test_which_loops_become_epilogues():
    p = lower.plan(_mlp().graph())
    products = [op for op in p.forward if isinstance(op, MatMul)]
    got = {op.C: (op.epilogue.bias, op.epilogue.act) if op.epilogue else None
           for op in products}
    # relu and the linear output: written by their products; tanh's loop and leaky
    # relu's stay (leaky relu's negative side is derived as 0.01·b2 + 0.01·z_H2, which
    # an epilogue computing 0.01·(b2 + z_H2) would round otherwise)
    assert got == {"H1": ("b1", "relu"), "z_H2": None, "z_H3": None, "O": ("b4", "linear")}
    loops = {t for op in p.forward if isinstance(op, Loop) for t, *_ in op.stmts}
    assert {"H2", "H3"} <= loops and not {"H1", "O"} & loops
    # the sums the epilogues replace are touched by no op of any pass
    ops = p.forward + p.loss + p.backward
    for z in ("z_H1", "z_O"):
        assert not any(z in (getattr(op, "A", None), getattr(op, "B", None),
                             getattr(op, "C", None)) for op in ops)


def test_a_sum_read_again_is_not_fused():
    p = lower.plan(_mlp().graph())
    syms = p.symbols
    k = next(i for i, op in enumerate(p.forward) if isinstance(op, MatMul)
             and op.epilogue is not None and op.epilogue.act == "relu")
    product = dataclasses.replace(p.forward[k], C="z_H1", epilogue=None)
    b, i = ir.BATCH, "i"
    u = ir.element(syms, "b1", i) + ir.element(syms, "z_H1", b, i)
    relu = Loop([(b, "batch"), (i, 48)],
                [("H1", (b, i), "=", sp.Piecewise((u, u > 0), (0, True)))], "relu")
    fused = fuse_epilogues(p, [product, relu], [])
    assert len(fused) == 1 and fused[0].C == "H1" and fused[0].epilogue.act == "relu"
    again = Loop([(b, "batch"), (i, 48)],
                 [("H3", (b, i), "=", 2 * ir.element(syms, "z_H1", b, i))], "again")
    assert fuse_epilogues(p, [product, relu], [again]) == [product, relu]
    assert fuse_epilogues(p, [product, relu, again], []) == [product, relu, again]
    # a sum the product adds into (accumulate) or another formula: not an epilogue
    assert fuse_epilogues(p, [dataclasses.replace(product, accumulate=True), relu], []) \
        == [dataclasses.replace(product, accumulate=True), relu]
    square = Loop([(b, "batch"), (i, 48)], [("H1", (b, i), "=", u**2)], "square")
    assert fuse_epilogues(p, [product, square], []) == [product, square]


def _compare(make, dtype, monkeypatch, tmp_path, rng, batch, shape, rewrite="fuse_epilogues",
             call=CALL):
    # every product on symnet's tiles (OpenBLAS: test_the_same_bits_on_openblas_and_two_threads),
    # not where each cache's timings send it: the plain build below compiles into a cache
    # of its own, whose timings (of a busy machine) could send a product to OpenBLAS that
    # the fused build runs on the tiles, and so give other bits
    monkeypatch.setenv("SYMNET_BLAS_MIN", "1e12")
    fused = make().compile(dtype=dtype, seed=0)
    assert call.search(fused.c_source)
    monkeypatch.setattr(lower, rewrite, lambda p, ops, later: ops)
    monkeypatch.setenv("SYMNET_CACHE_DIR", own_cache(tmp_path))   # not the fused module
    plain = make().compile(dtype=dtype, seed=0)
    assert not call.search(plain.c_source)
    new = {k: rng.normal(scale=0.3, size=v.shape).astype(dtype)
           for k, v in fused.params.items()}
    fused.params.update(new)
    plain.params.update(new)
    X = rng.normal(size=(batch, *shape)).astype(dtype)
    T = np.eye(10, dtype=dtype)[rng.integers(0, 10, batch)]
    assert_same_training(fused, plain, X, T)


REWRITES = [("fuse_epilogues", CALL), ("fuse_masks", MASK)]


# two builds each: the tiles (48 × 7) in the quick run, the rest in the slow one
SLOW = pytest.mark.slow


@pytest.mark.parametrize("rewrite,call", REWRITES, ids=[r for r, _ in REWRITES])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("width,batch", [pytest.param(8, 3, marks=SLOW), (48, 7),
                                         pytest.param(200, 96, marks=SLOW)])
def test_the_same_bits_as_the_loop(dtype, width, batch, rewrite, call, monkeypatch, tmp_path,
                                   rng):
    """width 8, batch 3: the plain loops of small products; 48 × 7: the tiles; 200 × 96:
    the tiles in the chunked pass on the layers' packed weights, partial column panels."""
    _compare(lambda: _mlp(width), dtype, monkeypatch, tmp_path, rng, batch, (40,), rewrite,
             call)


@pytest.mark.parametrize("rewrite,call", REWRITES, ids=[r for r, _ in REWRITES])
@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=SLOW)])
def test_the_same_bits_over_several_blocks_of_k(dtype, rewrite, call, monkeypatch, tmp_path,
                                                rng):
    """K = 600 inputs (and ∂L/∂H1 over K = 300 of H2's): each column panel summed in
    blocks of k (SN_KC = 256); the epilogue only after the last, on the finished sums."""
    def net():
        return sn.Network(sn.Input(600), sn.Dense(300, "relu", name="H1"),
                          sn.Dense(70, "relu", name="H2"), sn.Dense(10, name="O"),
                          loss="softmax_cross_entropy")
    _compare(net, dtype, monkeypatch, tmp_path, rng, 50, (600,), rewrite, call)


@pytest.mark.parametrize("rewrite,call", [REWRITES[0], pytest.param(*REWRITES[1], marks=SLOW)],
                         ids=[r for r, _ in REWRITES])
def test_the_same_bits_in_a_transformer(rewrite, call, monkeypatch, tmp_path, rng):
    """Dense layers at each of a sequence's positions (M = batch·positions): the
    attention's in-projection (linear) and the feed-forward's relu, and its derivative."""
    def net():
        S = sn.Input((6, 16), name="S")
        x = sn.TransformerBlock(2, 64, name="B1")(S)
        return sn.Network(S, sn.Dense(10, name="O")(sn.Flatten(name="F")(x)),
                          loss="softmax_cross_entropy")
    _compare(net, "float32", monkeypatch, tmp_path, rng, 12, (6, 16), rewrite, call)


def test_which_loops_take_the_mask():
    """relu's derivative joins the product of ∂L/∂H1 (the loop keeps the bias gradient's
    sum, now of δ_H1); leaky relu's (1 or 0.01) and tanh's stay loops."""
    p = lower.plan(_mlp().graph())
    masked = {op.C: op.epilogue.mask for op in p.backward
              if isinstance(op, MatMul) and op.epilogue is not None}
    assert masked == {"delta_H1": "H1"}
    assert all(op.epilogue is None or op.epilogue.act == "mask"
               for op in p.backward if isinstance(op, MatMul))
    # no op of any pass touches ∂L/∂H1 any more; the bias gradient sums δ_H1
    ops = p.forward + p.loss + p.backward
    assert not any("dL_dH1" in {getattr(op, x, None) for x in "ABC"} for op in ops)
    assert not any(p.symbols[s].array == "dL_dH1" for op in ops if isinstance(op, Loop)
                   for *_, e in op.stmts for s in e.free_symbols if s in p.symbols)
    sums = [(t, e) for op in p.backward if isinstance(op, Loop) for t, _, _, e in op.stmts
            if t == "g_b1"]
    assert len(sums) == 1 and p.symbols[sums[0][1]].array == "delta_H1"


def test_a_derivative_read_again_is_not_masked():
    p = lower.plan(_mlp().graph())
    k = next(i for i, op in enumerate(p.backward) if isinstance(op, MatMul)
             and op.epilogue is not None and op.epilogue.act == "mask")
    product = dataclasses.replace(p.backward[k], C="dL_dH1", epilogue=None)
    syms, b, i = p.symbols, ir.BATCH, "i"
    z, h = ir.element(syms, "dL_dH1", b, i), ir.element(syms, "H1", b, i)
    d = z * sp.Piecewise((1, h > 0), (0, True))
    loop = Loop([(b, "batch"), (i, 48)], [("delta_H1", (b, i), "=", d),
                                          ("g_b1", (i,), "+=", d)], "relu'")
    fused = fuse_masks(p, [product, loop], [])
    assert [type(op) for op in fused] == [MatMul, Loop]
    assert fused[0].C == "delta_H1" and fused[0].epilogue.mask == "H1"
    assert fused[1].stmts == [("g_b1", (i,), "+=", ir.element(syms, "delta_H1", b, i))]
    again = Loop([(b, "batch"), (i, 48)], [("H3", (b, i), "=", 2 * z)], "again")
    assert fuse_masks(p, [product, loop], [again]) == [product, loop]
    assert fuse_masks(p, [product, loop, again], []) == [product, loop, again]
    # ∂L/∂H1 read at another point by the loop's other statement, or another gate
    other = Loop([(b, "batch"), (i, 48)],
                 [("delta_H1", (b, i), "=", d),
                  ("g_b1", (i,), "+=", ir.element(syms, "dL_dH1", b, 0))], "other")
    assert fuse_masks(p, [product, other], []) == [product, other]
    leaky = Loop([(b, "batch"), (i, 48)],
                 [("delta_H1", (b, i), "=", z * sp.Piecewise((1, h > 0), (0.01, True)))], "l")
    assert fuse_masks(p, [product, leaky], []) == [product, leaky]


_BLAS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import symnet as sn
    import symnet.plan.lower as lower
    if sys.argv[1] == "plain":
        lower.fuse_epilogues = lambda p, ops, later: ops
        lower.fuse_masks = lambda p, ops, later: ops
    net = sn.Network(sn.Input(64), sn.Dense(96, "relu"), sn.Dense(80, "leaky_relu"),
                     sn.Dense(10), loss="softmax_cross_entropy")
    m = net.compile(dtype="float32", seed=0)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(70, 64)).astype(np.float32)
    T = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 70)]
    O = m.forward(X)
    L, g = m.loss_and_grad(X, T)
    print(json.dumps({"O": O.ravel().tolist(), "L": float(L),
                      "g": {k: v.ravel().tolist() for k, v in g.items()},
                      "blas": m.tuning.get("blas") is not None,
                      "calls": m.c_source.count("    sn_mm_nt_e("),
                      "masks": m.c_source.count("    sn_mm_nn_e(")}))
""")


@pytest.mark.slow       # two new processes, each measuring the machine and compiling afresh
def test_the_same_bits_on_openblas_and_two_threads(tmp_path):
    """Every product on OpenBLAS (SYMNET_BLAS_MIN=0) in two parts on the pool's threads:
    each part's epilogue after its call of the library."""
    import json
    import os
    out = {}
    for mode in ("fused", "plain"):     # each its own cache: not the other's module
        env = dict(os.environ, SYMNET_BLAS_MIN="0", SYMNET_PARALLEL_MIN="1",
                   OMP_NUM_THREADS="2", SYMNET_CACHE_DIR=str(tmp_path / mode))
        proc = subprocess.run([sys.executable, "-c", _BLAS, mode], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["fused"]["blas"]:
        pytest.skip("scipy-openblas32 not loaded")
    assert out["fused"].pop("calls") > 0 and out["plain"].pop("calls") == 0
    assert out["fused"].pop("masks") > 0 and out["plain"].pop("masks") == 0
    assert out["fused"] == out["plain"]


def test_the_numpy_backend_reads_the_epilogue(rng):
    net = _mlp(12)
    c = net.compile(dtype="float64", seed=2)
    npy = net.compile(dtype="float64", seed=2, backend="numpy")
    X = rng.normal(size=(9, 40))
    T = np.eye(10)[rng.integers(0, 10, 9)]
    np.testing.assert_allclose(npy.forward(X), c.forward(X), rtol=1e-12)
    lc, gc = c.loss_and_grad(X, T)
    ln, gn = npy.loss_and_grad(X, T)
    assert ln == pytest.approx(lc, rel=1e-12)
    for name in gc:
        np.testing.assert_allclose(gn[name], gc[name], rtol=1e-10,
                                   atol=1e-12 * np.abs(gc[name]).max(), err_msg=name)
