"""The derivation of a network that is not a plain chain: merges, several
inputs and outputs, shared layers, unrolled recurrences.

Same lines as ``symnet.read.formulas`` (forward, loss, backward from the outputs
down) with two things a chain never needs: a layer read by several others
receives its gradient from each of them, and the derivation says so,

    ∂L/∂H1 = ∂L/∂H1 (from H2) + ∂L/∂H1 (from O2)

(the C accumulates dL_dH1 in that order); and a layer applied at several
places has one set of parameters whose gradient is the sum over its uses,

    ∂L/∂W2 = Σ_uses ∂L/∂W2 = δ_h_1ᵀ·x_1 + δ_h_2ᵀ·x_2 + ...

Back-propagation through time is this rule over the unrolled steps.
"""

from __future__ import annotations

import sympy as sp

from ..ir import nodes as ir
from ..derive.chain import delta_name, fused, grad_name, needs_input_grad, upstream_name

# T, el, expr: the short names of the derivation's phrases (symnet.scalar.notation)
from ..scalar.notation import Phrase as T
from ..scalar.notation import latex_name, phrase_sum
from ..scalar.notation import phrase_element as el
from ..scalar.notation import phrase_expr as expr

_O, _T = sp.symbols("o t", real=True)   # a loss element ℓ(o, t)


EQ = T(" = ")


def _d(a: str, b: str) -> T:
    return T(f"∂{a}/∂{b}", r"\frac{\partial %s}{\partial %s}" % (latex_name(a),
                                                                latex_name(b)))


def _row_sum(r) -> T:
    """name[b] = Σ_k summand (or max_k) of a coupled loss."""
    op = phrase_sum("k") if r.op == "sum" else T("max_k ", r"\max_{k} ")
    return expr(r.symbol) + EQ + op + expr(r.summand)


def coupled_loss(f, rule):
    """A coupled loss as declared (symnet.derive.coupled): L_b of sums over k."""
    f._add("index", T("L_b") + EQ + expr(rule.declared))
    for r in rule.declared_sums:
        f._add("index", _row_sum(r))


def coupled_gradient(f, rule):
    """dL_dO of a coupled loss: the chain rule through its sums, then the stable
    form the C computes (both from symnet.derive.coupled)."""
    out, up = rule.output, upstream_name(rule.output)
    f._add("step", _d("L", out) + EQ + T("inv_batch·Σ_R ∂L_b/∂R·∂R/∂" + out,
                                             r"\frac{1}{B} \sum_{R} \frac{\partial L_b}"
                                             r"{\partial R} \frac{\partial R}{\partial %s}"
                                             % latex_name(out))
           + T("   (the chain rule through the sums R over k)", r" \quad \text{(chain rule)}"))
    f._add("index", el(up, "b,k") + EQ + expr(rule.chain))
    f._add("step", T("stable: every exp(a)/S as exp(a - lse), lse = log S",
                        r"\text{stable: } e^{a}/S = e^{a - \mathrm{lse}}"))
    for r in rule.sums:
        if r not in rule.declared_sums:
            f._add("index", _row_sum(r))
    for sym, e in rule.scalars:
        f._add("index", expr(sym) + EQ + expr(e))
    f._add("index", el(up, "b,k") + EQ + expr(rule.grad))


def _uses(graph: ir.Graph) -> dict:
    """parameter name -> names of the nodes using it."""
    uses: dict = {}
    for node in graph.nodes:
        read = {r.contraction for r in node.reductions} | {
            a.array for a in node.symbols.values()}
        for p in node.params:
            if p.name in read:      # (U of a first recurrent step is declared, not read)
                uses.setdefault(p.name, []).append(node.name)
    return uses


