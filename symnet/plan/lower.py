"""IR + derivatives → kernel plan: an ordered list of printable operations.

The plan decides buffers (where every array lives), which reductions become
matrix products, which buffers are zeroed before accumulating, and the order
of the forward, loss and backward passes.  It holds sympy expressions; the
emitter prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..ir import nodes as ir
from ..derive.chain import (NodeGrad, Term, concat_index, delta_name, derive, grad_name,
                            shifted, upstream_name)
from ..derive.chain import fused as is_fused
from . import batchsum, correlate
from .copies import elide_copies
from .fuse import fuse_epilogues, fuse_loops, fuse_masks, fuse_routes
from .overwrite import overwrite
from .products import mark as mark_products
from ..scalar.notation import text  # loop comments read like the derivation (net.formulas())
from .ops import LOSS, Conv, Fill, Loop, MatMul, Route, Rows, SoftmaxXent, Zero, with_labels
from .schedule import split
from .share import share
from .stack import stack

#: Whether two element loops in a row over the same indices run as one
#: (symnet.plan.fuse.fuse_loops).  Off: measured paired on the transformer, its only
#: network of the bench that it changes (2-core AVX-512 Xeon; ``python -m
#: symnet.bench.paired --with fuse_loops``), the joined loops made the step 1.6 % longer
#: natively and 1.6 % in the x86-64-v3 build (each kind alone too: the joins of element
#: loops 1.4 %, those with a row sum 2.4 %); apart, a loop ``H = b + z`` after a product
#: becomes the product's epilogue (fuse_epilogues) instead of joining the next loop.
FUSE_LOOPS = False


@dataclass
class Buffer:
    """A named array: parameters (and their gradients) have fixed shapes,
    work buffers are (batch, width)."""

    name: str
    kind: str                    # "param", "grad", "work", "input", "target", "alias"
    shape: tuple                 # ("batch", w) or ("batch", c, h, w) for batch arrays
    offset: int = 0              # in the flat params/grads array, or per-row in work
    comment: str = ""
    alias: str | None = None     # an "alias" is this buffer under another shape (Flatten)

    @property
    def row(self) -> str:
        """One example's shape, as the C comments write it: "10" or "6, 24, 24"."""
        return ", ".join(str(s) for s in self.shape[1:])


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
    # reduction name -> its forward as a correlation (im2col and products), where the
    # summand's index maps are one (symnet.plan.correlate)
    correlations: dict = field(default_factory=dict)
    # the passes with their runs of per-example ops gathered into Rows (tensor
    # networks; see _split), or None: the passes as they are
    split_forward: list | None = None
    split_backward: list | None = None
    split_backward_labels: list | None = None
    regions: list = field(default_factory=list)    # every Rows of the three
    part_offset: int = 0         # per-row offset in work of the chunks' partial gradients
    # the sums over the batch, each in a buffer of its own (symnet.plan.batchsum), in the
    # order a training call reaches them: {"name", "size", "kind", "target"}
    batch_sums: list = field(default_factory=list)
    unsynced: list = field(default_factory=list)   # sums over the batch left unsplit
    # a small vector network's loss-and-gradient pass in chunks of the batch (Halves), or
    # None (symnet.plan.schedule.halves)
    halves: object = None
    shared: int = 0              # work numbers per row saved by buffers sharing their place

    @property
    def output(self) -> str:
        return self.graph.output.name


