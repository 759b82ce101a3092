"""The C spelling of powers: what the printer writes computes what sympy means."""
import math
import re

import pytest
import sympy as sp

from symnet.scalar.cprint import CPrinter

x, y = sp.symbols("x y", positive=True)
HALVES = [(x + 1) ** sp.Rational(-1, 2), y / (x + 1) ** sp.Rational(3, 2),
          (x + 1) ** sp.Rational(3, 2), -4 * y / (x + sp.Float(0.00064)) ** sp.Rational(3, 2),
          y * (x + 1) ** sp.Rational(-3, 2), 2 / (y * (x + 1) ** sp.Rational(-1, 2)),
          (x + 1) ** sp.Rational(-1, 2) * (y + 2) ** sp.Rational(3, 2)]


def as_python(c_text: str) -> str:
    """The C expression as Python: the same operators and precedence for + - * / ( )."""
    text = re.sub(r"\bsqrtf?\(", "sqrt(", c_text)
    return re.sub(r"(\d)F\b", r"\1", text)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("expr", HALVES, ids=str)
def test_half_powers_are_square_roots_that_compute_the_power(dtype, expr):
    c = CPrinter(dtype, {}).doprint(expr)
    assert "pow" not in c and ("sqrtf(" in c) == (dtype == "float32")
    for xv, yv in [(0.3, 1.7), (2.5, 0.2), (11.0, 3.0)]:
        got = eval(as_python(c), {"sqrt": math.sqrt, "x": xv, "y": yv})
        want = float(expr.subs({x: xv, y: yv}))
        assert got == pytest.approx(want, rel=1e-14), c


def test_other_powers_still_print_as_pow():
    assert "powf(" in CPrinter("float32", {}).doprint((x + 1) ** sp.Rational(1, 3) + x ** y)
