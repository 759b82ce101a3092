"""Plan rewrites that join two operations of a kernel plan into one pass (symnet.plan.lower
calls them before gathering the per-example runs): the C computes the same formulas
with fewer passes over memory; the derivation (net.formulas()) is unchanged."""

from __future__ import annotations

import dataclasses

import sympy as sp

from ..ir import nodes as ir
from ..scalar.notation import text
from .ops import LOSS, Conv, Epilogue, Fill, Loop, MatMul, Route, SoftmaxXent, Zero


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


def _root(p, name: str) -> str:
    """The buffer an alias (a view of another buffer) stands for."""
    while name in p.buffers and p.buffers[name].alias:
        name = p.buffers[name].alias
    return name


def _reads(p, op) -> set:
    """The buffers op reads (every buffer, for an op this does not know)."""
    if isinstance(op, Loop):
        return {p.symbols[s].array for _, _, _, e in op.stmts for s in e.free_symbols
                if s in p.symbols} | {t for t, _, kind, _ in op.stmts if kind != "="}
    if isinstance(op, MatMul):
        pairs = op.parts or [(op.A, op.B)]
        e = op.epilogue
        return {x for pair in pairs for x in pair} | ({op.C} if op.accumulate else set()) \
            | ({x for x in (e.bias, e.mask) if x} if e is not None else set())
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


def fuse_loops(p, ops: list) -> list:
    """Two loops in a row over the same indices, the first an element formula
    (every statement writes the element at the loop's point: ``dL_dE[b,h,t,u] +=
    δ_Z[b,h,t]``), the second reading what the first wrote only at that same point
    (``dL_dS[b,h,t,u] = E[b,h,t,u]·dL_dE[b,h,t,u]``), run as one loop: at each point the
    first's statements, then the second's, which read the element just stored (from the
    cache, not a second pass over memory; the C keeps such reads out of the loop's common
    subexpressions, symnet.backend.c.emit), so the results are the same numbers.  Not when
    the first reads anything the second writes, or the second reads the first's targets
    at another point.  Loops over the same extents under other index names join too
    (the second's indices renamed; its comment keeps the names it was derived with), and
    a zeroing between them that the first does not touch moves before it."""
    out, k = [], 0
    while k < len(ops):
        prev, j = (out[-1] if out else None), k
        if isinstance(prev, Loop):
            # zeroings the loop does not touch: run before it, when the loop after joins it
            touched = _reads(p, prev) | {t for t, *_ in prev.stmts}
            while j < len(ops) and isinstance(ops[j], Zero) and ops[j].buffer not in touched:
                j += 1
        joined = _joined(p, prev, ops[j]) if isinstance(prev, Loop) and j < len(ops) \
            and isinstance(ops[j], Loop) else None
        if joined is not None:
            out[-1:] = ops[k:j] + [joined]
            k = j + 1
        else:
            out.append(ops[k])
            k += 1
    return out


def _renamed(p, a: Loop, b: Loop):
    """``b`` with its loop indices named as ``a``'s where the two run over the same
    extents under other names (``dL_dC[b,a,e]`` then ``dL_dR[b,a,d]``), or None."""
    if len(a.indices) != len(b.indices) \
            or any(na != nb for (_, na), (_, nb) in zip(a.indices, b.indices)):
        return None
    names = {nb: na for (na, _), (nb, _) in zip(a.indices, b.indices)}
    if all(k == v for k, v in names.items()):
        return b

    def ix(x):
        if isinstance(x, str):
            return names.get(x, x)
        return ir.Affine(tuple((names.get(n, n), c) for n, c in x.terms), x.const)

    stmts = []
    for target, index, kind, expr in b.stmts:
        subs = {}
        for sym in expr.free_symbols:
            acc = p.symbols.get(sym)
            if acc is not None:
                subs[sym] = ir.element(p.symbols, acc.array, *(ix(x) for x in acc.index))
            elif str(sym) in names and names[str(sym)] != str(sym):
                return None     # an index read as a number (Dropout's counter): not renamed
        stmts.append((target, tuple(ix(x) for x in index), kind, expr.xreplace(subs)))
    return dataclasses.replace(b, indices=list(a.indices), stmts=stmts)


