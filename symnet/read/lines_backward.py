"""The backward half of ``net.formulas()`` (``symnet.read.lines`` writes the rest):
from the outputs down, each node after every node that reads it, a reader's sum where
a layer has several, then the sums over the uses of shared parameters."""

from __future__ import annotations

import sympy as sp

from ..ir import nodes as ir
from ..derive.chain import INV_BATCH, NodeGrad, clean, concat_index, delta_name, upstream_name
from ..scalar.notation import Phrase as _Tex
from ..scalar.notation import latex_name, text
from ..scalar.notation import phrase_element as _el
from ..scalar.notation import phrase_expr as _expr
from ..scalar.notation import phrase_sum as _sum
from .lines import (CHAIN, DOT, EQ, HAD, O_, PLUS_EQ, T_, TR, Walk, _d, _delta, _index, _n,
                    _note, _row_sum, activation_label, loss_element)


def backward(w: Walk):
    f, g = w.f, w.g
    plain = len(g.outputs) == 1 and all(len(w.readers(n.name)) <= 1 for n in g.nodes)
    f._add("heading", _Tex("Backward, from the output down" if plain else
                           "Backward, from the outputs down (each layer after every layer "
                           "that reads it)",
                           r"\text{Backward, from the output down}" if plain else
                           r"\text{Backward}"))
    for node in reversed(g.nodes):
        grad = w.by_node[node.name]
        readers = w.readers(node.name)
        if node.name in g.outputs and readers:
            readers = ["the loss"] + readers
        if len(readers) > 1:
            up = upstream_name(node.name)
            f._add("step", _Tex(f"∂L/∂{node.name} = " + " + ".join(
                f"∂L/∂{node.name} (from {r})" for r in readers),
                r"\frac{\partial L}{\partial %s} = " % latex_name(node.name) + " + ".join(
                    r"\frac{\partial L}{\partial %s} (\text{from } %s)" % (
                        latex_name(node.name), latex_name(r) if r != "the loss" else
                        r"\text{the loss}") for r in readers)))
            f._add("index", _Tex(f"{up} = " + " + ".join(f"{up} (from {r})" for r in readers),
                                 None))
        if node.name in g.outputs:
            _output_gradient(w, grad)
        for t in grad.through:     # an output read by other layers: their part, on top
            f._add("index", _el(t.target, _index(t.index)) + PLUS_EQ
                   + _sum([x for x in node.out_index if x not in t.index]) + _expr(t.expr)
                   + _note(f"from the readers of {node.name}"))
        if node.pieces is not None:
            for src, off, width, t in grad.pieces:
                if g.is_input(src):
                    continue
                if len(node.space) > 1:     # a tensor: along its joined axis
                    at = ",".join(ir.index_text(x) for x in concat_index(node, off))
                    idx = ",".join(node.out_index)
                    axis = node.space[node.concat_axis][0]
                    f._add("index", _Tex(f"{t.target}[{idx}] += {upstream_name(node.name)}"
                                         f"[{at}]   (from {node.name}, {axis} < {width})",
                                         None))
                else:
                    f._add("index", _Tex(f"{t.target}[b,i] += {upstream_name(node.name)}"
                                         f"[b,{off}+i]   (from {node.name}, i < {width})",
                                         None))
            continue
        if upstream_name(node.name) not in f._frozen:   # frozen at the bottom: nothing
            above = w.g.node(readers[0]) if len(readers) == 1 and readers[0] != "the loss" \
                else None
            _node(w, grad, above)
    shared = {p: u for p, u in w.uses.items() if len(u) > 1}
    if shared:
        f._add("heading", _Tex("Shared parameters: the gradient is the sum over the uses",
                               r"\text{Shared parameters}"))
        for p, users in shared.items():
            f._add("step", _Tex(f"∂L/∂{p} = Σ_uses ∂L/∂{p} = " + " + ".join(
                f"∂L/∂{p} (at {u})" for u in users),
                r"\frac{\partial L}{\partial %s} = \sum_{\text{uses}} = " % latex_name(p)
                + " + ".join(r"\frac{\partial L}{\partial %s} (\text{at } %s)" % (
                    latex_name(p), latex_name(u)) for u in users)))


