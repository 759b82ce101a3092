"""How element formulas read for people: plain Unicode text and LaTeX.

The derivation's scalar symbols are named after the array element they stand
for (``W1[i,j]``, ``delta_H1[b,i]``, the names of the generated C), so the
text printer keeps those names and only makes the operators readable:
``·`` for products, ``²`` for small powers, ``(1 if z > 0 else 0)`` for a
kink.  The same printer writes the loop comments of the generated C, which is
what lets a reader find a line of the derivation in the C and back.

>>> import sympy as sp
>>> x = sp.Symbol("dL_dH1[b,i]")
>>> text(x * (1 - sp.Symbol("H1[b,i]") ** 2))
'dL_dH1[b,i]·(1 - H1[b,i]²)'
>>> latex_name("delta_H1")
'\\\\delta_{H_{1}}'
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_ELEMENT = re.compile(r"^(\w+)\[([^\[\]]*)\]$")


def _is_indicator(expr: sp.Piecewise) -> bool:
    """Piecewise((1, c), (0, True)): the derivative of a kink."""
    return (len(expr.args) == 2 and expr.args[0].expr == 1 and expr.args[1].expr == 0
            and expr.args[1].cond == sp.true)


class TextPrinter(StrPrinter):
    """sympy's str printer with · for products and superscript powers."""

    def __init__(self):
        super().__init__({"full_prec": False})

    def _print_Pow(self, expr):
        base, exp = expr.args
        if exp.is_Integer and 2 <= int(exp) <= 9:
            return self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Pow"]) + \
                str(int(exp)).translate(_SUPERSCRIPT)
        return super()._print_Pow(expr).replace("**", "^")

    def _print_Piecewise(self, expr):
        out = self._print(expr.args[-1].expr)
        for e, c in reversed(expr.args[:-1]):
            out = f"({self._print(e)} if {self._print(c)} else {out})"
        return out

    def _print_sigmoid(self, expr):
        return f"σ({self._print(expr.args[0])})"

    def _print_Mul(self, expr):
        # StrPrinter joins factors with "*"; names never contain "*", powers are
        # printed above without "**", so every "*" left here is a product.
        return super()._print_Mul(expr).replace("*", "·")


def text(expr) -> str:
    """One scalar formula as readable Unicode text."""
    return TextPrinter().doprint(sp.sympify(expr))


def latex_name(name: str) -> str:
    """An array name in LaTeX: W1 → W_{1}, z_H1 → z_{H_{1}}, delta_H1 → δ_{H_{1}},
    dL_dH1 → ∂L/∂H_{1}, g_W1 → ∂L/∂W_{1}; other names upright."""
    if name in ("inv_batch", "inv_stat"):
        return r"\frac{1}{B}"
    for prefix, fmt in (("delta_", r"\delta_{%s}"), ("z_", r"z_{%s}"),
                        ("dL_d", r"\frac{\partial L}{\partial %s}"),
                        ("g_", r"\frac{\partial L}{\partial %s}")):
        if name.startswith(prefix) and len(name) > len(prefix):
            return fmt % latex_name(name[len(prefix):])
    m = re.fullmatch(r"([A-Za-z]+)(\d+)", name)
    if m and len(m.group(1)) == 1:
        return f"{m.group(1)}_{{{m.group(2)}}}"
    if len(name) == 1:
        return name
    return r"\mathrm{%s}" % name.replace("_", r"\_")


def latex_element(name: str) -> str:
    """``delta_H1[b,i]`` → ``\\delta_{H_{1}}[b,i]``; plain names as latex_name."""
    m = _ELEMENT.match(name)
    if not m:
        return latex_name(name)
    array, index = m.groups()
    base = latex_name(array)
    if base.startswith(r"\frac"):  # a fraction reads badly with a subscript
        base = r"\left(%s\right)" % base
    index = index.replace("*", r" \cdot ")
    return f"{base}[{index}]"


class TexPrinter(LatexPrinter):
    """sympy's LaTeX printer with element names and no ``cases`` environment
    (matplotlib's mathtext, which the tests render with, has none)."""

    def __init__(self):
        super().__init__({"mul_symbol": "dot", "full_prec": False})

    def _print_Symbol(self, expr, style="plain"):
        return latex_element(expr.name)

    def _print_Piecewise(self, expr):
        if _is_indicator(expr):
            return r"\left[%s\right]" % self._print(expr.args[0].cond)
        out = self._print(expr.args[-1].expr)
        for e, c in reversed(expr.args[:-1]):
            out = r"\left(%s \;\mathrm{if}\; %s \;\mathrm{else}\; %s\right)" % (
                self._print(e), self._print(c), out)
        return out

    def _print_softplus(self, expr, exp=None):
        return r"\mathrm{softplus}\left(%s\right)" % self._print(expr.args[0])


def latex(expr) -> str:
    """One scalar formula as LaTeX (renders with matplotlib's mathtext)."""
    return TexPrinter().doprint(sp.sympify(expr))


# ------------------------------------------------ phrases of the derivation
# (symnet.read.lines writes the derivation's lines with these)

class Phrase:
    """A phrase written twice, as text and as LaTeX; ``+`` concatenates."""

    def __init__(self, t: str, x: str | None | type = str):
        self.t, self.x = t, t if x is str else x   # x=None: a text-only phrase

    def __add__(self, other):
        other = other if isinstance(other, Phrase) else Phrase(other)
        both = None if self.x is None or other.x is None else self.x + other.x
        return Phrase(self.t + other.t, both)


def phrase_element(array: str, index: str) -> Phrase:
    """``array[index]``, e.g. ``W1[i,j]``."""
    return Phrase(f"{array}[{index}]", latex_element(f"{array}[{index}]"))


def phrase_sum(indices) -> Phrase:
    """Σ over each of ``indices``, in order."""
    return Phrase("".join(f"Σ_{k} " for k in indices),
                  "".join(r"\sum_{%s} " % k for k in indices))


def phrase_expr(e: sp.Expr) -> Phrase:
    """An expression in both notations."""
    return Phrase(text(e), latex(e))
