"""Limits checked before anything is allocated or emitted.

Sizes: the generated C indexes arrays with ``int``, and a network's
parameters, gradients and per-example work must fit in memory; both are
checked from the kernel plan's numbers, before numpy allocates anything.
Names: what the kernel's C already uses (``C_NAMES``; see ``symnet.backend.c.cnames``).

>>> rows_per_call({"work_per_row": 10, "n_in": 2, "n_out": 1}, 8)
8192
"""

from __future__ import annotations

import math
import os

import numpy as np

INT_MAX = 2**31 - 1
CHUNK = 8192                 # at most this many examples per kernel call
WORK_BYTES = 256 * 2**20     # work memory one call may use, when the batch is split


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def memory_bytes() -> int | None:
    """This process's memory: physical memory, or less where a cgroup or
    ``ulimit -v`` says so (``SYMNET_MAX_MEMORY`` in bytes overrides; ``inf``: no
    limit)."""
    if os.environ.get("SYMNET_MAX_MEMORY"):
        text = os.environ["SYMNET_MAX_MEMORY"]
        try:
            limit = float(text)
        except ValueError:
            limit = math.nan
        if limit == math.inf:
            return None
        # int(inf) raised OverflowError, and 0, -1 or nan read as a machine of
        # "0.0 GB" or "-0.0 GB" that refused every network
        if not limit > 0:
            raise ValueError(f"SYMNET_MAX_MEMORY must be a number of bytes above 0 (or inf: "
                             f"no limit), got {text!r}")
        return int(limit)
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limits.append(int(fh.read().strip()))
    except (OSError, ValueError):  # absent, or "max"
        pass
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    return min(limits) if limits else None


def check_sizes(meta: dict):
    """Refuse a network the kernels cannot index or the machine cannot hold.

    ``meta`` is the compiled module's record (n_params, work_per_row, params
    with shapes, dtype).  Raises ValueError with the estimate.
    """
    itemsize = 4 if meta["dtype"] == "float32" else 8
    n_params, per_row = meta["n_params"], meta["work_per_row"]
    need = 2 * n_params * itemsize + per_row * itemsize
    have = memory_bytes()
    if have is not None and need > have:
        raise ValueError(
            f"this network needs about {_gb(need)} of memory for its {n_params:,} parameters "
            f"and their gradients ({meta['dtype']}, {itemsize} bytes each, plus "
            f"{per_row:,} numbers of work per example) but this machine has {_gb(have)}; "
            "use fewer or smaller layers, or float32")
    for p in meta["params"]:
        size = 1
        for s in p["shape"]:
            size *= s
        if size > INT_MAX:
            raise ValueError(
                f"parameter {p['name']} of shape {tuple(p['shape'])} has {size:,} elements; "
                f"the generated C indexes one array with int, at most {INT_MAX:,}")
    if max(per_row, meta["n_in"], meta["n_out"]) > INT_MAX:
        raise ValueError(f"one example needs {per_row:,} numbers of work; the generated C "
                         f"indexes with int, at most {INT_MAX:,}")


def rows_per_call(meta: dict, itemsize: int) -> int:
    """How many examples one kernel call may take: few enough that its work
    memory stays under WORK_BYTES and every batch index fits an int."""
    widest = max(meta["work_per_row"], meta["n_in"], meta["n_out"], 1)
    by_memory = WORK_BYTES // (max(meta["work_per_row"], 1) * itemsize)
    return max(1, min(CHUNK, INT_MAX // widest, by_memory))


def seed(value, where: str) -> int:
    """A seed as an int ≥ 0 (numpy's ints too), or ValueError naming the call.

    >>> seed(-1, "compile")
    Traceback (most recent call last):
    ...
    ValueError: compile: seed must be an integer ≥ 0, got -1
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{where}: seed must be an integer ≥ 0, got {value!r}")
    return int(value)


def finite(A, what: str, after: str = "clean the data before training (nothing was changed)"):
    """ValueError unless every number of the 2-D array A is finite: which rows are not.

    >>> finite(np.array([[1.0, 2.0], [float("nan"), 0.0]]), "X", "nothing was changed")
    Traceback (most recent call last):
    ...
    ValueError: X holds NaN or inf in 1 row(s), first at row 1: nothing was changed
    """
    if not np.isfinite(A).all():
        rows = np.nonzero(~np.isfinite(A).reshape(A.shape[0], -1).all(axis=1))[0]
        raise ValueError(f"{what} holds NaN or inf in {rows.size} row(s), first at row "
                         f"{rows[0]}: {after}")


def file_mode() -> int:
    """The mode a new file of this process gets from ``open``: 0o666 less the umask
    (files written through a temporary file, which ``tempfile`` makes 0o600, are
    given it before they are renamed into place)."""
    try:
        with open("/proc/self/status") as fh:      # Linux: read without changing it
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)       # elsewhere: read it by setting it, and put it back
    os.umask(mask)
    return 0o666 & ~mask


# ------------------------------------------------------------------- names
# Identifiers the kernel's translation unit already means something by: the
# C99 <math.h> functions (with their f and l forms) and macros, <string.h>
# and <stddef.h> names, the macros gcc predefines, the locals of the template's
# exported functions, and the names the compiler derives from a layer's
# (z_H1, delta_H1, dL_dH1, g_W1, CSE temporaries t0, t1, ...).  A layer named
# like one of them is written sn_u_<name> in the C (symnet.backend.c.cnames).
_MATH = """acos asin atan atan2 cos sin tan acosh asinh atanh cosh sinh tanh exp exp2 expm1
frexp ilogb ldexp log log10 log1p log2 logb modf scalbn scalbln cbrt fabs hypot pow sqrt erf
erfc lgamma tgamma ceil floor nearbyint rint lrint llrint round lround llround trunc fmod
remainder remquo copysign nan nextafter nexttoward fdim fmax fmin fma""".split()
C_NAMES = frozenset(
    _MATH + [f + s for f in _MATH for s in "fl"] + """
    fpclassify isfinite isinf isnan isnormal signbit isgreater isgreaterequal isless
    islessequal islessgreater isunordered float_t double_t math_errhandling
    HUGE_VAL HUGE_VALF HUGE_VALL INFINITY NAN FP_INFINITE FP_NAN FP_NORMAL FP_SUBNORMAL
    FP_ZERO FP_FAST_FMA FP_FAST_FMAF FP_FAST_FMAL FP_ILOGB0 FP_ILOGBNAN MATH_ERRNO
    MATH_ERREXCEPT M_E M_LOG2E M_LOG10E M_LN2 M_LN10 M_PI M_PI_2 M_PI_4 M_1_PI M_2_PI
    M_2_SQRTPI M_SQRT2 M_SQRT1_2 memcpy memmove memset memcmp memchr strlen size_t ptrdiff_t
    wchar_t NULL offsetof linux unix errno
    m s g o p st to lse real params grads work
    """.split())
