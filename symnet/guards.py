"""Limits checked before anything is allocated or emitted.

Sizes: the generated C indexes arrays with ``int``, and a network's
parameters, gradients and per-example work must fit in memory; both are
checked from the kernel plan's numbers, before numpy allocates anything.
Expressions: a custom activation or loss may only use functions that have
a C spelling, so no user text ever reaches the C outside a comment.

>>> rows_per_call({"work_per_row": 10, "n_in": 2, "n_out": 1}, 8)
8192
"""

from __future__ import annotations

import os

INT_MAX = 2**31 - 1
CHUNK = 8192                 # at most this many examples per kernel call
WORK_BYTES = 256 * 2**20     # work memory one call may use, when the batch is split


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def memory_bytes() -> int | None:
    """This process's memory: physical memory, or less where a cgroup or
    ``ulimit -v`` says so (``SYMNET_MAX_MEMORY`` in bytes overrides)."""
    if os.environ.get("SYMNET_MAX_MEMORY"):
        try:
            return int(float(os.environ["SYMNET_MAX_MEMORY"]))
        except ValueError:
            raise ValueError("SYMNET_MAX_MEMORY must be a number of bytes, got "
                             f"{os.environ['SYMNET_MAX_MEMORY']!r}") from None
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


# ------------------------------------------------------------- expressions

def check_expression(expr, what: str):
    """Refuse functions that have no C spelling (sympy's undefined functions,
    ``sympy.Function("f")``): their names would reach the C as code.

    >>> import sympy
    >>> z = sympy.Symbol("z")
    >>> check_expression(sympy.Function("f")(z), "activation")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: activation uses the undefined function 'f'; ...
    """
    from sympy.core.function import AppliedUndef
    for f in expr.atoms(AppliedUndef):
        raise ValueError(
            f"{what} uses the undefined function {type(f).__name__!r}; only functions "
            "with a known derivative and C spelling can be compiled (exp, log, tanh, "
            "sin, sqrt, Abs, Piecewise, ... or symnet's sigmoid and softplus)")
    return expr