def _batch(name, width, kind, offset=0, comment=""):
    shape = tuple(width) if isinstance(width, tuple) else (width,)
    return Buffer(name, kind, ("batch", *shape), offset, comment)


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def plan(graph: ir.Graph) -> Plan:
    """Lay out buffers and order the operations of the three passes."""
    grads = derive(graph)
    by_node = {g.node.name: g for g in grads}
    convs = {red.name: c for node in graph.nodes for red in node.reductions
             if (c := correlate.forward(node, red)) is not None}
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

    in_shape = graph.in_shape if len(graph.in_shape) > 1 else graph.n_in
    buffers[graph.input_name] = _batch(graph.input_name, in_shape, "input", 0, "input")
    t_shape = _shape(graph.output) if len(graph.outputs) == 1 else graph.n_out
    buffers["T"] = _batch("T", t_shape, "target", 0, "target")
    row = 0

    def work(name, width, comment):
        nonlocal row
        if name in buffers:
            raise ValueError(f"the name {name!r} is used twice in the generated code; "
                             "rename the layer")
        buffers[name] = _batch(name, width, "work", row, comment)
        row += _size(buffers[name].shape[1:])

    def alias(name, of, width, comment):
        if name in buffers:
            raise ValueError(f"the name {name!r} is used twice in the generated code; "
                             "rename the layer")
        shape = tuple(width) if isinstance(width, tuple) else (width,)
        buffers[name] = Buffer(name, "alias", ("batch", *shape), buffers[of].offset, comment,
                               alias=of)

    if graph.packed:
        for name, width in graph.inputs:
            shape = (graph.input_shapes or {}).get(name, (width,))
            work(name, shape if len(shape) > 1 else width, f"input {name}")
    for node in graph.nodes:
        if node.kind == "flatten":
            alias(node.name, node.input, node.n_out, f"layer {node.name}: {node.input} "
                  "flattened (the same memory)")
            continue
        for red in node.reductions:
            work(red.name, _shape(node), f"Σ of {node.name}")
            if red.name in convs:
                g = convs[red.name].geo
                work(f"col_{node.name}", (g["cin"] * _size(g["kernel"]), _size(g["out_hw"])),
                     f"im2col of {node.input} for {node.name}")
                if _gw_transposed(g):
                    work(f"dT_{node.name}", (_size(g["out_hw"]), g["cout"]),
                         f"the delta of {node.name} transposed, for the weight gradient")
        if _identity(node):
            alias(node.name, node.reductions[0].name, _shape(node),
                  f"layer {node.name}: {node.reductions[0].name} itself")
        else:
            work(node.name, _shape(node), f"layer {node.name}")
    if graph.grad_inputs:       # ∂L/∂X of each input (model.input_grad)
        for name, width in graph.inputs:
            shape = (graph.input_shapes or {}).get(name) or \
                (graph.in_shape if len(graph.inputs) == 1 else (width,))
            work(upstream_name(name), tuple(shape) if len(shape) > 1 else width,
                 f"∂L/∂{name}")
    for node in graph.nodes:
        if node.kind == "flatten":
            if by_node[node.name].input_grad:
                alias(upstream_name(node.name), upstream_name(node.input), node.n_out,
                      f"∂L/∂{node.name}: ∂L/∂{node.input} flattened")
            continue
        if not is_fused(graph, node) or graph.consumers(node.name) \
                or node.pieces is not None:    # a Concatenate's pieces copy from it
            work(upstream_name(node.name), _shape(node), f"∂L/∂{node.name}")
        twins = _twin_deltas(by_node[node.name])
        for t in by_node[node.name].outer:
            if t.target.startswith("delta_") and t.target not in buffers:
                red = next(r for r in node.reductions if delta_name(node, r) == t.target)
                if t.target in twins:
                    alias(t.target, twins[t.target], _shape(node),
                          f"∂L/∂{red.name}: the same as {twins[t.target]}")
                elif _delta_is_upstream(graph, node, t, by_node[node.name]):
                    alias(t.target, upstream_name(node.name), _shape(node),
                          f"∂L/∂{red.name}: ∂L/∂{node.name} itself")
                else:
                    work(t.target, _shape(node), f"∂L/∂{red.name}")

    # loop indices are C variables too: an array named like one is written sn_u_<name>
    # in the C (symnet.backend.c.emit.Emitter.cname), so the two never meet
    p = Plan(graph, grads, buffers, n_params, row, correlations=convs)
    for node in graph.nodes:
        p.symbols.update(node.symbols)
    p.forward = _forward(graph, p.symbols, convs)
    # ∂L/∂(a Flatten) is its input's ∂L/∂ in the same memory: a write to either is a
    # write to both (the first contribution sets, the others add)
    written = _Written({upstream_name(n.name): upstream_name(n.input) for n in graph.nodes
                        if n.kind == "flatten"})
    p.loss = _loss(graph, by_node, grad=False, written=set())
    p.backward = _loss(graph, by_node, grad=True, written=written) \
        + _backward(graph, by_node, written, convs)
    p.backward = fuse_routes(p, p.backward)

    def new_buffer(name, shape, comment):
        if name in buffers:
            raise ValueError(f"the name {name!r} is used twice in the generated code; "
                             "rename the layer")
        buffers[name] = _batch(name, shape, "work", p.work_per_row, comment)
        p.work_per_row += _size(shape)
    p.forward = batchsum.rewrite(p, p.forward, batchsum.FORWARD, new_buffer)
    p.backward = batchsum.rewrite(p, p.backward, batchsum.BACKWARD, new_buffer)
    p.forward, p.backward = overwrite(p, p.forward), overwrite(p, p.backward)
    if FUSE_LOOPS:
        p.forward, p.backward = fuse_loops(p, p.forward), fuse_loops(p, p.backward)
    stack(p)
    p.forward = fuse_epilogues(p, p.forward, p.loss + p.backward)
    p.backward = fuse_masks(p, p.backward, [])
    p.backward = elide_copies(p, p.backward, p.forward + p.loss)
    p.n_trainable = n_trainable
    if len(graph.outputs) == 1 and by_node[graph.outputs[0]].coupled is not None:
        p.loss_labels = [with_labels(op) for op in p.loss]
        p.backward_labels = [with_labels(op) for op in p.backward]
    mark_products(p.forward + p.backward, p.buffers, p.symbols)
    split(p)
    share(p)
    return p


