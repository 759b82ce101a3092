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

from ..derive.chain import NodeGrad, delta_name, derive, grad_name, needs_input_grad, \
    upstream_name
from ..scalar.notation import Phrase as _Tex
from .lines import Walk, forward, header, local
from .lines_backward import backward


@dataclass
class Line:
    """One line of the derivation: Unicode ``text`` (indented) and ``latex``
    (``lhs & = rhs``; None for lines that only the text shows)."""

    kind: str        # "title", "info", "heading", "step" (matrix form), "index"
    text: str
    latex: str | None


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
        # symnet.read.lines and lines_backward: the same walk for chains and graphs
        walk = Walk(self)
        for part in (header, forward, local, backward):
            part(walk)
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
