"""The thread schedule of a plan: which ops of a tensor network's passes run one chunk
of examples at a time, and on how many threads (``split``, called by
``symnet.plan.lower.plan``).

A run of ops that each take every example alone becomes one ``Rows`` region, whose
chunks of examples the emitted C shares out among OpenMP threads: one join per run,
where each small product would be too short to share.  The cost model below weighs
an element of a loop and a convolution's multiply-add against the tiled products'.
"""

from __future__ import annotations

import math

from ..ir import nodes as ir
from .ops import LOSS, Conv, Fill, Halves, Loop, MatMul, Route, Rows, SoftmaxXent, Zero, \
    with_labels


# ------------------------------------------------------------ examples among threads
#: what an element of a loop (an activation, a pooling window's element, an im2col copy)
#: and a convolution's multiply-add cost in multiply-adds of the tiled products, for the
#: thread count.  Measured on LeNet's step (one thread, AVX-512): 68 ps per element of
#: a ReLU; 160 µs for the first convolution (5.5 M multiply-adds, 0.9 M copies) and
#: 122 µs for the second (9.8 M, 0.6 M); sn_gemm: 10 ps per multiply-add
ELEMENT_COST, CONV_COST = 8.0, 1.0


def is_tensor(p) -> bool:
    """Whether a network's buffers hold tensors (a sequence, an image) rather than vectors:
    its pass in chunks keeps each chunk's weight gradients in the chunk, in the pass's
    order (a vector network's run after the chunks: halves)."""
    return any(len(b.shape) > 2 for b in p.buffers.values() if b.kind in ("work", "input"))


def split(p) -> None:
    """Gather the runs of per-example ops of a tensor network's passes into Rows: a
    convolution's products, its activation and pooling then run one chunk of
    examples at a time (cache-hot), and the chunks on several threads: one join per
    run, where each of the small products would be too short to share.  Matrix
    products stay outside (sn_gemm shares them out itself; in chunks of a few rows
    each would pack its weights again).  Vector networks keep their passes as they are."""
    if not is_tensor(p):
        p.halves = halves(p)
        return
    # a tensor network whose loss-and-gradient pass takes each example alone up to the
    # weight gradients (a transformer): that pass in chunks, the forward pass below
    p.halves = halves(p, tensor=True)
    p.split_forward = _runs(p, p.forward)
    if p.halves:
        p.regions = [op for op in p.split_forward if isinstance(op, Rows)]
        for k, r in enumerate(p.regions):
            r.index, r.backward = k + 1, False
        size = max((r.size for r in p.regions), default=0)
        p.work_per_row += max(size - (p.work_per_row - p.part_offset), 0)
        return
    p.split_backward = _runs(p, p.backward)
    if p.backward_labels:
        p.split_backward_labels = [op if isinstance(op, Rows) else with_labels(op)
                                   for op in p.split_backward]
    p.regions = [op for ops in (p.split_forward, p.split_backward) for op in ops
                 if isinstance(op, Rows)]
    if not p.regions:      # no tensor layer's op (a sequence's steps): the passes as they are
        p.split_forward = p.split_backward = p.split_backward_labels = None
        return
    for k, r in enumerate(p.regions):
        r.index = k + 1
        r.backward = all(r is not op for op in p.split_forward)
    size = max((r.size for r in p.regions), default=0)
    if size:
        p.part_offset = p.work_per_row
        p.work_per_row += size


def _per_row(p, name: str) -> bool:
    return name in p.buffers and p.buffers[name].shape[:1] == ("batch",)


def _row_op(p, op) -> bool:
    """Whether op computes each example from that example alone (sums over the
    examples allowed only into gradients)."""
    B = p.buffers
    if isinstance(op, (Conv, Route)):
        loop = op.loop if isinstance(op, Route) else [(ir.BATCH, "batch")]
        return tuple(loop[0]) == (ir.BATCH, "batch") and \
            (getattr(op, "then", None) is None or _row_op(p, op.then))
    if isinstance(op, (Zero, Fill)):
        return _per_row(p, op.buffer)
    if not isinstance(op, Loop) or not op.indices or \
            tuple(op.indices[0]) != (ir.BATCH, "batch"):
        return False
    for target, index, _, expr in op.stmts:
        if target == LOSS or not (B[target].kind == "grad" or _per_row(p, target)
                                  and tuple(index[:1]) == (ir.BATCH,)):
            return False
        if _reads_other_rows(p, expr):
            return False
    return True


