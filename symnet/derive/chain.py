"""Back propagation over the IR: local derivatives by sympy.diff, chained by name.

For node H with incoming gradient g[b,i] = ∂L/∂H[b,i] (the symbol ``dL_dH``):

    delta_r[b,i]  = g[b,i] · ∂φ/∂r                (one per reduction r)
    ∂L/∂q[i]     += g[b,i] · ∂φ/∂q                (parameters of the outer formula)
    ∂L/∂P[i,j]   += delta_r[b,i] · ∂g_r/∂P[i,j]   (parameters inside a reduction)
    ∂L/∂x[b,j]   += delta_r[b,i] · ∂g_r/∂x[b,j]   (gives dL_dX of the node below)

A contraction r = Σ_j W[i,j]·x[b,j] needs no sympy at all: its two
derivative rules are the matrix products δᵀ·X and δ·W (``Product``).

``derive`` hands over every term once: lower, explicit, formulas and summary
consume ``NodeGrad`` as it is.  It also decides which terms are not computed at
all: the gradients of frozen parameters (``trainable=False``), ∂L/∂(a buffer)
with nothing trainable at or below it (the data, a parameter-free or frozen layer
at the bottom), and a delta that no remaining term reads.

At the output node an element-wise loss ℓ(o, t) is composed with φ before
differentiating, so that e.g. sigmoid + BCE gives the stable σ(z) − t.  A loss
that couples the outputs (softmax cross-entropy) is derived through its sums
over the outputs by ``symnet.derive.coupled``; its dL_dO[b,k] starts the chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..ir import nodes as ir
from ..scalar.primitives import sigmoid, stabilise
from ..scalar.smooth import clean  # noqa: F401  (re-exported: formulas reads it from here)
from .coupled import INV_BATCH, RowLoss, derive_coupled


@dataclass
class Term:
    """``target[index] (+)= expr``, summed over the loop indices not in ``index``.

    An index position may be an ``ir.Affine`` (x[b,k,y+u,x+v]): the term then
    adds into the element that the access map names (the chain rule's sum over
    every (output, summed) position that reads it).  ``route`` "argmax": the
    term goes only to the first largest element of a max reduction's window."""

    target: str
    index: tuple
    expr: sp.Expr
    route: str | None = None
    gather: tuple | None = None   # (index, expr, summed): the same sum read per target element


def gather_form(term: Term, node: ir.Node, red: ir.Reduction) -> tuple | None:
    """A scatter term dX[b,k,y+u−1,x+v−1] += δ[b,c,y,x]·W[c,k,u,v] read per element
    of its target: solve each affine position for its output index (y = y′ − u + 1)
    and substitute, giving dX[b,k,y′,x′] = Σ_c Σ_u Σ_v δ[b,c,y′−u+1,x′−v+1]·W[c,k,u,v]
    (the correlation of δ with the flipped kernel; positions outside δ count 0).
    None when a position is not of the form out·s + summed + const."""
    outs = {n for n, _ in node.space}
    solved, index = {}, []
    for ix in term.index:
        if isinstance(ix, str):
            index.append(ix)
            continue
        own = [(n, c) for n, c in ix.terms if n in outs]
        if len(own) != 1:
            return None
        (n, c), prime = own[0], own[0][0] + "′"
        sol = str(ir.Affine(((prime, 1),) + tuple((m, -d) for m, d in ix.terms if m != n),
                            -ix.const))
        solved[n] = sol if c == 1 else f"({sol})/{c}"
        index.append(prime)
    sub = {}
    for sym in term.expr.free_symbols:
        acc = node.symbols.get(sym)
        if acc is None or not any(isinstance(x, str) and x in solved for x in acc.index):
            continue
        idx = [solved[x] if isinstance(x, str) and x in solved else ir.index_text(x)
               for x in acc.index]
        sub[sym] = ir.scalar(f"{acc.array}[{','.join(idx)}]")
    carried = set(index) | {x for x in term.index if isinstance(x, str)}
    summed = [n for n, _ in node.reduction_loop(red) if n not in carried and n not in solved]
    return tuple(index), term.expr.xreplace(sub), tuple(summed)


