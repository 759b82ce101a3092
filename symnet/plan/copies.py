"""Copies that need no memory of their own: a plan rewrite (symnet.plan.lower calls it
on the loss-and-gradient pass, after the other rewrites, before the products are
marked and the pass is scheduled).

Through a sum the chain rule passes the gradient on unchanged, and the derivation
writes that as it is: a residual connection ``B2 = B2_ff2 + B2_res1`` gives

    dL_dB2_res1[b,i,x] = dL_dB2[b,i,x];  dL_dB2_ff2[b,i,x] = dL_dB2[b,i,x]

a loop that reads ∂L/∂B2 and writes two copies of it (a transformer block has two
such sums, so the bench's two blocks four loops, each a pass over the batch's
activations).  A copy's target can instead be a second name of its source's memory,
an alias, as a Flatten's output is of its input: the same numbers are read, and no
loop runs.  That is safe where no op writes either name while the other may still be
read: here the feed-forward's backward reads ∂L/∂B2_ff2 (its bias gradient, its
weight gradient, ∂L/∂ of its hidden layer) before LayerNorm's backward adds its part
into ∂L/∂B2_res1, and nothing writes ∂L/∂B2 again.  So the residual stream's
gradient stays in one buffer from the output back to the first block.

A copy is elided only where every statement of its loop is one (``T[idx] = Y[idx]``,
the whole of T, at the same point) and, in the pass's order:

- T is a work buffer no op touched before the loop, in this pass or an earlier one,
  of Y's shape; Y's memory is a work buffer too; neither is read after the pass
  (the outputs, ∂L/∂ of the inputs, a stacked product's operands: share._kept);
- after the loop, every write to T comes after the last read of Y's memory, and
  every write to Y's memory after the last read of T; an op that writes one and
  reads the other is refused;
- a stacked product, and a vector network's weight gradient (Σ over the batch), count
  as reading at the end of the pass, where the chunked schedule moves them
  (symnet.plan.schedule; a tensor network's chunks keep their weight gradients in
  order); a convolution or a pooling's route counts as writing every
  buffer it names, and an op this does not know (a batch sum) as reading and writing
  every buffer.

The formulas are unchanged, and so are the results, bit for bit: a copy moves no
value (tests/test_copies.py).  The aliases point at the memory's own buffer, so the C
declares them after it (templates/network.c.j2's declare_work); share then counts
the alias's reads and writes as its buffer's."""

from __future__ import annotations

from .fuse import _reads, _root
from .ops import LOSS, Conv, Fill, Loop, MatMul, Route, SoftmaxXent, Zero
from .schedule import is_tensor
from .share import _kept


def elide_copies(p, ops: list, before: list) -> list:
    """``ops`` (a pass) with each loop of copies that may share its source's memory
    gone and its targets made aliases (see the module); ``before``: the ops of the
    passes that run before it (the forward pass, the loss), which must not touch a
    target.  Changes ``p.buffers``."""
    kept = _kept(p)
    out = list(ops)
    k = 0
    while k < len(out):
        op = out[k]
        pairs = _copies(p, op) if isinstance(op, Loop) else None
        if pairs and _all_elidable(p, pairs, out, k, before, kept):
            for target, source in pairs:
                _make_alias(p, target, source)
            del out[k]
            continue
        k += 1
    return out


def _copies(p, loop: Loop) -> list | None:
    """[(target, source)] where every statement of ``loop`` is a copy of a whole buffer
    at the loop's point (``T[i,j] = Y[i,j]`` over all of T), else None."""
    names = tuple(n for n, _ in loop.indices)
    extent = dict(loop.indices)
    pairs = []
    for target, index, kind, expr in loop.stmts:
        if target == LOSS or kind != "=" or tuple(index) != names:
            return None
        acc = p.symbols.get(expr) if expr.is_Symbol else None
        if acc is None or tuple(acc.index) != names:
            return None
        shape = p.buffers[target].shape
        if len(shape) != len(names) or any(extent[n] != s for n, s in zip(names, shape)):
            return None
        pairs.append((target, acc.array))
    return pairs


def _all_elidable(p, pairs, ops, k, before, kept) -> bool:
    """Whether every copy of ``pairs`` (the loop at ``ops[k]``) may share its source's
    memory, each checked with those before it taken as shared."""
    roots: dict = {}                       # target -> the memory it would share

    def root(name):
        name = _root(p, name)
        return roots.get(name, name)

    targets = {t for t, _ in pairs}
    for target, source in pairs:
        B = p.buffers
        mem = root(source)
        if source in targets or mem in targets:
            return False                   # a copy of a copy in the same loop
        if B[target].kind != "work" or B[target].alias or B[mem].kind != "work" \
                or B[target].shape != B[source].shape or target in kept or mem in kept:
            return False
        if any(target in _touched(p, op, root) for op in before + ops[:k]):
            return False
        if not _apart(p, ops[k + 1:], target, mem, root):
            return False
        roots[target] = mem
    return True


def _touched(p, op, root) -> set:
    reads, writes = _access(p, op, root)
    return reads | writes


def _access(p, op, root):
    """(reads, writes) of op as memory names; every buffer for an op this does not know."""
    if isinstance(op, Loop):
        writes = {t for t, *_ in op.stmts if t != LOSS}
    elif isinstance(op, MatMul):
        writes = {op.C}
    elif isinstance(op, (Zero, Fill)):
        writes = {op.buffer}
    elif isinstance(op, SoftmaxXent):
        writes = {op.grad} if op.grad else set()
    elif isinstance(op, (Conv, Route)):
        writes = _reads(p, op)             # all it names, as written too
    else:
        everything = {root(n) for n in p.buffers}
        return everything, everything
    return {root(n) for n in _reads(p, op)}, {root(n) for n in writes}


def _late(p, op, tensor: bool) -> bool:
    """An op a chunked schedule may run after the chunks: a product over a recurrence's
    stacked steps, or a vector network's weight gradient (a sum over the batch; a tensor
    network's stay in its chunks, in order: symnet.plan.schedule.halves)."""
    return isinstance(op, MatMul) and (bool(op.parts) or not tensor
                                       and p.buffers[op.C].kind == "grad")


def _apart(p, rest: list, target: str, mem: str, root) -> bool:
    """Whether, in ``rest`` (the ops after the copy), no write to ``target`` comes before
    the last read of ``mem`` and no write to ``mem`` before the last read of ``target``
    (a late op's reads and writes counted at the end of the pass)."""
    end, tensor = len(rest), is_tensor(p)
    reads = {target: [], mem: []}
    writes = {target: [], mem: []}
    for i, op in enumerate(rest):
        r, w = _access(p, op, root)
        at = end + i if _late(p, op, tensor) else i
        for name in (target, mem):
            if name in r:
                reads[name].append(at)
            if name in w:
                writes[name].append(at)
    for a, b in ((target, mem), (mem, target)):
        if writes[a] and reads[b] and min(writes[a]) <= max(reads[b]):
            return False
    return True


def _make_alias(p, target: str, source: str) -> None:
    """``target`` becomes a name of ``source``'s memory (and so do its own aliases)."""
    mem = _root(p, source)
    old = p.buffers[target]
    old.kind, old.alias, old.offset = "alias", mem, p.buffers[mem].offset
    old.comment = f"{old.comment}: the memory of {source}, its copy (the same numbers) not made"
    for b in p.buffers.values():
        if b.alias == target:
            b.alias = mem
