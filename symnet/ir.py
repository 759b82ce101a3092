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
    trainable: bool = True       # False: no gradient computed, never updated


@dataclass
class Reduction:
    """r[b,i] = Σ over ``over`` of ``summand``; ``contraction`` names W when the
    summand is W[i,j]·x[b,j] (then it lowers to a matrix product)."""

    name: str
    symbol: sp.Symbol            # stands for name[b,i] inside the outer formula
    summand: sp.Expr
    over: tuple[str, ...] = (IN,)
    contraction: str | None = None


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
    kind: str = "layer"          # "dense" or "layer", for people
    activation: object = None    # the Activation record of a dense layer

    def param(self, name: str) -> ParamSpec:
        return next(p for p in self.params if p.name == name)


@dataclass
class Graph:
    """The whole network: input, nodes in order, loss."""

    input_name: str
    n_in: int
    nodes: list[Node]
    loss: object                 # a primitives.Loss record

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    @property
    def n_out(self) -> int:
        return self.nodes[-1].n_out

    def params(self) -> list[ParamSpec]:
        return [p for node in self.nodes for p in node.params]


def scalar(name: str) -> sp.Symbol:
    """The scalar symbol for one element, e.g. Symbol("W1[i,j]")."""
    import sympy
    return sympy.Symbol(name, real=True)


def element(symbols: dict, array: str, *index: str) -> sp.Symbol:
    """Symbol standing for array[index], registered in ``symbols``."""
    sym = scalar(f"{array}[{','.join(index)}]")
    symbols[sym] = Access(array, tuple(index))
    return sym
