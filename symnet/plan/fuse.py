"""Plan rewrites that join two operations of a kernel plan into one pass (symnet.plan.lower
calls them before gathering the per-example runs): the C computes the same formulas
with fewer passes over memory; the derivation (net.formulas()) is unchanged."""

from __future__ import annotations

import dataclasses

from .ops import LOSS, Conv, Fill, Loop, MatMul, Route, SoftmaxXent, Zero


def fuse_routes(p, ops: list) -> list:
    """A max pooling's backward whose windows tile its input exactly (stride = kernel,
    no padding, nothing left over) routes δ to one element per window and 0 to the
    rest; when the next op is a loop over that input's gradient element by element
    (the activation's derivative: delta_H1 = dL_dH1·relu′(z_H1), g_b1 += …) and nothing
    later reads the gradient, the two run as one pass: each window's elements take
    their routed value straight into the loop's formulas, so ∂L/∂H is neither zeroed
    nor stored nor read back.  The derivation keeps both steps; only the C fuses them."""
    out, dropped, k = [], set(), 0
    while k < len(ops):
        op, j = ops[k], k + 1
        while j < len(ops) and isinstance(ops[j], Zero) and isinstance(op, Route) \
                and ops[j].buffer not in _reads(p, op):
            j += 1                       # a zeroing between them (g_b1 before its sums)
        nxt = ops[j] if j < len(ops) else None
        if isinstance(op, Route) and isinstance(nxt, Loop) and _tiles(p, op) \
                and _fusable(p, op, nxt, ops[j + 1:]):
            out += ops[k + 1:j] + [dataclasses.replace(op, then=nxt)]
            dropped.add(op.target.array)
            k = j + 1
            continue
        out.append(op)
        k += 1
    return [op for op in out if not (isinstance(op, Zero) and op.buffer in dropped)]


def _tiles(p, r: Route) -> bool:
    """Whether r's windows tile its target: each position a loop index or
    out·s + w with the window w's extent s, the target's extent out's extent × s."""
    if not r.overwrite or r.x.index != r.target.index or len(r.loop) < 2:
        return False
    shape = p.buffers[r.target.array].shape
    loop, window = dict(r.loop), dict(r.window)
    if len(shape) != len(r.target.index):
        return False
    used = []
    for ix, n in zip(r.target.index, shape):
        if isinstance(ix, str):
            if loop.get(ix) != n:
                return False
            used.append(ix)
            continue
        terms = dict(ix.terms)
        outs = [t for t in terms if t in loop]
        wins = [t for t in terms if t in window]
        if ix.const or len(terms) != 2 or len(outs) != 1 or len(wins) != 1:
            return False
        o, w = outs[0], wins[0]
        if terms[w] != 1 or terms[o] != window[w] or not isinstance(loop[o], int) \
                or loop[o] * window[w] != n:
            return False
        used += [o, w]
    return sorted(used) == sorted([*loop, *window])


def _fusable(p, r: Route, loop: Loop, rest: list) -> bool:
    """Whether ``loop`` reads r's target only at its own element, writes its "="
    targets at that element and sums its "+=" targets (gradients) over indices the
    route's outer loops carry, and whether no later op reads the target."""
    target = r.target.array
    names = tuple(n for n, _ in loop.indices)
    shape = p.buffers[target].shape
    if len(names) != len(shape) or any(e != n for (_, e), n in zip(loop.indices, shape)):
        return False
    same = {n for n, ix in zip(names, r.target.index) if n == ix and n != r.loop[-1][0]}
    for tgt, index, kind, expr in loop.stmts:
        if tgt == LOSS or tgt == target:
            return False
        if kind == "=" and tuple(index) != names:
            return False
        if kind == "+=" and not (p.buffers[tgt].kind == "grad"
                                 and all(isinstance(i, str) and i in same for i in index)):
            return False
        if kind not in ("=", "+="):
            return False
        for sym in expr.free_symbols:
            acc = p.symbols.get(sym)
            if acc is not None and acc.array == target and tuple(acc.index) != names:
                return False
    views = {target} | {b.name for b in p.buffers.values()
                        if b.kind == "alias" and b.alias == target}
    return all(not (_reads(p, op) & views) for op in rest)


def _reads(p, op) -> set:
    """The buffers op reads (every buffer, for an op this does not know)."""
    if isinstance(op, Loop):
        return {p.symbols[s].array for _, _, _, e in op.stmts for s in e.free_symbols
                if s in p.symbols} | {t for t, _, kind, _ in op.stmts if kind != "="}
    if isinstance(op, MatMul):
        pairs = op.parts or [(op.A, op.B)]
        return {x for pair in pairs for x in pair} | ({op.C} if op.accumulate else set())
    if isinstance(op, Conv):
        return {x for x in (op.X, op.W, op.col, op.delta, op.Z, op.dX, op.gW) if x}
    if isinstance(op, Route):
        return {op.x.array, op.z.array, op.delta.array, op.target.array} \
            | (_reads(p, op.then) if op.then is not None else set())
    if isinstance(op, SoftmaxXent):
        return {op.O, op.T}
    if isinstance(op, (Zero, Fill)):
        return set()
    return set(p.buffers)
