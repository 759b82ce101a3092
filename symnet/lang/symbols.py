"""The symbols of a loss term: an input column, an output unit, a derivative of
one in the others, a target (``symnet.lang.pinn`` builds them; ``LayerBase``
turns an applied layer into its ``Value``).  No other symnet module is imported."""

from __future__ import annotations

import sympy as sp


class _Tagged(sp.Symbol):
    """A symbol that stands for something of the network (an input column, an
    output unit, a derivative, a target); two with the same name but different
    owners differ."""

    def __new__(cls, name, owner, unit=0, alpha=()):
        obj = sp.Symbol.__xnew__(cls, name, real=True)
        obj.owner, obj.unit, obj.alpha = owner, unit, tuple(alpha)
        return obj

    def __getnewargs__(self):
        return (self.name, self.owner, self.unit, self.alpha)

    def _hashable_content(self):
        return super()._hashable_content() + (id(self.owner), self.unit,
                                              tuple(id(a) for a in self.alpha))


class Coordinate(_Tagged):
    """Column ``unit`` of an Input, as a symbol."""


class Value(_Tagged):
    """Unit ``unit`` of a layer's output, as a symbol."""


class Deriv(_Tagged):
    """∂^|α| O[unit] / ∂x_α (α: Coordinates)."""


class Target(_Tagged):
    """The target of output unit ``unit``."""


def _label(layer) -> str:
    return getattr(layer, "name", None) or "O"


def value(layer, unit=None) -> Value:
    """The symbol of a layer's output (``O`` for one unit, ``O[k]`` otherwise)."""
    units = getattr(layer, "units", None)
    if unit is None:
        if units != 1:
            name = getattr(layer, "name", None)       # unnamed: the layer as written
            who, pick = (repr(name), name) if name else (repr(layer), "the layer")
            raise ValueError(f"layer {who} has {units} units: pick one with "
                             f"{pick}[k] (k < {units}) before using it in a loss")
        return Value(_label(layer), layer, 0)
    if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < (units or 0):
        raise ValueError(f"layer {_label(layer)!r}: unit {unit!r} out of range "
                         f"(it has {units} units)")
    return Value(f"{_label(layer)}{unit}", layer, unit)


def layer_sympy(layer):
    """``sympify(layer)``: its one-unit output as a symbol."""
    if layer.inputs is None:
        raise ValueError(f"{layer!r} is not applied to an input yet: in a loss term use the "
                         "output of a layer call, e.g. u = sn.Dense(1)(h)")
    return value(layer)
