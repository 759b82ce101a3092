"""Sums that need no zeroing: a plan rewrite (symnet.plan.lower calls it before marking
products and gathering the per-example runs).

A buffer of the batch that lower zeroes and then sums into (``Zero(X)``, then a loop of
``X[..] += ...``) needs the zeros only where the loop reaches an element more than once.
When the next op that touches X is a loop whose one statement into X visits each of its
elements once, the zeroing goes and that statement stores instead of adding:

- the target carries every loop index (``dL_dE[b,h,t,u] += dL_dP[b,h,t,u]/Z[b,h,t]``,
  an element formula): its "+=" becomes "=";
- the target carries every loop index but one, summed (``z_S[b,h,t,u] += Σ_e …``), and
  the loop sums that index into a local (``Loop.hoist``, the index innermost) or is a
  batch of small products (symnet.plan.products) whose k it is: the target is recorded
  in ``Loop.fresh``, and the C stores the finished sum (``X = acc``, or the product
  kernel's T = α·A·B) where it added it to the zeros;
- or the next ops that touch X are loops that write it in pieces, each element of an
  example's row once, before anything reads it (``_spread``: attention's ∂L/∂qkv, whose
  V part one loop of products writes and whose K and Q parts the next; a recurrent
  layer's ∂L/∂ of its sequence's projection, a row per step): each piece stores.

Each such zeroing was a pass over the buffer, and each "+=" a read of it: for attention
(per example and head, arrays of positions × positions) about a tenth of the step's time
outside the matrix products.  The formulas are unchanged, and so are the results: 0 + x
is x; the loops' comments say "=" where the C now stores.
"""

from __future__ import annotations

import itertools
import math

from ..ir import nodes as ir
from . import products
from .fuse import _reads, _root
from .ops import LOSS, Fill, Loop, Zero


def _touches(p, op) -> set | None:
    """The buffers op reads or writes (their roots), None for an op this does not know."""
    if isinstance(op, Loop):
        names = _reads(p, op) | {t for t, *_ in op.stmts if t != LOSS}
    elif isinstance(op, (Zero, Fill)):
        names = {op.buffer}
    else:
        names = _reads(p, op)
        writes = [getattr(op, f, None) for f in ("C", "Z", "gW", "dX", "col", "grad")]
        if hasattr(op, "target") and op.target is not None:
            writes.append(op.target.array)
        if getattr(op, "then", None) is not None:
            writes += [t for t, *_ in op.then.stmts]
        names |= {w for w in writes if isinstance(w, str)}
        if names == set(p.buffers):
            return None
    return {_root(p, n) for n in names}


def _fresh(p, loop: Loop, buffer: str):
    """``loop`` with its statement into ``buffer`` storing (see the module), or None
    when that statement may reach an element twice or the loop reads the buffer."""
    root = _root(p, buffer)
    mine = [k for k, (t, *_) in enumerate(loop.stmts) if t != LOSS and _root(p, t) == root]
    if len(mine) > 1:
        return _fresh_pieces(p, loop, buffer, mine)
    if len(mine) != 1 or loop.stmts[mine[0]][0] != buffer:
        return None
    target, index, kind, expr = loop.stmts[mine[0]]
    reads = {_root(p, p.symbols[s].array) for _, _, _, e in loop.stmts
             for s in e.free_symbols if s in p.symbols}
    if kind != "+=" or root in reads:
        return None
    extent = dict(loop.indices)
    shape = p.buffers[buffer].shape
    if len(index) != len(shape) or not all(isinstance(ix, str) for ix in index) \
            or len(set(index)) != len(index) \
            or any(extent.get(ix) != n for ix, n in zip(index, shape)):
        return None
    missing = [n for n, _ in loop.indices if n not in index]
    if not missing:
        stmts = list(loop.stmts)
        stmts[mine[0]] = (target, index, "=", expr)
        loop.stmts = stmts
        return _stores(loop, target, index)
    if len(missing) != 1:
        return None
    summed = missing[0]
    prods = products.of(loop, p.buffers, p.symbols)
    if prods is not None:
        if prods[mine[0]].k != summed:
            return None
    elif not (loop.hoist and loop.indices[-1][0] == summed):
        return None
    loop.fresh = set(loop.fresh) | {buffer}
    return _stores(loop, target, index)


def _fresh_pieces(p, loop: Loop, buffer: str, mine: list):
    """Several statements into ``buffer``, each an element formula at [b, i + c_k] over the
    loop's (b, i) (a gated cell's gates, H units each, into ∂L/∂ of their 3H or 4H
    pre-activations): when the pieces [c_k, c_k + n_i) tile the buffer's row exactly,
    each element is reached once, and every one of them stores."""
    if len(loop.indices) != 2:
        return None
    (b, _), (i, n) = loop.indices
    shape = p.buffers[buffer].shape
    reads = {_root(p, p.symbols[s].array) for _, _, _, e in loop.stmts
             for s in e.free_symbols if s in p.symbols}
    if len(shape) != 2 or not isinstance(n, int) or not isinstance(shape[1], int) \
            or _root(p, buffer) in reads:
        return None
    starts = []
    for k in mine:
        target, index, kind, _ = loop.stmts[k]
        if target != buffer or kind != "+=" or len(index) != 2 or index[0] != b:
            return None
        ix = index[1]
        if isinstance(ix, str):
            start = 0 if ix == i else None
        else:
            start = ix.const if tuple(ix.terms) == ((i, 1),) else None
        if start is None:
            return None
        starts.append(start)
    if sorted(starts) != list(range(0, shape[1], n)) or len(starts) * n != shape[1]:
        return None
    stmts = list(loop.stmts)
    for k in mine:
        target, index, _, expr = stmts[k]
        stmts[k] = (target, index, "=", expr)
    loop.stmts = stmts
    for k in mine:
        _stores(loop, buffer, stmts[k][1])
    return loop


