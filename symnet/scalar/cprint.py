"""Scalar sympy expressions → C99 expressions: symnet's spellings.

One job, as sympy's own ``printing/c.py``: a right-hand side in, C text out
(float or double spelling).  The emitter (``symnet.backend.c.emit``) prints the plan's
expressions with it; ``symnet.scalar.smooth`` uses it, when a formula is declared,
to refuse one that has no C spelling.

>>> import sympy as sp
>>> z = sp.Symbol("z")
>>> CPrinter("float32", {}).doprint(z ** 2 + sp.exp(z))
'z*z + sn_expf(z)'
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.ast import float32, float64, real
from sympy.printing.c import C99CodePrinter

DTYPES = {"float32": "float", "float64": "double"}


class CPrinter(C99CodePrinter):
    """sympy's C99 printer with symnet's spellings.

    Scalar symbols print as the array element they stand for; small integer
    powers as products; Piecewise as one ternary; sigmoid and softplus as the
    stable helpers defined in the template.  With ``plain_names`` a symbol
    outside the map must print as a C identifier (the emitter's last line of
    defence: user text never becomes code).
    """

    def __init__(self, dtype: str, symbol_map: dict, plain_names: bool = False):
        alias = float32 if dtype == "float32" else float64
        super().__init__(settings={"type_aliases": {real: alias}})
        self.symbol_map = symbol_map
        self.plain_names = plain_names
        self.dtype = dtype

    def _print_Symbol(self, expr):
        if expr in self.symbol_map:
            return self.symbol_map[expr]
        name = super()._print_Symbol(expr)
        if self.plain_names and not (name.isidentifier() and name.isascii()):
            raise ValueError(f"symbol {expr.name!r} cannot appear in the generated C")
        return name

    def _print_sigmoid(self, expr):
        return f"sn_sigmoid({self._print(expr.args[0])})"

    def _print_tanh(self, expr):
        if self.dtype == "float32":  # the template's vectorisable tanh
            return f"sn_tanhf({self._print(expr.args[0])})"
        return super()._print_tanh(expr)

    def _print_exp(self, expr):
        if self.dtype == "float32":  # the template's vectorisable exp (templates/expf.c.j2)
            return f"sn_expf({self._print(expr.args[0])})"
        return super()._print_exp(expr)

    def _print_softplus(self, expr):
        return f"sn_softplus({self._print(expr.args[0])})"

    def _print_dropout_mask(self, expr):
        seed, step, training, b, e, p = expr.args
        return (f"sn_dropout({self._print(seed)}, {self._print(step)}, {self._print(training)}, "
                f"(long)({self._print(b)}), (long)({self._print(e)}), {self._print(p)})")

    def _print_Piecewise(self, expr):
        out = self._print(expr.args[-1].expr)
        for e, c in reversed(expr.args[:-1]):
            out = f"(({self._print(c)}) ? ({self._print(e)}) : ({out}))"
        return out

    def _print_Mul(self, expr):
        # sympy prints a·z⁻² as a/<z²>, unparenthesised since a power binds tighter than
        # /; but z² prints here as the product z*z, and a/z*z is a, not a/z²: divide by
        # the product in parentheses.
        factors = sp.Mul.make_args(expr)
        dens = [f for f in factors if f.is_Pow and f.exp.is_Rational and f.exp.is_negative]
        if len(dens) == 1 and dens[0].exp.is_Integer and -4 <= int(dens[0].exp) <= -2:
            num = sp.Mul(*[f for f in factors if f is not dens[0]])
            prec = sp.printing.precedence.PRECEDENCE["Mul"]
            return (f"{self.parenthesize(num, prec, strict=True)}/"
                    f"({self._print(dens[0].base ** -dens[0].exp)})")
        return super()._print_Mul(expr)

    def _print_Pow(self, expr):
        base, exp = expr.args
        if exp.is_Integer and 2 <= int(exp) <= 4:
            b = self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Mul"])
            return "*".join([b] * int(exp))
        if exp.is_Integer and -4 <= int(exp) <= -1:
            return f"1/({self._print(base ** -exp)})" if exp != -1 else \
                f"1/{self.parenthesize(base, sp.printing.precedence.PRECEDENCE['Pow'])}"
        if exp in (sp.Rational(-1, 2), sp.Rational(3, 2), sp.Rational(-3, 2)):
            # a norm's 1/√(v + ε) and its derivative's (v + ε)^(3/2): a square root, which
            # vectorises, instead of a call of pow for each row; parenthesised whole, as
            # the divisor that sympy's Mul prints it as
            root = self._print(sp.sqrt(base, evaluate=False))
            if exp == sp.Rational(-1, 2):
                return f"(1/{root})"
            b = self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Mul"])
            return f"({b}*{root})" if exp > 0 else f"(1/({b}*{root}))"
        return super()._print_Pow(expr)


def numeric(expr: sp.Expr) -> sp.Expr:
    """Evaluate constants (π, √2, e) so the C needs no M_PI-style macros."""
    consts = {a: sp.Float(a.evalf(20), 17) for a in expr.atoms(sp.NumberSymbol)}
    expr = expr.xreplace(consts)
    pows = {a: sp.Float(a.evalf(20), 17) for a in expr.atoms(sp.Pow) if a.is_number}
    return expr.xreplace(pows)


def c_comment(text: str) -> str:
    """Make any text safe inside /* */ (user text reaches comments only)."""
    return " ".join(str(text).replace("*/", "* /").replace("/*", "/ *").split())