def _output_gradient(w: Walk, grad: NodeGrad):
    f, g = w.f, w.g
    out = grad.node.name
    up = upstream_name(out)
    if grad.coupled is not None:
        coupled_gradient(f, grad.coupled)
        return
    wt, off = g.weights[out], g.target_offset(out)
    dl = clean(sp.diff(loss_element(g, out), O_))
    t_el = "T[b,i]" if off == 0 else f"T[b,i + {off}]"
    scale = INV_BATCH if wt == 1.0 else sp.Float(wt) * INV_BATCH
    dl = scale * dl.xreplace({O_: sp.Symbol(f"{out}[b,i]", real=True),
                              T_: sp.Symbol(t_el, real=True)})
    pre = ("", "") if wt == 1.0 else (f"{wt:g}·", r"%g \cdot " % wt)
    f._add("step", _d("L", out) + EQ + _Tex(f"{pre[0]}inv_batch·∂ℓ/∂o",
                                            pre[1] + r"\frac{1}{B} \frac{\partial \ell}"
                                            r"{\partial o}"))
    where = (_Tex("   (stored: its pieces below copy it back)", r" \quad \text{(stored)}")
             if grad.node.pieces is not None else    # a Concatenate has no delta
             _Tex(f"   (not stored: fused into delta_{out} below)", r" \quad \text{(fused)}"))
    f._add("index", _el(up, "b,i") + EQ + _expr(dl) + where)


def coupled_gradient(f, rule):
    """dL_dO of a coupled loss: the chain rule through its sums, then the stable
    form the C computes (both from symnet.derive.coupled)."""
    out, up = rule.output, upstream_name(rule.output)
    f._add("step", _d("L", out) + EQ + _Tex("inv_batch·Σ_R ∂L_b/∂R·∂R/∂" + out,
                                             r"\frac{1}{B} \sum_{R} \frac{\partial L_b}"
                                             r"{\partial R} \frac{\partial R}{\partial %s}"
                                             % latex_name(out))
           + _Tex("   (the chain rule through the sums R over k)", r" \quad \text{(chain rule)}"))
    f._add("index", _el(up, "b,k") + EQ + _expr(rule.chain))
    f._add("step", _Tex("stable: every exp(a)/S as exp(a - lse), lse = log S",
                        r"\text{stable: } e^{a}/S = e^{a - \mathrm{lse}}"))
    for r in rule.sums:
        if r not in rule.declared_sums:
            f._add("index", _row_sum(r))
    for sym, e in rule.scalars:
        f._add("index", _expr(sym) + EQ + _expr(e))
    f._add("index", _el(up, "b,k") + EQ + _expr(rule.grad))


