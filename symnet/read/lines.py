"""The lines of ``net.formulas()`` for any network: a chain is a graph with one path.

One walk over the graph writes the header, the forward definitions, the loss, the
local derivatives and back propagation from the outputs down, each node after every
node that reads it, in the notes' notation (∂L/∂W2 = ∂L/∂O · ∂O/∂W2 = δ_Oᵀ·H1) and,
indented, the index forms derive made (``symnet.derive.chain``), which the C prints
in its loop comments.  What only a graph that is not a chain has shows where it
happens: a layer read by several others receives the sum of what each sends back,

    ∂L/∂H1 = ∂L/∂H1 (from H2) + ∂L/∂H1 (from O2)

(the C accumulates dL_dH1 in that order, the index lines say ``+=`` and name the
reader); a layer applied at several places has one set of parameters whose gradient
is the sum over its uses (``(use at d_2)``, and a closing section
∂L/∂W2 = Σ_uses ∂L/∂W2); several outputs each have their loss term, L = L_A + L_B.
Back-propagation through time is this rule over the unrolled steps.
"""

from __future__ import annotations

import sympy as sp

from ..ir import nodes as ir
from ..derive.chain import INV_BATCH, NodeGrad, clean, delta_name, grad_name, upstream_name
from ..scalar.notation import Phrase as _Tex
from ..scalar.notation import latex_element, latex_name, text  # noqa: F401
from ..scalar.notation import phrase_element as _el
from ..scalar.notation import phrase_expr as _expr
from ..scalar.notation import phrase_sum as _sum


def _n(name: str) -> _Tex:
    return _Tex(name, latex_name(name))


def _d(a: str, b: str) -> _Tex:
    return _Tex(f"∂{a}/∂{b}", r"\frac{\partial %s}{\partial %s}" % (latex_name(a),
                                                                    latex_name(b)))


def _delta(name: str) -> _Tex:
    short = name[len("delta_"):]
    return _Tex(f"δ_{short}", latex_name(name))


EQ, DOT, HAD, TR = _Tex(" = "), _Tex("·", r" \cdot "), _Tex(" ⊙ ", r" \odot "), \
    _Tex("ᵀ", r"^{\top}")
PLUS_EQ = _Tex(" += ")
CHAIN = _Tex(" · ", r" \cdot ")   # the notes' chain-rule product
Z = sp.Symbol("z", real=True)
O_, T_ = sp.symbols("o t", real=True)


def _index(index) -> str:
    return ",".join(ir.index_text(x) for x in index)


def _note(t: str) -> _Tex:
    """A remark after a line: "   (from H2)" in the text, \\quad (from H2) in LaTeX."""
    return _Tex(f"   ({t})", r" \quad \text{(%s)}" % t.replace("_", r"\_"))


def activation_label(node: ir.Node) -> str | None:
    """relu, tanh, ... for built-in activations, f_H1 for sympy-defined ones,
    None for layers that are not Dense."""
    if node.kind != "dense" or node.activation is None:
        return None
    name = node.activation.name
    return f"f_{node.name}" if name.startswith("custom:") else name


def _leaves(node, red) -> bool:
    """Whether a reduction's summand reads outside its input (padding)."""
    acc = node.symbols[red.summand]
    extents = {**dict(node.space), **dict(red.space)}
    return any(not isinstance(ix, str) and (ix.bounds(extents)[0] < 0
                                            or ix.bounds(extents)[1] > n - 1)
               for ix, n in zip(acc.index[1:], node.in_shape))


def uses(graph: ir.Graph) -> dict:
    """parameter name -> names of the nodes using it."""
    out: dict = {}
    for node in graph.nodes:
        read = {r.contraction for r in node.reductions} | {
            a.array for a in node.symbols.values()}
        for p in node.params:
            if p.name in read:      # (U of a first recurrent step is declared, not read)
                out.setdefault(p.name, []).append(node.name)
    return out


def _path(graph: ir.Graph) -> list | None:
    """The names along the one path of a chain (input, then every node, each reading
    the one before), or None for any other graph."""
    names = [graph.input_name]
    for node in graph.nodes:
        if node.inputs != [names[-1]]:
            return None
        names.append(node.name)
    return names if len(graph.outputs) == 1 and graph.outputs[0] == names[-1] else None


def _loss_name(loss) -> str:
    return "custom" if loss.name.startswith("custom:") else loss.name


def _shape(p) -> str:
    return str(p.shape) if len(p.shape) > 1 else f"({p.shape[0]},)"


