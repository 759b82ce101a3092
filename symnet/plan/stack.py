"""A weight gradient summed over the steps of a recurrence as one product: a plan
rewrite (symnet.plan.lower calls it after ``overwrite``).

An unrolled recurrence applies one weight U at every step t, z_t = h_{t−1}·Uᵀ, so
∂L/∂U = Σ_t δ_tᵀ·h_{t−1}, and the backward sweep lowers it as one product per step,
``g_U (+)= Σ_b δ_t[b,i]·h_{t−1}[b,j]``, each over the batch's rows: short products
that pay their packing and their threads' join for a few multiply-adds each.  The
same sum is one product over the rows of every step at once,

    Σ_t δ_tᵀ·h_{t−1} = Δᵀ·H,   Δ = [δ_T; …; δ_2],  H = [h_{T−1}; …; h_1]

(the δ_t, and the h_{t−1}, stacked along the rows), when the δ_t lie one after the
other in the work array and the h_{t−1} too, in the same order (a δ_t that is an
alias, ∂L/∂(U·h_{t−1} + c) itself, moves the buffer it names).  ``stack`` finds the
weight-gradient products ("tn", K the batch) that accumulate into one gradient, lays
their operands out so (a buffer of the batch holds b·width + i at batch·offset, so
buffers whose offsets follow each other by their widths are one array of
batch·steps rows), and puts one product of K = batch·steps where the last of them
was: by then every δ_t is written, and the gradient is read by no op in between.

The layout keeps its order otherwise (the forward's buffers still come first: a
forward call allocates only those), and the gradient is the same sum added in
another order (the C's product sums over all rows at once).  Nothing moves when
any operand is shared, an alias of another shape, of another width, or written again
before the one product would read it.
"""

from __future__ import annotations

import math

from .fuse import _reads
from .ops import LOSS, Fill, Loop, MatMul, Zero

#: the fewest products of one gradient worth stacking
MIN_PARTS = 2


def _writes(op) -> set | None:
    """The buffers op writes; None for an op whose writes this does not know."""
    if isinstance(op, Loop):
        return {t for t, *_ in op.stmts if t != LOSS}
    if isinstance(op, MatMul):
        return {op.C}
    if isinstance(op, (Zero, Fill)):
        return {op.buffer}
    return None


def _forward_names(p) -> set:
    """The buffers of the forward pass (the layers and their sums)."""
    names = {n.name for n in p.graph.nodes}
    return names | {r.name for n in p.graph.nodes for r in n.reductions}


def _groups(p, ops: list) -> list:
    """[(positions, ...)] of the weight-gradient products that stack (see the module)."""
    by_grad: dict = {}
    for k, op in enumerate(ops):
        if isinstance(op, MatMul) and op.kind == "tn" and op.K == "batch" and \
                op.parts is None and p.buffers[op.C].kind == "grad":
            by_grad.setdefault(op.C, []).append(k)
    fwd = _forward_names(p)
    root = _roots(p)
    used: dict = {}     # operands of these products, by name
    memory: dict = {}   # and by the memory they name
    for ks in by_grad.values():
        for k in ks:
            for x in (ops[k].A, ops[k].B):
                used[x] = used.get(x, 0) + 1
                memory[root[x]] = memory.get(root[x], 0) + 1
    out = []
    for C, ks in by_grad.items():
        if len(ks) < MIN_PARTS:
            continue
        first = ops[ks[0]]
        if any((ops[k].M, ops[k].N) != (first.M, first.N) for k in ks) or \
                not isinstance(first.M, int) or not isinstance(first.N, int):
            continue
        named = [x for k in ks for x in (ops[k].A, ops[k].B)]
        A = [root[ops[k].A] for k in ks]
        B = [root[ops[k].B] for k in ks]
        # each operand read by this product alone; an alias only where nothing else
        # reads the memory it names either (a twin δ shared by W and U stays put)
        ok = len(set(A) | set(B)) == 2 * len(ks) and all(used[x] == 1 for x in named) \
            and all(memory[root[x]] == 1 for x in named if root[x] != x)
        for names, width in ((A, first.M), (B, first.N)):
            ok = ok and all(p.buffers[x].kind == "work" and p.buffers[x].alias is None
                            and p.buffers[x].shape == ("batch", width) for x in names)
            ok = ok and len({x in fwd for x in names}) == 1
        ok = ok and all(p.buffers[x].shape == p.buffers[root[x]].shape
                        for k in ks for x in (ops[k].A, ops[k].B))
        if not ok:
            continue
        # between a product and the last: no op of unknown writes, none writing an
        # operand of a product already passed, none writing or reading the gradient
        # but the products themselves
        members = set(ks)
        for j in range(ks[0], ks[-1] + 1):
            if j in members:
                continue
            w = _writes(ops[j])
            passed = {root[x] for k in ks if k < j for x in (ops[k].A, ops[k].B)}
            if w is None or {root.get(x, x) for x in w} & (passed | {C}) or \
                    C in _reads(p, ops[j]):
                ok = False
                break
        if ok:
            out.append(ks)
    return out


def _roots(p) -> dict:
    """Each buffer's name -> the buffer whose memory it is (itself, or the end of its
    chain of aliases: a delta that is ∂L/∂node itself, symnet.plan.lower)."""
    out = {}
    for name, b in p.buffers.items():
        while b.alias is not None:
            b = p.buffers[b.alias]
        out[name] = b.name
    return out


def _relayout(p, runs: list) -> None:
    """New work offsets: each run of buffers one after the other (in its order) where
    its first buffer was, everything else in its old order; aliases follow."""
    work = sorted((b for b in p.buffers.values() if b.kind == "work"),
                  key=lambda b: b.offset)
    run_of = {x: k for k, run in enumerate(runs) for x in run}
    placed, order = set(), []
    for b in work:
        k = run_of.get(b.name)
        if k is None:
            order.append(b.name)
        elif k not in placed:
            placed.add(k)
            order.extend(runs[k])
    offset = 0
    for name in order:
        p.buffers[name].offset = offset
        offset += math.prod(p.buffers[name].shape[1:])
    assert offset == p.work_per_row, (offset, p.work_per_row)
    for b in p.buffers.values():
        if b.kind == "alias":
            root = b
            while root.alias is not None:
                root = p.buffers[root.alias]
            b.offset = root.offset


def stack(p) -> None:
    """Each stackable run of weight-gradient products of ``p.backward`` (see the
    module) as one product over batch·steps rows; the operands laid out for it."""
    ops = p.backward
    groups = _groups(p, ops)
    if not groups:
        return
    root = _roots(p)
    _relayout(p, [[root[ops[k].A] for k in ks] for ks in groups] +
              [[root[ops[k].B] for k in ks] for ks in groups])
    merged, drop = {}, set()
    for ks in groups:
        first, n = ops[ks[0]], len(ks)
        parts = [(ops[k].A, ops[k].B) for k in ks]
        (A0, B0), (A1, B1) = parts[0], parts[-1]
        kind = "+=" if first.accumulate else "="
        comment = (f"{first.C}[i,j] {kind} Σ_t Σ_b A_t[b,i]·B_t[b,j] over the {n} pairs "
                   f"(A_t, B_t) = ({A0}, {B0}) .. ({A1}, {B1}), each laid out after the "
                   f"one before: one product of batch·{n} rows")
        merged[ks[-1]] = MatMul("tn", first.C, A0, B0, first.M, first.N, f"batch * {n}",
                                first.accumulate, comment, parts=parts)
        drop.update(ks[:-1])
    p.backward = [merged.get(k, op) for k, op in enumerate(ops) if k not in drop]