@dataclass
class Product:
    """A contraction's gradient, itself a contraction (a matrix product):
    rule "weight": g_W[i,j] = Σ_b δ[b,i]·X[b,j]  (δᵀ·X);
    rule "input":  dL_dX[b,j] = Σ_i δ[b,i]·W[i,j] (δ·W), only where derive says the
    input needs a gradient."""

    rule: str
    target: str
    delta: str
    operand: str                 # X for "weight", W for "input"

    @property
    def formula(self) -> str:
        if self.rule == "weight":
            return f"{self.target}[i,j] = Σ_b {self.delta}[b,i]·{self.operand}[b,j]"
        return f"{self.target}[b,j] = Σ_i {self.delta}[b,i]·{self.operand}[i,j]"


@dataclass
class NodeGrad:
    """Everything back propagation needs for one node."""

    node: ir.Node
    upstream: sp.Symbol | None           # dL_dH[b,i]; None when the loss is fused here
    loss: sp.Expr | None = None          # fused element-wise loss (output node only)
    outer: list[Term] = field(default_factory=list)      # deltas and outer-parameter grads
    summands: dict[str, list[Term]] = field(default_factory=dict)  # per reduction name
    # Concatenate: (source, offset, width, term) -- the term runs over i < width
    pieces: list = field(default_factory=list)
    weight: float = 1.0                  # the output's loss weight (fused outputs)
    # an output that other layers also read: its terms from ∂L/∂O (those readers),
    # added to the fused ones once the readers have sent their part back
    through: list = field(default_factory=list)
    products: dict[str, list[Product]] = field(default_factory=dict)  # per contraction
    input_grad: bool = True              # False: nothing below has parameters
    coupled: RowLoss | None = None       # an output's coupled loss (softmax
                                         # cross-entropy): it writes dL_dO

    def terms(self) -> list:
        """Every gradient term of the node, in the order back propagation runs them."""
        out = list(self.outer)
        for red in self.node.reductions:
            out += self.products.get(red.name, []) + self.summands.get(red.name, [])
        return out


def delta_name(node: ir.Node, red: ir.Reduction) -> str:
    """delta_H1 for a single-reduction node, delta_<reduction> otherwise."""
    return f"delta_{node.name}" if len(node.reductions) == 1 else f"delta_{red.name}"


def grad_name(param: str) -> str:
    return f"g_{param}"


def upstream_name(name: str) -> str:
    return f"dL_d{name}"


def reuse_output(expr: sp.Expr, node: ir.Node) -> sp.Expr:
    """Write φ(...) as the stored output H[b,i] wherever it appears whole:
    tanh′ = 1 − H², σ′ = H(1 − H); the backward pass then calls no exp/tanh."""
    if node.outer.is_Atom or isinstance(node.outer, sp.Add):
        return expr
    h = ir.element(node.symbols, node.name, *node.out_index)
    return expr.xreplace({node.outer: h, **sign_of_output(node.outer, h)})


def sign_of_output(outer: sp.Expr, h: sp.Expr) -> dict:
    """{u > 0: H > 0} where H = φ(u) is positive exactly where u is: ReLU, leaky ReLU
    (Piecewise((u, u > 0), (c·u, True)) with c ≥ 0).  Their derivatives then read the
    stored output, as the forward's last reader of u: relu′ = (1 if H > 0 else 0), the
    same mask (NaN in u gives 0 in H and false in both), and u's buffer is free after
    the forward (the transformer's ReLU: 8192 numbers per example and block)."""
    if not isinstance(outer, sp.Piecewise) or len(outer.args) != 2:
        return {}
    (u, cond), (other, last) = outer.args
    if last != sp.true or cond != sp.StrictGreaterThan(u, 0) or u.is_Atom and not u.free_symbols:
        return {}
    c = sp.cancel(other / u)     # c·u / u, sympy having spread c over u's terms
    if not (c.is_number and c.is_nonnegative):
        return {}
    return {cond: sp.StrictGreaterThan(h, 0)}


