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

from ..ir import nodes as ir
from .base import LayerBase, check_name
from .compose import channels_first, sources


def sizes(shapes) -> list[int]:
    out = []
    for shape in shapes:
        n = 1
        for d in shape:
            n *= d
        out.append(n)
    return out


class _Merge(LayerBase):
    n_inputs = None
    kind = "merge"
    layout = "kept"

    def __init__(self, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")

    @property
    def units(self):
        raise AttributeError(f"{type(self).__name__} has the width of its inputs")

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name}

    def out_shape_of(self, shapes):
        if len(set(shapes)) != 1:
            raise ValueError(f"{type(self).__name__} needs inputs of one width (one shape), "
                             f"got {', '.join(map(str, shapes))}")
        return shapes[0]


DIMS = (ir.OUT, "y", "x")     # loop names of a tensor merge: channels, rows, columns


def space_of(shape: tuple) -> tuple:
    """The IR output space of one example: ((i, C), (y, H), (x, W)) for a tensor,
    ((i, n),) for a vector."""
    if len(shape) == 1:
        return ((ir.OUT, shape[0]),)
    names = (ir.OUT,) + DIMS[3 - len(shape) + 1:] if len(shape) <= 3 else None
    if names is None:
        raise ValueError(f"merges take vectors or tensors of up to 3 dimensions, got {shape}")
    return tuple(zip(names, shape))


def _elementwise(kind: str, index, name, inputs, shapes, combine):
    syms: dict = {}
    space = space_of(shapes[0])
    idx = (ir.BATCH,) + tuple(n for n, _ in space)
    outer = None
    for src in inputs:
        el = ir.element(syms, src, *idx)
        outer = el if outer is None else combine(outer, el)
    n = sizes(shapes)[0]
    return ir.Node(name, index, inputs[0], n, n, [], [], outer, syms, kind=kind,
                   space=space if len(space) > 1 else (), in_shape=tuple(shapes[0]),
                   inputs=list(inputs), widths=dict(zip(inputs, sizes(shapes))))


class Add(_Merge):
    """H[b,i] = Σ_m X_m[b,i]: the sum of inputs of one shape (a residual connection)."""

    kind = "add"

    def to_nodes(self, index, name, inputs, shapes):
        return _elementwise("add", index, name, inputs, shapes, lambda a, b: a + b)


class Multiply(_Merge):
    """H[b,i] = Π_m X_m[b,i]: the element-wise product (gating)."""

    kind = "multiply"

    def to_nodes(self, index, name, inputs, shapes):
        return _elementwise("multiply", index, name, inputs, shapes, lambda a, b: a * b)


class Concatenate(_Merge):
    """H[b,:] = [X_1[b,:], X_2[b,:], ...]: the inputs' features side by side.  For
    tensors, ``axis`` (of one example, the batch not counted) is the one they are
    joined along: None, the features: the channels (first axis) of an image
    (C, H, W) or of a convolution's output, the last axis of a sequence (L, D);
    0 or -1 to say which."""

    kind = "concat"

    def __init__(self, axis: int | None = None, name: str | None = None):
        super().__init__(name)
        if axis is not None and (isinstance(axis, bool) or axis not in (0, -1)):
            raise ValueError(f"Concatenate: axis must be None (the features), 0 (the first "
                             f"axis of an example: a convolution's channels) or -1 (the "
                             f"last: a sequence's features), got {axis!r}")
        self.axis = axis

    def __repr__(self):
        axis = "" if self.axis is None else f"axis={self.axis}, "
        return f"{type(self).__name__}({axis}name={self.name!r})"

    def describe(self) -> dict:
        out = super().describe()
        if self.axis is not None:
            out["axis"] = self.axis
        return out

    def joined_axis(self, shapes) -> int:
        """The axis of one example the inputs are joined along (0 for vectors)."""
        rank = len(shapes[0])
        if rank == 1 or self.axis == 0:
            return 0
        if self.axis == -1:
            return rank - 1
        if rank == 3 or self._channels_first():
            return 0           # an image, or a convolution's output: its channels
        return rank - 1        # a sequence (L, D): its features

    def _channels_first(self) -> bool:
        return any(channels_first(s) is not None for s in sources(self))

    def out_shape_of(self, shapes):
        """The inputs joined along ``joined_axis``, equal in their other axes."""
        if len({len(s) for s in shapes}) != 1:
            raise ValueError("Concatenate needs vectors, or tensors of one rank, got "
                             f"{', '.join(map(str, shapes))}")
        ax = self.joined_axis(shapes)
        rest = {s[:ax] + s[ax + 1:] for s in shapes}
        if len(rest) != 1:
            which = "channels (the first axis)" if ax == 0 else "last axis"
            raise ValueError(f"Concatenate joins these tensors along their {which} and "
                             f"needs them equal in the others, got "
                             f"{', '.join(map(str, shapes))}"
                             + ("" if self.axis is not None else
                                "; Concatenate(axis=0) or axis=-1 says which axis"))
        return shapes[0][:ax] + (sum(s[ax] for s in shapes),) + shapes[0][ax + 1:]

    def to_nodes(self, index, name, inputs, shapes):
        shape = self.out_shape_of(shapes)
        ax = self.joined_axis(shapes)
        space = space_of(shape)
        n = sizes([shape])[0]
        return ir.Node(name, index, inputs[0], sizes(shapes)[0], n, [], [], None, {},
                       kind="concat", space=space if len(space) > 1 else (),
                       inputs=list(inputs), widths=dict(zip(inputs, sizes(shapes))),
                       pieces=[(src, sh[ax]) for src, sh in zip(inputs, shapes)],
                       concat_axis=ax)


class Slice(LayerBase):
    """H[b,i] = X[b, start + i] for i < width: part of an input's features
    (the steps of a sequence, for ``symnet.lang.recurrent``).  In a tensor input
    the part must lie within one row of the last dimension, e.g. step t of a
    (steps, features) sequence."""

    def __init__(self, start: int, width: int, name: str | None = None):
        self.start, self.units = int(start), int(width)
        self.name = None if name is None else check_name(name, "layer")

    def __repr__(self):
        return f"Slice({self.start}, {self.units}, name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "slice", "start": self.start, "units": self.units, "name": self.name}

    def out_shape_of(self, shapes):
        shape = shapes[0]
        n = sizes([shape])[0]
        if self.start < 0 or self.start + self.units > n:
            raise ValueError(f"slice {self.start}..{self.start + self.units} lies outside "
                             f"the input's {n} features")
        if len(shape) > 1 and self.start % shape[-1] + self.units > shape[-1]:
            raise ValueError(f"slice {self.start}..{self.start + self.units} of an input of "
                             f"shape {shape} crosses a row of its last dimension")
        return (self.units,)

    def to_nodes(self, index, name, inputs, shapes):
        syms: dict = {}
        shape = shapes[0]
        row, col = divmod(self.start, shape[-1])
        lead = []
        for d in reversed(shape[:-1]):          # the row's position in the leading dims
            row, r = divmod(row, d)
            lead.insert(0, ir.Affine((), r))
        at = ir.OUT if col == 0 else ir.Affine(((ir.OUT, 1),), col)
        outer = ir.element(syms, inputs[0], ir.BATCH, *lead, at)
        return ir.Node(name, index, inputs[0], sizes(shapes)[0], self.units, [], [], outer,
                       syms, kind="slice", in_shape=tuple(shape))
