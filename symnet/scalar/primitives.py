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


class sigmoid(sp.Function):
    """σ(x) = 1 / (1 + e^{−x}), printed as a stable C helper."""

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))

    def _eval_is_real(self):
        # real (and positive) on a real argument: sympy then differentiates |σ(a) − t|
        # as sign(·)·σ′, not through re/im, which have no C spelling
        return self.args[0].is_real

    def _eval_is_positive(self):
        return self.args[0].is_real

    def _latex(self, printer):
        return r"\sigma\left(%s\right)" % printer._print(self.args[0])


class softplus(sp.Function):
    """softplus(x) = log(1 + e^{x}); its derivative is σ(x), never inf/inf."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_log(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))

    def _eval_is_real(self):
        return self.args[0].is_real   # as σ: |softplus(a) + ...| differentiates to sign

    def _eval_is_positive(self):
        return self.args[0].is_real

    def _latex(self, printer):
        return r"\operatorname{softplus}\left(%s\right)" % printer._print(self.args[0])


class dropout_mask(sp.Function):
    """Dropout's multiplier of one element: 1/(1 − p) where the element is kept, 0 where
    it is dropped, 1 outside training.  Arguments (seed, step, training, b, e, p): the
    keep decision is a function of (seed, step, example b, element e) alone (Philox4x32-10
    in the C, ``sn_dropout``), so it is the same for any thread count and chunking.
    It does not depend on the layer's input: its derivative is 0."""

    def fdiff(self, argindex=1):
        return sp.S.Zero

    def _latex(self, printer):
        return r"m_{%s}" % ",".join(printer._print(a) for a in self.args[3:5])


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


def activation(spec, where: str = "activation") -> Activation:
    """Resolve an activation given by name, sympy expression or Python function.

    A sympy expression must contain exactly one free symbol, which plays z.
    A Python function is called with a sympy symbol and must return an
    expression of it.  Custom activations are rewritten to stable forms
    (``stabilise``) and refused unless differentiable (``smooth``); ``where``
    names the layer in those messages.
    """
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        try:
            return ACTIVATIONS[spec]
        except KeyError:
            raise ValueError(
                f"{where}: unknown activation {spec!r}; known: {', '.join(ACTIVATIONS)}, "
                "or a sympy expression / Python function of one symbol") from None
    z = sp.Symbol("z", real=True)
    if isinstance(spec, sp.Basic):
        free = sorted(spec.free_symbols, key=str)
        if len(free) != 1:
            raise ValueError(
                f"{where}: an activation expression needs exactly one free symbol, "
                f"got {len(free)} ({', '.join(map(str, free)) or 'none'}) in {spec}")
        e = spec.xreplace({free[0]: z})
    elif callable(spec):
        fname = getattr(spec, "__name__", repr(spec))
        try:
            e = sp.sympify(spec(z))
        except Exception as exc:  # the user's function failed on a symbol
            raise ValueError(
                f"{where}: activation function {fname!r} could not be "
                f"evaluated on a sympy symbol: {exc}") from exc
        if not isinstance(e, sp.Basic) or e.free_symbols - {z}:
            extra = ", ".join(sorted(map(str, e.free_symbols - {z}))) \
                if isinstance(e, sp.Basic) else type(e).__name__
            raise ValueError(
                f"{where}: activation function {fname!r} must return a sympy expression "
                f"of its one argument; found {extra} in {e!r}")
    else:
        raise ValueError(f"{where}: activation must be a name, sympy expression or function, "
                         f"got {spec!r}")
    from .smooth import check_smooth
    e = stabilise(e)
    check_smooth(e, [z], where)
    return Activation(f"custom:{sp.srepr(e)}", lambda w, e=e: e.xreplace({z: w}),
                      init="glorot")


def activation_label(act: Activation) -> str:
    """A short human name ('relu', or the expression for custom ones)."""
    if act.name.startswith("custom:"):
        return str(act.expr(sp.Symbol("z")))
    return act.name


# --------------------------------------------------------------------- losses

@dataclass(frozen=True)
class Coupled:
    """A loss that couples the outputs of an example through sums over them:
    L_b = value(R) with R[name] = Σ_k sums[name](O[b,k], T[b,k]).  derive
    differentiates it through the sums (``symnet.derive.coupled``)."""

    value: Callable[[dict], sp.Expr]
    sums: dict[str, Callable]


@dataclass(frozen=True)
class Loss:
    """A per-example loss, averaged over the batch.

    ``element(o, t, n)`` is the contribution of one output element when the
    output has n elements (the per-example loss is the sum over outputs);
    ``element`` is None for losses that couple the outputs (softmax), which
    give their formula as ``coupled``.
    """

    name: str
    element: Callable | None
    coupled: Coupled | None = None


