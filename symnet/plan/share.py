"""Work buffers that are never alive at once share their place: a plan rewrite
(symnet.plan.lower calls it last, after the passes are split into chunks).

Every array of the batch has had a place of its own in the work array: the layers
and their sums, then every ∂L/∂ of the backward pass, one after the other.  But most of
them live for a short stretch of a pass: attention's ∂L/∂ of its scores is written
by one product and read by the next loop, then never again; the sum before a bias,
``z_Q``, dies once ``Q = z_Q + c`` has been stored.  A buffer that is dead before
another is first written can hold it: their lifetimes do not meet.

    the transformer of ``python -m symnet.bench --workloads transformer``: its buffers
    take 129,684 numbers per example instead of 235,486 (a chunk of 8 examples keeps
    4.2 MB of scratch, not 7.5 MB), and its step on two threads of a 2-core Zen 1 takes
    less time (docs/performance.md, "Buffers that share their place")

A buffer of the batch keeps example b at ``batch·offset + b·size`` (symnet.plan.lower),
so two buffers share rows only at one offset and of one size: otherwise example b of
the one would overlap example b′ of the other, which another chunk (another thread)
holds at that moment.  Buffers of one size are given slots in the order of their old
offsets (the forward pass's buffers still come first: a forward call allocates only
those, symnet.backend.c.emit.forward_per_row); a buffer takes the first slot of its
size whose buffers are each dead where it is alive, else a new slot.

Alive means: from the first op that touches the buffer to the last one, in every
order in which the ops run (the passes as they are: forward, then the loss or the
loss and backward, with targets as rows or labels; the chunked pass: its head, rows,
tail and the weight gradients' products after the chunks).  A buffer keeps a slot of
its own where something else reads it (the outputs; ∂L/∂ of the inputs; BatchNorm's
batch sums, which the model reads after the pass; the operands of a product stacked
over a recurrence's steps, which must follow each other), where the first op that
touches it in some pass reads it (its contents come from before the pass).  A buffer
that no pass touches (a gradient nothing needs) is never alive and takes any place of
its size.  An op whose buffers are not known keeps every buffer alive across it.  Results are the same numbers: no op reads a buffer another wrote
while it was alive.
"""

from __future__ import annotations

import math

from ..derive.chain import upstream_name
from .fuse import _root
from .ops import BatchSum, Conv, Fill, Loop, MatMul, Route, Rows, SoftmaxXent, Zero


def _flat(ops):
    for op in ops:
        if isinstance(op, Rows):
            yield from _flat(op.ops)
        else:
            yield op


def _orders(p) -> list:
    """Every order in which the plan's ops run within one call."""
    orders = [p.forward + p.loss, p.forward + p.backward]
    if p.loss_labels:
        orders.append(p.forward + p.loss_labels)
    if p.backward_labels:
        orders.append(p.forward + p.backward_labels)
    h = p.halves
    if h is not None:
        for rows in (h.rows, h.rows_labels):
            if rows is not None:
                orders.append(list(h.head) + list(rows) + list(h.tail) + list(h.sums))
    return [list(_flat(ops)) for ops in orders]


def _names(p, names) -> set:
    return {_root(p, x) for x in names if isinstance(x, str) and x in p.buffers}


def _loop_reads(p, loop) -> tuple:
    """(what the loop reads before it writes it, what it writes): its statements in
    their order, each at the loop's point (symnet.plan.fuse), so that one that stores a
    buffer comes before the next that reads it; a sum into a buffer that the loop stores
    once finished (``Loop.fresh``, symnet.plan.overwrite) reads nothing of it."""
    read, stored = set(), set()
    for target, _, kind, expr in loop.stmts:
        names = {p.symbols[s].array for s in expr.free_symbols if s in p.symbols}
        if kind != "=" and target not in loop.fresh:
            names.add(target)
        read |= _names(p, names) - stored
        stored |= _names(p, [target])
    return read, stored


