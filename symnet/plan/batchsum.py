"""Sums over the examples of the batch: a plan rewrite (symnet.plan.lower calls it
before the other rewrites), so that each such sum is computed once, in a buffer of its
own, where a runtime can reach it.

A layer whose formula sums over the batch index b′ (BatchNorm's statistics) gives loops
whose statement sums over a loop index of extent ``batch`` that its target does not
carry.  In the forward pass the target holds the same sum in every row,

    z[b,c,y,x] += Σ_b′ Σ_u Σ_v x[b′,c,u,v],

and in the backward pass the derived terms read the delta of every row,

    dL_dx[b′,c,u,v] += Σ_b Σ_y Σ_x 2·N_c[b′,c,u,v]·delta_z[b,c,y,x].

Where the summand is a product whose factors split into those of the summed indices
(F) and the rest (R), and F's other indices (here c) are carried by the target and none
of them is the batch index, the loop becomes

    sum_k[0,c] = Σ_{summed} F          (a per-row buffer of its own; row 0 only)
    BatchSum(sum_k)                      (the runtime's hook: the sum over processes)
    target[...] += R·sum_k[0,c]          (every row, element by element)

which is also B times less work than the loop it replaces (B²·S² terms per channel
become B·S).  A fit that synchronises BatchNorm over MPI (``BatchNorm1d(sync=True)``)
sets the hook (``symnet.runtime.distributed``); without it the C is plain C99 and the
sums are this call's.  ``Plan.batch_sums`` lists them in the order a training call
reaches them (the forward pass's, then the backward pass's), so that a process with no
examples in a step can take part in the same reductions; ``Plan.unsynced`` names the
sums over the batch this rewrite could not split (their layers cannot synchronise).
"""

from __future__ import annotations

import math

import sympy as sp

from ..ir import nodes as ir
from ..scalar.notation import text
from .ops import BatchSum, Loop, Zero

FORWARD, BACKWARD = 0, 1


def _names(ix) -> tuple:
    return (ix,) if isinstance(ix, str) else ix.names()


def _index_names(p, expr) -> set:
    """The loop index names an expression reads (through its elements, or a loop
    index standing as a number)."""
    out = set()
    for s in expr.free_symbols:
        acc = p.symbols.get(s)
        if acc is not None:
            for ix in acc.index:
                out.update(_names(ix))
        else:
            out.add(s.name)
    return out


def split_sum(p, indices, stmt):
    """(summed loop, shared loop, F, R) of a statement that sums over a batch index
    its target does not carry; None when it sums over none; "unsplit" when it does
    but its summand does not split as the module says."""
    target, index, kind, expr = stmt
    if kind != "+=" or target not in p.buffers or \
            p.buffers[target].shape[:1] != ("batch",):
        return None
    carried = {n for ix in index for n in _names(ix)}
    summed = [(n, e) for n, e in indices if n not in carried]
    if not any(e == "batch" for _, e in summed):
        return None
    names = {n for n, _ in summed}
    F, R = sp.S.One, sp.S.One
    for factor in sp.Mul.make_args(expr):
        if _index_names(p, factor) & names:
            F *= factor
        else:
            R *= factor
    extents = dict(indices)
    shared = _index_names(p, F) - names
    loop_names = {n for n, _ in indices}
    if any(n not in loop_names or n not in carried or extents[n] == "batch"
           or not isinstance(extents[n], int) for n in shared):
        return "unsplit"
    # an element of F whose position mixes a summed and a shared index (x[b, c + u]) is
    # no sum per shared point: refused too
    for s in F.free_symbols:
        acc = p.symbols.get(s)
        for ix in (acc.index if acc is not None else ()):
            got = set(_names(ix))
            if got & names and got - names:
                return "unsplit"
    shared_loop = [(n, e) for n, e in indices if n in shared]
    return summed, shared_loop, F, R


def rewrite(p, ops: list, kind: int, new_buffer) -> list:
    """``ops`` with every sum over the batch split as the module says; ``new_buffer(
    name, shape, comment)`` lays out the sum's buffer.  Appends to ``p.batch_sums``
    and ``p.unsynced``."""
    out = []
    for op in ops:
        if not isinstance(op, Loop) or op.product:
            out.append(op)
            continue
        parts = [(st, split_sum(p, op.indices, st)) for st in op.stmts]
        if all(s is None for _, s in parts):
            out.append(op)
            continue
        if any(s == "unsplit" for _, s in parts):
            p.unsynced.append(op.comment)
            out.append(op)
            continue
        plain = [st for st, s in parts if s is None]
        if plain:
            out.append(Loop(op.indices, plain, op.comment, hoist=op.hoist))
        for (target, index, _, expr), (summed, shared_loop, F, R) in \
                [(st, s) for st, s in parts if s is not None]:
            name = f"sum{len(p.batch_sums) + 1}_{target}"
            shape = tuple(e for _, e in shared_loop) or (1,)
            size = math.prod(shape)
            where = ", ".join(n for n, _ in shared_loop)
            sums = "".join(f"Σ_{n} " for n, _ in summed)
            new_buffer(name, shape, f"{sums.strip()} for {target} (row 0)")
            zero_ix = ir.Affine((), 0)
            at = (zero_ix, *(n for n, _ in shared_loop)) if shared_loop else (zero_ix, zero_ix)
            sym = ir.element(p.symbols, name, *at)
            out.append(Zero(name, None))
            out.append(Loop(shared_loop + summed, [(name, at, "+=", F)],
                            f"{name}[{where or '0'}] = {sums}{text(F)}", hoist=True))
            out.append(BatchSum(name, size, kind,
                                f"{name}: the sum over every process's batch where a "
                                "fit synchronises them"))
            keep = [(n, e) for n, e in op.indices if n not in {m for m, _ in summed}]
            keep = [x for x in keep if x[1] == "batch"] + [x for x in keep if x[1] != "batch"]
            idx = ", ".join(ir.index_text(x) for x in index)
            out.append(Loop(keep, [(target, index, "+=", R * sym)],
                            f"{target}[{idx}] += {text(R * sym)}", hoist=op.hoist))
            p.batch_sums.append({"name": name, "size": size, "kind": kind,
                                 "target": target})
    return out