def _reads_other_rows(p, expr) -> bool:
    """Whether expr reads a per-example buffer at an example other than the loop's own."""
    for sym in expr.free_symbols:
        acc = p.symbols.get(sym)
        if acc is not None and _per_row(p, acc.array) and tuple(acc.index[:1]) != (ir.BATCH,):
            return True
    return False


def _heavy(op) -> bool:
    """A tensor layer's op: worth a run of its own (a vector layer's activation is not)."""
    return isinstance(op, (Conv, Route)) or isinstance(op, Loop) and len(op.indices) > 2


def _summed(p, op) -> list:
    """The gradients op sums over the examples."""
    if isinstance(op, Conv):
        return [op.gW] if op.mode == "backward" and op.gW else []
    if isinstance(op, Loop):
        return [t for t, *_ in op.stmts if t != LOSS and p.buffers[t].kind == "grad"]
    if isinstance(op, Route) and op.then is not None:
        return _summed(p, op.then)
    return []


def _runs(p, ops: list) -> list:
    """The ops with each run of per-example ops that holds a tensor layer's op as one
    Rows.  A gradient's zeroing inside a run becomes the zero start of its partial
    sums; a gradient written before the run gets the run's sum added ("+=")."""
    out, run, written = [], [], set()

    def close():
        if any(_heavy(op) for op in run):
            grads = list(dict.fromkeys(g for op in run for g in _summed(p, op)))
            zeroed = {op.buffer for op in run if isinstance(op, Zero) and op.buffer in grads}
            # a gradient no op of the run sums (no path to the loss): zeroed whole, before
            out.extend(op for op in run if isinstance(op, Zero) and not _per_row(p, op.buffer)
                       and op.buffer not in grads)
            r = Rows([op for op in run if not (isinstance(op, Zero) and (
                op.buffer in grads or not _per_row(p, op.buffer)))],
                     sum(_cost(p, op) for op in run))
            for g in grads:
                size = math.prod(p.buffers[g].shape)
                kind = "+=" if g in written and g not in zeroed else "="
                r.grads.append((g, r.size, size, kind))
                r.size += size
            out.append(r)
        else:
            out.extend(run)
        for op in run:
            written.update(_summed(p, op) + ([op.buffer] if isinstance(op, Zero) else []))
        run.clear()

    for op in ops:
        if _row_op(p, op) or isinstance(op, Zero) and p.buffers[op.buffer].kind == "grad":
            run.append(op)
            continue
        close()
        out.append(op)
        written.update(_writes(op))
    close()
    return out


def _writes(op) -> set:
    if isinstance(op, Loop):
        return {t for t, *_ in op.stmts if t != LOSS}
    if isinstance(op, MatMul):
        return {op.C}
    if isinstance(op, (Zero, Fill)):
        return {op.buffer}
    return set()


def _extent(loop) -> int:
    n = 1
    for _, e in loop:
        n *= e if isinstance(e, int) else 1
    return n


def _cost(p, op) -> float:
    """One example's work in multiply-adds of the tiled products (see ELEMENT_COST)."""
    if isinstance(op, Conv):
        g = op.geo
        kc, ohw = g["cin"] * math.prod(g["kernel"]), math.prod(g["out_hw"])
        products = 1 if op.mode == "forward" else (op.gW is not None) + (op.dX is not None)
        copies = (op.mode == "forward" and not op.direct) or op.dX is not None
        return CONV_COST * products * g["cout"] * kc * ohw + ELEMENT_COST * copies * kc * ohw
    if isinstance(op, Loop):
        return ELEMENT_COST * _extent(op.indices[1:]) * len(op.stmts)
    if isinstance(op, Route):
        return ELEMENT_COST * _extent(op.loop[1:]) * _extent(op.window) \
            + (_cost(p, op.then) if op.then is not None else 0.0)
    if _per_row(p, op.buffer):
        return ELEMENT_COST * math.prod(p.buffers[op.buffer].shape[1:]) / 8   # memset, fill
    return 0.0


# ------------------------------------------------------------ a small network's pass in chunks
#: multiply-adds per example of a vector network's products up to which its loss-and-
#: gradient pass runs in chunks of the batch (Halves): each of its products is then too
#: small to share among threads by itself (the small workload 64-128-64-10: 51 k; the
#: medium one, 784-256-128-10: 0.5 M, whose products each run on the threads)
HALVES_MAX = 1 << 17
#: examples per chunk of a tensor network's pass in chunks (its C's sn_chunks_of); of a
#: recurrent one's (products of one row per example and step)
CHUNK, CHUNK_STEPS = 8, 32