def _joined(p, a: Loop, b: Loop):
    """The loop that runs ``a`` then ``b`` at each point (see fuse_loops), or None."""
    if a.product or b.product:
        return None
    b = _renamed(p, a, b)
    if b is None:
        return None
    point = tuple(n for n, _ in a.indices)
    value = {}                           # the roots of a's targets
    for target, index, kind, expr in a.stmts:
        if target == LOSS or kind not in ("=", "+=") or tuple(index) != point \
                or _root(p, target) in value:
            return None
        value[_root(p, target)] = kind
    b_targets = {_root(p, t) for t, *_ in b.stmts if t != LOSS}
    if b_targets & set(value):
        return None
    for _, _, _, expr in a.stmts:         # a reads none of b's targets
        for s in expr.free_symbols:
            acc = p.symbols.get(s)
            if acc is None:
                continue
            root = _root(p, acc.array)
            if root in b_targets:
                return None
    used = False
    for _, _, _, expr in b.stmts:
        for s in expr.free_symbols:
            acc = p.symbols.get(s)
            if acc is None or _root(p, acc.array) not in value:
                continue
            if tuple(acc.index) != point:
                return None
            used = True
    if not used:
        return None
    return Loop(list(a.indices), list(a.stmts) + list(b.stmts), f"{a.comment}; {b.comment}",
                hoist=a.hoist or b.hoist, fresh=set(a.fresh) | set(b.fresh))


def fuse_epilogues(p, ops: list, later: list) -> list:
    """A product ``z_H1 = X·W1ᵀ`` followed by the loop that adds a bias and applies an
    activation to it, element by element, ``H1[b,i] = relu(b1[i] + z_H1[b,i])``, with
    nothing else reading z_H1 (in the rest of ``ops``, nor in ``later``, the passes that
    follow): the product writes H1 itself and applies the loop's formula to each block
    of H1 as its sums finish, while the block is still in the cache (``MatMul.epilogue``,
    templates/gemm.c.j2), instead of storing z_H1 and reading it back in a pass of its
    own.  The activations taken: linear and relu, whose loops compute b + z and compare
    it with 0, as the epilogue does: the same numbers.  Not leaky relu: its derivation
    writes the negative side expanded, 0.01·b1 + 0.01·z_H1, which the C may contract
    into a multiply-add of its own choosing; any other loop stays a loop."""
    out, k = [], 0
    while k < len(ops):
        op = ops[k]
        nxt = ops[k + 1] if k + 1 < len(ops) else None
        epi = _epilogue(p, op, nxt) if isinstance(op, MatMul) and isinstance(nxt, Loop) \
            else None
        if epi is not None and _unread(p, op.C, ops[k + 2:] + later):
            target = nxt.stmts[0][0]
            out.append(dataclasses.replace(op, C=target, epilogue=epi))
            k += 2
            continue
        out.append(op)
        k += 1
    return out


def _first_stmt(p, op: MatMul, loop: Loop):
    """(target, the loop's index names, formula, {symbol: access} of what the formula
    reads, the symbols of op's C at the loop's point among them) of the loop's first
    statement when it stores an element formula at the loop's point into a buffer that
    ``op``, a plain product whose C is another buffer of the same shape, could write
    instead; else None."""
    B = p.buffers
    if op.accumulate or op.parts or op.epilogue is not None or not isinstance(op.N, int) \
            or loop.product or not loop.stmts:
        return None
    target, index, kind, expr = loop.stmts[0]
    names = tuple(n for n, _ in loop.indices)
    z = op.C
    if kind != "=" or target == LOSS or index != names or loop.indices[-1][1] != op.N \
            or target == z or target not in B or z not in B:
        return None
    if B[target].kind != "work" or B[z].kind != "work" or B[target].alias or B[z].alias \
            or B[target].shape != B[z].shape or z in (p.output, *p.graph.outputs):
        return None
    reads = {s: p.symbols[s] for s in expr.free_symbols if s in p.symbols}
    zs = [s for s, a in reads.items() if a.array == z and tuple(a.index) == names]
    return target, names, expr, reads, zs


def _unread(p, name: str, ops: list) -> bool:
    """No op of ``ops`` reads the buffer ``name`` (or what it is a view of)."""
    return not any(_root(p, name) in {_root(p, r) for r in _reads(p, o)} for o in ops)