def _unpack(graph: ir.Graph, symbols: dict) -> list:
    """Several inputs arrive side by side in one array: copy each to its buffer."""
    ops, off = [], 0
    for name, width in graph.inputs:
        src = ir.element(symbols, graph.input_name, ir.BATCH, shifted(ir.OUT, off))
        ops.append(Loop([(ir.BATCH, "batch"), (ir.OUT, width)],
                        [(name, (ir.BATCH, ir.OUT), "=", src)],
                        f"{name}[b,i] = {graph.input_name}[b,{shifted('i', off)}]"))
        off += width
    return ops


def _concat(node: ir.Node, symbols: dict) -> list:
    """H[b, offset + i] = X_m[b,i] for each input X_m in turn (for tensors: along
    the channels, which are contiguous in each example)."""
    ops, off = [], 0
    for src, width in node.pieces:
        el = ir.element(symbols, src, *node.out_index)
        at = concat_index(node, off)
        ops.append(Loop(_piece_loop(node, width), [(node.name, at, "=", el)],
                        f"{node.name}[{_index(at)}] = {src}[{_index(node.out_index)}]"))
        off += width
    return ops


def _piece_loop(node: ir.Node, width: int) -> list:
    """The loop over one input of a Concatenate: the node's space with the joined
    axis (its channels, or a sequence's features) of that input's width."""
    return [(ir.BATCH, "batch")] + [(name, width if k == node.concat_axis else extent)
                                     for k, (name, extent) in enumerate(node.space)]


def _twin_deltas(g: NodeGrad) -> dict:
    """delta -> an earlier delta of the node with the same formula (h = f(W·x + U·h' + b)
    has one δ for both sums): it shares that buffer and is not computed twice."""
    first, twins = {}, {}
    for t in g.outer:
        if t.target.startswith("delta_"):
            twins.update({t.target: first[t.expr]} if t.expr in first else {})
            first.setdefault(t.expr, t.target)
    return twins


def _identity(node: ir.Node) -> bool:
    """A tensor node whose output is its one reduction (pooling, a linear convolution
    without bias): the output and the delta share the reduction's buffers."""
    return (len(node.space) > 1 and len(node.reductions) == 1
            and node.outer == node.reductions[0].symbol)


def _delta_is_upstream(graph: ir.Graph, node: ir.Node, t, g: NodeGrad) -> bool:
    """A node's delta that is its upstream gradient element for element (its output is
    its sum, plus a bias or not: attention's projections, a Pointwise or Dense without
    activation, the gates' products U·h_{t−1} + c of a GRU or LSTM step): the delta
    shares ∂L/∂node's buffer, never copied.  A vector node only where ∂L/∂node is a
    buffer of its own (a node not fused with the loss; a fused one computes its delta
    in the loss's loop).  (The copy was a pass over batch × 3·64 numbers per step of
    the bench's GRU: about a sixth of its training step.)"""
    if not (t.target.startswith("delta_") and t.expr == g.upstream):
        return False
    return len(node.space) > 1 or not is_fused(graph, node)


def _shape(node: ir.Node):
    """A node's buffer shape after the batch: an int for vectors (as before)."""
    return node.n_out if len(node.space) == 1 else node.out_shape


def _index(index) -> str:
    return ",".join(ir.index_text(x) for x in index)


def _sums(node, red) -> str:
    """Σ_j (vectors: Σ_j,k for a double sum) or Σ_k Σ_u Σ_v (tensors)."""
    if not red.space:
        return f"Σ_{','.join(red.over)} "
    return "".join(f"Σ_{n} " for n, _ in red.space)