def batch_rows(extent) -> int | None:
    """Rows per example of a product's extent: "batch" 1, "batch * 32" (a Linear at each
    of 32 positions) 32; None for any other."""
    if extent == "batch":
        return 1
    head, _, rows = extent.partition(" * ") if isinstance(extent, str) else ("", "", "")
    return int(rows) if head == "batch" and rows.isdigit() else None


#: M·N·K from which a product takes the tiles (SN_SMALL of templates/gemm.c.j2)
SMALL = 4096


def packs(h, B) -> None:
    """The weights that the products of a tensor network's chunks read as B (``h.packs``:
    name, kind, N, K; ``h.pack_of``: each one's index), which the pass packs once into the
    panels the tiles read, for all its chunks (templates/network.c.j2, sn_chunk_pass):
    each chunk's products copied each panel of them, a layer's Wᵀ read along its rows.
    Only those whose product over a chunk's rows takes the tiles (M·N·K of at least
    SMALL, SN_SMALL of templates/gemm.c.j2; smaller ones run as plain loops on B)."""
    for op in h.head + h.rows + (h.rows_labels or []) + h.tail:
        if isinstance(op, MatMul) and op.kind in ("nt", "nn") and B[op.B].kind == "param" \
                and (op.B, op.kind, op.N, op.K) not in h.packs \
                and h.chunk * (batch_rows(op.M) or 1) * op.N * op.K >= SMALL:
            h.packs.append((op.B, op.kind, op.N, op.K))


