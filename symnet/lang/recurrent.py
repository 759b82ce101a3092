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
from . import compose
from .base import (_CREATED, ACTIVATION_NAMES, Input, LayerBase, _check_size, check_flag,
                   check_name)
from .merge import Concatenate, Slice, sizes


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
    h_1.. after the cell's name.  For a GRUCell or LSTMCell the function takes an
    initial state too, as PyTorch's ``gru(x, h_0)`` and ``lstm(x, (h_0, c_0))``:
    ``run(seq, h0)`` or ``run(seq, (h0, c0))``, each an Input or a layer of
    ``units`` features (without it the state starts at 0)."""
    if not isinstance(cell, (RNNCell, _GatedCell)):
        raise ValueError(f"unroll needs an RNNCell, GRUCell or LSTMCell, got {cell!r}")
    steps = _check_size(steps, "steps")

    def run(seq, initial_state=None):
        initial = _initial(cell, initial_state)
        if not isinstance(seq, (Input, LayerBase)):
            raise ValueError(f"unroll(...) is called on a sequence Input, got {seq!r}")
        if isinstance(seq, Input):
            total = seq.n
            if len(seq.shape) == 2 and seq.shape[0] != steps:
                raise ValueError(f"input {seq.name!r} has {seq.shape[0]} steps, unroll {steps}")
        else:
            total = compose.size(shape_of(seq))
        if total % steps:
            raise ValueError(f"a sequence of {total} features does not split into {steps} "
                             "steps of equal width")
        width = total // steps
        hs, h = [], None
        if isinstance(cell, _GatedCell):
            # the gates' input part of every step as one product of batch·steps rows
            g = _apply(cell, [seq], f"{cell.name}_gx")
            g.projection = steps
            for t in range(1, steps + 1):
                h = _apply(cell, [g] + (initial if h is None else [h]), f"{cell.name}_{t}")
                hs.append(h)
            return hs if return_sequences else h
        xs = "x" if cell.name == "h" else f"{cell.name}_x"
        for t in range(1, steps + 1):
            x = Slice((t - 1) * width, width, name=f"{xs}_{t}")(seq)
            h = _apply(cell, [x] if h is None else [x, h], f"{cell.name}_{t}")
            hs.append(h)
        return hs if return_sequences else h
    return run


def shape_of(app) -> tuple:
    """One example's output shape of an applied layer: a sequence layer's own, any
    other's from the layers before it (an Embedding's, attention's, a norm's ...)."""
    shape = getattr(app, "seq_shape", None)
    if shape is None:
        shape = compose.shapes_of(compose.topological([app]), {})[id(app)]
    return tuple(shape)


def _initial(cell, state) -> list:
    """The initial state's layers: [] (zero), [h0] for a GRUCell, [h0, c0] for an
    LSTMCell; a clear error for anything else."""
    if state is None:
        return []
    what = f"{type(cell).__name__} {cell.name!r}"
    if not isinstance(cell, _GatedCell):
        raise ValueError(f"{what}: an initial state is for GRUCell and LSTMCell")
    lstm = isinstance(cell, LSTMCell)
    given = list(state) if isinstance(state, (list, tuple)) else [state]
    if len(given) != (2 if lstm else 1):
        raise ValueError(f"{what}: the initial state is " + (
            "a pair (h0, c0), as PyTorch's LSTM" if lstm else "one layer or Input h0")
            + f", got {state!r}")
    for x in given:
        if not isinstance(x, (Input, LayerBase)) or (isinstance(x, LayerBase)
                                                     and x.inputs is None):
            raise ValueError(f"{what}: an initial state is an Input or an applied layer, "
                             f"got {x!r}")
    return given


# ---------------------------------------------------------------- gated cells
def _linear(node: str, index: int, src: str, width: int, rows: int, W: str, b: str):
    """The node G[b,i] = Σ_j W[i,j]·src[b,j] + b[i] (i < rows): one matrix product."""
    syms: dict = {}
    rname = f"z_{node}"
    r = ir.element(syms, rname, ir.BATCH, ir.OUT)
    summand = ir.element(syms, W, ir.OUT, ir.IN) * ir.element(syms, src, ir.BATCH, ir.IN)
    red = ir.Reduction(rname, r, summand, (ir.IN,), contraction=W, input=src)
    params = [ir.ParamSpec(W, ("out", "in"), (rows, width), "glorot"),
              ir.ParamSpec(b, ("out",), (rows,), "zeros", role="bias")]
    return ir.Node(node, index, src, width, rows, params, [red],
                   r + ir.element(syms, b, ir.OUT), syms, kind="linear")


def _at(syms: dict, buf: str, offset: int, step: int | None = None):
    """buf[b, i + offset] as an element symbol; buf[b, step, i + offset] with ``step``
    (a row of a (batch, steps, width) buffer)."""
    at = ir.OUT if offset == 0 else ir.Affine(((ir.OUT, 1),), offset)
    if step is None:
        return ir.element(syms, buf, ir.BATCH, at)
    return ir.element(syms, buf, ir.BATCH, ir.Affine((), step), at)


def _bias_at(syms: dict, b: str, offset: int):
    at = ir.OUT if offset == 0 else ir.Affine(((ir.OUT, 1),), offset)
    return ir.element(syms, b, at)


def _reads(app, projection) -> bool:
    """Whether ``app`` is a step of a gated cell reading ``projection``."""
    ins = getattr(app, "inputs", None)
    return isinstance(app, _GatedCell) and bool(ins) and ins[0] is projection


class _GatedCell(LayerBase):
    """What GRUCell and LSTMCell share: the gates' two matrix products
    G_x = W·x_t + b (``W`` = PyTorch's weight_ih, ``b`` = bias_ih) and
    G_h = U·h_{t−1} + c (``U`` = weight_hh, ``c`` = bias_hh), gates stacked
    along the rows in PyTorch's order; then an element-wise formula per unit.

    Under ``unroll`` (and ``GRU``/``LSTM``) G_x does not depend on the state, so it
    is one application for all steps (named ``<cell>_gx``, shape (steps, gates·units)):
    one matrix product of batch·steps rows forward, one for ∂L/∂W and one sum for
    ∂L/∂b backward, instead of one small product per step; step t then reads its row
    t of it."""

    n_inputs = None
    gates: tuple = ()
    kind = ""
    projection = 0       # an application giving G_x of every step: the number of steps

    def __init__(self, units: int, name: str = "h"):
        what = type(self).__name__
        self.units = _check_size(units, f"{what} units")
        self.name = check_name(name, "layer")

    def __repr__(self):
        return f"{type(self).__name__}({self.units}, name={self.name!r})"

    def describe(self) -> dict:
        d = {"kind": self.kind, "units": self.units, "name": self.name}
        if self.projection:
            d["projection"] = self.projection
        return d

    def _reads_projection(self) -> bool:
        ins = self.inputs or []
        return bool(ins) and bool(getattr(ins[0], "projection", 0))

    def _step(self) -> int:
        """Step t (1, 2, ...) of an application reading a projection: one more than the
        application giving its h_{t−1} when that reads the same projection; 1 when
        there is none or the state read is an initial state (anything else)."""
        t, app = 1, self
        while len(app.inputs) >= 2 and _reads(app.inputs[1], self.inputs[0]):
            app, t = app.inputs[1], t + 1
        if t > self.inputs[0].projection:
            raise ValueError(f"{type(self).__name__} {self.name!r}: step {t} of a sequence "
                             f"of {self.inputs[0].projection} steps")
        return t

    def out_shape_of(self, shapes):
        widths = sizes(shapes)
        what = f"{type(self).__name__} {self.name!r}"
        rows = len(self.gates) * self.units
        if self.projection:
            if len(widths) != 1 or widths[0] % self.projection:
                raise ValueError(f"{what}: a sequence of {sum(widths)} features does not "
                                 f"split into {self.projection} steps of equal width")
            return (self.projection, rows)
        most = 3 if isinstance(self, LSTMCell) and self._reads_projection() else 2
        if not 1 <= len(widths) <= most:
            raise ValueError(f"{what} reads x_t, or x_t and h_{{t-1}}")
        for k, w in enumerate(widths[1:], 1):
            if w != self.units:
                state = ("initial memory c0" if k == 2 else "initial state h0"
                         if self._reads_projection() and self._step() == 1
                         else "previous state")
                raise ValueError(f"{what}: the {state} has {w} features, the cell "
                                 f"{self.units}")
        return (self.units,)

    def param_names(self, index: int) -> dict:
        return {"W": f"W{index}", "U": f"U{index}", "b": f"b{index}", "c": f"c{index}"}

    def _projection_node(self, index, name, inputs, widths):
        from .attention import linear_node
        P = self.param_names(index)
        steps = self.projection
        return [linear_node(name, index, inputs[0], steps, widths[0] // steps,
                            len(self.gates) * self.units, P["W"], P["b"])]

    def _products(self, index, name, inputs, widths):
        """The gate nodes ([G_x] or [G_x, G_h]; only [G_h] or [] when G_x is a
        projection's row), the parameters' names, and where the gates read: G_x as
        (buffer, row or None), G_h as a buffer or None (then its bias c)."""
        P = self.param_names(index)
        rows = len(self.gates) * self.units
        made = []
        if self._reads_projection():
            gx = (inputs[0], self._step() - 1)
        else:
            made.append(_linear(f"{name}_gx", index, inputs[0], widths[0], rows, P["W"],
                                P["b"]))
            gx = (made[0].name, None)
        gh = None
        if len(inputs) >= 2:
            made.append(_linear(f"{name}_gh", index, inputs[1], self.units, rows, P["U"],
                                P["c"]))
            gh = made[-1].name
        return made, P, (gx, gh)

    def _reads(self, made, src, inputs, widths):
        """The buffers the element node reads besides the previous states: the
        projection (when read), then the products made here; their widths."""
        rows = len(self.gates) * self.units
        names = ([inputs[0]] if src[0][1] is not None else []) + [m.name for m in made]
        width = {m: rows for m in names}
        if src[0][1] is not None:
            width[inputs[0]] = widths[0]
        return names, width

    def _gate(self, syms, src, P, g: int, split: bool = False):
        """Pre-activation of gate g (its rows g·H .. g·H + H − 1): x part, h part."""
        off = g * self.units
        (gx_buf, row), gh_buf = src
        gx = _at(syms, gx_buf, off, row)
        gh = _at(syms, gh_buf, off) if gh_buf is not None else _bias_at(syms, P["c"], off)
        return (gx, gh) if split else gx + gh

    def _shared_params(self, P, widths):
        rows = len(self.gates) * self.units
        return [ir.ParamSpec(P["U"], ("out", "in"), (rows, self.units), "glorot"),
                ir.ParamSpec(P["c"], ("out",), (rows,), "zeros", role="bias")]


class GRUCell(_GatedCell):
    """One step of a gated recurrent unit, as PyTorch's ``nn.GRUCell`` (gate order
    r, z, n):

        r = σ(W_r·x + b_r + U_r·h + c_r)        z = σ(W_z·x + b_z + U_z·h + c_z)
        n = tanh(W_n·x + b_n + r ⊙ (U_n·h + c_n))
        h′ = (1 − z) ⊙ n + z ⊙ h

    W (3H, D) = weight_ih, U (3H, H) = weight_hh, b (3H,) = bias_ih,
    c (3H,) = bias_hh.  Applied on [x_t] it is the first step (h_0 = 0)."""

    gates = ("r", "z", "n")
    kind = "gru"

    def to_nodes(self, index, name, inputs, shapes):
        import sympy as sp

        from ..scalar.primitives import sigmoid
        widths = sizes(shapes)
        if self.projection:
            return self._projection_node(index, name, inputs, widths)
        made, P, src = self._products(index, name, inputs, widths)
        syms: dict = {}
        r = sigmoid(self._gate(syms, src, P, 0))
        z = sigmoid(self._gate(syms, src, P, 1))
        nx, nh = self._gate(syms, src, P, 2, split=True)
        n = sp.tanh(nx + r * nh)
        outer = (1 - z) * n
        if len(inputs) == 2:
            outer = outer + z * _at(syms, inputs[1], 0)
        params = [] if len(inputs) == 2 else self._shared_params(P, widths)[1:]
        reads, width = self._reads(made, src, inputs, widths)
        ins = reads + list(inputs[1:])
        width.update({x: self.units for x in inputs[1:]})
        out = ir.Node(name, index, ins[0], width[ins[0]], self.units, params, [], outer,
                      syms, kind="gru", inputs=ins, widths=width)
        return made + [out]


class LSTMCell(_GatedCell):
    """One step of a long short-term memory cell, as PyTorch's ``nn.LSTMCell``
    (gate order i, f, g, o):

        i = σ(W_i·x + b_i + U_i·h + c_i)     f = σ(W_f·x + b_f + U_f·h + c_f)
        g = tanh(W_g·x + b_g + U_g·h + c_g)  o = σ(W_o·x + b_o + U_o·h + c_o)
        C′ = f ⊙ C + i ⊙ g                   h′ = o ⊙ tanh(C′)

    W (4H, D) = weight_ih, U (4H, H) = weight_hh, b (4H,) = bias_ih,
    c (4H,) = bias_hh.  Applied on [x_t] it is the first step (h_0 = C_0 = 0); on
    [x_t, h_{t−1}] (an LSTMCell application) it also reads that step's memory
    C_{t−1}, the buffer ``<name of h_{t−1}>_c``."""

    gates = ("i", "f", "g", "o")
    kind = "lstm"

    def __call__(self, previous):
        bound = super().__call__(previous)
        if len(bound.inputs) == 2:
            prev = bound.inputs[1]
            if not isinstance(getattr(prev, "origin", None) or prev, LSTMCell):
                raise ValueError(f"LSTMCell {self.name!r}: the previous state must be an "
                                 f"LSTMCell's output (it carries the memory C), got {prev!r}")
        return bound

    def to_nodes(self, index, name, inputs, shapes):
        import sympy as sp

        from ..scalar.primitives import sigmoid
        widths = sizes(shapes)
        if self.projection:
            return self._projection_node(index, name, inputs, widths)
        made, P, src = self._products(index, name, inputs, widths)
        syms: dict = {}
        i = sigmoid(self._gate(syms, src, P, 0))
        g = sp.tanh(self._gate(syms, src, P, 2))
        memory = i * g
        # C_{t−1}: the memory buffer of the step before, or a given c0
        prev_c = inputs[2] if len(inputs) == 3 else f"{inputs[1]}_c" if len(inputs) == 2 \
            else None
        if prev_c is not None:
            f = sigmoid(self._gate(syms, src, P, 1))
            memory = f * _at(syms, prev_c, 0) + memory
        params = [] if len(inputs) >= 2 else self._shared_params(P, widths)[1:]
        reads, width = self._reads(made, src, inputs, widths)
        ins = reads + ([prev_c] if prev_c is not None else [])
        if prev_c is not None:
            width[prev_c] = self.units
        cname = f"{name}_c"
        cell = ir.Node(cname, index, ins[0], width[ins[0]], self.units, params, [], memory,
                       syms, kind="lstm_memory", inputs=ins, widths=width)
        syms2: dict = {}
        o = sigmoid(self._gate(syms2, src, P, 3))
        outer = o * sp.tanh(_at(syms2, cname, 0))
        ins2 = reads + [cname]
        width2 = {m: width[m] for m in reads}
        width2[cname] = self.units
        out = ir.Node(name, index, ins2[0], width2[ins2[0]], self.units, list(params), [],
                      outer, syms2, kind="lstm", inputs=ins2, widths=width2)
        return made + [cell, out]


class Steps(Concatenate):
    """H[b,t,:] = h_t[b,:]: the states of every step as one (steps, units) sequence
    (what ``return_sequences`` gives), laid out as PyTorch's batch_first output."""

    kind = "steps"
    min_inputs = 1       # a sequence of one step is one state

    def out_shape_of(self, shapes):
        widths = sizes(shapes)
        if len(set(widths)) != 1:
            raise ValueError(f"Steps needs states of one width, got {widths}")
        return (len(shapes), widths[0])

    def joined_axis(self, shapes) -> int:
        return 0               # the steps, one after the other

    @property
    def seq_shape(self):
        """(steps, units) of an application."""
        return (len(self.inputs), self.inputs[0].units)

    @property
    def units(self):
        return self.seq_shape[0] * self.seq_shape[1]

    def to_nodes(self, index, name, inputs, shapes):
        widths = sizes(shapes)
        node = super().to_nodes(index, name, inputs, [(1, w) for w in widths])
        node.widths = dict(zip(inputs, widths))
        return node


class _Sequence(LayerBase):
    """A recurrent layer over a (steps, features) sequence, PyTorch's batch_first
    layout: called on it, it unrolls its cell over the steps and gives the last
    state h_T (units,) or, with ``return_sequences``, every state (steps, units)."""

    cell_class = None

    def __init__(self, units: int, return_sequences: bool = False, name: str | None = None,
                 num_layers: int = 1):
        self.cell = self.cell_class(units, name=name or "h")
        self.units, self.name = self.cell.units, name
        kind = type(self).__name__
        where = f"layer {name!r} ({kind})" if name else f"layer {kind!r}"
        # GRU(8, 4) as PyTorch's (input_size, hidden_size) puts 4 in return_sequences
        self.return_sequences = check_flag(
            return_sequences, f"{where}: return_sequences",
            f"; PyTorch's {kind}(input_size, hidden_size) is sn.{kind}(hidden_size): "
            "the input size is the input's")
        self.num_layers = _check_size(num_layers, f"{type(self).__name__} num_layers")

    def __repr__(self):
        layers = f", num_layers={self.num_layers}" if self.num_layers > 1 else ""
        return (f"{type(self).__name__}({self.units}, return_sequences="
                f"{self.return_sequences}{layers}, name={self.name!r})")

    def __call__(self, previous, initial_state=None):
        """``num_layers`` > 1: a stack, as PyTorch's ``num_layers``: every layer but the
        last gives its whole sequence to the next, each with a cell of its own (named
        ``<name>_l1``, ``<name>_l2``, ... after the first when the layer is named; h2,
        h3, ... otherwise); the last gives what ``return_sequences`` says.

        ``initial_state``: h_0 as PyTorch's ``gru(x, h_0)`` (for an LSTM the pair
        ``(h_0, c_0)``), each an Input or a layer of ``units`` features per example;
        with ``num_layers`` = L, of L·units features, layer l's state the l-th
        ``units`` of them (PyTorch's h_0[l], batch first).  Without it, 0."""
        states = self._initial_states(initial_state)
        for k in range(self.num_layers):
            last = k == self.num_layers - 1
            layer = self
            if self.num_layers > 1:
                layer = copy.copy(self)
                layer.num_layers, layer.return_sequences = 1, self.return_sequences or not last
                if k and self.name is not None:
                    layer.name = f"{self.name}_l{k}"
                    layer.cell = copy.copy(self.cell)
                    layer.cell.name = layer.name
            previous = layer._one(previous, states[k] if states else None)
        return previous

    def _initial_states(self, state) -> list | None:
        """Per layer, its initial state (a layer, or (h0, c0) for an LSTM)."""
        if state is None:
            return None
        lstm = isinstance(self.cell, LSTMCell)
        what = self._who()
        given = list(state) if isinstance(state, (list, tuple)) else [state]
        if len(given) != (2 if lstm else 1):
            raise ValueError(f"{what}: initial_state is " + (
                "a pair (h0, c0), as PyTorch's LSTM" if lstm else "one Input or layer h0")
                + f", got {state!r}")
        want = self.num_layers * self.units
        for x in given:
            if not isinstance(x, (Input, LayerBase)) or (isinstance(x, LayerBase)
                                                         and x.inputs is None):
                raise ValueError(f"{what}: initial_state takes Inputs or applied layers, "
                                 f"got {x!r}")
            n = x.n if isinstance(x, Input) else getattr(x, "units", None)
            if n != want:
                raise ValueError(f"{what}: an initial state has {n} features per example, "
                                 f"expected {want} (num_layers {self.num_layers} × units "
                                 f"{self.units})")
        if self.num_layers == 1:
            return [given if lstm else given[0]]
        base = self.name or "h"
        per_layer = []
        for k in range(self.num_layers):
            part = [Slice(k * self.units, self.units, name=f"{base}_{'hc'[m]}0_l{k}")(x)
                    for m, x in enumerate(given)]
            per_layer.append(part if lstm else part[0])
        return per_layer

    def _who(self):
        """'GRU 'R'' for a named layer, plain 'GRU' for an unnamed one (errors)"""
        return type(self).__name__ + ("" if self.name is None else f" {self.name!r}")

    def _one(self, previous, initial_state=None):
        if isinstance(previous, (list, tuple)):
            raise ValueError(f"{self!r} reads one sequence, got a list of {len(previous)}")
        if isinstance(previous, Input):
            shape = previous.shape
        elif isinstance(previous, LayerBase) and previous.inputs is not None:
            shape = shape_of(previous)
        else:
            raise ValueError(f"{self._who()} is called on an Input or "
                             f"a layer, got {previous!r}")
        if len(shape) != 2:
            raise ValueError(f"{self._who()} reads a (steps, features) "
                             f"sequence, got shape {shape}")
        cell, depth = self.cell, getattr(previous, "seq_depth", 0) + 1
        if self.name is None and depth > 1:      # a stack: h, h2, h3, ... unless named
            cell = copy.copy(cell)
            cell.name = f"h{depth}"
        out = unroll(cell, shape[0], return_sequences=self.return_sequences)(previous,
                                                                              initial_state)
        if not self.return_sequences:
            return out
        out = Steps(name=f"{cell.name}_seq")(out)
        out.seq_depth = depth
        return out


class GRU(_Sequence):
    """``GRUCell`` over a (steps, features) sequence (PyTorch's ``nn.GRU`` with
    batch_first=True): weight_ih_l0 = W, weight_hh_l0 = U, bias_ih_l0 = b,
    bias_hh_l0 = c of the cell; with ``num_layers`` = L, layer l's cell holds
    weight_ih_l{l}, ... .  The initial state is 0 (PyTorch's default h_0) or given:
    ``GRU(h)(S, H0)`` as PyTorch's ``gru(x, h_0)``."""

    cell_class = GRUCell


class LSTM(_Sequence):
    """``LSTMCell`` over a (steps, features) sequence (PyTorch's ``nn.LSTM`` with
    batch_first=True): weight_ih_l0 = W, weight_hh_l0 = U, bias_ih_l0 = b,
    bias_hh_l0 = c of the cell; with ``num_layers`` = L, layer l's cell holds
    weight_ih_l{l}, ... .  The initial states are 0 (PyTorch's default) or given:
    ``LSTM(h)(S, (H0, C0))`` as PyTorch's ``lstm(x, (h_0, c_0))``."""

    cell_class = LSTMCell
