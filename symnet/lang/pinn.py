"""Losses with derivatives of the outputs in the inputs (PDE residuals, Sobolev
terms): ``coords``, ``d``, ``target`` and the loss terms of a Network.

>>> import sympy, symnet as sn
>>> tx = sn.Input(2, name="tx")
>>> u = sn.Dense(1, name="u")(sn.Dense(4, "tanh")(tx))
>>> t, x = sn.coords(tx, "t x")
>>> pde = sn.d(u, t) + u * sn.d(u, x) - sympy.Rational(1, 100) * sn.d(u, x, x)
>>> pde
u_t + u_x*u - u_xx/100
>>> net = sn.Network(tx, u, loss={"pde": pde**2, "data": "mse"})
>>> [(term.name, term.has_targets) for term in net.terms]
[('pde', False), ('data', True)]
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .base import Input, LayerBase, check_name
from .symbols import Coordinate, Deriv, Target, Value, _Tagged, value


def coords(I: Input, names=None) -> tuple:
    """The input's columns as symbols, e.g. ``t, x = sn.coords(tx, "t x")``
    (default names: the input's name and the column, ``tx0, tx1``)."""
    if not isinstance(I, Input):
        raise ValueError(f"sn.coords takes an Input, got {I!r}")
    if len(I.shape) != 1:
        raise ValueError(f"sn.coords takes a vector Input; {I!r} has shape {I.shape}")
    if names is None:
        names = [f"{I.name or 'x'}{k}" for k in range(I.n)]
    elif isinstance(names, str):
        names = names.replace(",", " ").split()
    names = list(names)
    if len(names) != I.n:
        raise ValueError(f"sn.coords: {len(names)} names for the {I.n} columns of {I!r}")
    for n in names:
        check_name(n, "coordinate")
    out = tuple(Coordinate(n, I, k) for k, n in enumerate(names))
    return out if len(out) > 1 else out[0]


def _as_value(O) -> Value:
    if isinstance(O, Value):
        return O
    if isinstance(O, LayerBase):
        if O.inputs is None:
            raise ValueError(f"{O!r} is not applied to an input yet: sn.d and sn.target "
                             "take the output of a layer call, e.g. u = sn.Dense(1)(h)")
        return value(O)
    raise ValueError(f"sn.d and sn.target take a network output (a layer, or O[k] for one "
                     f"unit of a layer), got {O!r}")


def d(O, *coordinates) -> Deriv:
    """∂^n O / ∂c_1…∂c_n (any order, mixed) as a symbol to use in a loss;
    ``O`` a one-unit output or ``O[k]``, each c from ``sn.coords``."""
    v = _as_value(O)
    if not coordinates:
        raise ValueError("sn.d(O, x, ...) needs at least one coordinate (from sn.coords)")
    for c in coordinates:
        if not isinstance(c, Coordinate):
            raise ValueError(f"sn.d: {c!r} is not a coordinate; use t, x = sn.coords(I)")
    owners = {id(c.owner) for c in coordinates}
    if len(owners) > 1:
        raise ValueError("sn.d: the coordinates come from different inputs")
    alpha = tuple(sorted(coordinates, key=lambda c: c.unit))
    return Deriv(f"{v.name}_{''.join(c.name for c in alpha)}", v.owner, v.unit, alpha)


def target(O) -> Target:
    """The target of a one-unit output (or of ``O[k]``), for a loss term with targets."""
    v = _as_value(O)
    return Target(f"{v.name}_target", v.owner, v.unit)


# --------------------------------------------------------------- loss terms

@dataclass
class Term:
    """One loss term: a name, either a per-example expression (of Values, Derivs,
    Targets, Coordinates) or a loss name applied to every output, and a weight."""

    name: str
    expr: object = None          # sympy expression, or None
    loss: str | None = None      # "mse", ...: the outputs' loss against targets
    weight: float = 1.0

    @property
    def has_targets(self) -> bool:
        return self.expr is None or bool(self.expr.atoms(Target))


def is_term_loss(loss, output_names) -> bool:
    """True for a loss dict that names terms (a key that is not an output, or a
    value that is an expression of the network's symbols)."""
    if not isinstance(loss, dict):
        return isinstance(loss, sp.Basic) and bool(loss.atoms(_Tagged))
    return any(isinstance(v, sp.Basic) and v.atoms(_Tagged) for v in loss.values()) or \
        any(k not in output_names for k in loss)


def terms_of(net, loss, loss_weights) -> list:
    """The Terms of a loss dict (checked against the network ``net``)."""
    if not isinstance(loss, dict):
        loss = {"loss": loss}
    weights = loss_weights or {}
    if not isinstance(weights, dict):
        raise ValueError("with loss terms, loss_weights is a dict keyed by term name")
    unknown = sorted(set(weights) - set(loss))
    if unknown:
        raise ValueError(f"loss_weights names {unknown}, which are not loss terms "
                         f"{sorted(loss)}")
    out = []
    for name, spec in loss.items():
        check_name(name, "loss term")
        w = weights.get(name, 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w != w:
            raise ValueError(f"loss weight of term {name!r} must be a finite number, got {w!r}")
        if isinstance(spec, str):
            out.append(Term(name, loss=spec, weight=float(w)))
            continue
        if isinstance(spec, LayerBase):
            spec = sp.sympify(spec)
        if not isinstance(spec, sp.Basic):
            raise ValueError(f"loss term {name!r} must be a loss name or a sympy expression "
                             f"of sn.d(...), outputs, sn.target(...), sn.coords(...); "
                             f"got {spec!r}")
        _check_term(net, name, spec)
        out.append(Term(name, expr=sp.sympify(spec), weight=float(w)))
    return out


def _check_term(net, name, expr):
    layers = {id(a) for a in net.layers}
    inputs = [x for x in net.inputs]
    other = [s for s in expr.free_symbols if not isinstance(s, _Tagged)]
    if other:
        raise ValueError(f"loss term {name!r} has symbols {sorted(map(str, other))} that "
                         "are not the network's; use sn.coords, sn.d, sn.target and the "
                         "outputs")
    for s in expr.atoms(_Tagged):
        if isinstance(s, Coordinate) or isinstance(s, Deriv):
            for c in ([s] if isinstance(s, Coordinate) else s.alpha):
                if not any(c.owner is x for x in inputs):
                    raise ValueError(f"loss term {name!r}: coordinate {c.name!r} belongs to "
                                     f"{c.owner!r}, which is not an input of this network "
                                     f"({', '.join(map(repr, inputs))})")
            if len(inputs) != 1:
                raise ValueError(f"loss term {name!r}: derivatives in the inputs need a "
                                 "network with one input")
        if isinstance(s, (Value, Deriv, Target)) and id(s.owner) not in layers:
            raise ValueError(f"loss term {name!r}: {s.name!r} is the output of "
                             f"{s.owner!r}, which is not part of this network")