# −Σ_k T[b,k]·log softmax(O[b,:])_k = logsumexp(O[b,:])·Σ_k T[b,k] − Σ_k T[b,k]·O[b,k]
# (logsumexp(O[b,:]) − Σ_k T[b,k]·O[b,k] where a row of T sums to 1): S = Σ_k exp(O[b,k]),
# st = Σ_k T[b,k], to = Σ_k T[b,k]·O[b,k]
SOFTMAX_CROSS_ENTROPY = Coupled(
    value=lambda R: sp.log(R["S"]) * R["st"] - R["to"],
    sums={"S": lambda o, t: sp.exp(o), "st": lambda o, t: t, "to": lambda o, t: t * o})

LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in [
        Loss("mse", lambda o, t, n: (o - t) ** 2 / n),
        Loss("bce", lambda o, t, n: -(t * sp.log(o) + (1 - t) * sp.log(1 - o)) / n),
        Loss("softmax_cross_entropy", None, SOFTMAX_CROSS_ENTROPY),
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
    from .smooth import check_smooth
    e = stabilise(e)
    check_smooth(e, [o], "custom loss")
    return Loss(f"custom:{sp.srepr(e)}",
                lambda oo, tt, n, e=e: e.xreplace({o: oo, t: tt}))


def _one_plus_exp(e) -> sp.Expr | None:
    """``a`` when e is 1 + exp(a), else None."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args:
        other = e.args[0] if e.args[1] == 1 else e.args[1]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _sigmoid_power(f):
    """(c, n) when f is σ(c)**n with n > 0 a number, else None."""
    if isinstance(f, sigmoid):
        return f.args[0], sp.S.One
    if isinstance(f, sp.Pow) and isinstance(f.base, sigmoid) and f.exp.is_positive \
            and f.exp.is_number:
        return f.base.args[0], f.exp
    return None


def _merge_exp_sigmoid(mul: sp.Mul) -> sp.Expr:
    """e^{m·a}·σ(−a)^n = σ(a)^m·σ(−a)^{n−m} for 0 < m ≤ n (more generally the
    shared part of m and n moves into sigmoids).  The left side is inf·0 in
    floating point for large a; the right side is finite."""
    factors = list(mul.args)
    for k, f in enumerate(factors):
        sp_pow = _sigmoid_power(f)
        if sp_pow is None:
            continue
        c, n = sp_pow
        for m_k, g in enumerate(factors):
            if not isinstance(g, sp.exp):
                continue
            m = sp.cancel(g.args[0] / -c)
            if not (m.is_number and m.is_positive):
                continue
            used = sp.Min(m, n)
            new = sigmoid(-c) ** used * sigmoid(c) ** (n - used) * sp.exp(-(m - used) * c)
            rest = [h for q, h in enumerate(factors) if q not in (k, m_k)]
            return _merge_exp_sigmoid_any(sp.Mul(*rest) * new)
    return mul


def _merge_exp_sigmoid_any(e):
    return _merge_exp_sigmoid(e) if isinstance(e, sp.Mul) else e


def _stable_log_cosh(expr: sp.Expr) -> sp.Expr:
    """log(cosh(a)) = |a| + log(1 + e^{−2|a|}) − log 2; sinh(a)/cosh(a) = tanh(a)."""
    expr = expr.replace(
        lambda e: isinstance(e, sp.log) and isinstance(e.args[0], sp.cosh),
        lambda e: (sp.Abs(e.args[0].args[0]) + softplus(-2 * sp.Abs(e.args[0].args[0]))
                   - sp.log(2)))
    return expr.replace(
        lambda e: (isinstance(e, sp.Mul) and any(isinstance(f, sp.sinh) for f in e.args)
                   and any(isinstance(f, sp.Pow) and f.exp == -1 and isinstance(f.base, sp.cosh)
                           for f in e.args)),
        _sinh_over_cosh)


def _stable_log_sum_exp(expr: sp.Expr) -> sp.Expr:
    """log(e^a + e^b) = max(a, b) + log(1 + e^{−|a − b|}), max(a, b) written
    (a + b + |a − b|)/2: sympy never writes log(2·cosh z) as a cosh, so the log-cosh
    rewrite misses it, and e^a overflows at a ≈ 89 in float32."""
    def two_exps(e):
        return (isinstance(e, sp.log) and isinstance(e.args[0], sp.Add)
                and len(e.args[0].args) == 2
                and all(isinstance(t, sp.exp) for t in e.args[0].args))

    def rewrite(e):
        a, b = (t.args[0] for t in e.args[0].args)
        return (a + b + sp.Abs(a - b)) / 2 + softplus(-sp.Abs(a - b))
    return expr.replace(two_exps, rewrite)


def _sinh_over_cosh(mul: sp.Mul) -> sp.Expr:
    factors = list(mul.args)
    for f in factors:
        if isinstance(f, sp.sinh):
            den = sp.Pow(sp.cosh(f.args[0]), -1)
            if den in factors:
                rest = [g for g in factors if g is not f and g != den]
                return sp.Mul(*rest) * sp.tanh(f.args[0])
    return mul


def _exp_over_exps(mul: sp.Mul) -> sp.Expr:
    """e^{n·a}·(e^a + e^b)^(−n) = σ(a − b)^n (e^x/(e^x + e^−x) = σ(2x)): the left side
    is inf/inf in floating point once a or b is large, the right side is finite."""
    factors = list(mul.args)
    for k, f in enumerate(factors):
        if not (isinstance(f, sp.Pow) and f.exp.is_number and f.exp.is_negative
                and isinstance(f.base, sp.Add) and len(f.base.args) == 2
                and all(isinstance(t, sp.exp) for t in f.base.args)):
            continue
        n = -f.exp
        for a, b in ((f.base.args[0].args[0], f.base.args[1].args[0]),
                     (f.base.args[1].args[0], f.base.args[0].args[0])):
            for m, g in enumerate(factors):
                if m != k and isinstance(g, sp.exp) and sp.expand(g.args[0] - n * a) == 0:
                    rest = [h for q, h in enumerate(factors) if q not in (k, m)]
                    return sp.Mul(*rest, sigmoid(a - b) ** n)
    return mul


def stabilise(expr: sp.Expr) -> sp.Expr:
    """Rewrite sub-expressions that overflow in floating point to stable forms.

    Applied to activations and layer formulas before differentiating, and to
    every derivative after (``derive.py``):

    - log(1 + e^a) → softplus(a)
    - (1 + e^a)^(−n) → σ(−a)^n                   (1/(1 + e^−x) → σ(x))
    - e^{m·a}·(1 + e^a)^(−n) → σ(a)^m·σ(−a)^(n−m)  (e^x/(1 + e^x) → σ(x))
    - log(σ(a)) → −softplus(−a), log(1 − σ(a)) → −softplus(a)
    - log(cosh(a)) → |a| + softplus(−2|a|) − log 2   (log-cosh loss: cosh overflows
      at |a| ≈ 89 in float32, the right side never does)
    - log(e^a + e^b) → max(a, b) + softplus(−|a − b|)   (log(e^z + e^−z) = log 2cosh z,
      which sympy never writes as cosh; max(a, b) as (a + b + |a − b|)/2)
    - sinh(a)/cosh(a) → tanh(a)
    - e^{n·a}·(e^a + e^b)^(−n) → σ(a − b)^n          (e^x/(e^x + e^−x) → σ(2x))

    >>> x = sp.Symbol("x", real=True)
    >>> stabilise(sp.diff(sp.log(1 + sp.exp(x)), x))
    sigmoid(x)
    >>> stabilise(sp.log(sp.cosh(x))) == sp.Abs(x) + softplus(-2 * sp.Abs(x)) - sp.log(2)
    True
    """
    expr = sp.sympify(expr)
    expr = _stable_log_cosh(expr)
    expr = _stable_log_sum_exp(expr)
    expr = expr.replace(lambda e: isinstance(e, sp.log) and _one_plus_exp(e.args[0]) is not None,
                        lambda e: softplus(_one_plus_exp(e.args[0])))
    expr = expr.replace(
        lambda e: (isinstance(e, sp.Pow) and e.exp.is_number and e.exp.is_negative
                   and _one_plus_exp(e.base) is not None),
        lambda e: sigmoid(-_one_plus_exp(e.base)) ** -e.exp)
    expr = expr.replace(lambda e: isinstance(e, sp.Mul), _exp_over_exps)
    expr = expr.replace(lambda e: isinstance(e, sp.Mul), _merge_exp_sigmoid)
    a = sp.Wild("a")
    expr = expr.replace(sp.log(sigmoid(a)), -softplus(-a))
    expr = expr.replace(sp.log(1 - sigmoid(a)), -softplus(a))
    expr = expr.replace(sp.log(-sigmoid(a) + 1), -softplus(a))
    return expr
