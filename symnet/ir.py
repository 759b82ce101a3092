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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sympy is imported only when a network is derived
    import sympy as sp

# The index names used in element formulas and in the emitted loops.
BATCH, OUT, IN, IN2 = "b", "i", "j", "k"


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
    """A trainable array of a node, e.g. W1 with dims ("out", "in")."""

    name: str
    dims: tuple[str, ...]        # each "out" or "in"
    shape: tuple[int, ...]
    init: str                    # "glorot", "he", "zeros", "ones"
    role: str = "weight"         # "weight" or "bias", for people


@dataclass
class Reduction:
    """r[b,i] = Σ over ``over`` of ``summand``; ``contraction`` names W when the
    summand is W[i,j]·x[b,j] (then it lowers to a matrix product)."""

    name: str
    symbol: sp.Symbol            # stands for name[b,i] inside the outer formula
    summand: sp.Expr
    over: tuple[str, ...] = (IN,)
    contraction: str | None = None
    input: str | None = None     # the buffer contracted with; None: the node's first input


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
    kind: str = "layer"          # "dense", "layer", "add", "concat", ..., for people
    activation: object = None    # the Activation record of a dense layer
    # Several inputs (merges, recurrent cells): every input buffer and its width;
    # None means the one input ``input`` of width ``n_in``.
    inputs: list[str] | None = None
    widths: dict[str, int] | None = None
    # Concatenate: (source buffer, width) pieces laid side by side along i.
    pieces: list[tuple[str, int]] | None = None

    def __post_init__(self):
        if self.inputs is None:
            self.inputs = [self.input]
        if self.widths is None:
            self.widths = {self.input: self.n_in}

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
    inputs: list[tuple[str, int]] | None = None
    outputs: list[str] | None = None
    losses: dict | None = None
    weights: dict | None = None

    def __post_init__(self):
        if self.inputs is None:
            self.inputs = [(self.input_name, self.n_in)]
        if self.outputs is None:
            self.outputs = [self.nodes[-1].name]
        if self.losses is None:
            self.losses = {self.outputs[0]: self.loss}
        if self.weights is None:
            self.weights = {o: 1.0 for o in self.outputs}

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


def element(symbols: dict, array: str, *index: str) -> sp.Symbol:
    """Symbol standing for array[index], registered in ``symbols``."""
    sym = scalar(f"{array}[{','.join(index)}]")
    symbols[sym] = Access(array, tuple(index))
    return sym
