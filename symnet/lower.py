"""IR + derivatives → kernel plan: an ordered list of printable operations.

The plan decides buffers (where every array lives), which reductions become
matrix products, which buffers are zeroed before accumulating, and the order
of the forward, loss and backward passes.  It holds sympy expressions; the
emitter prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from . import ir
from .derive import NodeGrad, Term, delta_name, derive, grad_name, upstream_name
from .notation import text  # loop comments read like the derivation (net.formulas())


LOSS = "<loss>"  # the loss accumulator as a statement target (no layer has this name)

# ------------------------------------------------------------------ operations

@dataclass
class MatMul:
    """C (+)= op(A)·op(B).  kind "nt": C[m,n] = Σ_k A[m,k]·B[n,k];
    "nn": C[m,n] = Σ_k A[m,k]·B[k,n]; "tn": C[m,n] = Σ_k A[k,m]·B[k,n]."""

    kind: str
    C: str
    A: str
    B: str
    M: str | int
    N: str | int
    K: str | int
    accumulate: bool
    comment: str
    epilogue: object = None


@dataclass
class Loop:
    """for each index in ``indices`` (name, extent): the statements, after CSE.

    ``stmts`` is a list of (target, index, op, expr) with op "=" or "+=";
    ``target`` LOSS (not a possible layer name) is the double accumulator of the loss."""

    indices: list[tuple[str, str | int]]
    stmts: list[tuple[str, tuple[str, ...], str, sp.Expr]]
    comment: str


@dataclass
class Zero:
    buffer: str
    size: str | int
    comment: str = ""


@dataclass
class SoftmaxXent:
    """Softmax cross-entropy of O against T, and dL_dO when ``grad``."""

    O: str
    T: str
    n: int
    grad: str | None
    labels: bool = False         # T[b] is the class index of example b (not a row)


@dataclass
class Buffer:
    """A named array: parameters (and their gradients) have fixed shapes,
    work buffers are (batch, width)."""

    name: str
    kind: str                    # "param", "grad", "work", "input", "target"
    shape: tuple                 # ("batch", w) for batch arrays
    offset: int = 0              # in the flat params/grads array, or per-row in work
    comment: str = ""


@dataclass
class Plan:
    graph: ir.Graph
    grads: list[NodeGrad]
    buffers: dict[str, Buffer]
    n_params: int
    work_per_row: int            # work floats per example of the batch
    forward: list = field(default_factory=list)
    loss: list = field(default_factory=list)       # after forward: loss value only
    backward: list = field(default_factory=list)   # after forward: loss + gradients
    loss_labels: list = field(default_factory=list)      # the same with integer class
    backward_labels: list = field(default_factory=list)  # labels as targets (softmax only)
    n_trainable: int = 0         # parameters [0, n_trainable) train; the rest are frozen
    symbols: dict = field(default_factory=dict)    # scalar symbol -> ir.Access

    @property
    def output(self) -> str:
        return self.graph.output.name


def _batch(name, width, kind, offset=0, comment=""):
    return Buffer(name, kind, ("batch", width), offset, comment)


def plan(graph: ir.Graph) -> Plan:
    """Lay out buffers and order the operations of the three passes."""
    grads = derive(graph)
    by_node = {g.node.name: g for g in grads}
    buffers: dict[str, Buffer] = {}
    offsets, offset, n_trainable = {}, 0, 0
    # trainable parameters first: the update runs over [0, n_trainable) only
    for p in sorted(graph.params(), key=lambda p: not getattr(p, "trainable", True)):
        offsets[p.name] = offset
        size = 1
        for s in p.shape:
            size *= s
        offset += size
        if getattr(p, "trainable", True):
            n_trainable = offset
    n_params = offset
    for p in graph.params():
        frozen = "" if getattr(p, "trainable", True) else " (frozen)"
        buffers[p.name] = Buffer(p.name, "param", p.shape, offsets[p.name],
                                 f"{p.role} {p.name}{frozen}")
        buffers[grad_name(p.name)] = Buffer(grad_name(p.name), "grad", p.shape,
                                            offsets[p.name], f"∂L/∂{p.name}{frozen}")

    buffers[graph.input_name] = _batch(graph.input_name, graph.n_in, "input", 0, "input")
    buffers["T"] = _batch("T", graph.n_out, "target", 0, "target")
    row = 0

    def work(name, width, comment):
        nonlocal row
        if name in buffers:
            raise ValueError(f"the name {name!r} is used twice in the generated code; "
                             "rename the layer")
        buffers[name] = _batch(name, width, "work", row, comment)
        row += width

    fused = graph.loss.element is not None
    for node in graph.nodes:
        for red in node.reductions:
            work(red.name, node.n_out, f"Σ of {node.name}")
        work(node.name, node.n_out, f"layer {node.name}")
    for k, node in enumerate(graph.nodes):
        last = k == len(graph.nodes) - 1
        if not (last and fused):
            work(upstream_name(node.name), node.n_out, f"∂L/∂{node.name}")
        for t in by_node[node.name].outer:
            if t.target.startswith("delta_") and t.target not in buffers:
                red = next(r for r in node.reductions if delta_name(node, r) == t.target)
                work(t.target, node.n_out, f"∂L/∂{red.name}")

    p = Plan(graph, grads, buffers, n_params, row)
    for node in graph.nodes:
        p.symbols.update(node.symbols)
    p.forward = _forward(graph)
    p.loss = _loss(graph, by_node, grad=False)
    p.backward = _loss(graph, by_node, grad=True) + _backward(graph, by_node)
    frozen = {grad_name(q.name) for q in graph.params() if not getattr(q, "trainable", True)}
    if frozen:
        p.backward = _drop(p.backward, frozen | _dead_below(graph))
    p.n_trainable = n_trainable
    if graph.loss.element is None:
        p.loss_labels = [_labels(op) for op in p.loss]
        p.backward_labels = [_labels(op) for op in p.backward]
    return p


def _dead_below(graph: ir.Graph) -> set:
    """Backward buffers nothing needs: those of the frozen layers at the bottom of the
    network (no trainable parameter below them wants their deltas)."""
    dead = set()
    for node in graph.nodes:
        if any(getattr(q, "trainable", True) for q in node.params):
            break
        dead.add(upstream_name(node.name))
        dead.update(delta_name(node, red) for red in node.reductions)
    return dead


def _drop(ops: list, targets: set) -> list:
    """The ops without what computes ``targets`` (gradients of frozen parameters)."""
    kept = []
    for op in ops:
        if isinstance(op, MatMul) and op.C in targets or isinstance(op, Zero) and \
                op.buffer in targets:
            continue
        if isinstance(op, Loop):
            stmts = [st for st in op.stmts if st[0] not in targets]
            if not stmts:
                continue
            if len(stmts) < len(op.stmts):
                comment = "; ".join(c for c in op.comment.split("; ")
                                    if not any(c.startswith(t + "[") for t in targets))
                op = Loop(op.indices, stmts, comment)
        kept.append(op)
    return kept


def _labels(op):
    """The op for integer class labels as targets (T[b] = class of example b)."""
    if isinstance(op, SoftmaxXent):
        return SoftmaxXent(op.O, op.T, op.n, op.grad, labels=True)
    return op


def _forward(graph: ir.Graph) -> list:
    ops = []
    for node in graph.nodes:
        for red in node.reductions:
            if red.contraction:
                ops.append(MatMul("nt", red.name, node.input, red.contraction, "batch",
                                  node.n_out, node.n_in, False,
                                  f"{red.name}[b,i] = Σ_j {red.contraction}[i,j]·"
                                  f"{node.input}[b,j]"))
            else:
                ops.append(Zero(red.name, f"batch * {node.n_out}"))
                idx = [(ir.BATCH, "batch"), (ir.OUT, node.n_out)]
                idx += [(j, node.n_in) for j in red.over]
                ops.append(Loop(idx, [(red.name, (ir.BATCH, ir.OUT), "+=", red.summand)],
                                f"{red.name}[b,i] = Σ_{','.join(red.over)} {text(red.summand)}"))
        ops.append(Loop([(ir.BATCH, "batch"), (ir.OUT, node.n_out)],
                        [(node.name, (ir.BATCH, ir.OUT), "=", node.outer)],
                        f"{node.name}[b,i] = {text(node.outer)}"))
    return ops


def _loss(graph: ir.Graph, by_node: dict, grad: bool) -> list:
    """The loss value, and with ``grad`` the output node's deltas in the same loop."""
    out = graph.output
    if graph.loss.element is None:
        return [SoftmaxXent(out.name, "T", out.n_out,
                            upstream_name(out.name) if grad else None)]
    g = by_node[out.name]
    stmts = [(LOSS, (), "+=", g.loss)]
    ops = []
    terms = [t for t in g.outer if t.target != upstream_name(graph.input_name)]
    if grad:
        ops += _zeros(terms, out)
        stmts += [(t.target, t.index, _assign(t, (ir.BATCH, ir.OUT)), t.expr)
                  for t in terms]
    comment = f"L += {text(g.loss)}"
    if grad:
        comment += "; " + "; ".join(f"{t.target}[{','.join(t.index)}] "
                                     f"{_assign(t, (ir.BATCH, ir.OUT))} {text(t.expr)}"
                                     for t in terms)
    return ops + [Loop([(ir.BATCH, "batch"), (ir.OUT, out.n_out)], stmts, comment)]