def simplest(expr: sp.Expr) -> sp.Expr:
    """σ(−x) = 1 − σ(x), then keep the expanded form if it is shorter
    (sigmoid + BCE then reads σ(z) − t)."""
    alt = expr.replace(lambda e: isinstance(e, sigmoid) and e.args[0].could_extract_minus_sign(),
                       lambda e: 1 - sigmoid(-e.args[0]))
    alt = sp.factor_terms(sp.expand(alt))
    return alt if sp.count_ops(alt) < sp.count_ops(expr) else expr


def concat_index(node: ir.Node, off: int) -> tuple:
    """Where element (b, i, ...) of a Concatenate's input at ``off`` lies in its output:
    the joined axis (``node.concat_axis``) shifted by ``off``, the others the same."""
    return (ir.BATCH, *(shifted(name, off) if k == node.concat_axis else name
                        for k, name in enumerate(node.out_index[1:])))


def concat_grad(node: ir.Node) -> NodeGrad:
    """Concatenate copies its inputs side by side; its gradient is the same copy
    backwards: dL_dX_m[b,i] += dL_dH[b, offset_m + i] (along the joined axis)."""
    syms = node.symbols
    upstream = ir.element(syms, upstream_name(node.name), *node.out_index)
    grad = NodeGrad(node, upstream)
    off = 0
    for src, width in node.pieces:
        up = ir.element(syms, upstream_name(node.name), *concat_index(node, off))
        grad.pieces.append((src, off, width, Term(upstream_name(src), node.out_index, up)))
        off += width
    return grad


def shifted(index: str, offset: int):
    """index + offset as an IR index position (the name itself for 0)."""
    return index if offset == 0 else ir.Affine(((index, 1),), offset)


def target_element(syms: dict, t_offset: int, node: ir.Node, packed: bool = False) -> sp.Symbol:
    """T[b,i] of an output whose targets start at column t_offset of T.  ``packed``: T
    holds several outputs' targets side by side, a (batch, n_out) matrix, so an output
    of several axes reads its element's flat column: T[b, 3·tq + i + 15] for (tq, i)
    of an (L, 3) output whose targets start at column 15."""
    if t_offset == 0 and not packed:
        return ir.element(syms, "T", *node.out_index)
    terms, stride = [], 1
    for name, extent in reversed(node.space):
        terms.insert(0, (name, stride))
        stride *= extent
    if len(terms) == 1 and t_offset == 0:
        return ir.element(syms, "T", ir.BATCH, terms[0][0])
    return ir.element(syms, "T", ir.BATCH, ir.Affine(tuple(terms), t_offset))


#: Local derivatives by the shape of the formula, its arrays renamed in the order the node
#: made them: nodes that differ only in the arrays they read (the steps of an unrolled
#: recurrence, the blocks of a transformer, layers of one width) are derived by sympy once
#: per ``derive`` call (None outside one: the rules may differ from call to call).
#: Measured, the GRU of the benchmark (40 steps): its derivation 7.0 → 0.6 s.
_LOCAL: dict | None = None


def _placeholder(i: int) -> sp.Symbol:
    return sp.Symbol(f"⟨{i}⟩", real=True)


def local_derivative(head: sp.Expr, scale: sp.Expr, sym: sp.Symbol, syms: dict) -> sp.Expr:
    """stabilise(simplest(clean(scale·∂head/∂sym))), taken from an earlier node whose
    formula has the same shape (``_LOCAL``) where there is one."""
    rename = {s: _placeholder(i) for i, s in enumerate(syms)}
    key = (head.xreplace(rename), sp.sympify(scale).xreplace(rename), rename.get(sym, sym))
    memo = _LOCAL
    got = memo.get(key) if memo is not None else None
    if got is None:
        h, sc, x = key
        got = stabilise(simplest(clean(sc * sp.diff(h, x))))
        if memo is not None:
            memo[key] = got
    return got.xreplace({v: k for k, v in rename.items()})