def halves(p, tensor: bool = False):
    """A network's loss-and-gradient pass as a ``Halves`` (every op per example, the
    weight gradients' products over the whole batch after them), or None where it does
    not apply: an op that is neither; for a vector network also a product too large
    (HALVES_MAX: each of its products then shares out by itself).  A ``tensor`` network
    (per-example ops over positions, per-example products as small products, Linears at
    each position as products of batch·positions rows, a recurrence's steps) needs a
    product of the batch's rows; its weight gradients are summed in the chunks too, each
    chunk's part over its own rows (but a product over a recurrence's stacked steps, in
    ``late``, after the chunks, cut in row parts among the jobs)."""
    if not p.backward:
        return None
    B = p.buffers

    def rows(op) -> bool:
        if isinstance(op, MatMul):
            return op.kind in ("nt", "nn") and batch_rows(op.M) is not None \
                and (tensor or op.M == "batch" and not op.accumulate) and op.parts is None \
                and _per_row(p, op.A) and _per_row(p, op.C) and not _per_row(p, op.B) \
                and isinstance(op.N, int) and isinstance(op.K, int) \
                and (op.epilogue is None or not op.epilogue.mask or _per_row(p, op.epilogue.mask))
        if isinstance(op, SoftmaxXent):
            return _per_row(p, op.O) and (op.grad is None or _per_row(p, op.grad))
        if isinstance(op, (Zero, Fill)):
            return _per_row(p, op.buffer) or isinstance(op, Zero) and B[op.buffer].kind == "grad"
        if not isinstance(op, Loop) or op.product and not tensor or not op.indices or \
                tuple(op.indices[0]) != (ir.BATCH, "batch"):
            return False
        for target, index, kind, expr in op.stmts:
            if target != LOSS and not (B[target].kind == "grad" and kind == "+=" or
                                       _per_row(p, target) and tuple(index[:1]) == (ir.BATCH,)):
                return False
            if _reads_other_rows(p, expr):
                return False
        return True

    def summed(op) -> bool:     # a weight gradient: Σ_b A[b,m]·B[b,n], stored
        return isinstance(op, MatMul) and op.kind == "tn" and batch_rows(op.K) is not None \
            and (tensor or op.K == "batch" and op.parts is None) \
            and not op.accumulate and B[op.C].kind == "grad" and _per_row(p, op.A) \
            and _per_row(p, op.B) and isinstance(op.M, int) and isinstance(op.N, int)

    passes = [p.backward] + ([p.backward_labels] if p.backward_labels else [])
    out, sums, grads = [], None, None
    for backward in passes:
        ops = p.forward + backward
        if not all(rows(op) or summed(op) for op in ops):
            return None
        these = [op for op in ops if summed(op)]
        if sums is not None and [(o.C, o.A, o.B) for o in these] != \
                [(o.C, o.A, o.B) for o in sums]:
            return None
        sums = these
        zeroed = {op.buffer for op in ops if isinstance(op, Zero) and B[op.buffer].kind == "grad"}
        by_loops = [t for op in ops if isinstance(op, Loop) for t, _, kind, _ in op.stmts
                    if t != LOSS and B[t].kind == "grad"]
        # each gradient written by one op; a sum over the examples starts from zero
        written = by_loops + [op.C for op in these]
        if tensor:      # several loops may add into one (a recurrence's bias, each step)
            many = {g for g in by_loops if by_loops.count(g) > 1}
            if any(g not in zeroed or any(g in op.fresh for op in ops if isinstance(op, Loop))
                   for g in many):
                return None
            written = list(dict.fromkeys(by_loops)) + [op.C for op in these]
        if len(set(written)) != len(written) or not zeroed <= set(written) or \
                any(g not in zeroed and not any(g in op.fresh for op in ops
                                                if isinstance(op, Loop)) for g in by_loops):
            return None
        grads = list(dict.fromkeys(by_loops)) if grads is None else grads
        # a tensor network's weight gradients stay in the chunks, each chunk's part of
        # them summed over its rows while they are in cache
        # (but a product over a recurrence's stacked steps, after the chunks)
        out.append([op for op in ops if (not summed(op) or tensor and op.parts is None)
                    and not (isinstance(op, Zero) and B[op.buffer].kind == "grad")])
    cost = sum(batch_rows(op.M) * op.N * op.K for ops in out[:1] for op in ops
               if isinstance(op, MatMul) and not summed(op)) + \
        sum(batch_rows(op.K) * op.M * op.N for op in sums)
    if not tensor and cost > HALVES_MAX:
        return None
    if tensor and not any(isinstance(op, MatMul) and not summed(op) and op.M != "batch"
                          for op in out[0]):
        return None
    # chunks of CHUNK examples where the products of several rows per example (positions)
    # are most of the work; where products of one row per example are (a recurrence's
    # steps), chunks of CHUNK_STEPS examples, so that each step's products keep rows
    rows_cost = [(batch_rows(op.M), op.N * op.K) for op in out[0]
                 if isinstance(op, MatMul) and not summed(op)]
    single = sum(c for r, c in rows_cost if r == 1)
    chunk = CHUNK_STEPS if single > sum(r * c for r, c in rows_cost if r > 1) else CHUNK
    h = Halves(out[0], out[1] if len(out) > 1 else None, sums, [], 0, float(cost), tensor=tensor,
               chunk=chunk)
    if h.rows_labels:
        # the ops after the loss, the same for targets as rows and as class labels: emitted
        # once (sn_chunk_tail), as sn_backprop is for the passes as they are
        k = 0
        while k < min(len(h.rows), len(h.rows_labels)) - 1 and \
                h.rows[-1 - k] is h.rows_labels[-1 - k]:
            k += 1
        tail = h.rows[len(h.rows) - k:]
        if k and not any(isinstance(op, SoftmaxXent) or isinstance(op, Loop) and any(
                t == LOSS for t, *_ in op.stmts) for op in tail):
            h.tail = tail
            h.rows, h.rows_labels = h.rows[:-k], h.rows_labels[:-k]
        # and the ops before the loss (the forward pass): once too (sn_chunk_head)
        k = 0
        while k < min(len(h.rows), len(h.rows_labels)) - 1 and h.rows[k] is h.rows_labels[k]:
            k += 1
        if k and not any(isinstance(op, SoftmaxXent) or isinstance(op, Loop) and any(
                t == LOSS for t, *_ in op.stmts) for op in h.rows[:k]):
            h.head = h.rows[:k]
            h.rows, h.rows_labels = h.rows[k:], h.rows_labels[k:]
    for g in grads:
        size = math.prod(B[g].shape)
        h.grads.append((g, h.size, size))
        h.size += size
    if tensor:
        # chunk 0 writes its part of each weight gradient into the gradient itself, chunk
        # c > 0 into its partial sums: (chunks − 1) sets of them, which fit in 1/CHUNK of
        # a row per example as the chunks hold CHUNK examples each (sn_chunks_of)
        for op in sums:
            if op.parts is None:
                h.parts[op.C] = h.psize
                h.psize += op.M * op.N
        # the stacked products after the chunks, largest first, each cut in row parts among the jobs
        h.late = sorted((op for op in sums if op.parts is not None),
                        key=lambda op: -op.M * op.N * batch_rows(op.K))
        packs(h, B)
    # the step's update in the jobs that finish each gradient: where they are every one
    h.update = sorted(B[g].offset for g in written) == sorted(
        b.offset for b in B.values() if b.kind == "grad") and \
        sum(math.prod(B[g].shape) for g in written) == p.n_trainable
    p.part_offset = p.work_per_row
    p.work_per_row += max(h.size, 1)
    if tensor:
        h.parts_offset = p.work_per_row
        p.work_per_row += -(-h.psize // h.chunk)
    return h
