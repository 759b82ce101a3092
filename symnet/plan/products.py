"""Loops that are small matrix products, found by their access maps.

A loop whose every statement is ``T[..] += c·A[..]·B[..]`` (two array elements and a
number) over indices that each step through memory in a fixed stride is a batch of
matrix products: every index that moves T, A and B alike is a batch index, the one
that moves T and A only is the product's row m, the one that moves T and B only its
column n, the one that moves A and B only the summed k:

    T(m, n) += c·Σ_k A(m, k)·B(k, n)       at every point of the batch indices.

Attention is of this kind, per example and head: its scores S = Q·Kᵀ and weighted
sum A = P·V, and their gradients ∂L/∂P = δ_A·Vᵀ, ∂L/∂V = Pᵀ·δ_A, ∂L/∂Q = δ_S·K,
∂L/∂K = δ_Sᵀ·Q.  ``mark`` records, on each such loop, where its products read and
write (``Loop.product``); the C then runs them through a register-blocked kernel
(``sn_small_mm``) that keeps a tile of T in registers while k runs (the plain loop
loads and stores T at every k, or sums a short dot product per element).  Marked are
the products whose rows of T are contiguous along n and whose B is contiguous along n
or, with K ≤ ``KMAX``, along k (the kernel copies such a B into rows along n); the
formulas, the loop and its comment stay as derived, and the NumPy backend runs the
loop as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..ir import nodes as ir
from .ops import LOSS, Loop

#: the largest K of a product whose B runs along k (SN_SMALL_KMAX of the C kernel, which
#: copies such a B, a block of columns at a time, into rows along n)
KMAX = 256


@dataclass
class Operand:
    """An array read or written along a loop: array + const + Σ stride[i]·i."""

    array: str
    const: int
    strides: dict


@dataclass
class Product:
    """T(m, n) += alpha·Σ_k A(m, k)·B(k, n) at each point of ``batch`` (loop names)."""

    batch: list
    M: int
    N: int
    K: int
    T: Operand
    A: Operand
    B: Operand
    m: str
    n: str
    k: str
    alpha: float = 1.0


def _operand(buffers: dict, array: str, index: tuple, names: set) -> Operand | None:
    shape = buffers[array].shape if array in buffers else None
    if shape is None or len(shape) != len(index) or any(
            not isinstance(s, int) for s in shape[1:]):
        return None
    strides, const = {}, 0
    for pos, ix in enumerate(index):
        stride = 1
        for s in shape[pos + 1:]:
            stride *= s
        terms = ((ix, 1),) if isinstance(ix, str) else ix.terms
        const += 0 if isinstance(ix, str) else ix.const * stride
        for name, coef in terms:
            if name not in names:
                return None
            strides[name] = strides.get(name, 0) + coef * stride
    return Operand(array, const, {n: s for n, s in strides.items() if s})


def _product(op: Loop, stmt, buffers: dict, symbols: dict) -> Product | None:
    target, index, kind, expr = stmt
    if target == LOSS or kind != "+=":
        return None
    coef, rest = sp.S(expr).as_coeff_Mul()
    factors = sp.Mul.make_args(rest)
    if len(factors) != 2 or not all(f in symbols for f in factors) or not coef.is_Number:
        return None
    names = {n for n, _ in op.indices}
    T = _operand(buffers, target, tuple(index), names)
    X, Y = (_operand(buffers, symbols[f].array, symbols[f].index, names) for f in factors)
    if T is None or X is None or Y is None:
        return None
    extent = dict(op.indices)
    # B: the operand read along T's rows; one whose rows run along n first
    for along_n in (True, False):
        for A, B in ((X, Y), (Y, X)):
            found = _roles(op, T, A, B, along_n)
            if found is None:
                continue
            batch, m, n, k = found
            if all(isinstance(extent[x], int) for x in (m, n, k)) and \
                    (along_n or extent[k] <= KMAX):
                return Product(batch, extent[m], extent[n], extent[k], T, A, B, m, n, k,
                               float(coef))
    return None


def _roles(op: Loop, T: Operand, A: Operand, B: Operand, along_n: bool):
    """(batch, m, n, k) loop names, or None when the loop is not such a product, T's
    rows do not run contiguously along n, or B does not along n (``along_n``) or k."""
    roles = {name: (name in T.strides, name in A.strides, name in B.strides)
             for name, _ in op.indices}
    batch = [x for x, r in roles.items() if r == (True, True, True)]
    m = [x for x, r in roles.items() if r == (True, True, False)]
    n = [x for x, r in roles.items() if r == (True, False, True)]
    k = [x for x, r in roles.items() if r == (False, True, True)]
    if len(m) != 1 or len(n) != 1 or len(k) != 1 or len(batch) + 3 != len(op.indices):
        return None
    if T.strides[n[0]] != 1 or B.strides[n[0] if along_n else k[0]] != 1:
        return None
    return batch, m[0], n[0], k[0]


def _inside(op: Loop, buffers: dict, symbols: dict) -> bool:
    """Every access of the loop stays inside its array (no clipped ranges)."""
    extents = {n: e for n, e in op.indices if isinstance(e, int)}
    accesses = [ir.Access(t, tuple(i)) for t, i, _, _ in op.stmts]
    accesses += [symbols[s] for _, _, _, e in op.stmts for s in e.free_symbols
                 if s in symbols]
    for acc in accesses:
        shape = buffers[acc.array].shape
        for ix, n in zip(acc.index, shape):
            if isinstance(ix, str) or not isinstance(n, int):
                continue
            lo, hi = ix.bounds(extents)
            if lo < 0 or hi > n - 1:
                return False
    return True


def of(op, buffers: dict, symbols: dict) -> list | None:
    """The products of loop ``op`` (one per statement), or None when its statements are
    not all such products over the same batch indices, with the batch index b outermost."""
    if not isinstance(op, Loop) or not op.indices or op.indices[0][0] != ir.BATCH:
        return None
    prods = [_product(op, st, buffers, symbols) for st in op.stmts]
    if not prods or any(p is None for p in prods) or \
            len({tuple(p.batch) for p in prods}) != 1 or prods[0].batch[:1] != [ir.BATCH] \
            or not _inside(op, buffers, symbols):
        return None
    return prods


def mark(ops: list, buffers: dict, symbols: dict) -> None:
    """Set ``Loop.product`` on the loops of ``ops`` that are batches of products (``of``)."""
    for op in ops:
        prods = of(op, buffers, symbols)
        if prods is not None:
            op.product = prods
