"""Is a user's formula differentiable, and can its derivative be written in C?

Checked once, when a layer, activation or loss is declared, so that a bad
formula fails with a message naming the layer and the culprit instead of
deep inside code generation:

- piecewise-constant functions (floor, ceiling, sign, frac, rounding) have
  derivative zero almost everywhere: nothing would train through them;
- sympy must give every derivative in closed form (no ``Derivative(...)``
  left over, e.g. for an undefined function f(x));
- the formula and its derivatives must have a C spelling (``gamma`` is
  fine, its derivative ``polygamma`` is not).

Kinks are allowed: |x|, Max, Min and Piecewise have derivative 0 exactly at
the kink (see ``clean``), as ReLU′(0) = 0.

>>> import sympy as sp
>>> z = sp.Symbol("z", real=True)
>>> check_smooth(sp.floor(z), [z], "activation of layer 'H1'")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: activation of layer 'H1': floor(z) has derivative zero almost everywhere, ...
"""

from __future__ import annotations

import sympy as sp

# Functions whose derivative is zero wherever it exists.
PIECEWISE_CONSTANT = (sp.functions.elementary.integers.RoundFunction, sp.sign, sp.frac,
                      sp.Heaviside, sp.DiracDelta, sp.KroneckerDelta)


def clean(expr: sp.Expr) -> sp.Expr:
    """Sympy's Heaviside(0) = 1/2 must not leak: the kink takes derivative 0."""
    expr = expr.replace(lambda e: isinstance(e, sp.Heaviside),
                        lambda e: sp.Piecewise((1, e.args[0] > 0), (0, True)))
    return expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)


def _printable(expr: sp.Expr, what: str, where: str) -> None:
    from sympy.printing.codeprinter import PrintMethodNotImplementedError

    from .cprint import CPrinter, numeric
    try:
        CPrinter("float64", {}).doprint(numeric(expr))
    except PrintMethodNotImplementedError as exc:
        culprit = str(exc).split("\n")[0].split(":")[-1].strip()
        raise ValueError(f"{where}: {what} {expr} uses {culprit}, which has no C99 "
                         "spelling; write the formula with elementary functions") from None


def check_smooth(expr: sp.Expr, variables, where: str) -> None:
    """Raise ValueError unless ``expr`` is differentiable in each variable
    with a derivative sympy can give and C can spell."""
    for f in sp.preorder_traversal(expr):
        if isinstance(f, PIECEWISE_CONSTANT):
            if f.free_symbols & set(variables):
                raise ValueError(
                    f"{where}: {f} has derivative zero almost everywhere, so no gradient "
                    "flows through it; use a smooth function (or Max/Abs for a kink)")
        if isinstance(f, sp.core.function.AppliedUndef):
            raise ValueError(f"{where}: unknown function {f.func} in {expr}; use sympy's "
                             "functions (exp, log, tanh, ...) or symnet's sigmoid/softplus")
    _printable(expr, "formula", where)
    for v in variables:
        if v not in expr.free_symbols:
            continue
        d = clean(sp.diff(expr, v))
        leftover = d.atoms(sp.Derivative, sp.Subs)
        if leftover:
            culprit = sorted(leftover, key=str)[0]
            raise ValueError(f"{where}: sympy cannot differentiate {expr} with respect to "
                             f"{v} (it leaves {culprit})")
        _printable(d, f"the derivative by {v},", where)


def unknown_symbols(expr: sp.Expr, known) -> list[str]:
    """Names of the free symbols of ``expr`` that are not in ``known``."""
    return sorted(str(s) for s in expr.free_symbols - set(known))