class _Walk:
    """The facts about the graph that the lines need, computed once."""

    def __init__(self, f):
        self.f, self.g = f, f.graph
        self.by_node = {gr.node.name: gr for gr in f.grads}
        self.uses = uses(self.g)
        self.path = _path(self.g)
        self.single = len(self.g.outputs) == 1 and self.g.weights[self.g.outputs[0]] == 1.0

    def readers(self, name: str) -> list[str]:
        return [c.name for c in self.g.consumers(name)]

    def summed(self, target: str) -> bool:
        """Whether a gradient buffer receives terms from several places (a shared
        parameter's uses, a layer's readers): its lines then say +=."""
        if target.startswith("g_"):
            return len(self.uses.get(target[2:], [])) > 1
        if target.startswith("dL_d"):
            name = target[4:]
            return len(self.readers(name)) + (name in self.g.outputs) > 1
        return False

    def source(self, target: str, node: ir.Node) -> _Tex | str:
        """"(from H2)" after an index line of ∂L/∂X when X has several readers."""
        if target.startswith("dL_d") and self.summed(target):
            return _note(f"from {node.name}")
        return ""

    def use(self, target: str, node: ir.Node) -> _Tex | str:
        """"(use at d_2)" after a chain-rule step of a shared parameter's gradient."""
        if target.startswith("g_") and self.summed(target):
            return _note(f"use at {node.name}")
        return ""

    def op(self, target: str) -> _Tex:
        return PLUS_EQ if self.summed(target) else EQ


# ------------------------------------------------------------------ the header

def header(w: _Walk):
    f, g = w.f, w.g
    if w.path is not None:
        loss = _loss_name(g.loss)
        f._add("title", _Tex(f"Network {' → '.join(w.path)}, loss {loss}",
                             r"\text{Network } " + r" \rightarrow ".join(
                                 latex_name(x) for x in w.path)
                             + r"\text{, loss %s}" % loss.replace("_", " ")))
    else:
        terms = [_loss_name(g.loss)] if w.single else []
        for o in g.outputs if not w.single else ():
            name, wt = _loss_name(g.losses[o]), g.weights[o]
            terms.append(f"{name}({o})" if wt == 1.0 else f"{wt:g}·{name}({o})")
        f._add("title", _Tex(f"Network {', '.join(n for n, _ in g.inputs)} → "
                             f"{', '.join(g.outputs)}, loss {' + '.join(terms)}",
                             r"\text{Network } %s \rightarrow %s" % (
                                 ", ".join(latex_name(n) for n, _ in g.inputs),
                                 ", ".join(latex_name(o) for o in g.outputs))))
    shapes = []
    for name, width in g.inputs:
        shape = (g.input_shapes or {}).get(name) or (g.in_shape if len(g.inputs) == 1
                                                     else (width,))
        shapes.append(f"{name}: (B, {', '.join(map(str, shape))})")
    seen = set()
    for node in g.nodes:
        shapes += [f"{p.name}: {_shape(p)}" for p in node.params if p.name not in seen]
        seen.update(p.name for p in node.params)
        shapes.append(f"{node.name}: (B, {', '.join(map(str, node.out_shape))})")
    shapes.append(f"T: (B, {g.n_out})")
    f._add("info", "   ".join(shapes))
    shared = {p: u for p, u in w.uses.items() if len(u) > 1}
    if shared:
        f._add("info", "shared parameters: " + "; ".join(
            f"{p} used by {', '.join(u)}" for p, u in shared.items()))
    if g.packed:
        f._add("info", f"the C takes the inputs side by side in {g.input_name}"
               + ("; targets side by side in T" if len(g.outputs) > 1 else ""))
    elif len(g.outputs) > 1:
        f._add("info", "targets side by side in T: " + ", ".join(
            f"{o} from column {g.target_offset(o)}" for o in g.outputs))
    f._add("info", "B examples in a batch, one per row b; W is (out, in); inv_batch = 1/B.")
    f._add("info", "Indented lines use the names of the generated C, whose loop "
                   "comments show the same formulas.")


# ----------------------------------------------------------------- the forward