def _mnk(node: ir.Node, red: ir.Reduction, x: str) -> tuple:
    """The matrix product of a contraction: rows (examples, or examples × positions),
    outputs and inputs of one row."""
    if not red.rows:
        return "batch", node.n_out, node.widths[x]
    return f"batch * {red.rows}", node.n_out // red.rows, node.widths[x] // red.rows


def _forward(graph: ir.Graph, symbols: dict, convs: dict) -> list:
    """Every node's reductions, then its outer formula, over the loops its index
    spaces give: (b, i) and (b, i, j) for vectors, (b, c, y, x, ...) for tensors;
    first the inputs out of their side-by-side array, when there are several.  A
    reduction whose index maps are a correlation (``convs``) runs as im2col and
    products."""
    ops = _unpack(graph, symbols) if graph.packed else []
    for node in graph.nodes:
        if node.kind == "flatten":       # a view of its input: no loop
            continue
        if node.pieces is not None:
            ops += _concat(node, symbols)
            continue
        out = _index(node.out_index)
        tensor = len(node.space) > 1
        for red in node.reductions:
            comment = f"{red.name}[{out}] = {_sums(node, red)}{text(red.summand)}"
            if red.contraction:
                x = node.red_input(red)
                M, N, K = _mnk(node, red, x)
                ops.append(MatMul("nt", red.name, x, red.contraction, M, N, K, False,
                                  f"{red.name}[b,{'t,' if red.rows else ''}i] = Σ_j "
                                  f"{red.contraction}[i,j]·{x}[b,{'t,' if red.rows else ''}j]"
                                  + (f" for each of the {red.rows} positions t"
                                     if red.rows else "")))
            elif red.name in convs:
                c = convs[red.name]
                ops.append(Conv("forward", c.image, c.kernel, f"col_{node.name}", c.geo,
                                comment, Z=red.name, direct=_direct(c.geo)))
            elif red.op == "max":
                ops.append(Fill(red.name, "-INFINITY"))
                ops.append(Loop(node.reduction_loop(red),
                                [(red.name, node.out_index, "max", red.summand)],
                                f"{red.name}[{out}] = max_"
                                f"{','.join(n for n, _ in red.space)} {text(red.summand)}",
                                # over one long index (softmax's row): in a local, vectorised;
                                # a pooling window (a few elements) stays a plain loop
                                hoist=len(red.space) == 1 and red.space[0][1] >= 8))
            else:
                ops.append(Zero(red.name, None))
                # summed in a local over the innermost index (vectorised): a tensor's
                # sums, and the per-row sums over a last axis (LayerNorm's mean and
                # variance, softmax's Σ), whose space lists the summed index
                ops.append(Loop(node.reduction_loop(red),
                                [(red.name, node.out_index, "+=", red.summand)], comment,
                                hoist=tensor or bool(red.space)))
        if not _identity(node):
            ops.append(Loop(node.loop(), [(node.name, node.out_index, "=", node.outer)],
                            f"{node.name}[{out}] = {text(node.outer)}"))
    return ops


def _loss(graph: ir.Graph, by_node: dict, grad: bool, written: set) -> list:
    """The loss value, and with ``grad`` each output node's deltas in the same
    loop; ``written`` collects the buffers written (later passes accumulate)."""
    ops = []
    for name in graph.outputs:
        out = graph.node(name)
        loop = tuple(out.out_index)
        weight = graph.weights[name]
        if by_node[out.name].coupled is not None:    # derived by symnet.derive.coupled
            rule = by_node[out.name].coupled
            ops.append(SoftmaxXent(out.name, "T", rule.n,
                                   upstream_name(out.name) if grad else None, weight,
                                   graph.target_offset(name),
                                   None if graph.n_out == out.n_out else graph.n_out,
                                   rule=rule, groups=rule.groups, first=rule.first))
            if grad:      # layers reading this output add their part to dL_dO
                written.add(upstream_name(out.name))
            continue
        g = by_node[out.name]
        value = g.loss if weight == 1.0 else sp.Float(weight) * g.loss
        stmts = [(LOSS, (), "+=", value)]
        twins = _twin_deltas(g)
        terms = [t for t in g.outer if not _to_input(graph, t) and t.target not in twins]
        if grad:
            ops += _zeros(terms, out, written)
            stmts += [(t.target, t.index, _assign(t, loop), t.expr) for t in terms]
            written.update(t.target for t in terms)
        comment = f"L += {text(value)}"
        if grad:
            comment += "; " + "; ".join(f"{t.target}[{_index(t.index)}] "
                                         f"{_assign(t, loop)} {text(t.expr)}" for t in terms)
        ops.append(Loop(out.loop(), stmts, comment))
    return ops