def _epilogue(p, op: MatMul, loop: Loop):
    """The ops.Epilogue that ``loop`` is after ``op`` (see fuse_epilogues), or None."""
    B = p.buffers
    first = _first_stmt(p, op, loop) if op.kind == "nt" and not loop.hoist \
        and len(loop.stmts) == 1 else None
    if first is None:
        return None
    target, names, expr, reads, zs = first
    z = op.C
    bs = [s for s, a in reads.items() if a.array != z and B.get(a.array) is not None
          and B[a.array].kind == "param" and tuple(a.index) == (names[-1],)
          and tuple(B[a.array].shape) == (op.N,)]
    if len(reads) != 2 or len(zs) != 1 or len(bs) != 1 \
            or set(expr.free_symbols) != {zs[0], bs[0]}:
        return None
    u = bs[0] + zs[0]
    comment = loop.comment
    bias = reads[bs[0]].array
    if expr == u:
        return Epilogue(bias, "linear", comment)
    if isinstance(expr, sp.Piecewise) and len(expr.args) == 2 \
            and expr.args[0].expr == u and expr.args[0].cond == sp.StrictGreaterThan(u, 0) \
            and expr.args[1].cond == sp.true and expr.args[1].expr == 0:
        return Epilogue(bias, "relu", comment)
    return None


def fuse_masks(p, ops: list, later: list) -> list:
    """A product ``dL_dH1 = δ2·W2`` followed by the loop that applies relu's derivative
    to it, element by element, ``δ_H1[b,i] = dL_dH1[b,i]·(1 if H1[b,i] > 0 else 0)``
    (with, in the same loop, the bias gradient's ``g_b1[i] += `` of that same formula),
    with nothing else reading dL_dH1 (in the rest of ``ops``, nor in ``later``): the
    product writes δ_H1 itself and multiplies each of its sums by the mask as it stores
    it (``Epilogue(act="mask")``, templates/gemm.c.j2), and the loop keeps only the other
    statements, now reading δ_H1 (``g_b1[i] += δ_H1[b,i]``), or goes.  The product is
    the only pass that writes the derivative: the loop no longer reads dL_dH1 and H1 and
    writes δ_H1; the same multiplication, so the same numbers."""
    out, k = [], 0
    while k < len(ops):
        op, j = ops[k], k + 1
        if isinstance(op, MatMul):
            # zeroings between them that the product does not touch (the bias
            # gradient's, for the loop's "+="): run before it
            touched = {_root(p, x) for x in _reads(p, op) | {op.C}}
            while j < len(ops) and isinstance(ops[j], Zero) \
                    and _root(p, ops[j].buffer) not in touched:
                j += 1
        nxt = ops[j] if j < len(ops) else None
        fused = _mask(p, op, nxt) if isinstance(op, MatMul) and isinstance(nxt, Loop) \
            else None
        if fused is not None and _unread(p, op.C, ops[j + 1:] + later):
            product, rest = fused
            out += ops[k + 1:j] + [product] + ([rest] if rest is not None else [])
            k = j + 1
            continue
        out.append(op)
        k += 1
    return out


def _mask(p, op: MatMul, loop: Loop):
    """(the product writing the loop's first target with the mask as its epilogue, the
    loop's other statements or None) when ``loop`` is relu's derivative of what ``op``
    computes (see fuse_masks); else None."""
    B = p.buffers
    first = _first_stmt(p, op, loop) if op.kind in ("nt", "nn") else None
    if first is None:
        return None
    target, names, expr, reads, zs = first
    z = op.C
    hs = [s for s, a in reads.items() if a.array != z and a.array in B
          and B[a.array].kind == "work" and not B[a.array].alias
          and tuple(a.index) == names and B[a.array].shape == B[z].shape]
    if len(reads) != 2 or len(zs) != 1 or len(hs) != 1 \
            or set(expr.free_symbols) != {zs[0], hs[0]}:
        return None
    gate = sp.Piecewise((1, sp.StrictGreaterThan(hs[0], 0)), (0, True))
    if expr != zs[0] * gate:
        return None
    mask = reads[hs[0]].array
    if mask == target:
        return None
    # the other statements: the same formula (at the same point) read from the target
    new = ir.element(p.symbols, target, *loop.stmts[0][1])
    stmts, texts = [], []
    for t, ix, kd, e in loop.stmts[1:]:
        if t in (z, target, mask):
            return None
        e = new if e == expr else e.xreplace({expr: new})
        for s in e.free_symbols:     # z nowhere else, the target only at the point
            a = p.symbols.get(s)
            if a is not None and _root(p, a.array) in (_root(p, z), _root(p, target)) \
                    and not (a.array == target and tuple(a.index) == names):
                return None
        stmts.append((t, ix, kd, e))
        texts.append(f"{t}[{','.join(ir.index_text(x) for x in ix)}] {kd} {text(e)}")
    product = dataclasses.replace(op, C=target,
                                  epilogue=Epilogue(None, "mask", loop.comment, mask=mask))
    rest = dataclasses.replace(loop, stmts=stmts, comment="; ".join(texts)) if stmts else None
    return product, rest