def header(f):
    g, net = f.graph, f.network
    ins = ", ".join(n for n, _ in g.inputs)
    outs = ", ".join(g.outputs)
    terms = []
    for o in g.outputs:
        name = g.losses[o].name
        name = "custom" if name.startswith("custom:") else name
        w = g.weights[o]
        terms.append(f"{name}({o})" if w == 1.0 else f"{w:g}·{name}({o})")
    f._add("title", T(f"Network {ins} → {outs}, loss {' + '.join(terms)}",
                      r"\text{Network } %s \rightarrow %s" % (
                          ", ".join(latex_name(n) for n, _ in g.inputs),
                          ", ".join(latex_name(o) for o in g.outputs))))
    shapes = [f"{n}: (B, {w})" for n, w in g.inputs]
    for p in g.params():
        shapes.append(f"{p.name}: {p.shape if len(p.shape) > 1 else f'({p.shape[0]},)'}")
    f._add("info", "   ".join(shapes))
    shared = {p: u for p, u in _uses(g).items() if len(u) > 1}
    if shared:
        f._add("info", "shared parameters: " + "; ".join(
            f"{p} used by {', '.join(u)}" for p, u in shared.items()))
    if g.packed:
        f._add("info", f"the C takes the inputs side by side in {g.input_name}; "
                       "targets side by side in T" if len(g.outputs) > 1 else
                       f"the C takes the inputs side by side in {g.input_name}")
    elif len(g.outputs) > 1:
        f._add("info", "targets side by side in T: " + ", ".join(
            f"{o} from column {g.target_offset(o)}" for o in g.outputs))
    f._add("info", "B examples in a batch, one per row b; inv_batch = 1/B.  Indented lines "
                   "use the names of the generated C.")
    del net


def forward(f):
    g = f.graph
    f._add("heading", T("Forward", r"\text{Forward}"))
    for node in g.nodes:
        if node.pieces is not None:
            f._add("step", T(f"{node.name} = [{', '.join(node.inputs)}]   (side by side)",
                             r"%s = \left[%s\right]" % (latex_name(node.name), ", ".join(
                                 latex_name(x) for x in node.inputs))))
            off = 0
            for src, width in node.pieces:
                f._add("index", T(f"{node.name}[b,{off}+i] = {src}[b,i]   (i < {width})",
                                  None))
                off += width
            continue
        if node.kind in ("add", "multiply"):
            op = " + " if node.kind == "add" else " ⊙ "
            f._add("step", T(f"{node.name} = " + op.join(node.inputs),
                             f"{latex_name(node.name)} = " + (
                                 " + " if node.kind == "add" else r" \odot ").join(
                                     latex_name(x) for x in node.inputs)))
        elif node.kind == "rnn":
            act = node.activation.name
            act = f"f_{node.name}" if act.startswith("custom:") else act
            W, U = [r.contraction for r in node.reductions][:1], \
                [r.contraction for r in node.reductions][1:]
            b = next(p.name for p in node.params if p.role == "bias")
            inner = f"{W[0]}·{node.inputs[0]}" + (
                f" + {U[0]}·{node.inputs[1]}" if U else "") + f" + {b}"
            f._add("step", T(f"{node.name} = {act}({inner})"
                             + ("" if U else "   (h_0 = 0)"), None))
        elif node.kind == "slice":
            f._add("step", T(f"{node.name} = part of {node.input}", None))
        else:
            args = ", ".join([p.name for p in node.params] + node.inputs)
            f._add("step", T(f"{node.name} = {node.name}({args})", None))
        for red in node.reductions:
            if red.contraction:
                rhs = "Σ_j " + f"{red.contraction}[i,j]·{node.red_input(red)}[b,j]"
                f._add("index", T(f"{red.name}[b,i] = {rhs}", None))
            else:
                f._add("index", el(red.name, "b,i") + " = " + expr(red.summand))
        f._add("index", el(node.name, "b,i") + " = " + expr(node.outer))
    by_node = {gr.node.name: gr for gr in f.grads}
    for o in g.outputs:
        loss = g.losses[o]
        w = g.weights[o]
        pre = "" if w == 1.0 else f"{w:g}·"
        rule = by_node[o].coupled
        if rule is not None:
            f._add("step", T(f"L_{o} = {pre}inv_batch·Σ_b L_b   (T: the columns of {o})", None))
            coupled_loss(f, rule)
        else:
            ell = sp.sympify(loss.element(_O, _T, g.node(o).n_out))
            f._add("step", T(f"L_{o} = {pre}inv_batch·Σ_b Σ_i ℓ({o}[b,i], T[b,i]),   "
                             f"ℓ(o, t) = ", None) + expr(ell))
    if len(g.outputs) > 1:
        f._add("step", T("L = " + " + ".join(f"L_{o}" for o in g.outputs), None))