def _to_input(graph: ir.Graph, term: Term) -> bool:
    """Gradients with respect to the network's inputs are not computed (unless the
    graph asks for them: ``grad_inputs``)."""
    return not graph.grad_inputs and any(term.target == upstream_name(x) for x in
               [graph.input_name] + [n for n, _ in graph.inputs])


def _from(graph: ir.Graph, buffer: str, node: ir.Node) -> str:
    """"  (from H2)" when ∂L/∂buffer sums contributions of several readers."""
    return f"  (from {node.name})" if len(graph.consumers(buffer)) > 1 else ""


def _assign(term: Term, loop: tuple) -> str:
    return "=" if tuple(term.index) == tuple(loop) and term.target.startswith("delta_") \
        else "+="


class _Written(set):
    """The buffers the backward pass has written so far, each under the name of the
    memory it is: ``same`` maps a name to the buffer it aliases (∂L/∂ of a Flatten to
    ∂L/∂ of its input).  Without it, a layer read both by a Flatten and by another
    layer had its ∂L/∂ set by each reader in turn, the second overwriting the first."""

    def __init__(self, same: dict):
        super().__init__()
        self.same = same

    def root(self, name: str) -> str:
        while name in self.same:
            name = self.same[name]
        return name

    def __contains__(self, name) -> bool:
        return set.__contains__(self, self.root(name))

    def add(self, name):
        set.add(self, self.root(name))

    def update(self, *names):
        for each in names:
            for name in each:
                self.add(name)


def _zeros(terms: list[Term], node: ir.Node, written: set) -> list:
    """Zero the buffers the output loop accumulates into (bias gradients)
    unless an earlier loop wrote them already."""
    seen = {t.target for t in terms if _assign(t, tuple(node.out_index)) == "+="}
    return [Zero(name, None) for name in sorted(seen) if name not in written]


