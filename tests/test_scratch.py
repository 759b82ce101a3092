"""The C's work arrays start at a huge page and ask for transparent huge pages.

The products read activations and packed weights along rows a kilobyte or more apart; on
4 KiB pages each tile's pass over its rows missed the TLB (the bench's transformer step
held to AVX2: 3.73 ms, 3.66 on huge pages).  ``scratch`` gives an array of zeros that
starts at a 2 MiB boundary, in a private mapping advised MADV_HUGEPAGE; what the kernels
compute must not depend on where their work lies.
"""

import mmap
import os
import sys

import numpy as np
import pytest

import symnet as sn
from symnet.backend.c.runtime import HUGE_PAGE, scratch

huge_pages = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_HUGEPAGE")
    or not os.path.isdir("/sys/kernel/mm/transparent_hugepage"),
    reason="MADV_HUGEPAGE is Linux's, with transparent huge pages in its kernel")


def _vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping of this process that holds ``address``."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@huge_pages
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_large_scratch_starts_at_a_huge_page_and_is_advised(dtype):
    n = 3 * HUGE_PAGE // np.dtype(dtype).itemsize + 5
    a = scratch(n, dtype)
    assert a.dtype == np.dtype(dtype) and a.shape == (n,) and a.flags.c_contiguous
    assert a.flags.writeable
    assert a.ctypes.data % HUGE_PAGE == 0
    assert not a.any()                                  # zeros, as np.zeros
    assert "hg" in _vm_flags(a.ctypes.data)             # madvise(MADV_HUGEPAGE)
    a[:] = 7                                            # all of it ours to write
    assert float(a[-1]) == 7.0 and float(a.sum()) == 7.0 * n


def test_a_small_scratch_is_an_ordinary_array():
    a = scratch(1000, "float64")
    assert a.shape == (1000,) and not a.any() and a.flags.writeable


@huge_pages
def test_a_step_works_in_a_huge_page_scratch_and_gives_the_same_numbers():
    net = sn.Network(sn.Input(64), sn.Dense(512, "relu"), sn.Dense(512, "relu"), sn.Dense(10),
                     loss="softmax_cross_entropy")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1024, 64))
    T = np.eye(10)[rng.integers(0, 10, 1024)]
    a = net.compile(dtype="float64", seed=1)
    b = net.compile(dtype="float64", seed=1)
    loss_a = a.step(X, T, 0.05)
    rt = a.runtime
    assert rt._work.nbytes >= HUGE_PAGE                  # large enough to be a scratch
    assert rt._work.ctypes.data % HUGE_PAGE == 0
    assert "hg" in _vm_flags(rt._work.ctypes.data)
    # the same step with the work in an ordinary array, at an odd place: the same bits
    rb = b.runtime
    rb.reserve(1024)
    plain = np.zeros(rb._work.size + 3, rb.dtype)[3:]
    rb._work, rb._p_work = plain, rb.buffer(plain)
    loss_b = b.step(X, T, 0.05)
    assert loss_a == loss_b
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
