"""The derivation of a network with loss terms, for people: the jets (input
derivatives) of each layer as sympy derived them, each term, and ∂L/∂θ by the
chain rule through that extended forward pass — the same operations the C runs
(``symnet.derive.jets``), as text and LaTeX.

>>> import sympy, symnet as sn
>>> tx = sn.Input(2, name="tx")
>>> u = sn.Dense(1, name="u")(sn.Dense(3, "tanh", name="H")(tx))
>>> t, x = sn.coords(tx, "t x")
>>> net = sn.Network(tx, u, loss={"pde": (sn.d(u, t) - sn.d(u, x, x))**2})
>>> text = str(net.formulas())
>>> print(text.splitlines()[12])      # tanh'' = −2·tanh·(1 − tanh²), times z_x²
    H_xx[i] = 2·H_f0[i]·z_H_x[i]²·(H_f0[i]² - 1)
"""

from __future__ import annotations

import re

import sympy as sp

from ..derive import jets


def _params(net):
    out, off = [], 0
    for p in net.graph().params():
        size = 1
        for s in p.shape:
            size *= s
        out.append({"name": p.name, "shape": list(p.shape), "offset": off,
                    "trainable": p.trainable})
        off += size
    return out


class TermFormulas:
    """``str()`` the text, ``latex()`` the LaTeX (an ``align*`` block)."""

    def __init__(self, net):
        self.net = net
        self.sections = []       # (heading, [(lhs, rhs sympy or str, note)])
        names = self._coordinate_names()
        params = _params(net)
        active = {p["name"] for p in params if p["trainable"]}
        for term in net.terms:
            prog = jets.term_program(net, term, params)
            rename = self._renamer(prog, names)
            what = term.loss + " of the outputs against their targets" if term.expr is None \
                else str(term.expr)
            fwd = [self._line(op, rename) for op in prog.ops]
            rev = [self._line(op, rename) for op in jets.reverse(prog, active)]
            self.sections.append((f"loss term {term.name!r} (weight {term.weight:g}, the "
                                  f"mean over its points): {what}", fwd, rev))

    def _coordinate_names(self):
        from ..lang.symbols import Coordinate, Deriv
        names = {}
        for term in self.net.terms:
            if term.expr is not None:
                for s in term.expr.atoms(Coordinate):
                    names[s.unit] = s.name
                for s in term.expr.atoms(Deriv):
                    for c in s.alpha:
                        names[c.unit] = c.name
        return names

    @staticmethod
    def _renamer(prog, names):
        def one(text):
            return re.sub(r"((?:d\d+)+)$", lambda m: "_" + "".join(
                names.get(int(c), f"x{c}") for c in re.findall(r"\d+", m.group(1))), text)

        def rename(name):
            for prefix in ("bar_",):
                if name.startswith(prefix):
                    return "∂L/∂" + one(name[len(prefix):])
            return one(name)
        return rename

    def _line(self, op, rename):
        if isinstance(op, jets.Lin):
            return (f"{rename(op.out)}", f"{op.W}·{rename(op.x)}", "")
        if isinstance(op, jets.LinT):
            return (f"{rename(op.out)}", f"+= {op.W}ᵀ·{rename(op.y)}", "")
        if isinstance(op, jets.Outer):
            return (f"∂L/∂{op.G[4:]}", f"+= {rename(op.y)} ⊗ {rename(op.x)}", "")
        lines = []
        subs = {}
        for sym, var, off, bc in op.args:
            if var == "bar_L":
                subs[sym] = sp.Symbol("w/N")      # the term's weight over its points
                continue
            shown = rename(var)
            subs[sym] = sp.Symbol(f"{shown}[{off}]" if (bc or op.n == 1) else f"{shown}[i]")
        for (o, off), e in zip(op.outs, op.exprs):
            lhs = "L" if o == "L" else (f"{rename(o)}[{off}]" if op.reduce or op.n == 1
                                        else f"{rename(o)}[i]")
            op_text = "+=" if op.acc else "="
            if op.reduce and op.n > 1:
                op_text = "+= Σ_i"
            lines.append((lhs, op_text, e.xreplace(subs)))
        return lines

    @staticmethod
    def _fmt(e) -> str:
        s = str(e) if not isinstance(e, str) else e
        s = s.replace("**2", "²").replace("**3", "³").replace("*", "·")
        return s

    def __str__(self):
        out = ["Loss terms: input derivatives carried forward through the layers (jets, "
               "Faà di Bruno by sympy), then ∂L/∂θ by the chain rule through that pass.",
               "  *_f0: the activation computed once per layer; z_*: the contraction W·a of "
               "each jet entry; H_x = ∂H/∂x, H_xx = ∂²H/∂x²."]
        for heading, fwd, rev in self.sections:
            out.append("")
            out.append(heading)
            out.append("  forward (values and input derivatives):")
            out += self._lines(fwd)
            out.append("  back propagation (∂L/∂·, the chain rule op by op):")
            out += self._lines(rev)
        return "\n".join(out)

    def _lines(self, items):
        out = []
        for item in items:
            if isinstance(item, tuple):
                out.append(f"    {item[0]} = {item[1]}" if not item[1].startswith("+=")
                           else f"    {item[0]} {item[1]}")
            else:
                for lhs, op, e in item:
                    out.append(f"    {lhs} {op} {self._fmt(e)}")
        return out

    def latex(self) -> str:
        """The same derivation as one LaTeX ``align*`` block per term."""
        def tex_name(s):
            s = s.replace("∂L/∂", r"\partial L/\partial ").replace("·", r"\cdot ")
            s = s.replace("ᵀ", r"^{\top}").replace("⊗", r"\otimes ")
            return r"\mathrm{%s}" % s.replace("_", r"\_")
        parts = []
        for heading, fwd, rev in self.sections:
            rows = [r"&\text{%s}" % heading.replace("_", r"\_").replace("'", "")
                    .replace("**", "^").replace("*", r"\cdot ")]
            for item in fwd + rev:
                if isinstance(item, tuple):
                    rows.append(f"{tex_name(item[0])} &= {tex_name(item[1])}")
                else:
                    for lhs, op, e in item:
                        rel = "&=" if op == "=" else r"&\mathrel{+}="
                        names = {q: tex_name(q.name) for q in e.free_symbols}
                        rows.append(f"{tex_name(lhs)} {rel} "
                                    f"{sp.latex(e, symbol_names=names)}")
            parts.append("\\begin{align*}\n" + " \\\\\n".join(rows) + "\n\\end{align*}")
        return "\n".join(parts)
