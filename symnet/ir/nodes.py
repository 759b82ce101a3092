"""The network IR: each layer is one node of a single kind.

A node computes, for every example b and output index i,

    r_k[b,i] = Σ_{j...} g_k(P[i,j], x[b,j], q[i])      (reductions)
    h[b,i]   = φ(r_1[b,i], ..., q[i], x[b,i])           (outer formula)

where P are parameters indexed by (output, input) positions and q by output.
Both g_k and φ are scalar sympy expressions over *scalar symbols*, each of
which stands for one array element (``Access``); the arrays themselves never
become sympy matrices.  A reduction whose summand is exactly P[i,j]·x[b,j] is
a contraction and lowers to a matrix product; ``Dense`` is one reduction of
that kind and φ = f(r + b).

The index ranges are data: a node carries its output index space
(``Node.space``, e.g. (("c", 6), ("y", 24), ("x", 24)) after b) and each
reduction its summed space (``Reduction.space``, e.g. (("k", 1), ("u", 5),
("v", 5))); a vector layer is the space (("i", units),) summed over j.  An
element's position is a name or an ``Affine`` map of the loop indices
(I[b, k, y*2 + u - 1, x + v]), so buffers have any rank and a convolution's
input is read through its map; a position may fall outside its array only
where the summand is zero (padding), and the loops clip their ranges there.
``op`` "max" makes a reduction a maximum (pooling).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sympy is imported only when a network is derived
    import sympy as sp

# The index names used in element formulas and in the emitted loops.
BATCH, OUT, IN, IN2 = "b", "i", "j", "k"


@dataclass(frozen=True)
class Affine:
    """An affine index: Σ coef·index + const, e.g. ``y*2 + u - 1`` for a
    strided, padded convolution's input row.  A plain index name stays a
    ``str`` in an ``Access``; only composite positions are ``Affine``.

    >>> a = Affine((("y", 2), ("u", 1)), -1)
    >>> str(a), a.at({"y": 3, "u": 0})
    ('y*2 + u - 1', 5)
    """

    terms: tuple[tuple[str, int], ...]
    const: int = 0

    def __str__(self):
        text = ""
        for name, c in self.terms:
            word = name if abs(c) == 1 else f"{name}*{abs(c)}"
            text += (word if c > 0 else f"-{word}") if not text else \
                (f" + {word}" if c > 0 else f" - {word}")
        if self.const:
            text += (f" + {self.const}" if self.const > 0 else f" - {-self.const}") if text \
                else str(self.const)
        return text or "0"

    def at(self, point: dict) -> int:
        return self.const + sum(c * point[n] for n, c in self.terms)

    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.terms)

    def bounds(self, extents: dict) -> tuple[int, int]:
        """Smallest and largest value over the index ranges (0..extent−1)."""
        lo = hi = self.const
        for n, c in self.terms:
            lo += min(0, c * (extents[n] - 1))
            hi += max(0, c * (extents[n] - 1))
        return lo, hi


def index_text(ix) -> str:
    """An index position as the C and the derivation write it."""
    return ix if isinstance(ix, str) else str(ix)


def index_at(ix, point: dict) -> int:
    return point[ix] if isinstance(ix, str) else ix.at(point)


@dataclass(frozen=True)
class Access:
    """What a scalar symbol stands for: ``array[index...]``.

    ``array`` is a parameter name (W1), a layer buffer (H1, z_H1) or the
    target (T); ``index`` names the loop indices, e.g. ("i", "j") or ("b", "j").
    """

    array: str
    index: tuple[str, ...]


@dataclass
class ParamSpec:
    """A trainable array of a node, e.g. W1 with dims ("out", "in"); a
    tensor layer's parameters carry their index names as dims."""

    name: str
    dims: tuple[str, ...]        # each "out" or "in" (or index names)
    shape: tuple[int, ...]
    init: str                    # "glorot", "he", "zeros", "ones"
    role: str = "weight"         # "weight" or "bias", for people
    trainable: bool = True       # False: no gradient computed, never updated


@dataclass
class Reduction:
    """r[b,i] = Σ over ``over`` of ``summand``; ``contraction`` names W when the
    summand is W[i,j]·x[b,j] (then it lowers to a matrix product).

    ``space`` gives the summed indices with their extents (a tensor node's
    reduction space, e.g. (("k", 1), ("u", 5), ("v", 5))); empty means each
    index of ``over`` runs over the node's inputs.  ``op`` is "sum" or "max"
    (max pooling).  Whether a sum is a correlation (computed through im2col
    and matrix products) is read from its index maps by ``symnet.plan.correlate``.
    ``rows`` > 0: the contraction is over the last axis of
    a (rows, features) input, the same W at every row (PyTorch's Linear on a
    sequence)."""

    name: str
    symbol: sp.Symbol            # stands for name[b,i] inside the outer formula
    summand: sp.Expr
    over: tuple[str, ...] = (IN,)
    contraction: str | None = None
    space: tuple[tuple[str, int], ...] = ()
    op: str = "sum"
    input: str | None = None     # the buffer contracted with; None: the node's first input
    # a contraction over the last axis of a sequence: r[b,t,i] = Σ_j W[i,j]·x[b,t,j] for
    # each of ``rows`` positions t (one matrix product of batch·rows rows); 0: a vector's
    rows: int = 0


