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
from .derive import (NodeGrad, Term, delta_name, derive, fused as is_fused, grad_name,
                     upstream_name)
from .notation import text  # loop comments read like the derivation (net.formulas())


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
    ``target`` "loss" is the double accumulator of the loss."""

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
    weight: float = 1.0          # the output's loss weight
    t_offset: int = 0            # first column of this output's targets in T
    t_stride: int | None = None  # width of T's rows (None: n)


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
    offset = 0
    for p in graph.params():
        size = 1
        for s in p.shape:
            size *= s
        buffers[p.name] = Buffer(p.name, "param", p.shape, offset, f"{p.role} {p.name}")
        buffers[grad_name(p.name)] = Buffer(grad_name(p.name), "grad", p.shape, offset,
                                            f"∂L/∂{p.name}")
        offset += size
    n_params = offset

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

    if graph.packed:
        for name, width in graph.inputs:
            work(name, width, f"input {name}")
    for node in graph.nodes:
        for red in node.reductions:
            work(red.name, node.n_out, f"Σ of {node.name}")
        work(node.name, node.n_out, f"layer {node.name}")
    for node in graph.nodes:
        if not is_fused(graph, node):
            work(upstream_name(node.name), node.n_out, f"∂L/∂{node.name}")
        for t in by_node[node.name].outer:
            if t.target.startswith("delta_") and t.target not in buffers:
                red = next(r for r in node.reductions if delta_name(node, r) == t.target)
                work(t.target, node.n_out, f"∂L/∂{red.name}")

    p = Plan(graph, grads, buffers, n_params, row)
    for node in graph.nodes:
        p.symbols.update(node.symbols)
    p.forward = _forward(graph, p.symbols)
    written: set[str] = set()
    p.loss = _loss(graph, by_node, grad=False, written=set())
    p.backward = _loss(graph, by_node, grad=True, written=written) \
        + _backward(graph, by_node, written)
    return p


def _shifted(index: str, offset: int) -> str:
    return index if offset == 0 else f"{index} + {offset}"


def _unpack(graph: ir.Graph, symbols: dict) -> list:
    """Several inputs arrive side by side in one array: copy each to its buffer."""
    ops, off = [], 0
    for name, width in graph.inputs:
        src = ir.element(symbols, graph.input_name, ir.BATCH, _shifted(ir.OUT, off))
        ops.append(Loop([(ir.BATCH, "batch"), (ir.OUT, width)],
                        [(name, (ir.BATCH, ir.OUT), "=", src)],
                        f"{name}[b,i] = {graph.input_name}[b,{_shifted('i', off)}]"))
        off += width
    return ops


def _concat(node: ir.Node, symbols: dict) -> list:
    """H[b, offset + i] = X_m[b,i] for each input X_m in turn."""
    ops, off = [], 0
    for src, width in node.pieces:
        el = ir.element(symbols, src, ir.BATCH, ir.OUT)
        ops.append(Loop([(ir.BATCH, "batch"), (ir.OUT, width)],
                        [(node.name, (ir.BATCH, _shifted(ir.OUT, off)), "=", el)],
                        f"{node.name}[b,{_shifted('i', off)}] = {src}[b,i]"))
        off += width
    return ops


def _forward(graph: ir.Graph, symbols: dict) -> list:
    ops = _unpack(graph, symbols) if graph.packed else []
    for node in graph.nodes:
        if node.pieces is not None:
            ops += _concat(node, symbols)
            continue
        for red in node.reductions:
            if red.contraction:
                x = node.red_input(red)
                ops.append(MatMul("nt", red.name, x, red.contraction, "batch",
                                  node.n_out, node.widths[x], False,
                                  f"{red.name}[b,i] = Σ_j {red.contraction}[i,j]·"
                                  f"{x}[b,j]"))
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


def _loss(graph: ir.Graph, by_node: dict, grad: bool, written: set) -> list:
    """The loss value, and with ``grad`` each output node's deltas in the same
    loop; ``written`` collects the buffers written (later passes accumulate)."""
    ops = []
    for name in graph.outputs:
        out = graph.node(name)
        loss, weight = graph.losses[name], graph.weights[name]
        if loss.element is None:
            t_off = graph.target_offset(name)
            ops.append(SoftmaxXent(out.name, "T", out.n_out,
                                   upstream_name(out.name) if grad else None, weight, t_off,
                                   None if graph.n_out == out.n_out else graph.n_out))
            continue
        g = by_node[out.name]
        value = g.loss if weight == 1.0 else sp.Float(weight) * g.loss
        stmts = [("loss", (), "+=", value)]
        terms = [t for t in g.outer if not _to_input(graph, t)]
        if grad:
            ops += _zeros(terms, written)
            stmts += [(t.target, t.index, _assign(t, (ir.BATCH, ir.OUT)), t.expr)
                      for t in terms]
            written.update(t.target for t in terms)
        comment = f"L += {text(value)}"
        if grad:
            comment += "; " + "; ".join(f"{t.target}[{','.join(t.index)}] "
                                         f"{_assign(t, (ir.BATCH, ir.OUT))} {text(t.expr)}"
                                         for t in terms)
        ops.append(Loop([(ir.BATCH, "batch"), (ir.OUT, out.n_out)], stmts, comment))
    return ops


def _to_input(graph: ir.Graph, term: Term) -> bool:
    """Gradients with respect to the network's inputs are not computed."""
    return any(term.target == upstream_name(x) for x in
               [graph.input_name] + [n for n, _ in graph.inputs])


