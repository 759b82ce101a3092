"""A check of a kernel plan (symnet.plan.lower): every buffer an op reads has been written
by an earlier op of the same pass, or is given (parameters, the input, the targets).  A read
of a buffer no op writes computes from uninitialised memory: with dead results neither the
gradients nor the address sanitizer show it, this does."""

from symnet.plan.fuse import _reads
from symnet.plan.ops import (LOSS, BatchSum, Conv, Fill, Loop, MatMul, Route, SoftmaxXent,
                             Zero)
from symnet.plan.fuse import _root


def _writes(op) -> set:
    if isinstance(op, Loop):
        return {t for t, *_ in op.stmts if t != LOSS}
    if isinstance(op, (Zero, Fill, BatchSum)):
        return {op.buffer}
    if isinstance(op, MatMul):
        return {op.C}
    if isinstance(op, Conv):
        return {x for x in (op.Z, op.gW, op.dX, op.col, op.deltaT) if x}
    if isinstance(op, Route):
        return {op.target.array} | (_writes(op.then) if op.then is not None else set())
    if isinstance(op, SoftmaxXent):
        return {op.grad} if op.grad else set()
    raise TypeError(f"unknown op {type(op).__name__}")


def _read(p, op) -> set:
    if isinstance(op, Loop):
        # a "+=" into a fresh target stores (symnet.plan.overwrite); a statement may read
        # what an earlier statement of the loop wrote (symnet.plan.fuse.fuse_loops)
        out, before = set(), set()
        for t, _, kind, e in op.stmts:
            out |= {p.symbols[s].array for s in e.free_symbols if s in p.symbols
                    and _root(p, p.symbols[s].array) not in before}
            if kind != "=" and t != LOSS and t not in op.fresh and _root(p, t) not in before:
                out.add(t)
            before.add(_root(p, t))
        return out
    if isinstance(op, BatchSum):
        return {op.buffer}
    if isinstance(op, Conv):      # col: the forward's im2col (read), or scratch (written)
        return {x for x in (op.X, op.W, op.delta) if x} | \
            ({op.col} if op.mode == "backward" and not op.direct else set()) | \
            ({op.gW} if op.gW and op.accumulate else set())
    if isinstance(op, Route):
        return {op.x.array, op.z.array, op.delta.array} | \
            ({op.target.array} if not op.overwrite else set()) | \
            (_read(p, op.then) - {op.target.array} if op.then is not None else set())
    return _reads(p, op)


def unwritten_reads(p, ops) -> list:
    """(buffer, op comment) for each read in ``ops`` of a buffer no earlier op wrote."""
    have = {_root(p, b.name) for b in p.buffers.values()
            if b.kind in ("param", "input", "target")}
    bad = []
    for op in ops:
        for x in sorted(_read(p, op)):
            if _root(p, x) not in have:
                bad.append((x, getattr(op, "comment", "")))
        have |= {_root(p, w) for w in _writes(op)}
    return bad


def check(p) -> None:
    """Fails naming the buffers read before any op wrote them, in each pass of ``p``."""
    passes = {"forward": p.forward, "loss": p.forward + p.loss,
              "backward": p.forward + p.backward}
    if p.backward_labels:
        passes["backward (labels)"] = p.forward + p.backward_labels
    h = p.halves
    if h is not None:   # the pass in chunks: every per-example op, the weight gradients after
        zeroed = [Zero(g, size) for g, _, size in h.grads]      # each chunk's partial sums
        passes["in chunks"] = zeroed + h.head + h.rows + h.tail + h.sums
        if h.rows_labels:
            passes["in chunks (labels)"] = zeroed + h.head + h.rows_labels + h.tail + h.sums
    for name, ops in passes.items():
        bad = unwritten_reads(p, ops)
        assert not bad, f"{name}: read before written: {bad}"
