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
from ..derive.chain import clean, concat_index
from ..scalar.notation import Phrase as _Tex
from ..scalar.notation import latex_name, text
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


class Walk:
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

def header(w: Walk):
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

def forward(w: Walk):
    f, g = w.f, w.g
    f._add("heading", _Tex("Forward", r"\text{Forward}"))
    for node in g.nodes:
        if node.pieces is not None:
            f._add("step", _Tex(f"{node.name} = [{', '.join(node.inputs)}]   (side by side)",
                                r"%s = \left[%s\right]" % (latex_name(node.name), ", ".join(
                                    latex_name(x) for x in node.inputs))))
            off = 0
            for src, width in node.pieces:
                if len(node.space) > 1:     # a tensor: along its joined axis
                    at = ",".join(ir.index_text(x) for x in concat_index(node, off))
                    idx = ",".join(node.out_index)
                    axis = node.space[node.concat_axis][0]
                    f._add("index", _Tex(f"{node.name}[{at}] = {src}[{idx}]   "
                                         f"({axis} < {width})", None))
                else:
                    f._add("index", _Tex(f"{node.name}[b,{off}+i] = {src}[b,i]   "
                                         f"(i < {width})", None))
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


def _losses(w: Walk):
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
        if rule is not None and rule.groups > 1:     # a class per position
            G, axis = rule.groups, "first axis, channels first," if rule.first else "last axis"
            f._add("step", head + EQ + _Tex(f"inv_batch·Σ_b (1/{G})·Σ_q L_b,q",
                                            r"\frac{1}{B} \sum_{b} \frac{1}{%d} \sum_{q} "
                                            r"L_{b,q}" % G) + note
                   + _note(f"q: the {G} positions of an example, each a row of {rule.n} "
                           f"classes (the {axis} of {o}); below, [b] is one such row"))
            coupled_loss(f, rule)
        elif rule is not None:
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

def local(w: Walk):
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