def _backward(graph: ir.Graph, by_node: dict, written: set, convs: dict) -> list:
    """The derived terms of every node, from the last down, as derive handed
    them over (a node that needs no input gradient has no such terms).  A
    buffer read by several nodes receives the first contribution into zeros
    and the rest with +=, so ∂L/∂H sums over H's readers and ∂L/∂W over W's uses.
    Each term is computed by the route its index maps give (``_routes``): a
    correlation's through the forward's im2col, a max's at the argmax, the rest
    as the loop it is written as."""
    ops = []
    for node in reversed(graph.nodes):
        g = by_node[node.name]
        if node.kind == "flatten":
            continue
        if node.pieces is not None:
            ops += _concat_backward(graph, g, written)
            continue
        loop = tuple(node.out_index)
        if g.through:     # an output also read by other layers: their part, on top
            terms = [t for t in g.through if not _to_input(graph, t)]
            for t in terms:
                if t.target not in written:
                    ops.append(Zero(t.target, None))
                    written.add(t.target)
            ops.append(Loop(node.loop(), [(t.target, t.index, "+=", t.expr) for t in terms],
                            "; ".join(f"{t.target}[{_index(t.index)}] += {text(t.expr)}"
                                      f"  (from the readers of {node.name})" for t in terms)))
        if not is_fused(graph, node):
            # a delta that is its upstream gradient itself shares its buffer: no loop
            twins = _twin_deltas(g)
            terms = [t for t in g.outer if not _to_input(graph, t) and t.target not in twins
                     and not _delta_is_upstream(graph, node, t, g)]
            for t in terms:
                if _assign(t, loop) == "+=" and t.target not in written:
                    ops.append(Zero(t.target, None))
                    written.add(t.target)
            if terms:
                ops.append(Loop(node.loop(),
                                [(t.target, t.index, _assign(t, loop), t.expr) for t in terms],
                                "; ".join(f"{t.target}[{_index(t.index)}] "
                                          f"{_assign(t, loop)} {text(t.expr)}"
                                          + _from(graph, t.target[4:], node)
                                          * t.target.startswith("dL_d")
                                          for t in terms),
                                hoist=len(node.space) > 1))
                written.update(t.target for t in terms)
        for red in node.reductions:
            delta = delta_name(node, red)
            for prod in g.products.get(red.name, []):   # δᵀ·X and δ·W, as derived
                acc = prod.target in written        # a second use / reader: += (summed)
                formula = prod.formula.replace(" = ", " += " if acc else " = ", 1)
                if prod.rule == "weight":
                    X = prod.operand
                    M, N, K = _mnk(node, red, X)
                    ops.append(MatMul("tn", prod.target, delta, X, N, K, M, acc, formula))
                else:
                    X = prod.target[len("dL_d"):]
                    M, N, K = _mnk(node, red, X)
                    ops.append(MatMul("nn", prod.target, delta, prod.operand, M, K, N, acc,
                                      formula + _from(graph, X, node)))
                written.add(prod.target)
            if red.contraction:
                continue
            terms = g.summands[red.name]
            routed = _routes(node, red, terms, convs.get(red.name))
            if routed:
                ops += _conv_backward(node, red, terms, routed, written)
                terms = [t for t in terms if all(t is not r for r, _ in routed.values())]
                if not terms:
                    continue
            fresh = {t.target for t in terms if t.target not in written}
            for t in terms:
                if t.target not in written:
                    ops.append(Zero(t.target, None))
                    written.add(t.target)
            comment = "; ".join(f"{t.target}[{_index(t.index)}] += "
                                f"{_sums_of(node, red, t)}{text(t.expr)}" for t in terms)
            argmax = [t for t in terms if t.route == "argmax"]    # derive's ∂max/∂x
            if argmax:
                for t in argmax:
                    acc = node.symbols[red.summand]
                    ops.append(Route(node.loop(), list(red.space), acc,
                                     ir.Access(red.name, node.out_index),
                                     ir.Access(t.target, t.index),
                                     ir.Access(delta, node.out_index),
                                     f"{t.target}[{_index(t.index)}] += {text(t.expr)} at the "
                                     f"first (u,v) where {text(red.summand)} = "
                                     f"{red.name}[{_index(node.out_index)}]",
                                     overwrite=(len(terms) == 1 and t.target in fresh
                                                and _disjoint(t.index, node, red))))
                terms = [t for t in terms if t.route != "argmax"]
            if terms:
                ops.append(Loop(node.reduction_loop(red),
                                [(t.target, t.index, "+=", t.expr) for t in terms], comment,
                                hoist=len(node.space) > 1))
    # a parameter no use of which reaches the loss (U of a one-step recurrence)
    for p in graph.params():
        if grad_name(p.name) not in written and getattr(p, "trainable", True):
            ops.append(Zero(grad_name(p.name), None, "no path to the loss"))
            written.add(grad_name(p.name))
    return ops


def _concat_backward(graph: ir.Graph, g: NodeGrad, written: set) -> list:
    ops = []
    for src, off, width, t in g.pieces:
        if _to_input(graph, t):
            continue
        kind = "+=" if t.target in written else "="
        ops.append(Loop(_piece_loop(g.node, width), [(t.target, t.index, kind, t.expr)],
                        f"{t.target}[{_index(t.index)}] {kind} {text(t.expr)}"
                        f"{_from(graph, src, g.node)}"))
        written.add(t.target)
    return ops


def _sums_of(node: ir.Node, red: ir.Reduction, t: Term) -> str:
    """Σ over the loop indices that the target does not carry (Dense: none shown)."""
    if len(node.space) == 1 and not red.space:
        return ""
    carried = set()
    for ix in t.index:
        carried.update((ix,) if isinstance(ix, str) else ix.names())
    return "".join(f"Σ_{n} " for n, _ in node.reduction_loop(red) if n not in carried)


def _routes(node: ir.Node, red: ir.Reduction, terms: list, fwd) -> dict:
    """route -> (term, Correlation) for the terms of ``red`` whose index maps make
    them a correlation's weight or input gradient (``symnet.plan.correlate``), when
    the forward ran as one too: both read or reuse its im2col buffer."""
    if fwd is None:
        return {}
    out = {}
    for t in terms:
        c = correlate.correlation(node, red, ir.Access(t.target, t.index), t.expr)
        if c is not None and c.route in ("weight", "input") and c.route not in out \
                and c.geo == fwd.geo and c.out == delta_name(node, red):
            out[c.route] = (t, c)
    return out