def forward(w: _Walk):
    f, g = w.f, w.g
    f._add("heading", _Tex("Forward", r"\text{Forward}"))
    for node in g.nodes:
        if node.pieces is not None:
            f._add("step", _Tex(f"{node.name} = [{', '.join(node.inputs)}]   (side by side)",
                                r"%s = \left[%s\right]" % (latex_name(node.name), ", ".join(
                                    latex_name(x) for x in node.inputs))))
            off = 0
            for src, width in node.pieces:
                f._add("index", _Tex(f"{node.name}[b,{off}+i] = {src}[b,i]   (i < {width})",
                                     None))
                off += width
            continue
        if len(node.space) > 1 or node.kind == "flatten":
            _tensor_forward(f, node)
            continue
        label = activation_label(node)
        if label is not None:
            red = node.reductions[0]
            inner = _n(red.contraction) + DOT + _n(node.input)
            for p in node.params:
                if p.role == "bias":
                    inner = inner + " + " + _n(p.name)
            f._add("step", _n(node.name) + EQ + _n(label) + _Tex("(", r"\left(")
                   + inner + _Tex(")", r"\right)"))
        elif node.kind in ("add", "multiply"):
            op = (" + ", " + ") if node.kind == "add" else (" ⊙ ", r" \odot ")
            f._add("step", _Tex(f"{node.name} = " + op[0].join(node.inputs),
                                f"{latex_name(node.name)} = " + op[1].join(
                                    latex_name(x) for x in node.inputs)))
        elif node.kind == "rnn":
            act = node.activation.name
            act = f"f_{node.name}" if act.startswith("custom:") else act
            W = [r.contraction for r in node.reductions]
            b = next(p.name for p in node.params if p.role == "bias")
            inner = f"{W[0]}·{node.inputs[0]}" + (
                f" + {W[1]}·{node.inputs[1]}" if len(W) > 1 else "") + f" + {b}"
            f._add("step", _Tex(f"{node.name} = {act}({inner})"
                                + ("" if len(W) > 1 else "   (h_0 = 0)"), None))
        elif node.kind == "slice":
            f._add("step", _Tex(f"{node.name} = part of {node.input}", None))
        else:
            args = [p.name for p in node.params] + node.inputs
            f._add("step", _Tex(f"{node.name} = {node.name}({', '.join(args)})",
                                f"{latex_name(node.name)} = {latex_name(node.name)}"
                                f"\\left({', '.join(latex_name(a) for a in args)}"
                                r"\right)"))
        out = ",".join(node.out_index)     # b,i (a row's number: b,a)
        for red in node.reductions:
            if red.contraction:
                rhs = _sum("j") + _el(red.contraction, "i,j") + DOT + _el(node.red_input(red),
                                                                        "b,j")
            elif red.op == "max":
                rhs = _Tex(f"max_{','.join(red.over)} ",
                           r"\max_{%s} " % ",".join(red.over)) + _expr(red.summand)
            else:
                rhs = _sum(red.over) + _expr(red.summand)
            f._add("index", _el(red.name, out) + EQ + rhs)
        f._add("index", _el(node.name, out) + EQ + _expr(node.outer))
    _losses(w)


def _tensor_forward(f, node: ir.Node):
    args = ", ".join([p.name for p in node.params] + list(node.inputs))
    what = f"   ({node.label})" if node.label else ""
    f._add("step", _Tex(f"{node.name} = {node.name}({args}){what}",
                        f"{latex_name(node.name)} = {latex_name(node.name)}\\left("
                        + ", ".join(latex_name(a) for a in args.split(", "))
                        + r"\right)"))
    out = ",".join(node.out_index)
    if node.kind == "flatten":
        shape = node.in_shape
        strides = [1] * len(shape)
        for d in range(len(shape) - 2, -1, -1):
            strides[d] = strides[d + 1] * shape[d + 1]
        names = {1: ["x"], 2: ["c", "x"], 3: ["c", "y", "x"]}[len(shape)] \
            if len(shape) <= 3 else \
            [f"d{k}" for k in range(len(shape))]
        flat = " + ".join(f"{n}·{s}" if s > 1 else n for n, s in zip(names, strides))
        f._add("index", _el(node.name, f"b,{flat}") + EQ
               + _el(node.input, "b," + ",".join(names))
               + _Tex("   (a view: no copy)", r" \quad \text{(a view)}"))
        return
    for red in node.reductions:
        if red.op == "max":
            op = _Tex("max_" + ",".join(n for n, _ in red.space) + " ",
                      r"\max_{%s} " % ",".join(n for n, _ in red.space))
        else:
            op = _sum([n for n, _ in red.space])
        ranges = tex = ", ".join(f"{n} < {e}" for n, e in red.space)
        if red.op == "max" and _leaves(node, red):   # a padded max pool
            ranges += f"; −∞ outside {node.input}"
            tex += r"; -\infty \text{ outside } %s" % latex_name(node.input)
        f._add("index", _el(red.name, out) + EQ + op + _expr(red.summand)
               + _Tex(f"   ({ranges})", r" \quad (%s)" % tex))
    f._add("index", _el(node.name, out) + EQ + _expr(node.outer))