def _stores(loop: Loop, target: str, index) -> Loop:
    """``loop`` with its comment saying that it stores into ``target`` (``=``), as its C does."""
    said = f"{target}[{','.join(ir.index_text(x) for x in index)}]"
    loop.comment = loop.comment.replace(f"{said} +=", f"{said} =", 1)
    return loop


#: the most elements of one example's row of a buffer that ``_spread`` enumerates
SPREAD_MAX = 1 << 16


def _spread(p, ops: list, buffer: str) -> bool:
    """Whether the loops of ``ops`` that touch ``buffer``, from the first on, write it in
    pieces that together reach each element of an example's row exactly once before
    anything reads it (attention's ∂L/∂qkv: ∂L/∂V from the loop of ∂L/∂P, then ∂L/∂K
    and ∂L/∂Q from the next, each a small product per example and head into its own
    columns): then each piece stores instead of adding (an element formula's "+="
    becomes "=", a product or a hoisted sum is recorded in ``Loop.fresh``) and the
    loops are changed in place.  Each piece is a statement "+=" into ``buffer`` itself
    that moves with the batch index b, whose other indices are all in its element (an
    element formula), or all but the one it sums (a product's k, or a hoisted sum's
    innermost index); the elements are enumerated, at most ``SPREAD_MAX`` per example."""
    root = _root(p, buffer)
    shape = p.buffers[buffer].shape
    if not all(isinstance(n, int) for n in shape[1:]):
        return False
    size = 1
    for n in shape[1:]:
        size *= n
    if size > SPREAD_MAX:
        return False
    seen: set = set()
    changes = []
    for op in ops:
        touched = _touches(p, op)
        if touched is not None and root not in touched:
            continue
        if touched is None or not isinstance(op, Loop) or isinstance(op, Zero):
            return False
        reads = {_root(p, p.symbols[s].array) for _, _, _, e in op.stmts
                 for s in e.free_symbols if s in p.symbols}
        mine = [k for k, (t, *_) in enumerate(op.stmts) if t != LOSS and _root(p, t) == root]
        if root in reads or not mine:
            return False
        extent = dict(op.indices)
        prods = products.of(op, p.buffers, p.symbols)
        hows = set()
        for k in mine:
            target, index, kind, _ = op.stmts[k]
            if target != buffer or kind != "+=":
                return False
            T = products._operand(p.buffers, target, tuple(index), set(extent))
            if T is None or T.strides.get(ir.BATCH) != size or extent.get(ir.BATCH) != "batch":
                return False
            names = [n for n in T.strides if n != ir.BATCH]
            free = [n for n, _ in op.indices if n != ir.BATCH and n not in T.strides]
            if prods is not None:
                if free != [prods[k].k]:
                    return False
                how = "fresh"
            elif not free:
                how = "store"
            elif op.hoist and free == [op.indices[-1][0]]:
                how = "fresh"
            else:
                return False
            hows.add(how)
            if any(not isinstance(extent[n], int) for n in names) or \
                    math.prod(extent[n] for n in names) > SPREAD_MAX:
                return False
            for point in itertools.product(*(range(extent[n]) for n in names)):
                off = T.const + sum(T.strides[n] * i for n, i in zip(names, point))
                if not 0 <= off < size or off in seen:
                    return False
                seen.add(off)
            changes.append((op, k, how))
        if len(hows) != 1:
            return False
        if len(seen) == size:
            break
    else:
        return False
    for op, k, how in changes:
        target, index, kind, expr = op.stmts[k]
        if how == "store":
            stmts = list(op.stmts)
            stmts[k] = (target, index, "=", expr)
            op.stmts = stmts
        else:
            op.fresh = set(op.fresh) | {buffer}
        _stores(op, target, index)
    return True


def overwrite(p, ops: list) -> list:
    """``ops`` without the zeroings that the next op touching their buffer makes
    needless, or the next ops that write it in pieces (``_spread``; see the module);
    the loops that then store are changed in place."""
    dropped = set()
    for i, op in enumerate(ops):
        if not isinstance(op, Zero) or p.buffers[op.buffer].shape[:1] != ("batch",) \
                or p.buffers[op.buffer].alias:
            continue
        root = _root(p, op.buffer)
        for j, nxt in enumerate(ops[i + 1:], i + 1):
            touched = _touches(p, nxt)
            if touched is not None and root not in touched:
                continue
            if isinstance(nxt, Loop) and not isinstance(nxt, Zero) and \
                    _fresh(p, nxt, op.buffer) is not None:
                dropped.add(i)
            elif _spread(p, ops[j:], op.buffer):
                dropped.add(i)
            break
    return [op for i, op in enumerate(ops) if i not in dropped]