def _assign(term: Term, loop: tuple) -> str:
    return "=" if tuple(term.index) == tuple(loop) and term.target.startswith("delta_") \
        else "+="


def _zeros(terms: list[Term], written: set) -> list:
    """Zero the buffers the output loop accumulates into (bias gradients)
    unless an earlier loop wrote them already."""
    seen = {t.target for t in terms if _assign(t, (ir.BATCH, ir.OUT)) == "+="}
    return [Zero(name, None) for name in sorted(seen - written)]


def _backward(graph: ir.Graph, by_node: dict, written: set) -> list:
    """From the last node down: a buffer read by several nodes receives the
    first contribution into zeros and the rest with +=, so ∂L/∂H sums over
    H's consumers and ∂L/∂W over W's uses."""
    ops = []
    for node in reversed(graph.nodes):
        g = by_node[node.name]
        if node.pieces is not None:
            ops += _concat_backward(graph, g, written)
            continue
        if not is_fused(graph, node):
            terms = [t for t in g.outer if not _to_input(graph, t)]
            for t in terms:
                if _assign(t, (ir.BATCH, ir.OUT)) == "+=" and t.target not in written:
                    ops.append(Zero(t.target, None))
                    written.add(t.target)
            if terms:
                ops.append(Loop([(ir.BATCH, "batch"), (ir.OUT, node.n_out)],
                                [(t.target, t.index, _assign(t, (ir.BATCH, ir.OUT)), t.expr)
                                 for t in terms],
                                "; ".join(f"{t.target}[{','.join(t.index)}] "
                                          f"{_assign(t, (ir.BATCH, ir.OUT))} {text(t.expr)}"
                                          + _from(graph, t.target[4:], node)
                                          * t.target.startswith("dL_d")
                                          for t in terms)))
                written.update(t.target for t in terms)
        for red in node.reductions:
            delta = delta_name(node, red)
            X = node.red_input(red)
            if red.contraction:
                W = red.contraction
                gW = grad_name(W)
                ops.append(MatMul("tn", gW, delta, X, node.n_out, node.widths[X],
                                  "batch", gW in written,
                                  f"{gW}[i,j] {'+' if gW in written else ''}= "
                                  f"Σ_b {delta}[b,i]·{X}[b,j]"))
                written.add(gW)
                if not graph.is_input(X):
                    up = upstream_name(X)
                    ops.append(MatMul("nn", up, delta, W, "batch", node.widths[X], node.n_out,
                                      up in written,
                                      f"{up}[b,j] {'+' if up in written else ''}= "
                                      f"Σ_i {delta}[b,i]·{W}[i,j]{_from(graph, X, node)}"))
                    written.add(up)
            else:
                terms = [t for t in g.summands[red.name] if not _to_input(graph, t)]
                for t in terms:
                    if t.target not in written:
                        ops.append(Zero(t.target, None))
                        written.add(t.target)
                idx = [(ir.BATCH, "batch"), (ir.OUT, node.n_out)]
                idx += [(j, node.n_in) for j in red.over]
                ops.append(Loop(idx, [(t.target, t.index, "+=", t.expr) for t in terms],
                                "; ".join(f"{t.target}[{','.join(t.index)}] += {text(t.expr)}"
                                          for t in terms)))
    # a parameter no use of which reaches the loss (U of a one-step recurrence)
    for p in graph.params():
        if grad_name(p.name) not in written:
            ops.append(Zero(grad_name(p.name), None, "no path to the loss"))
            written.add(grad_name(p.name))
    return ops


def _from(graph: ir.Graph, buffer: str, node: ir.Node) -> str:
    """"  (from H2)" when ∂L/∂buffer sums contributions of several readers."""
    return f"  (from {node.name})" if len(graph.consumers(buffer)) > 1 else ""


def _concat_backward(graph: ir.Graph, g: NodeGrad, written: set) -> list:
    ops = []
    for src, off, width, t in g.pieces:
        if _to_input(graph, t):
            continue
        kind = "+=" if t.target in written else "="
        ops.append(Loop([(ir.BATCH, "batch"), (ir.OUT, width)],
                        [(t.target, t.index, kind, t.expr)],
                        f"{t.target}[b,i] {kind} {text(t.expr)}"
                        f"{_from(graph, src, g.node)}"))
        written.add(t.target)
    return ops
