"""Scalar primitives: one record per activation and per loss.

Each record holds the sympy form of the function; its derivative comes from
``sympy.diff``.  Two functions get their own sympy class so that their
derivatives stay finite in floating point (``sigmoid`` and ``softplus``);
their C spellings live in the printer (``emit.py``) and the template.

Adding an activation touches ``ACTIVATIONS`` here and one row of the
gradient-check table in ``tests/``.

>>> import sympy
>>> z = sympy.Symbol("z")
>>> activation("tanh").function(z)
tanh(z)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import sympy as sp

from .guards import check_expression


class sigmoid(sp.Function):
    """σ(x) = 1 / (1 + e^{−x}), printed as a stable C helper."""

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))

    def _latex(self, printer):
        return r"\sigma\left(%s\right)" % printer._print(self.args[0])


class softplus(sp.Function):
    """softplus(x) = log(1 + e^{x}); its derivative is σ(x), never inf/inf."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_log(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))

    def _latex(self, printer):
        return r"\operatorname{softplus}\left(%s\right)" % printer._print(self.args[0])


# ---------------------------------------------------------------- activations

@dataclass(frozen=True)
class Activation:
    """An activation f(z): its name, sympy form and a test domain."""

    name: str
    function: Callable[[sp.Symbol], sp.Expr]
    domain: tuple[float, float] = (-3.0, 3.0)
    init: str = "glorot"  # weight initialisation suited to it: "glorot" or "he"

    def expr(self, z: sp.Symbol) -> sp.Expr:
        return sp.sympify(self.function(z))


def _piecewise(pos, neg):
    return lambda z: sp.Piecewise((pos(z), z > 0), (neg(z), True))


_GELU_C = 0.7978845608028654  # sqrt(2/pi)

ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("linear", lambda z: z),
        # Piecewise kinks take the left branch at exactly 0: ReLU'(0) = 0.
        Activation("relu", _piecewise(lambda z: z, lambda z: sp.S.Zero), init="he"),
        Activation("tanh", sp.tanh),
        Activation("sigmoid", sigmoid),
        Activation("softplus", softplus),
        Activation("leaky_relu", _piecewise(lambda z: z, lambda z: sp.Float(0.01) * z),
                   init="he"),
        Activation("elu", _piecewise(lambda z: z, lambda z: sp.exp(z) - 1), init="he"),
        Activation("gelu", lambda z: sp.Float(0.5) * z
                   * (1 + sp.tanh(sp.Float(_GELU_C) * (z + sp.Float(0.044715) * z**3))),
                   init="he"),
        Activation("swish", lambda z: z * sigmoid(z), init="he"),
    ]
}


def activation(spec) -> Activation:
    """Resolve an activation given by name, sympy expression or Python function.

    A sympy expression must contain exactly one free symbol, which plays z.
    A Python function is called with a sympy symbol and must return an
    expression of it.
    """
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        try:
            return ACTIVATIONS[spec]
        except KeyError:
            raise ValueError(
                f"unknown activation {spec!r}; known: {', '.join(ACTIVATIONS)}, "
                "or a sympy expression / Python function of one symbol") from None
    if isinstance(spec, sp.Basic):
        free = sorted(spec.free_symbols, key=str)
        if len(free) != 1:
            raise ValueError(
                f"an activation expression needs exactly one free symbol, "
                f"got {len(free)} in {spec}")
        sym = free[0]
        check_expression(spec, "activation")
        return Activation(f"custom:{sp.srepr(spec)}",
                          lambda z, e=spec, s=sym: e.xreplace({s: z}))
    if callable(spec):
        z = sp.Symbol("z", real=True)
        try:
            e = sp.sympify(spec(z))
        except Exception as exc:  # the user's function failed on a symbol
            raise ValueError(
                f"activation function {getattr(spec, '__name__', spec)!r} could not be "
                f"evaluated on a sympy symbol: {exc}") from exc
        if not isinstance(e, sp.Basic) or e.free_symbols - {z}:
            raise ValueError(
                f"activation function {getattr(spec, '__name__', spec)!r} must return a "
                f"sympy expression of its one argument, got {e!r}")
        check_expression(e, "activation")
        name = getattr(spec, "__name__", "custom")
        if name == "<lambda>" or not name.isidentifier():
            name = "custom"
        return Activation(f"custom:{sp.srepr(e)}", lambda w, e=e: e.xreplace({z: w}),
                          init="glorot")
    raise ValueError(f"activation must be a name, sympy expression or function, got {spec!r}")


def activation_label(act: Activation) -> str:
    """A short human name ('relu', or the expression for custom ones)."""
    if act.name.startswith("custom:"):
        return str(act.expr(sp.Symbol("z")))
    return act.name


# --------------------------------------------------------------------- losses

@dataclass(frozen=True)
class Loss:
    """A per-example loss, averaged over the batch.

    ``element(o, t, n)`` is the contribution of one output element when the
    output has n elements (the per-example loss is the sum over outputs);
    ``element`` is None for losses that couple the outputs (softmax).
    """

    name: str
    element: Callable | None


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in [
        Loss("mse", lambda o, t, n: (o - t) ** 2 / n),
        Loss("bce", lambda o, t, n: -(t * sp.log(o) + (1 - t) * sp.log(1 - o)) / n),
        Loss("softmax_cross_entropy", None),
    ]
}


def loss(spec) -> Loss:
    """Resolve a loss by name or as a sympy expression of (o, t).

    A custom loss is a sympy expression in two symbols named ``o`` and ``t``
    (an output element and its target), or a Python function ``f(o, t)``;
    it is summed over outputs and averaged over the batch.
    """
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, str):
        try:
            return LOSSES[spec]
        except KeyError:
            raise ValueError(
                f"unknown loss {spec!r}; known: {', '.join(LOSSES)}, or a sympy "
                "expression of symbols o and t") from None
    o, t = sp.symbols("o t", real=True)
    if isinstance(spec, sp.Basic):
        names = {s.name: s for s in spec.free_symbols}
        extra = set(names) - {"o", "t"}
        if extra:
            raise ValueError(
                f"a custom loss may use only the symbols o (output) and t (target); "
                f"found {', '.join(sorted(extra))} in {spec}")
        e = spec.xreplace({names[k]: {"o": o, "t": t}[k] for k in names})
    elif callable(spec):
        if len(inspect.signature(spec).parameters) != 2:
            raise ValueError("a custom loss function takes two arguments (o, t)")
        e = sp.sympify(spec(o, t))
        if e.free_symbols - {o, t}:
            raise ValueError(f"custom loss has unknown symbols: {e.free_symbols - {o, t}}")
    else:
        raise ValueError(f"loss must be a name or sympy expression, got {spec!r}")
    check_expression(e, "loss")
    return Loss(f"custom:{sp.srepr(e)}",
                lambda oo, tt, n, e=e: e.xreplace({o: oo, t: tt}))


def stabilise(expr: sp.Expr) -> sp.Expr:
    """Rewrite sub-expressions that overflow in floating point to stable forms.

    log(σ(x)) → −softplus(−x), log(1 − σ(x)) → −softplus(x), and
    exp(x)/(1 + exp(x)) style ratios are left to the custom functions above.
    """
    a = sp.Wild("a")
    expr = expr.replace(sp.log(sigmoid(a)), -softplus(-a))
    expr = expr.replace(sp.log(1 - sigmoid(a)), -softplus(a))
    expr = expr.replace(sp.log(-sigmoid(a) + 1), -softplus(a))
    return expr
