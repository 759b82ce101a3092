"""symnet's matrix driver (templates/gemm.c.j2) on every path of its tiles, in float32
as the machine's probe compiles it: the full register tile, the 16-wide tile of the last
block of columns (stored in place when the block is 16 wide, through a copy when
narrower), the full tile on a copy for a block wider than 16, and the rows left over.
Each product is checked against numpy, and bit for bit against the same columns
computed by the full tile alone (a product 48 columns wide), on one thread and on two."""

import numpy as np
import pytest

from symnet.backend.c import tuning

KINDS = {0: "nt", 1: "nn", 2: "tn"}


@pytest.fixture(scope="module")
def probe():
    with tuning._probe() as (ffi, lib):
        yield ffi, lib


def product(probe, kind, M, N, K, A, B, threads=1):
    """C = op(A)·op(B) by the probe's driver (no BLAS; every product on `threads`)."""
    ffi, lib = probe
    null = ffi.cast(tuning._BLAS_FN.format(real="float"), 0)
    # thread_min 1: two threads take even the smallest product's jobs
    lib.sn_probe_tune(null, float("inf"), 1.0 if threads > 1 else 1e300, threads)
    C = np.full(M * N, np.nan, np.float32)
    lib.sn_probe_gemm(kind, M, N, K, ffi.from_buffer("float[]", A),
                      ffi.from_buffer("float[]", B), ffi.from_buffer("float[]", C), 1)
    return C.reshape(M, N)


def operands(kind, M, N, K, rng):
    """A and B laid out as the kind reads them, and C in float64 by numpy."""
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    want = A.astype(np.float64) @ B.astype(np.float64)
    a = A if kind in (0, 1) else np.ascontiguousarray(A.T)
    b = np.ascontiguousarray(B.T) if kind == 0 else B
    return a.ravel(), b.ravel(), want


# N: 16 (the narrow tile in place), 13 and 37 (narrow through a copy), 40 and 64
# (full tiles, then 16 wide), 70 (a last block of 22: the full tile on a copy), 256;
# M: rows left over after tiles of 4 and of 6; K 300: two panels of depth
SHAPES = [(45, 16, 64), (13, 13, 300), (7, 37, 64), (45, 40, 300), (50, 64, 64),
          (6, 70, 32), (33, 256, 64)]


@pytest.mark.parametrize("kind", sorted(KINDS), ids=KINDS.get)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_products_equal_numpy(probe, kind, M, N, K):
    rng = np.random.default_rng(M * 1000 + N + K)
    a, b, want = operands(kind, M, N, K, rng)
    got = product(probe, kind, M, N, K, a, b)
    assert np.all(np.isfinite(got))
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-5, (KINDS[kind], M, N, K, err)


@pytest.mark.parametrize("kind", sorted(KINDS), ids=KINDS.get)
@pytest.mark.parametrize("M,N", [(45, 40), (7, 37), (50, 16), (13, 13)])
def test_narrow_tile_gives_the_full_tiles_bits(probe, kind, M, N):
    """Columns of a product N wide equal, bit for bit, the same columns of the product 48
    wide (full tiles only) of the same operands, on one thread and on two: every
    element is summed in the order of k whichever tile computes it."""
    rng = np.random.default_rng(M + N)
    K = 300
    a48, b48, _ = operands(kind, M, 48, K, rng)
    wide = product(probe, kind, M, 48, K, a48, b48)
    b = b48.reshape(48, K)[:N] if kind == 0 else b48.reshape(K, 48)[:, :N]
    b = np.ascontiguousarray(b).ravel()
    for threads in (1, 2):
        got = product(probe, kind, M, N, K, a48, b, threads)
        assert np.array_equal(got, wide[:, :N]), (KINDS[kind], M, N, threads)
