"""Merges: layers of two or more inputs and no parameters.

``Add()([a, b])`` (residual connections), ``Multiply()([a, b])`` (gating)
and ``Concatenate()([a, b])`` (features side by side).  Each is an IR node
whose derivative sympy takes like any other (Add and Multiply), or a copy
whose gradient is the same copy backwards (Concatenate).

>>> import symnet as sn
>>> I = sn.Input(3, name="I")
>>> H = sn.Dense(3, "tanh", name="H")(I)
>>> R = sn.Add(name="R")([I, H])
>>> C = sn.Concatenate(name="C")([I, R])
>>> net = sn.Network(I, sn.Dense(1, name="O")(C), loss="mse")
>>> net.param_shapes()
{'W1': (3, 3), 'b1': (3,), 'W4': (1, 6), 'b4': (1,)}
"""

from __future__ import annotations

from . import ir
from .dsl import LayerBase, check_name


class _Merge(LayerBase):
    n_inputs = None
    kind = "merge"

    def __init__(self, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")

    @property
    def units(self):
        raise AttributeError(f"{type(self).__name__} has the width of its inputs")

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name}

    def out_width(self, widths):
        if len(set(widths)) != 1:
            raise ValueError(f"{type(self).__name__} needs inputs of one width, got widths "
                             f"{widths}")
        return widths[0]


class Add(_Merge):
    """H[b,i] = Σ_m X_m[b,i]: the sum of inputs of one width (a residual connection)."""

    kind = "add"

    def to_nodes(self, index, name, inputs, widths):
        syms: dict = {}
        outer = 0
        for src in inputs:
            outer = outer + ir.element(syms, src, ir.BATCH, ir.OUT)
        return ir.Node(name, index, inputs[0], widths[0], widths[0], [], [], outer, syms,
                       kind="add", inputs=list(inputs), widths=dict(zip(inputs, widths)))


class Multiply(_Merge):
    """H[b,i] = Π_m X_m[b,i]: the element-wise product (gating)."""

    kind = "multiply"

    def to_nodes(self, index, name, inputs, widths):
        syms: dict = {}
        outer = 1
        for src in inputs:
            outer = outer * ir.element(syms, src, ir.BATCH, ir.OUT)
        return ir.Node(name, index, inputs[0], widths[0], widths[0], [], [], outer, syms,
                       kind="multiply", inputs=list(inputs), widths=dict(zip(inputs, widths)))


class Concatenate(_Merge):
    """H[b,:] = [X_1[b,:], X_2[b,:], ...]: the inputs' features side by side."""

    kind = "concat"

    def out_width(self, widths):
        return sum(widths)

    def to_nodes(self, index, name, inputs, widths):
        return ir.Node(name, index, inputs[0], widths[0], sum(widths), [], [], None, {},
                       kind="concat", inputs=list(inputs), widths=dict(zip(inputs, widths)),
                       pieces=list(zip(inputs, widths)))


class Slice(LayerBase):
    """H[b,i] = X[b, start + i] for i < width: part of an input's features
    (the steps of a sequence, for ``symnet.recurrent``)."""

    def __init__(self, start: int, width: int, name: str | None = None):
        self.start, self.units = int(start), int(width)
        self.name = None if name is None else check_name(name, "layer")

    def __repr__(self):
        return f"Slice({self.start}, {self.units}, name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "slice", "start": self.start, "units": self.units, "name": self.name}

    def out_width(self, widths):
        if self.start < 0 or self.start + self.units > widths[0]:
            raise ValueError(f"slice {self.start}..{self.start + self.units} lies outside "
                             f"the input's {widths[0]} features")
        return self.units

    def to_nodes(self, index, name, inputs, widths):
        syms: dict = {}
        at = ir.OUT if self.start == 0 else f"{ir.OUT} + {self.start}"
        outer = ir.element(syms, inputs[0], ir.BATCH, at)
        return ir.Node(name, index, inputs[0], widths[0], self.units, [], [], outer, syms,
                       kind="slice")