def backward(f):
    g = f.graph
    f._add("heading", T("Backward, from the outputs down (each layer after every layer "
                        "that reads it)", r"\text{Backward}"))
    by_node = {gr.node.name: gr for gr in f.grads}
    below = needs_input_grad(g)
    for node in reversed(g.nodes):
        gr = by_node[node.name]
        readers = [c.name for c in g.consumers(node.name)]
        if node.name in g.outputs and readers:
            readers = ["the loss"] + readers
        up = upstream_name(node.name)
        if len(readers) > 1:
            f._add("step", T(f"∂L/∂{node.name} = " + " + ".join(
                f"∂L/∂{node.name} (from {r})" for r in readers),
                r"\frac{\partial L}{\partial %s} = " % latex_name(node.name) + " + ".join(
                    r"\frac{\partial L}{\partial %s}\Big|_{%s}" % (
                        latex_name(node.name), latex_name(r)) for r in readers)))
            f._add("index", T(f"{up} = " + " + ".join(f"{up} (from {r})" for r in readers),
                              None))
        if gr.coupled is not None:
            coupled_gradient(f, gr.coupled)
        if fused(g, node):
            f._add("step", T(f"{node.name} is an output: its loss is fused into its "
                             "formula", None))
            for t in gr.through:
                if not _to_input(g, t):
                    f._add("index", el(t.target, ",".join(ir.index_text(x) for x in t.index))
                           + " += " + _sum(t, ()) + expr(t.expr)
                           + T(f"   (from the readers of {node.name})", None))
        if node.pieces is not None:
            for src, off, width, t in gr.pieces:
                if not g.is_input(src):
                    f._add("index", T(f"{t.target}[b,i] += {up}[b,{off}+i]   "
                                      f"(from {node.name}, i < {width})", None))
            continue
        for t in gr.outer:
            if _to_input(g, t):
                continue
            f._add("index", el(t.target, ",".join(ir.index_text(x) for x in t.index)) + _op(t) + _sum(t, ()) + expr(t.expr)
                   + _from(g, t, node))
        for red in node.reductions:
            d = delta_name(node, red)
            X = node.red_input(red)
            if red.contraction:
                W = red.contraction
                f._add("step", T(f"∂L/∂{W} += δ_{d[6:]}ᵀ·{X}" + _at(g, W, node), None))
                f._add("index", T(f"{grad_name(W)}[i,j] += Σ_b {d}[b,i]·{X}[b,j]", None))
                if below[X]:       # derive leaves out ∂L/∂X where nothing below learns
                    f._add("index", T(f"{upstream_name(X)}[b,j] += Σ_i {d}[b,i]·{W}[i,j]"
                                      f"   (from {node.name})", None))
                continue
            for t in gr.summands[red.name]:
                if not _to_input(g, t):
                    f._add("index", el(t.target, ",".join(ir.index_text(x) for x in t.index)) + " += "
                           + _sum(t, red.over) + expr(t.expr) + _from(g, t, node))
    shared = {p: u for p, u in _uses(g).items() if len(u) > 1}
    if shared:
        f._add("heading", T("Shared parameters: the gradient is the sum over the uses",
                            r"\text{Shared parameters}"))
        for p, users in shared.items():
            f._add("step", T(f"∂L/∂{p} = Σ_uses ∂L/∂{p} = " + " + ".join(
                f"∂L/∂{p} (at {u})" for u in users),
                r"\frac{\partial L}{\partial %s} = \sum_{\text{uses}} = " % latex_name(p)
                + " + ".join(r"\frac{\partial L}{\partial %s}\Big|_{%s}" % (
                    latex_name(p), latex_name(u)) for u in users)))


def _to_input(g: ir.Graph, t) -> bool:
    return any(t.target == upstream_name(x) for x in [g.input_name] + [n for n, _ in g.inputs])


def _op(t) -> str:
    return " = " if t.target.startswith("delta_") else " += "


def _sum(t, over):
    return phrase_sum([x for x in (ir.BATCH, ir.OUT, *over) if x not in t.index])


def _from(g: ir.Graph, t, node):
    if t.target.startswith("dL_d"):
        return T(f"   (from {node.name})", r" \quad \text{(from %s)}" % node.name.replace(
            "_", r"\_"))
    return ""


def _at(g: ir.Graph, W: str, node) -> str:
    users = _uses(g).get(W, [])
    return f"   (use at {node.name})" if len(users) > 1 else ""
