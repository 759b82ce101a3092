"""Embedding: a row of a table for each integer index, as a derived tensor formula.

For an input of L indices (``sn.Input(L, dtype="int")``) the output is (L, D):

    H[b, l, d] = Σ_v W[v, d] · [X[b, l] = v]        (v < num)

so W's gradient is derived like any other: ∂L/∂W[v, d] = Σ_b Σ_l δ[b, l, d]·[X[b, l] = v],
the gradient summed into the rows used.  The indicator [X = v] has no derivative with
respect to X (the indices are data).  Each output element looks at every row once
(num·L·D terms per example, forward and backward): meant for vocabularies of tens to a
few thousand.  An index is never used as an address, so no index can read outside W;
the model refuses indices that are not whole numbers in [0, num) before any C runs,
naming the layer and the offending value.

>>> import symnet as sn
>>> net = sn.Network(sn.Input(5, dtype="int"), sn.Embedding(10, 4), sn.Flatten(),
...                  sn.Dense(2), loss="mse")
>>> net.param_shapes()["W1"]        # PyTorch's nn.Embedding(10, 4).weight
(10, 4)
"""

from __future__ import annotations

from .base import Input, LayerBase, _check_size, check_name


class Embedding(LayerBase):
    """``num`` embeddings of width ``dim`` (PyTorch's ``nn.Embedding(num, dim)``; its
    ``weight`` is W{k} of shape (num, dim), initialised N(0, 1) as PyTorch's).  The input
    is an ``sn.Input(L, dtype="int")`` of L indices per example; the output (L, dim)."""

    tensor = True

    def __init__(self, num: int, dim: int, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")
        self.num = _check_size(num, f"{self._where()}: num (the number of embeddings)")
        self.dim = _check_size(dim, f"{self._where()}: dim (the width of an embedding)")

    def _where(self):
        name = self.name or getattr(self, "_net_name", None)
        title = (f"Embedding({self.num}, {self.dim})" if hasattr(self, "dim") else "Embedding")
        return f"layer {name!r} ({title})" if name else f"layer {title!r}"

    def __repr__(self):
        return f"Embedding({self.num}, {self.dim}, name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "embedding", "num": self.num, "dim": self.dim, "name": self.name}

    def output_shape(self, in_shape):
        source = self.input
        if source is not None and not (isinstance(source, Input) and source.dtype == "int"):
            raise ValueError(f"{self._where()}: reads integer indices: call it on an "
                             f"sn.Input(L, dtype='int'), got {source!r}")
        if len(in_shape) != 1:
            raise ValueError(f"{self._where()}: takes a vector of L indices per example, "
                             f"got shape {in_shape}")
        return (in_shape[0], self.dim)

    def check_indices(self, X, what: str):
        """Refuse indices of X (the layer's input, (batch, L)) outside 0..num − 1."""
        import numpy as np
        bad = ~((X >= 0) & (X < self.num) & (X == np.floor(X)))
        if bad.any():
            b, pos = map(int, np.argwhere(bad)[0])
            value = float(X[b, pos])
            shown = int(value) if value.is_integer() else value
            raise ValueError(f"{self._where()}: index {shown} at {what}[{b}, {pos}] (example "
                             f"{b}, position {pos}) is not a whole number in "
                             f"0..{self.num - 1}")

    def to_node(self, index, name, input_name, in_shape):
        import sympy as sp

        from ..ir import nodes as ir
        L = in_shape[0]
        syms: dict = {}
        W = f"W{index}"
        v = sp.Symbol("v", integer=True)
        z = ir.element(syms, f"z_{name}", ir.BATCH, "l", "d")
        x = ir.element(syms, input_name, ir.BATCH, "l")
        pick = sp.Piecewise((1, sp.Eq(x, v)), (0, True))
        red = ir.Reduction(f"z_{name}", z, ir.element(syms, W, "v", "d") * pick, ("v",),
                           space=(("v", self.num),))
        spec = ir.ParamSpec(W, ("num", "dim"), (self.num, self.dim), "normal")
        return ir.Node(name, index, input_name, L, L * self.dim, [spec], [red], z, syms,
                       kind="embedding", space=(("l", L), ("d", self.dim)), in_shape=(L,),
                       label=f"Embedding({self.num}, {self.dim})")