def _assign(term: Term, loop: tuple) -> str:
    return "=" if tuple(term.index) == tuple(loop) and term.target.startswith("delta_") \
        else "+="


def _zeros(terms: list[Term], node: ir.Node) -> list:
    """Zero the buffers the output loop accumulates into (bias gradients)."""
    seen = {t.target for t in terms if _assign(t, (ir.BATCH, ir.OUT)) == "+="}
    return [Zero(name, None) for name in sorted(seen)]


def _backward(graph: ir.Graph, by_node: dict) -> list:
    ops = []
    written: set[str] = set()
    fused = graph.loss.element is not None
    for k in range(len(graph.nodes) - 1, -1, -1):
        node = graph.nodes[k]
        g = by_node[node.name]
        first = k == 0
        if not (k == len(graph.nodes) - 1 and fused):
            terms = [t for t in g.outer if not (first and t.target == upstream_name(node.input))]
            for t in terms:
                if _assign(t, (ir.BATCH, ir.OUT)) == "+=" and t.target not in written:
                    ops.append(Zero(t.target, None))
                    written.add(t.target)
            ops.append(Loop([(ir.BATCH, "batch"), (ir.OUT, node.n_out)],
                            [(t.target, t.index, _assign(t, (ir.BATCH, ir.OUT)), t.expr)
                             for t in terms],
                            "; ".join(f"{t.target}[{','.join(t.index)}] "
                                      f"{_assign(t, (ir.BATCH, ir.OUT))} {text(t.expr)}"
                                      for t in terms)))
        else:
            written.update(t.target for t in g.outer)
        for red in node.reductions:
            delta = delta_name(node, red)
            if red.contraction:
                W = red.contraction
                gW = grad_name(W)
                ops.append(MatMul("tn", gW, delta, node.input, node.n_out, node.n_in,
                                  "batch", gW in written,
                                  f"{gW}[i,j] = Σ_b {delta}[b,i]·{node.input}[b,j]"))
                written.add(gW)
                if not first:
                    up = upstream_name(node.input)
                    ops.append(MatMul("nn", up, delta, W, "batch", node.n_in, node.n_out,
                                      up in written,
                                      f"{up}[b,j] = Σ_i {delta}[b,i]·{W}[i,j]"))
                    written.add(up)
            else:
                terms = [t for t in g.summands[red.name]
                         if not (first and t.target == upstream_name(node.input))]
                for t in terms:
                    if t.target not in written:
                        ops.append(Zero(t.target, None))
                        written.add(t.target)
                idx = [(ir.BATCH, "batch"), (ir.OUT, node.n_out)]
                idx += [(j, node.n_in) for j in red.over]
                ops.append(Loop(idx, [(t.target, t.index, "+=", t.expr) for t in terms],
                                "; ".join(f"{t.target}[{','.join(t.index)}] += {text(t.expr)}"
                                          for t in terms)))
    return ops