@dataclass
class Node:
    """One layer: parameters, reductions and the outer formula."""

    name: str
    index: int                   # 1-based position, gives W1, b1, ...
    input: str                   # name of the input buffer ("I" or "H1", ...)
    n_in: int
    n_out: int
    params: list[ParamSpec]
    reductions: list[Reduction]
    outer: sp.Expr
    symbols: dict[sp.Symbol, Access] = field(default_factory=dict)
    kind: str = "layer"          # "dense", "layer", "conv", "pool", "add", "concat", ...
    activation: object = None    # the Activation record of a dense layer
    space: tuple[tuple[str, int], ...] = ()   # output indices (name, extent) after b
    in_shape: tuple[int, ...] = ()            # one example of the input
    label: str = ""              # how the layer reads for people, e.g. "Conv2d(6, 5)"
    # Several inputs (merges, recurrent cells): every input buffer and its width;
    # None means the one input ``input`` of width ``n_in``.
    inputs: list[str] | None = None
    widths: dict[str, int] | None = None
    # Concatenate: (source buffer, width) pieces laid side by side along i.
    pieces: list[tuple[str, int]] | None = None
    concat_axis: int = 0         # ... along this axis of the output space (0: i)
    # a shift that changes nothing downstream (a softmax's row maximum, subtracted from
    # every score of the row): its derivative is zero in exact arithmetic, so no gradient
    # flows through it (symnet.derive.chain leaves its terms out)
    shift: bool = False

    def __post_init__(self):
        if not self.space:
            self.space = ((OUT, self.n_out),)
        if not self.in_shape:
            self.in_shape = (self.n_in,)
        if self.inputs is None:
            self.inputs = [self.input]
        if self.widths is None:
            self.widths = {self.input: self.n_in}

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(e for _, e in self.space)

    @property
    def out_index(self) -> tuple[str, ...]:
        """(b, i) for a vector layer, (b, c, y, x) for an image layer."""
        return (BATCH,) + tuple(n for n, _ in self.space)

    def loop(self) -> list:
        """The loop over every output element: b, then the output space."""
        return [(BATCH, "batch")] + list(self.space)

    def reduction_loop(self, red: Reduction) -> list:
        """The loop of a reduction: the output loop, then the summed indices."""
        space = list(red.space) or [(j, self.n_in) for j in red.over]
        return self.loop() + space

    def param(self, name: str) -> ParamSpec:
        return next(p for p in self.params if p.name == name)

    def red_input(self, red: Reduction) -> str:
        """The buffer a reduction reads its x[b,j] from."""
        return red.input or self.input


@dataclass
class Graph:
    """The whole network: input, nodes in a topological order, loss.

    With several inputs the C takes them side by side in one array
    ``input_name`` (n_in = the sum of their widths) and copies each into its
    own buffer first; with several outputs the targets lie side by side in T
    the same way.  ``inputs``: (name, width) in declaration order; ``outputs``:
    output node names; ``losses``/``weights``: per output name.
    """

    input_name: str
    n_in: int
    nodes: list[Node]
    loss: object                 # a primitives.Loss record (of the first output)
    in_shape: tuple[int, ...] = ()   # one example of the input; (n_in,) for vectors
    inputs: list[tuple[str, int]] | None = None
    outputs: list[str] | None = None
    losses: dict | None = None
    weights: dict | None = None
    input_shapes: dict | None = None     # one example of each input, e.g. (1, 8, 8)
    grad_inputs: bool = False            # ∂L/∂(each input) derived too (model.input_grad)
    # outputs whose softmax cross-entropy takes a class per position: name -> the
    # classes, the output's last axis (the loss runs on each of its n_out / classes rows)
    classes: dict | None = None
    # those of them whose classes are the first axis (channels first: (C, H, W)); the
    # rows are then the pixels, class k of pixel q at k·(n_out / classes) + q
    classes_first: list | None = None

    def __post_init__(self):
        if not self.in_shape:
            self.in_shape = (self.n_in,)
        if self.inputs is None:
            self.inputs = [(self.input_name, self.n_in)]
        if self.outputs is None:
            self.outputs = [self.nodes[-1].name]
        if self.losses is None:
            self.losses = {self.outputs[0]: self.loss}
        if self.weights is None:
            self.weights = {o: 1.0 for o in self.outputs}
        if self.classes is None:
            self.classes = {}
        if self.classes_first is None:
            self.classes_first = []

    @property
    def output(self) -> Node:
        return self.node(self.outputs[0])

    @property
    def n_out(self) -> int:
        return sum(self.node(o).n_out for o in self.outputs)

    @property
    def packed(self) -> bool:
        """True when the inputs are copied out of one side-by-side array."""
        return self.inputs != [(self.input_name, self.n_in)]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def target_offset(self, output: str) -> int:
        """Column where an output's targets start in T."""
        off = 0
        for o in self.outputs:
            if o == output:
                return off
            off += self.node(o).n_out
        raise KeyError(output)

    def consumers(self, buffer: str) -> list[Node]:
        """Nodes reading a buffer, in order."""
        return [n for n in self.nodes if buffer in n.inputs]

    def is_input(self, buffer: str) -> bool:
        return buffer == self.input_name or any(buffer == n for n, _ in self.inputs)

    def params(self) -> list[ParamSpec]:
        """Each parameter once (a layer used at several places shares them)."""
        seen, out = set(), []
        for node in self.nodes:
            for p in node.params:
                if p.name not in seen:
                    seen.add(p.name)
                    out.append(p)
        return out


def scalar(name: str) -> sp.Symbol:
    """The scalar symbol for one element, e.g. Symbol("W1[i,j]")."""
    import sympy
    return sympy.Symbol(name, real=True)


def element(symbols: dict, array: str, *index) -> sp.Symbol:
    """Symbol standing for array[index], registered in ``symbols``; an index
    position is a name or an ``Affine``."""
    sym = scalar(f"{array}[{','.join(index_text(x) for x in index)}]")
    symbols[sym] = Access(array, tuple(index))
    return sym