def loss_element(graph: ir.Graph, output: str) -> sp.Expr:
    return sp.sympify(graph.losses[output].element(O_, T_, graph.node(output).n_out))


def _losses(w: _Walk):
    """L = 𝓛(O, T) for one output; L_o per output and their sum for several."""
    f, g = w.f, w.g
    for o in g.outputs:
        rule = w.by_node[o].coupled
        wt = g.weights[o]
        if w.single:
            head = _Tex(f"L = 𝓛({o}, T)", r"L = \mathcal{L}\left(%s, T\right)" % latex_name(o))
        else:
            head = _Tex(f"L_{o}", r"L_{%s}" % latex_name(o))
            if wt != 1.0:
                head = head + EQ + _Tex(f"{wt:g}·L({o})", r"%g \cdot L(%s)" % (
                    wt, latex_name(o)))
        note = "" if w.single else _note(f"T: the columns of {o}")
        if rule is not None:
            f._add("step", head + EQ + _Tex("inv_batch·Σ_b L_b", r"\frac{1}{B} \sum_{b} L_b")
                   + note)
            coupled_loss(f, rule)
        else:
            f._add("step", head + EQ + _Tex("inv_batch·", r"\frac{1}{B} ") + _sum("bi")
                   + _Tex("ℓ(", r"\ell\left(") + _el(o, "b,i") + ", "
                   + _el("T", "b,i") + _Tex(")", r"\right)") + note)
            f._add("index", _Tex("ℓ(o, t)", r"\ell(o, t)") + EQ + _expr(loss_element(g, o)))
    if len(g.outputs) > 1:
        f._add("step", _Tex("L = " + " + ".join(f"L_{o}" for o in g.outputs),
                            "L = " + " + ".join(r"L_{%s}" % latex_name(o)
                                                for o in g.outputs)))


def _row_sum(r) -> _Tex:
    """name[b] = Σ_k summand (or max_k) of a coupled loss."""
    op = _sum("k") if r.op == "sum" else _Tex("max_k ", r"\max_{k} ")
    return _expr(r.symbol) + EQ + op + _expr(r.summand)


def coupled_loss(f, rule):
    """A coupled loss as declared (symnet.derive.coupled): L_b of sums over k."""
    f._add("index", _Tex("L_b") + EQ + _expr(rule.declared))
    for r in rule.declared_sums:
        f._add("index", _row_sum(r))


# ------------------------------------------------------ the local derivatives

def local(w: _Walk):
    f, g = w.f, w.g
    f._add("heading", _Tex("Local derivatives (sympy.diff)", r"\text{Local derivatives}"))
    seen = set()
    for node in g.nodes:
        label = activation_label(node)
        if label is None and node.kind == "conv" and node.activation is not None:
            name = node.activation.name     # a convolution's activation, as for Dense
            label = f"f_{node.name}" if name.startswith("custom:") else name
        if label is None or label in seen:
            continue
        seen.add(label)
        fz = node.activation.expr(Z)
        if text(fz) != f"{label}(z)":
            f._add("step", _n(label) + "(z)" + EQ + _expr(fz))
        f._add("step", _Tex(f"{label}′(z)", latex_name(label) + "'(z)") + EQ
               + _expr(clean(sp.diff(fz, Z))))
    shown = set()
    for o in g.outputs:
        if g.losses[o].element is None:
            continue
        d = clean(sp.diff(loss_element(g, o), O_))
        if d in shown:
            continue
        shown.add(d)
        which = "" if len(g.outputs) == 1 else f" ({o})"
        f._add("step", _Tex(f"∂ℓ/∂o{which}", r"\frac{\partial \ell}{\partial o}") + EQ
               + _expr(d))


# ----------------------------------------------------------------- the backward

def backward(w: _Walk):
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
                if not g.is_input(src):
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


def _output_gradient(w: _Walk, grad: NodeGrad):
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
    f._add("index", _el(up, "b,i") + EQ + _expr(dl)
           + _Tex(f"   (not stored: fused into delta_{out} below)", r" \quad \text{(fused)}"))


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


def _node(w: _Walk, grad: NodeGrad, above: ir.Node | None):
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


def render(f):
    """Every line of the derivation of ``f.graph`` into ``f`` (``f._add``)."""
    w = _Walk(f)
    header(w)
    forward(w)
    local(w)
    backward(w)