def _access(p, op) -> tuple | None:
    """(the buffers op reads before it writes them, every buffer it touches), roots; None
    for an op this does not know."""
    if isinstance(op, Loop):
        read, stored = _loop_reads(p, op)
        return read, read | stored
    if isinstance(op, MatMul):
        pairs = op.parts or [(op.A, op.B)]
        read = _names(p, [x for pair in pairs for x in pair] + ([op.C] if op.accumulate else [])
                      + ([op.epilogue.mask] if op.epilogue is not None and op.epilogue.mask
                         else []))
        return read, read | _names(p, [op.C])
    if isinstance(op, Conv):
        read = _names(p, [op.X, op.W, op.delta] + ([op.gW] if op.accumulate else [])
                      + ([op.col, op.dX] if op.mode == "backward" else []))
        return read, read | _names(p, [op.col, op.Z, op.gW, op.dX, op.deltaT])
    if isinstance(op, Route):
        read = _names(p, [op.x.array, op.z.array, op.delta.array]
                      + ([] if op.overwrite else [op.target.array]))
        touched = read | _names(p, [op.target.array])
        if op.then is not None:
            then = _access(p, op.then)
            if then is None:
                return None
            read |= then[0] - touched
            touched |= then[1]
        return read, touched
    if isinstance(op, SoftmaxXent):
        read = _names(p, [op.O, op.T])
        return read, read | _names(p, [op.grad])
    if isinstance(op, (Zero, Fill)):
        return set(), _names(p, [op.buffer])
    if isinstance(op, BatchSum):       # the runtime's hook: the sum over the processes
        return _names(p, [op.buffer]), _names(p, [op.buffer])
    return None


def forward_buffers(p) -> set | None:
    """The buffers of the batch the forward pass touches (None: some op of it is not
    known here): a forward call allocates only the work up to the last of them."""
    names = {n.name for n in p.graph.nodes} | {r.name for n in p.graph.nodes
                                               for r in n.reductions}
    names |= {s["name"] for s in p.batch_sums if s["kind"] == 0}   # symnet.plan.batchsum
    for op in _flat(p.forward):
        access = _access(p, op)
        if access is None:
            return None
        names |= access[1]
    return {n for n in names if n in p.buffers}


def _kept(p) -> set:
    """Buffers read outside the passes' ops (by the model, after a call), or laid out
    for a stacked product: each keeps its own place."""
    g = p.graph
    kept = {p.output, *g.outputs}
    kept |= {upstream_name(name) for name, _ in g.inputs}
    bns = [n.name for n in g.nodes if n.kind == "batchnorm"]
    kept |= {b for b in p.buffers if any(b.startswith(f"z_{n}") for n in bns)}
    for op in list(_flat(p.forward + p.backward + p.backward_labels)):
        if isinstance(op, MatMul) and op.parts:
            kept |= {x for pair in op.parts for x in pair}
    return {_root(p, b) for b in kept if b in p.buffers}


def share(p) -> None:
    """Give buffers that are never alive at once the same rows of work (see the module)."""
    B = p.buffers
    end = p.part_offset if p.part_offset else p.work_per_row
    work = sorted((n for n, b in B.items() if b.kind == "work" and not b.alias
                   and b.offset < end), key=lambda n: B[n].offset)
    if not work:
        return
    kept = _kept(p)
    spans = {n: [] for n in work}     # (order, first op, last op) where alive
    for k, ops in enumerate(_orders(p)):
        first, last = {}, {}
        for i, op in enumerate(ops):
            access = _access(p, op)
            if access is None:                      # an op this does not know: all alive
                access = set(work), set(work)
            read, touched = access
            for n in touched:
                if n not in first:
                    first[n] = i
                    if n in read:                   # its contents from before the pass
                        kept.add(n)
                last[n] = i
        for n in work:
            if n in first:
                spans[n].append((k, first[n], last[n]))

    def meet(a, b) -> bool:
        return any(ka == kb and fa <= lb and fb <= la
                   for ka, fa, la in spans[a] for kb, fb, lb in spans[b])

    slots = []        # [offset, size, buffers]
    at = 0
    for n in work:
        size = math.prod(B[n].shape[1:])
        slot = None
        if n not in kept:
            slot = next((s for s in slots if s[1] == size and s[2][0] not in kept
                         and not any(meet(n, m) for m in s[2])), None)
        if slot is None:
            slot = [at, size, []]
            slots.append(slot)
            at += size
        slot[2].append(n)
        B[n].offset = slot[0]
    saved = end - at
    assert saved >= 0, (end, at)
    for b in B.values():      # (none lies there now: the chunks' partial sums do)
        if b.kind == "work" and not b.alias and b.offset >= end:
            b.offset -= saved
    for b in B.values():
        if b.alias:
            b.offset = B[_root(p, b.name)].offset
    p.work_per_row -= saved
    p.shared = saved
    if p.part_offset:
        p.part_offset -= saved
    if p.halves is not None and p.halves.parts_offset:
        p.halves.parts_offset -= saved
