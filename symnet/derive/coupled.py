"""Losses that couple the outputs of an example (softmax cross-entropy), derived.

A coupled loss (``symnet.scalar.primitives.Coupled``) is a formula F of sums over
the outputs k of one example of the output O:

    L_b = F(R_1[b], ..., R_n[b]),   R_r[b] = Σ_k g_r(O[b,k], T[b,k])

Softmax cross-entropy is F = log(S)·st − to with S = Σ_k exp(O[b,k]),
st = Σ_k T[b,k], to = Σ_k T[b,k]·O[b,k] (= −Σ_k T[b,k]·log softmax(O[b,:])_k).
Its gradient is the chain rule through the sums, each factor by ``sympy.diff``:

    dL_dO[b,k] = inv_batch·(∂F/∂O[b,k] + Σ_r ∂F/∂R_r·∂g_r/∂O[b,k])
               = inv_batch·(st·exp(O[b,k])/S − T[b,k])

Then one rewrite for floating point (``logsumexp``): a sum of exponentials
S = Σ_k exp(e_k) overflows at e_k ≈ 89 in float32, so S = exp(lse) with
lse = m + log(Σ_k exp(e_k − m)), m = max_k e_k, wherever S appears
(exp(O[b,k])/S = exp(O[b,k] − lse), log S = lse): every exponential is then ≤ 1.

Integer class labels y_b as targets are the same rule with T[b,k] = [k = y_b]
(``with_labels``): a sum linear in T becomes its summand at k = y_b (st = 1,
to = O[b,y_b]), and dL_dO[b,k] = inv_batch·(exp(O[b,k] − lse) − [k = y_b]).

The C (``templates/network.c.j2``), the NumPy backend, ``net.formulas()`` and the
explicit form (``symnet.read.explicit``) all evaluate the ``RowLoss`` made here.

>>> import symnet as sn
>>> from symnet.derive.chain import derive
>>> net = sn.Network(sn.Input(2), sn.Dense(3, name="O"), loss="softmax_cross_entropy")
>>> rule = derive(net.graph())[0].coupled
>>> print(rule.chain_text())
dL_dO[b,k] = inv_batch·(-T[b,k] + st_O[b]·exp(O[b,k])/S_O[b])
>>> print(rule.grad_text())
dL_dO[b,k] = inv_batch·(-T[b,k] + st_O[b]·exp(O[b,k] - lse_O[b]))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import sympy as sp

from ..ir import nodes as ir
from ..scalar.notation import text

K, LABEL = "k", "y"          # the outputs' index; the class label of example b
INV_BATCH = sp.Symbol("inv_batch", positive=True)


@dataclass
class RowSum:
    """name[b] = op over k of ``summand`` ("sum" or "max"), one number per example."""

    symbol: sp.Symbol
    op: str
    summand: sp.Expr

    @property
    def name(self) -> str:
        return self.symbol.name.split("[")[0]

    def text(self) -> str:
        word = "Σ_k " if self.op == "sum" else "max_k "
        return f"{self.symbol} = {word}{text(self.summand)}"


@dataclass
class RowLoss:
    """One output's coupled loss, derived: what every backend and reader evaluates.

    Per example b: the ``sums`` in order (each may read the ones before), then
    the ``scalars`` (name, expr), then ``value`` (added to the loss: the output's
    weight times L_b) and ``grad`` (dL_dO[b,k]).  ``declared``, ``declared_sums``
    and ``chain`` are the formula as declared and its gradient as the chain rule
    gave it, before the rewrite (for people)."""

    output: str
    n: int
    o: sp.Symbol                 # O[b,k]
    t: sp.Symbol                 # T[b,k] (None once the targets are labels)
    k: sp.Symbol                 # the index k itself (the labels' indicator reads it)
    symbols: dict                # symbol -> ir.Access of every element symbol
    declared: sp.Expr
    declared_sums: list
    chain: sp.Expr
    sums: list
    scalars: list
    value: sp.Expr
    grad: sp.Expr
    weight: float = 1.0
    title: str = ""              # the loss's name, for people ("softmax cross entropy")
    y: sp.Symbol | None = None   # with labels: y_b, the class of example b
    o_y: sp.Symbol | None = None  # with labels: O[b,y]
    labels: RowLoss | None = field(default=None, repr=False)   # the form for labels
    # a class per position: the output's rows of n classes (its last axis), ``groups``
    # of them per example; L_b is their mean (the 1/groups is inside value and grad),
    # k runs over one row, and a label y is one per row.  ``first``: the classes are
    # the output's first axis (channels first, (C, H, W)): class k of position q at
    # k·groups + q, not q·n + k
    groups: int = 1
    first: bool = False

    # ----------------------------------------------------------- for people
    def grad_name(self) -> str:
        return f"dL_d{self.output}[b,k]"

    def chain_text(self) -> str:
        return f"{self.grad_name()} = {text(self.chain)}"

    def grad_text(self) -> str:
        return f"{self.grad_name()} = {text(self.grad)}"

    def value_text(self) -> str:
        return f"L += {text(self.value)}"

    def lines(self, grad: bool = True) -> list[str]:
        """What one example computes, in order, as the C comments and the
        derivation show it."""
        out = [s.text() for s in self.sums]
        out += [f"{s} = {text(e)}" for s, e in self.scalars]
        out.append(self.value_text())
        if grad:
            out.append(self.grad_text())
        return out


def chain_through_sums(F: sp.Expr, sums: list, o: sp.Symbol) -> sp.Expr:
    """∂F/∂o with F a formula of o and of per-example sums R_r = Σ_k g_r:
    ∂F/∂o + Σ_r ∂F/∂R_r · ∂g_r/∂o."""
    d = sp.diff(F, o)
    for r in sums:
        d += sp.diff(F, r.symbol) * sp.diff(r.summand, o)
    return d


def logsumexp(rule: RowLoss) -> RowLoss:
    """The stability rewrite of a derived coupled loss: each sum of one exponential
    S = Σ_k exp(e_k) becomes m = max_k e_k, s = Σ_k exp(e_k − m), lse = m + log(s),
    and S = exp(lse) wherever it appears (then exp(a)·exp(−lse) = exp(a − lse) and
    log(exp(lse)) = lse: no exponential of more than 0 is left)."""
    syms, out = rule.symbols, rule.output
    sums, scalars, sub = [], list(rule.scalars), {}
    for r in rule.sums:
        if r.op == "sum" and isinstance(r.summand, sp.exp):
            e = r.summand.args[0]
            m = RowSum(ir.element(syms, f"m_{out}", ir.BATCH), "max", e)
            s = RowSum(ir.element(syms, f"s_{out}", ir.BATCH), "sum", sp.exp(e - m.symbol))
            lse = ir.element(syms, f"lse_{out}", ir.BATCH)
            sums += [m, s]
            scalars.append((lse, m.symbol + sp.log(s.symbol)))
            sub[r.symbol] = sp.exp(lse)
        else:
            sums.append(r)

    def rewrite(e):
        return sp.powsimp(e.xreplace(sub))
    return replace(rule, sums=sums, scalars=scalars, value=rewrite(rule.value),
                   grad=rewrite(rule.grad))


def with_labels(rule: RowLoss) -> RowLoss:
    """The rule for integer class labels: T[b,k] = [k = y_b].  A sum t·f(o) over k
    is f(O[b,y]); T elsewhere is the indicator (1 if k = y_b else 0)."""
    syms = rule.symbols
    y = sp.Symbol(f"{LABEL}[b]", integer=True)
    o_y = ir.element(syms, rule.output, ir.BATCH, LABEL)
    indicator = sp.Piecewise((1, sp.Eq(rule.k, y)), (0, True))
    sub, sums = {}, []
    for r in rule.sums:
        if rule.t not in r.summand.free_symbols:
            sums.append(r)
            continue
        f = sp.cancel(r.summand / rule.t)
        if r.op != "sum" or rule.t in f.free_symbols:
            raise ValueError(f"loss of {rule.output}: the sum {r.text()} is not linear in "
                             "the targets; class labels need one that is")
        sub[r.symbol] = f.xreplace({rule.o: o_y})
    sums = [replace(r, summand=r.summand.xreplace(sub)) for r in sums]
    scalars = [(s, e.xreplace(sub)) for s, e in rule.scalars]
    to_y = {**sub, rule.t: indicator}
    return replace(rule, t=None, sums=sums, scalars=scalars, value=rule.value.xreplace(sub),
                   grad=rule.grad.xreplace(to_y), y=y, o_y=o_y, labels=None)


def derive_coupled(node: ir.Node, loss, weight: float = 1.0, t_offset: int = 0,
                   classes: int | None = None, first: bool = False) -> RowLoss:
    """The coupled loss of output ``node``: declared, chained, rewritten; the form
    for integer labels in ``.labels``.  ``classes``: a class per position, the
    output's last axis of that many classes (``first``: its first axis, channels
    first); the loss of an example is the mean over
    its positions (as PyTorch's and Keras's cross-entropy on a sequence)."""
    syms: dict = {}
    o = ir.element(syms, node.name, ir.BATCH, K)
    t = ir.element(syms, "T", ir.BATCH, K if t_offset == 0 else
                   ir.Affine(((K, 1),), t_offset))
    named = {name: RowSum(ir.element(syms, f"{name}_{node.name}", ir.BATCH), "sum",
                          sp.sympify(g(o, t))) for name, g in loss.coupled.sums.items()}
    declared = list(named.values())
    F = sp.sympify(loss.coupled.value({name: r.symbol for name, r in named.items()}))
    n, groups = node.n_out, 1
    if classes is not None and classes != node.n_out:
        n, groups = classes, node.n_out // classes
    w = sp.S.One if weight == 1.0 else sp.Float(weight)
    if groups > 1:
        w = w * sp.Rational(1, groups)
    chain = INV_BATCH * w * chain_through_sums(F, declared, o)
    title = loss.name.replace("_", " ")
    if groups > 1 and first:
        title += (f" at each of the {groups} pixels of an example (its {n} channels the "
                  f"classes k), their mean")
    elif groups > 1:
        title += (f" at each of the {groups} positions of an example (each a row of "
                  f"{n} classes k), their mean")
    rule = RowLoss(node.name, n, o, t, sp.Symbol(K, integer=True), syms, F,
                   declared, chain, declared, [], w * F, chain, weight, title,
                   groups=groups, first=first and groups > 1)
    rule = logsumexp(rule)
    rule.labels = with_labels(rule)
    return rule