def derive_node(node: ir.Node, loss=None, n_out: int = 0, weight: float = 1.0,
                t_offset: int = 0, packed: bool = False) -> NodeGrad:
    """Local derivatives of one node; ``loss`` given when it is fused here
    (with the output's loss ``weight``, its targets' first column, and whether T
    holds several outputs' targets: ``target_element``)."""
    syms = node.symbols
    if node.pieces is not None:
        grad = concat_grad(node)
        if loss is not None:      # an output: the loss's ∂ℓ/∂J[b,i] into dL_dJ, which the
            J = ir.element(syms, node.name, *node.out_index)    # pieces then copy back
            value = stabilise(loss.element(J, target_element(syms, t_offset, node, packed),
                                           n_out))
            scale = INV_BATCH if weight == 1.0 else sp.Float(weight) * INV_BATCH
            grad.loss, grad.weight = value, weight
            grad.outer.append(Term(upstream_name(node.name), node.out_index,
                                   local_derivative(value, scale, J, syms)))
        return grad
    if loss is not None:
        t_i = target_element(syms, t_offset, node, packed)
        value = stabilise(loss.element(node.outer, t_i, n_out))
        scale = INV_BATCH if weight == 1.0 else sp.Float(weight) * INV_BATCH
        head, upstream = value, None
        grad = NodeGrad(node, None, loss=value, weight=weight)
    else:
        upstream = ir.element(syms, upstream_name(node.name), *node.out_index)
        head, scale = node.outer, upstream
        grad = NodeGrad(node, upstream)
    params = {p.name: p for p in node.params}

    # Outer formula: deltas of the reductions, parameters indexed by i, the input x[b,i].
    def local(sym):
        return reuse_output(local_derivative(head, scale, sym, syms), node)

    if node.kind == "flatten":    # a view: dL_d<flatten> is dL_d<input>, nothing to derive
        if loss is not None:      # ... but as an output, the loss's ∂ℓ/∂O[b,i] into it
            grad.outer.append(Term(upstream_name(node.name), node.out_index, local(node.outer)))
        return grad
    for red in node.reductions:
        grad.outer.append(Term(delta_name(node, red), node.out_index, local(red.symbol)))
    for sym, acc in list(syms.items()):
        if sym in head.free_symbols and acc.array in params:
            grad.outer.append(Term(grad_name(acc.array), acc.index, local(sym)))
        elif sym in head.free_symbols and acc.array in node.inputs:
            grad.outer.append(Term(upstream_name(acc.array), acc.index, local(sym)))

    # Reductions: parameters and inputs inside the summands.
    for red in node.reductions:
        delta = ir.element(syms, delta_name(node, red), *node.out_index)
        terms = []
        if red.op == "max":           # ∂max/∂x = 1 at the (first) arg-max, 0 elsewhere
            acc = syms[red.summand]
            terms.append(Term(upstream_name(node.input), acc.index, delta, route="argmax"))
        elif red.contraction is None:
            for sym in sorted(red.summand.free_symbols, key=str):
                acc = syms.get(sym)          # None: a loop index (a causal mask's)
                if acc is None:
                    continue
                if acc.array in params:
                    target = grad_name(acc.array)
                elif acc.array in node.inputs:
                    target = upstream_name(acc.array)
                else:
                    continue
                d = stabilise(clean(delta * sp.diff(red.summand, sym)))
                terms.append(Term(target, acc.index, d))
                if any(not isinstance(x, str) for x in acc.index):
                    terms[-1].gather = gather_form(terms[-1], node, red)
        grad.summands[red.name] = terms
    return grad


def fused(graph: ir.Graph, node: ir.Node) -> bool:
    """True for an output whose element-wise loss is composed into its formula."""
    return node.name in graph.outputs and graph.losses[node.name].element is not None