def _conv_backward(node, red, terms: list, routed: dict, written) -> list:
    """A correlation's weight and input gradient terms (``_routes``) as one pass over
    the batch with the forward's im2col: g_K (+)= Σ_b δ[b]·col[b]ᵀ first, then col[b]
    ← Kᵀ·δ[b] added back into dX[b] by col2im (the buffer is free once the weight
    gradient read it); the comments show the terms' index forms."""
    lines = []
    for t in [t for t in terms if any(t is r for r, _ in routed.values())]:   # as derived
        lines.append(f"{t.target}[{_index(t.index)}] += {_sums_of(node, red, t)}{text(t.expr)}")
        if t.gather is not None:   # the same sum per element of dX: the flipped kernel
            idx, expr, sums = t.gather
            lines[-1] += (f", i.e. {t.target}[{','.join(idx)}] = "
                          + "".join(f"Σ_{n} " for n in sums) + text(expr))
    weight, inp = routed.get("weight"), routed.get("input")
    c = (weight or inp)[1]
    geo, K = c.geo, c.geo["weight"]
    gW = weight[1].kernel if weight else None
    dX = inp[1].image if inp else None
    ops = []
    if dX is not None and dX not in written:
        ops.append(Zero(dX, None))
    ops.append(Conv("backward", node.red_input(red), K, f"col_{node.name}", geo,
                    "; ".join(lines), delta=c.out, gW=gW, dX=dX,
                    accumulate=gW is not None and gW in written,
                    deltaT=f"dT_{node.name}" if gW and _gw_transposed(geo) else None,
                    direct=_direct(geo)))
    written.update(x for x in (gW, dX) if x)
    return ops


def _disjoint(index, node: ir.Node, red: ir.Reduction) -> bool:
    """Whether no two (output, window) points reach the same element of the target
    ``index``: every window index appears in one position, ``y*s + u`` with the
    window's extent times |u's coefficient| ≤ |s| (pooling with stride ≥ kernel), and
    no output index appears in two positions.  A sufficient test, not a necessary one."""
    extent = dict(red.space)
    outer, window = [], []
    for ix in index:
        terms = ((ix, 1),) if isinstance(ix, str) else ix.terms
        win = [(n, c) for n, c in terms if n in extent]
        out = [(n, c) for n, c in terms if n not in extent]
        if len(win) > 1 or len(out) > 1 or (win and not out):
            return False
        if win and (not isinstance(extent[win[0][0]], int)
                    or extent[win[0][0]] * abs(win[0][1]) > abs(out[0][1])):
            return False
        outer += [n for n, _ in out]
        window += [n for n, _ in win]
    return len(set(outer)) == len(outer) and sorted(window) == sorted(extent)


def _gw_transposed(geo: dict) -> bool:
    """Whether the weight gradient Σ_b δ[b]·col[b]ᵀ runs as one register-tiled product
    over the whole batch with δ transposed (positions × channels), rather than as dot
    products along the positions.  Dot products pay a horizontal sum per element of
    g_W, which few output positions do not amortise; the tiles want ≥ 8 channels to
    fill their rows of vector lanes.  Measured on LeNet's layers (batch 64, one thread):
    8×8 outputs, 16 channels: 470 µs as dot products, 105 µs as one product (+ ~30 µs
    to transpose δ); 24×24 outputs, 6 channels: dot products kept (170 µs)."""
    return _size(geo["out_hw"]) < 256 and geo["cout"] >= 8 and not _direct(geo)


#: the most numbers in a window (input channels × kernel) for a direct convolution
DIRECT_WINDOW = 32


def _direct(geo: dict) -> bool:
    """Whether a correlation's forward and weight gradient run as direct loops over the
    input's rows rather than through im2col and products: for a short window (at most
    DIRECT_WINDOW numbers), with stride 1 along x and no padding.  im2col copies one number
    per multiply-add of each output channel, and a depth of a few dozen does not pay for
    the product's tiles.  Measured on LeNet's layers (batch 64, one Zen 3 thread): the first,
    1×5×5, forward 130 µs direct vs 334 µs, weight gradient 218 vs 350 µs; the second,
    6×5×5 with 8 outputs a row, is faster through im2col (forward 285 vs 477 µs, weight
    gradient 217 vs 427 µs)."""
    return (geo["stride"][-1] == 1 and not any(geo["pad"])
            and geo["cin"] * _size(geo["kernel"]) <= DIRECT_WINDOW)