def _node(w: Walk, grad: NodeGrad, above: ir.Node | None):
    f = w.f
    node, H = grad.node, grad.node.name
    if node.kind == "flatten":
        f._add("step", _d("L", node.input) + EQ + _d("L", H)
               + _Tex("   (the same numbers: Flatten is a view)", r" \quad \text{(view)}"))
        return
    label = activation_label(node)
    loop = tuple(node.out_index)
    out = ",".join(loop)
    deltas = {t.target: t for t in grad.outer if t.target.startswith("delta_")}
    for red in node.reductions:
        dn = delta_name(node, red)
        if dn not in deltas:
            continue
        step = _delta(dn) + EQ + _d("L", red.name) + EQ + _d("L", H) + HAD
        if label is not None:
            pre = red.name + "".join(f" + {p.name}" for p in node.params
                                     if p.role == "bias")
            act = _n(label) + _Tex("′(", "'\\left(") + _Tex(pre, " + ".join(
                latex_name(x) for x in pre.split(" + "))) + _Tex(")", r"\right)")
            step = step + act
            if above is not None and activation_label(above) is not None:
                step = step + EQ + _Tex("(", r"\left(") + _delta(delta_name(
                    above, above.reductions[0])) + DOT + _n(
                    above.reductions[0].contraction) + _Tex(")", r"\right)") + HAD + act
        else:
            step = step + _d(H, red.name)
        if grad.upstream is None:
            step = step + _Tex("   (loss fused with the output activation)",
                               r" \quad \text{(fused)}")
        f._add("step", step)
        f._add("index", _el(dn, out) + EQ + _expr(deltas[dn].expr))
    # Parameters and inputs of the outer formula (biases, mostly).
    for t in grad.outer:
        if t.target in deltas or t.target in f._frozen:
            continue
        name = t.target[len("g_"):] if t.target.startswith("g_") else t.target[len("dL_d"):]
        summed = [x for x in loop if x not in t.index]
        step = _d("L", name) + w.op(t.target) + _d("L", H) + CHAIN + _d(H, name)
        same = [d for d, dt in deltas.items() if dt.expr == t.expr]
        if same and len(t.index) == 1:
            step = step + EQ + _sum(summed) + _delta(same[0])
        f._add("step", step + w.use(t.target, node))
        f._add("index", _el(t.target, _index(t.index)) + w.op(t.target) + _sum(summed)
               + _expr(t.expr) + w.source(t.target, node))
    # Parameters and inputs inside the reductions.
    for red in node.reductions:
        dn = delta_name(node, red)
        for prod in grad.products.get(red.name, []):   # δᵀ·X and δ·W, as derived
            if prod.target in f._frozen:
                continue
            op = w.op(prod.target)
            if prod.rule == "weight":
                W, X = red.contraction, prod.operand
                f._add("step", _d("L", W) + op + _d("L", H) + CHAIN + _d(H, W) + EQ
                       + _delta(dn) + TR + DOT + _n(X) + w.use(prod.target, node))
                f._add("index", _el(prod.target, "i,j") + op + _sum("b")
                       + _el(dn, "b,i") + DOT + _el(X, "b,j"))
            else:
                W, X = prod.operand, prod.target[len("dL_d"):]
                f._add("step", _d("L", X) + op + _d("L", H) + CHAIN + _d(H, X) + EQ
                       + _delta(dn) + DOT + _n(W))
                f._add("index", _el(prod.target, "b,j") + op + _sum("i")
                       + _el(dn, "b,i") + DOT + _el(W, "i,j") + w.source(prod.target, node))
        if red.contraction:
            continue
        for t in grad.summands[red.name]:
            if t.target in f._frozen:
                continue
            name = t.target[len("g_"):] if t.target.startswith("g_") else t.target[4:]
            carried = {n for ix in t.index for n in ((ix,) if isinstance(ix, str)
                                                     else ix.names())}
            summed = [n for n, _ in node.reduction_loop(red) if n not in carried]
            f._add("step", _d("L", name) + w.op(t.target) + _d("L", H) + CHAIN + _d(H, name)
                   + w.use(t.target, node))
            if t.route == "argmax":
                f._add("index", _el(t.target, _index(t.index)) + _Tex(" += ")
                       + _expr(t.expr) + _Tex(
                           "   at the first (" + ",".join(n for n, _ in red.space)
                           + ") where "
                           f"{text(red.summand)} = {red.name}[{out}], for every "
                           f"{red.name}[{out}]",
                           r" \quad \text{at the arg-max (first on ties)}"))
                continue
            op = PLUS_EQ if carried - set(t.index) else w.op(t.target)
            f._add("index", _el(t.target, _index(t.index)) + op + _sum(summed)
                   + _expr(t.expr) + w.source(t.target, node))
            if t.gather is not None:
                idx, expr, sums = t.gather
                f._add("index", _Tex("i.e. ", r"\text{i.e. } ")
                       + _el(t.target, ",".join(idx)) + EQ + _sum(sums) + _expr(expr)
                       + _Tex("   (correlation with the flipped kernel; terms outside "
                              f"{delta_name(node, red)} are 0)",
                              r" \quad \text{(flipped kernel)}"))


