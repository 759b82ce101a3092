"""Recurrence by unrolling: h_t = f(W·x_t + U·h_{t−1} + b), t = 1..T.

A recurrent network is a composition like any other once its steps are
written out: ``unroll(cell, steps)`` applies one ``RNNCell`` (one set of
parameters W, U, b) at every step of a sequence input of shape
``(steps, features)``; X is then (batch, steps, features).  h_0 = 0, so the
first step is f(W·x_1 + b).  Back-propagation through time is the chain rule
over the unrolled graph: each ∂L/∂h_t sums what h_{t+1} and any other reader
send back, and ∂L/∂W, ∂L/∂U, ∂L/∂b sum over the steps.

>>> import symnet as sn
>>> S = sn.Input((5, 1), name="S")
>>> h = sn.recurrent.unroll(sn.recurrent.RNNCell(8, "tanh"), steps=5)(S)
>>> net = sn.Network(S, sn.Dense(1, name="O")(h), loss="mse")
>>> net.names[:4], net.names[-2:]
(['x_1', 'h_1', 'x_2', 'h_2'], ['h_5', 'O'])
>>> net.param_shapes()["U2"]
(8, 8)
"""

from __future__ import annotations

import copy

from ..ir import nodes as ir
from .base import _CREATED, ACTIVATION_NAMES, Input, LayerBase, _check_size, check_name
from .merge import Slice, sizes


class RNNCell(LayerBase):
    """One step of a simple recurrent layer: h_t = f(W·x_t + U·h_{t−1} + b) with
    W (units, features), U (units, units), b (units,).  Applied on [x_t] it is
    the first step (h_0 = 0), on [x_t, h_{t−1}] any later one."""

    n_inputs = None

    def __init__(self, units: int, activation="tanh", name: str = "h"):
        self.units = _check_size(units, "RNNCell units")
        self.name = check_name(name, "layer")
        if isinstance(activation, str) and activation not in ACTIVATION_NAMES:
            raise ValueError(f"unknown activation {activation!r}; known: "
                             f"{', '.join(ACTIVATION_NAMES)}")
        self.activation_spec = activation
        self.activation_name = activation if isinstance(activation, str) else None
        self._activation = None

    @property
    def activation(self):
        if self._activation is None:
            from ..scalar.primitives import activation as resolve
            self._activation = resolve(self.activation_spec, f"activation of {self.name!r}")
        return self._activation

    def __repr__(self):
        return f"RNNCell({self.units}, {self.activation_spec!r}, name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "rnn", "units": self.units,
                "activation": self.activation_name or self.activation.name, "name": self.name}

    def out_shape_of(self, shapes):
        widths = sizes(shapes)
        if len(widths) == 2 and widths[1] != self.units:
            raise ValueError(f"the previous state has {widths[1]} features, the cell "
                             f"{self.units}")
        if len(widths) not in (1, 2):
            raise ValueError("a recurrent cell reads x_t, or x_t and h_{t-1}")
        return (self.units,)

    def to_nodes(self, index, name, inputs, shapes):
        widths = sizes(shapes)
        syms: dict = {}
        W, U, b = f"W{index}", f"U{index}", f"b{index}"
        params = [ir.ParamSpec(W, ("out", "in"), (self.units, widths[0]),
                               self.activation.init),
                  ir.ParamSpec(U, ("out", "out"), (self.units, self.units), "glorot"),
                  ir.ParamSpec(b, ("out",), (self.units,), "zeros", role="bias")]
        reds, total = [], 0
        for P, src in zip((W, U), inputs):
            rname = f"z{P[0]}_{name}"
            r = ir.element(syms, rname, ir.BATCH, ir.OUT)
            summand = ir.element(syms, P, ir.OUT, ir.IN) * ir.element(syms, src, ir.BATCH, ir.IN)
            reds.append(ir.Reduction(rname, r, summand, (ir.IN,), contraction=P, input=src))
            total = total + r
        outer = self.activation.expr(total + ir.element(syms, b, ir.OUT))
        return ir.Node(name, index, inputs[0], widths[0], self.units, params, reds, outer, syms,
                       kind="rnn", activation=self.activation, inputs=list(inputs),
                       widths=dict(zip(inputs, widths)))


def _apply(layer, inputs: list, name: str):
    bound = copy.copy(layer)
    bound.origin = layer.origin if layer.origin is not None else layer
    bound.input, bound.inputs, bound.name = inputs[0], list(inputs), name
    bound.seq = next(_CREATED)
    return bound


def unroll(cell: RNNCell, steps: int, return_sequences: bool = False):
    """A function of a sequence (an ``Input((steps, features))`` or a layer of
    steps·features outputs) giving h_T, or [h_1, ..., h_T] with
    ``return_sequences``.  The nodes are named x_1.. (the steps' inputs) and
    h_1.. after the cell's name."""
    if not isinstance(cell, RNNCell):
        raise ValueError(f"unroll needs an RNNCell, got {cell!r}")
    steps = _check_size(steps, "steps")

    def run(seq):
        if not isinstance(seq, (Input, LayerBase)):
            raise ValueError(f"unroll(...) is called on a sequence Input, got {seq!r}")
        if isinstance(seq, Input):
            total = seq.n
            if len(seq.shape) == 2 and seq.shape[0] != steps:
                raise ValueError(f"input {seq.name!r} has {seq.shape[0]} steps, unroll {steps}")
        else:
            total = seq.units
        if total % steps:
            raise ValueError(f"a sequence of {total} features does not split into {steps} "
                             "steps of equal width")
        width = total // steps
        xs = "x" if cell.name == "h" else f"{cell.name}_x"
        hs, h = [], None
        for t in range(1, steps + 1):
            x = Slice((t - 1) * width, width, name=f"{xs}_{t}")(seq)
            h = _apply(cell, [x] if h is None else [x, h], f"{cell.name}_{t}")
            hs.append(h)
        return hs if return_sequences else h
    return run
