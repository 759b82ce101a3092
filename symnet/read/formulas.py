"""The derivation for people: the chain rule of a network, as text and LaTeX.

``net.formulas()`` lays out, with the network's own names and in the notes'
notation, the forward definitions, the loss, and back propagation from the
output down: each chain-rule step (∂L/∂W2 = ∂L/∂H2 · ∂H2/∂W2), its matrix
form with batch rows (∂L/∂W2 = δ_H2ᵀ·H1) and its index form with the names of
the generated C (g_W2[i,j] = Σ_b delta_H2[b,i]·H1[b,j]).  The index forms
are the expressions ``symnet.derive.chain`` produced and the compiler emits; they
appear verbatim in the loop comments of the C.

>>> import symnet as sn
>>> net = sn.Network(sn.Input(2, name="I"), sn.Dense(1, "tanh", name="O"), loss="mse")
>>> f = net.formulas()
>>> print(f.lines[-1].text)
    g_W1[i,j] = Σ_b delta_O[b,i]·I[b,j]
>>> f.gradient("W1", batch=2).shape        # explicit sympy expressions of I, T, W1, b1
(1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..ir import nodes as ir
from ..derive.chain import (INV_BATCH, NodeGrad, clean, delta_name, derive, grad_name,
                            needs_input_grad, upstream_name)
from ..scalar.notation import Phrase as _Tex
from ..scalar.notation import latex_element, latex_name, text
from ..scalar.notation import phrase_element as _el
from ..scalar.notation import phrase_expr as _expr
from ..scalar.notation import phrase_sum as _sum


@dataclass
class Line:
    """One line of the derivation: Unicode ``text`` (indented) and ``latex``
    (``lhs & = rhs``; None for lines that only the text shows)."""

    kind: str        # "title", "info", "heading", "step" (matrix form), "index"
    text: str
    latex: str | None


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
CHAIN = _Tex(" · ", r" \cdot ")   # the notes' chain-rule product
Z = sp.Symbol("z", real=True)
O_, T_ = sp.symbols("o t", real=True)


def _index(index) -> str:
    return ",".join(ir.index_text(x) for x in index)


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


class Formulas:
    """The chain-rule derivation of a network (see the module docstring).

    ``str(f)`` is Unicode text, ``f.latex()`` one ``aligned`` LaTeX block,
    ``f.lines`` the lines themselves.  ``f.gradient("W2")``, ``f.delta("H1")``
    and ``f.expression(name)`` give sympy expressions (see ``expression``).
    """

    def __init__(self, network, optimizer=None, weight_decay=0.0, clip_norm=None):
        self.network = network
        self.graph = network.graph()
        self.grads: list[NodeGrad] = derive(self.graph)   # output node first
        # gradients of frozen parameters (trainable=False) are not computed, nor
        # anything of the frozen layers at the bottom (derive decides): not shown
        self._frozen = {grad_name(p.name) for p in self.graph.params()
                        if not getattr(p, "trainable", True)}
        if self._frozen:
            self._frozen |= {upstream_name(n) for n, needed in
                             needs_input_grad(self.graph).items() if not needed}
        self._explicit: dict[int, dict] = {}
        self.lines: list[Line] = []
        if network.is_chain:
            self._header()
            self._forward()
            self._local()
            self._backward()
        else:   # merges, several inputs/outputs, shared layers: symnet.read.formulas_graph
            from . import formulas_graph as fg
            fg.header(self)
            fg.forward(self)
            fg.backward(self)
        if optimizer is not None or weight_decay or clip_norm:
            self._update(optimizer or "sgd", weight_decay, clip_norm)

    def _update(self, optimizer, weight_decay, clip_norm):
        """The update with its extra terms (clipping, weight decay): ``symnet.runtime.update``."""
        from ..runtime.update import update_lines
        params = [p.name for p in self.graph.params() if getattr(p, "trainable", True)]
        for k, (t, x) in enumerate(update_lines(params, optimizer, weight_decay, clip_norm)):
            kind = "heading" if k == 0 else "step"
            self._add(kind, _Tex(t if k == 0 else t[2:], x))

    # ------------------------------------------------------------ building
    def _add(self, kind: str, phrase: _Tex | str, lhs_rhs=True):
        phrase = phrase if isinstance(phrase, _Tex) else _Tex(phrase, None)
        indent = {"title": "", "info": "  ", "heading": "", "step": "  ", "index": "    "}
        tex = phrase.x
        if tex is not None and kind in ("step", "index") and " = " in tex:
            lhs, rhs = tex.split(" = ", 1)
            tex = f"{lhs} &= {rhs}"
        elif tex is not None:
            tex = f"& {tex}"
        self.lines.append(Line(kind, indent[kind] + phrase.t, tex))

    def _header(self):
        g = self.graph
        chain = " → ".join([g.input_name] + [n.name for n in g.nodes])
        loss = self.network.loss_name
        loss = "custom" if loss.startswith("custom:") else loss
        self._add("title", _Tex(f"Network {chain}, loss {loss}",
                                r"\text{Network } " + r" \rightarrow ".join(
                                    latex_name(x) for x in [g.input_name]
                                    + [n.name for n in g.nodes])
                                + r"\text{, loss %s}" % loss.replace("_", " ")))
        shapes = [f"{g.input_name}: (B, {', '.join(map(str, g.in_shape))})"]
        for node in g.nodes:
            shapes += [f"{p.name}: {p.shape if len(p.shape) > 1 else f'({p.shape[0]},)'}"
                       for p in node.params]
            shapes.append(f"{node.name}: (B, {', '.join(map(str, node.out_shape))})")
        shapes.append(f"T: (B, {g.n_out})")
        self._add("info", "   ".join(shapes))
        self._add("info", "B examples in a batch, one per row b; W is (out, in); "
                          "inv_batch = 1/B.")
        self._add("info", "Indented lines use the names of the generated C, whose loop "
                          "comments show the same formulas.")

    def _forward(self):
        self._add("heading", _Tex("Forward", r"\text{Forward}"))
        for node in self.graph.nodes:
            if len(node.space) > 1 or node.kind == "flatten":
                self._tensor_forward(node)
                continue
            label = activation_label(node)
            if label is not None:
                red = node.reductions[0]
                inner = _n(red.contraction) + DOT + _n(node.input)
                for p in node.params:
                    if p.role == "bias":
                        inner = inner + " + " + _n(p.name)
                self._add("step", _n(node.name) + EQ + _n(label) + _Tex("(", r"\left(")
                          + inner + _Tex(")", r"\right)"))
            else:
                args = ", ".join([p.name for p in node.params] + [node.input])
                self._add("step", _Tex(f"{node.name} = {node.name}({args})",
                                       f"{latex_name(node.name)} = {latex_name(node.name)}"
                                       f"\\left({', '.join(latex_name(a) for a in args.split(', '))}"
                                       r"\right)"))
            out = ",".join(node.out_index)     # b,i (a row's number: b,a)
            for red in node.reductions:
                if red.contraction:
                    rhs = _sum("j") + _el(red.contraction, "i,j") + DOT + _el(node.input, "b,j")
                elif red.op == "max":
                    rhs = _Tex(f"max_{','.join(red.over)} ",
                               r"\max_{%s} " % ",".join(red.over)) + _expr(red.summand)
                else:
                    rhs = _sum(red.over) + _expr(red.summand)
                self._add("index", _el(red.name, out) + EQ + rhs)
            rhs = _expr(node.outer)
            self._add("index", _el(node.name, out) + EQ + rhs)
        out = self.graph.output.name
        head = _Tex(f"L = 𝓛({out}, T)", r"L = \mathcal{L}\left(%s, T\right)" % latex_name(out))
        if self.graph.loss.element is None:
            self._add("step", head + EQ + _Tex(
                f"inv_batch·Σ_b (logsumexp({out}[b,:])·Σ_k T[b,k] - Σ_k T[b,k]·{out}[b,k])",
                r"\frac{1}{B} \sum_{b} \left(\log \sum_{k} e^{%s} \sum_{k} T[b,k] - "
                r"\sum_{k} T[b,k] \cdot %s\right)" % (latex_element(f"{out}[b,k]"),
                                                      latex_element(f"{out}[b,k]"))))
            self._add("index", _Tex("= -inv_batch·Σ_b Σ_k T[b,k]·log softmax("
                                    f"{out}[b,:])_k when each row of T sums to 1", None))
        else:
            self._add("step", head + EQ + _Tex("inv_batch·", r"\frac{1}{B} ") + _sum("bi")
                      + _Tex("ℓ(", r"\ell\left(") + _el(out, "b,i") + ", "
                      + _el("T", "b,i") + _Tex(")", r"\right)"))
            self._add("index", _Tex("ℓ(o, t)", r"\ell(o, t)") + EQ + _expr(self._loss_element()))

    def _tensor_forward(self, node: ir.Node):
        args = ", ".join([p.name for p in node.params] + list(node.inputs))
        what = f"   ({node.label})" if node.label else ""
        self._add("step", _Tex(f"{node.name} = {node.name}({args}){what}",
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
            self._add("index", _el(node.name, f"b,{flat}") + EQ
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
            self._add("index", _el(red.name, out) + EQ + op + _expr(red.summand)
                      + _Tex(f"   ({ranges})", r" \quad (%s)" % tex))
        self._add("index", _el(node.name, out) + EQ + _expr(node.outer))

    def _loss_element(self) -> sp.Expr:
        return sp.sympify(self.graph.loss.element(O_, T_, self.graph.n_out))

    def _local(self):
        self._add("heading", _Tex("Local derivatives (sympy.diff)",
                                  r"\text{Local derivatives}"))
        seen = set()
        for node in self.graph.nodes:
            label = activation_label(node)
            if label is None and node.kind == "conv" and node.activation is not None:
                name = node.activation.name     # a convolution's activation, as for Dense
                label = f"f_{node.name}" if name.startswith("custom:") else name
            if label is None or label in seen:
                continue
            seen.add(label)
            f = node.activation.expr(Z)
            if text(f) != f"{label}(z)":
                self._add("step", _n(label) + "(z)" + EQ + _expr(f))
            self._add("step", _Tex(f"{label}′(z)", latex_name(label) + "'(z)") + EQ
                      + _expr(clean(sp.diff(f, Z))))
        if self.graph.loss.element is not None:
            self._add("step", _Tex("∂ℓ/∂o", r"\frac{\partial \ell}{\partial o}") + EQ
                      + _expr(clean(sp.diff(self._loss_element(), O_))))

    def _backward(self):
        self._add("heading", _Tex("Backward, from the output down",
                                  r"\text{Backward, from the output down}"))
        nodes = self.graph.nodes
        for grad in self.grads:
            node = grad.node
            k = nodes.index(node)
            above = nodes[k + 1] if k + 1 < len(nodes) else None
            if above is None:
                self._output_gradient(grad)
            if upstream_name(node.name) not in self._frozen:   # frozen at the bottom
                self._node(grad, above)

    def _output_gradient(self, grad: NodeGrad):
        out = grad.node.name
        up = upstream_name(out)
        if self.graph.loss.element is None:
            self._add("step", _d("L", out) + EQ + _Tex(
                f"inv_batch·(softmax({out})·Σ_k T[b,k] - T)",
                r"\frac{1}{B} \left(\mathrm{softmax}(%s) \sum_{k} T[b,k] - T\right)"
                % latex_name(out)))
            self._add("index", _Tex(f"{up}[b,k] = inv_batch·(softmax({out}[b,:])_k·Σ_j T[b,j]"
                                    " - T[b,k])",
                                    r"%s[b,k] = \frac{1}{B} \left(\mathrm{softmax}(%s[b,:])_k"
                                    r" \sum_{j} T[b,j] - T[b,k]\right)"
                                    % (latex_name(up), latex_name(out))))
            return
        dl = clean(sp.diff(self._loss_element(), O_))
        dl = INV_BATCH * dl.xreplace({O_: sp.Symbol(f"{out}[b,i]", real=True),
                                      T_: sp.Symbol("T[b,i]", real=True)})
        self._add("step", _d("L", out) + EQ + _Tex("inv_batch·∂ℓ/∂o",
                                                   r"\frac{1}{B} \frac{\partial \ell}"
                                                   r"{\partial o}"))
        self._add("index", _el(up, "b,i") + EQ + _expr(dl)
                  + _Tex(f"   (not stored: fused into delta_{out} below)",
                         r" \quad \text{(fused)}"))

    def _node(self, grad: NodeGrad, above: ir.Node | None):
        node, H = grad.node, grad.node.name
        if node.kind == "flatten":
            self._add("step", _d("L", node.input) + EQ + _d("L", H)
                      + _Tex("   (the same numbers: Flatten is a view)", r" \quad \text{(view)}"))
            return
        label = activation_label(node)
        loop = tuple(node.out_index)
        out = ",".join(loop)
        deltas = {t.target: t for t in grad.outer if t.target.startswith("delta_")}
        for red in node.reductions:
            dn = delta_name(node, red)
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
            self._add("step", step)
            self._add("index", _el(dn, out) + EQ + _expr(deltas[dn].expr))
        # Parameters and inputs of the outer formula (biases, mostly).
        for t in grad.outer:
            if t.target in deltas or t.target in self._frozen:
                continue
            name = t.target[len("g_"):] if t.target.startswith("g_") else \
                t.target[len("dL_d"):] if t.target.startswith("dL_d") else node.input
            summed = [x for x in loop if x not in t.index]
            step = _d("L", name) + EQ + _d("L", H) + CHAIN + _d(H, name)
            same = [d for d, dt in deltas.items() if dt.expr == t.expr]
            if same and len(t.index) == 1:
                step = step + EQ + _sum(summed) + _delta(same[0])
            self._add("step", step)
            self._add("index", _el(t.target, _index(t.index)) + EQ + _sum(summed)
                      + _expr(t.expr))
        # Parameters and inputs inside the reductions.
        for red in node.reductions:
            dn, X = delta_name(node, red), node.input
            for prod in grad.products.get(red.name, []):   # δᵀ·X and δ·W, as derived
                W = red.contraction
                if prod.target in self._frozen:
                    continue
                if prod.rule == "weight":
                    self._add("step", _d("L", W) + EQ + _d("L", H) + CHAIN + _d(H, W) + EQ
                              + _delta(dn) + TR + DOT + _n(X))
                    self._add("index", _el(prod.target, "i,j") + EQ + _sum("b")
                              + _el(dn, "b,i") + DOT + _el(X, "b,j"))
                else:
                    self._add("step", _d("L", X) + EQ + _d("L", H) + CHAIN + _d(H, X) + EQ
                              + _delta(dn) + DOT + _n(W))
                    self._add("index", _el(prod.target, "b,j") + EQ + _sum("i")
                              + _el(dn, "b,i") + DOT + _el(W, "i,j"))
            if red.contraction:
                continue
            for t in grad.summands[red.name]:
                if t.target in self._frozen:
                    continue
                name = t.target[len("g_"):] if t.target.startswith("g_") else \
                    t.target[len("dL_d"):] if t.target.startswith("dL_d") else X
                carried = {n for ix in t.index for n in ((ix,) if isinstance(ix, str)
                                                         else ix.names())}
                summed = [n for n, _ in node.reduction_loop(red) if n not in carried]
                self._add("step", _d("L", name) + EQ + _d("L", H) + CHAIN + _d(H, name))
                if t.route == "argmax":
                    self._add("index", _el(t.target, _index(t.index)) + _Tex(" += ")
                              + _expr(t.expr) + _Tex(
                                  "   at the first (" + ",".join(n for n, _ in red.space)
                                  + ") where "
                                  f"{text(red.summand)} = {red.name}[{out}], for every "
                                  f"{red.name}[{out}]",
                                  r" \quad \text{at the arg-max (first on ties)}"))
                    continue
                op = _Tex(" += ", " += ") if carried - set(t.index) else EQ
                self._add("index", _el(t.target, _index(t.index)) + op + _sum(summed)
                          + _expr(t.expr))
                if t.gather is not None:
                    idx, expr, sums = t.gather
                    self._add("index", _Tex("i.e. ", r"\text{i.e. } ")
                              + _el(t.target, ",".join(idx)) + EQ + _sum(sums) + _expr(expr)
                              + _Tex("   (correlation with the flipped kernel; terms outside "
                                     f"{delta_name(node, red)} are 0)",
                                     r" \quad \text{(flipped kernel)}"))

    # ------------------------------------------------------------- showing
    def __str__(self):
        out = []
        for line in self.lines:
            if line.kind == "heading":
                out.append("")
            out.append(line.text)
        return "\n".join(out)

    def __repr__(self):
        return f"<symnet.Formulas of {self.network!r}>"

    def latex(self) -> str:
        """The derivation as one ``aligned`` LaTeX block, a line per step."""
        body = " \\\\\n".join(line.latex for line in self.lines if line.latex is not None)
        return "\\begin{aligned}\n" + body + "\n\\end{aligned}"

    def _repr_latex_(self):
        return "$$\n" + self.latex() + "\n$$"

    # ------------------------------------------------------ sympy objects
    def arguments(self, batch: int = 1) -> list:
        """The inputs of ``expression``'s results, in the order to pass to a
        lambdified function: the input (batch, n_in), the target T and every
        parameter in ``model.params`` order, as ``sympy.IndexedBase``."""
        from .explicit import arguments
        return arguments(self.graph, batch)

    def expression(self, name: str, batch: int = 1):
        """Any array of the derivation, by its name in the C (``H1``, ``z_H1``,
        ``delta_H1``, ``dL_dH1``, ``g_W1``) or ``"L"``, written out for a batch
        of ``batch`` examples: a ``sympy.Array`` of the array's shape whose
        entries are closed-form expressions in ``arguments(batch)``.  Each
        entry is the derived rule (the index line) applied to explicit
        elements, so a lambdified gradient computes what the C computes.

        >>> import sympy, numpy as np, symnet as sn
        >>> f = sn.Network(sn.Input(2), sn.Dense(1), loss="mse").formulas()
        >>> g = sympy.lambdify(f.arguments(), f.gradient("b1"))
        >>> g(np.array([[1.0, 2.0]]), np.array([[0.5]]), np.zeros((1, 2)), np.zeros(1))
        array([-1.])
        """
        from .explicit import evaluate
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        if batch not in self._explicit:
            self._explicit[batch] = evaluate(self.graph, self.grads, batch)
        env = self._explicit[batch]
        if name not in env:
            raise ValueError(f"no array {name!r} in the derivation; known: "
                             f"{', '.join(sorted(env))}")
        value = env[name]
        return value if name == "L" else sp.Array(value.tolist())

    def gradient(self, param: str, batch: int = 1):
        """∂L/∂param (the C's ``g_<param>``) for a batch of ``batch`` examples,
        shaped like the parameter; see ``expression``."""
        params = [p.name for p in self.graph.params()]
        if param not in params:
            raise ValueError(f"no parameter {param!r}; parameters: {', '.join(params)}")
        return self.expression(grad_name(param), batch)

    def delta(self, layer: str, batch: int = 1):
        """δ of a layer: ∂L/∂z, the gradient at its pre-activation sum
        (the C's ``delta_<layer>``), shape (batch, units); see ``expression``."""
        names = {delta_name(n, r): n for n in self.graph.nodes for r in n.reductions}
        name = layer if layer in names else f"delta_{layer}"
        if name not in names:
            raise ValueError(f"no delta for {layer!r}; deltas: {', '.join(names)}")
        return self.expression(name, batch)

    def lambdify(self, name: str, batch: int = 1):
        """``expression(name, batch)`` as a numpy function of
        ``(X, T, *model.params.values())`` returning an array of the array's
        shape.  Same as ``sympy.lambdify(f.arguments(batch), expr, cse=True)``
        but fast: the expressions nest every layer below, and sympy.lambdify
        walks them as trees; here ``sympy.cse`` shares the repeats first.

        >>> import numpy as np, symnet as sn
        >>> f = sn.Network(sn.Input(2), sn.Dense(1), loss="mse").formulas()
        >>> g = f.lambdify("g_W1")
        >>> g(np.array([[1.0, 2.0]]), np.array([[0.5]]), np.zeros((1, 2)), np.zeros(1))
        array([[-1., -2.]])
        """
        import numpy as np
        value = self.expression(name, batch)
        shape = () if name == "L" else value.shape
        flat = [value] if name == "L" else list(sp.flatten(value.tolist()))
        with sp.evaluate(False):   # evaluating would query assumptions on huge sums
            reps, reduced = sp.cse(flat, order="none")
        fn = sp.lambdify(self.arguments(batch), reduced, modules="numpy",
                         cse=lambda exprs: (reps, exprs))

        def evaluate(*arrays):
            return np.asarray(fn(*arrays), dtype=float).reshape(shape)
        evaluate.__doc__ = f"{name} for a batch of {batch}: {self.arguments(batch)}"
        return evaluate

    def rule(self, name: str) -> sp.Expr:
        """The element formula the compiler emits for ``name`` (e.g.
        ``delta_H1`` → dL_dH1[b,i]·relu′(z_H1[b,i])), summed over the loop
        indices it does not carry; symbols stand for array elements."""
        for grad in self.grads:
            terms = grad.outer + [t for ts in grad.summands.values() for t in ts]
            found = [t.expr for t in terms if t.target == name]
            if found:
                return sp.Add(*found)
        raise ValueError(f"no element rule for {name!r}")