def needs_input_grad(graph: ir.Graph) -> dict[str, bool]:
    """Per buffer: are there trainable parameters at or below it?  ∂L/∂(a buffer)
    is needed only then: not for the data, nor for a parameter-free layer
    (pooling, flatten, a slice of the input) or a frozen one with nothing
    trainable below.  A graph with ``grad_inputs`` counts its inputs as needing it
    (∂L/∂X, ``model.input_grad``), and so every buffer."""
    below: dict[str, bool] = {graph.input_name: graph.grad_inputs}
    below.update({name: graph.grad_inputs for name, _ in graph.inputs})
    for node in graph.nodes:
        below[node.name] = not getattr(node, "shift", False) and (any(below[x] for x in node.inputs) or
                                               any(getattr(p, "trainable", True)
                                                   for p in node.params))
    return below


def _read_deltas(g: NodeGrad) -> set:
    """The deltas of a node that its reduction terms read (by symbol or product)."""
    names = {p.delta for ps in g.products.values() for p in ps}
    for ts in g.summands.values():
        for t in ts:
            names |= {str(s).split("[")[0] for s in t.expr.free_symbols}
    return names


def derive(graph: ir.Graph) -> list[NodeGrad]:
    """NodeGrads from the last node (in topological order) down to the first;
    the terms nothing needs are left out here, once: ∂L/∂(an input) that nothing
    trainable lies below, the gradients of frozen parameters, unread deltas."""
    global _LOCAL
    outer, _LOCAL = _LOCAL, {}
    try:
        return _derive(graph)
    finally:
        _LOCAL = outer


def _derive(graph: ir.Graph) -> list[NodeGrad]:
    below = needs_input_grad(graph)
    frozen = {grad_name(p.name) for p in graph.params() if not getattr(p, "trainable", True)}
    grads = []
    for node in reversed(graph.nodes):
        if fused(graph, node):
            g = derive_node(node, graph.losses[node.name], node.n_out,
                            graph.weights[node.name], graph.target_offset(node.name),
                            packed=len(graph.outputs) > 1)
            if graph.consumers(node.name):
                g.through = derive_node(node).outer
        else:
            g = derive_node(node)
        if node.name in graph.outputs and getattr(graph.losses[node.name], "coupled", None):
            g.coupled = derive_coupled(node, graph.losses[node.name],
                                       graph.weights[node.name],
                                       graph.target_offset(node.name),
                                       graph.classes.get(node.name),
                                       node.name in graph.classes_first)
        if getattr(node, "shift", False):     # ∂L/∂(a softmax's maximum) is zero: nothing to send back
            g.outer, g.through, g.pieces = [], [], []
            g.summands = {r: [] for r in g.summands}
        g.input_grad = any(below[x] for x in node.inputs)
        drop = {upstream_name(x) for x in node.inputs if not below[x]} | frozen
        g.outer = [t for t in g.outer if t.target not in drop]
        g.summands = {r: [t for t in ts if t.target not in drop]
                      for r, ts in g.summands.items()}
        g.pieces = [p for p in g.pieces if p[3].target not in drop]
        g.through = [t for t in g.through if t.target not in drop]
        for red in node.reductions:
            if red.contraction:
                X = node.red_input(red)
                g.products[red.name] = [Product(rule, target, delta_name(node, red), operand)
                                        for rule, target, operand in (
                                            ("weight", grad_name(red.contraction), X),
                                            ("input", upstream_name(X), red.contraction))
                                        if target not in drop]
        # a delta only where a term below reads it: a frozen layer's, and one of a layer
        # nothing trainable lies under (LayerNorm's mean and 1/σ of the network's input),
        # whose ∂L/∂(output) no reader writes
        if frozen or not below[node.name]:
            read = _read_deltas(g)
            g.outer = [t for t in g.outer if not t.target.startswith("delta_")
                       or t.target in read]
        grads.append(g)
    return grads
