"""Softmax and normalisation over the last axis: tensor formulas written once, derived.

Each layer here is a few tensor formulas (``symnet.tensor``) over the input's
last axis d (of length D), the leading axes carried along; sympy derives every
gradient, as for any other layer:

- softmax:   m = max_e x[e],  E[d] = exp(x[d] − m),  h[d] = E[d] / Σ_e E[e]  (every
  exponential ≤ 1 and the sum ≥ 1: nothing overflows)
- LayerNorm: μ = Σ_e x[e]/D,  c[d] = x[d] − μ,  s = 1/√(Σ_e c[e]²/D + ε),
  h[d] = γ[d]·c[d]·s + β[d]
- RMSNorm:   s = 1/√(Σ_e x[e]²/D + ε),  h[d] = γ[d]·x[d]·s + β[d]

μ, s, m and Σ_e E[e] are numbers per row (the leading indices, without d): nodes of
their own, each computed once per row and read by the row's D elements, so a row
costs O(D) forward and backward (their gradients, Σ_d over the row, once per row too).

>>> import symnet as sn
>>> net = sn.Network(sn.Input((4, 8)), sn.LayerNorm(), sn.Flatten(), sn.Dense(3, "softmax"),
...                  loss="mse")
>>> net.param_shapes()
{'gamma1': (8,), 'beta1': (8,), 'W3': (3, 32), 'b3': (3,)}

Parameters as PyTorch's ``nn.LayerNorm(D)`` / ``nn.RMSNorm(D)``: ``gamma{k}`` is
``weight``, ``beta{k}`` is ``bias`` (PyTorch's RMSNorm has no bias: ``bias=False``
gives its exact form).
"""

from __future__ import annotations

import numpy as np

from .base import LayerBase, check_flag, check_name

_LEAD = ("a", "a1", "a2")      # index names of the leading axes (never b, n, t0, ...)


def _number(v, what: str, where: str, low: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > low \
            or v == float("inf"):
        raise ValueError(f"{where}: {what} must be a finite number > {low:g}, got {v!r}")
    return float(v)


def not_a_width(eps, where: str, torch: str):
    """Refuse an integer eps ≥ 1: PyTorch's norms take the width first (nn.LayerNorm(64)),
    which here would be read as eps = 64 (an eps ≤ 0 is refused as such)."""
    if isinstance(eps, (int, np.integer)) and not isinstance(eps, bool) and eps >= 1:
        n = int(eps)
        raise ValueError(f"{where}: eps is the small number added under the square root, "
                         f"got the integer {n}; the width comes from the layer's input "
                         f"(PyTorch's {torch}({n}) is {torch.split('.')[-1]}() here); for an "
                         f"eps of {n} write {float(n)}")


class _LastAxis(LayerBase):
    """Shared parts: the name and the shape (unchanged)."""

    tensor = True
    title = ""

    def _where(self):
        name = self.name or getattr(self, "_net_name", None)
        return f"layer {name!r} ({self._title()})" if name else f"layer {self._title()!r}"

    def _title(self):
        return self.title

    def output_shape(self, in_shape):
        if len(in_shape) > len(_LEAD) + 1:
            raise ValueError(f"{self._where()}: takes inputs of 1 to {len(_LEAD) + 1} axes, "
                             f"got shape {in_shape}")
        return tuple(in_shape)


class Softmax(_LastAxis):
    """softmax over the last axis: H[..., d] = exp(X[..., d]) / Σ_e exp(X[..., e]),
    computed as E[..., d]/Σ_e E[..., e] with E = exp(X − the row's maximum); its
    Jacobian is derived by sympy.
    ``Dense(n, "softmax")`` is a Dense layer followed by this one."""

    title = "Softmax()"

    def __init__(self, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")

    def __repr__(self):
        return f"Softmax(name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "softmax", "name": self.name}

    def to_nodes(self, index, name, inputs, shapes):
        """Four nodes, as attention's softmax: the row's maximum m (``<name>_max``),
        E[.., d] = exp(x[.., d] − m) (``<name>_exp``: every exponential ≤ 1, computed
        once), Z = Σ_e E[.., e] (``<name>_sum``, once per row) and H = E/Z."""
        import sympy as sp
        in_shape = tuple(shapes[0])
        rows = _Rows(in_shape)
        top = rows.reduce(f"{name}_max", index, inputs[0], lambda x: x, lambda z: z,
                          kind="max", label="softmax: the row's maximum", op="max")
        top.shift = True     # x − m: the softmax is the same for any m, ∂L/∂m = 0
        syms: dict = {}
        e = sp.exp(rows.element(syms, inputs[0]) - rows.row_element(syms, top.name))
        exp = rows.node(f"{name}_exp", index, inputs[0], e, syms, [], kind="exp",
                        label="softmax: exp(x − max)", also=top.name)
        total = rows.reduce(f"{name}_sum", index, exp.name, lambda x: x, lambda z: z,
                            kind="softmax_sum", label="softmax: Σ over the row")
        syms = {}
        h = rows.element(syms, exp.name) / rows.row_element(syms, total.name)
        out = rows.node(name, index, exp.name, h, syms, [], kind="softmax", label="softmax",
                        also=total.name)
        return [top, exp, total, out]


class _Norm(_LastAxis):
    eps_default = 1e-5

    def __init__(self, eps: float | None = None, bias: bool = True, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")
        not_a_width(eps, self._where(), f"nn.{type(self).__name__}")
        self.eps = _number(self.eps_default if eps is None else eps, "eps", self._where())
        self.bias = check_flag(bias, f"{self._where()}: bias")

    def _title(self):
        if not hasattr(self, "eps"):            # eps itself refused: no eps to show
            return type(self).__name__
        return f"{type(self).__name__}(eps={self.eps:g})"

    def __repr__(self):
        extra = "" if self.bias else ", bias=False"
        return f"{type(self).__name__}(eps={self.eps!r}{extra}, name={self.name!r})"

    def describe(self) -> dict:
        d = {"kind": type(self).__name__.lower(), "eps": self.eps, "name": self.name}
        if not self.bias:
            d["bias"] = False
        return d

    def _params(self, index: int, n: int) -> list:
        from ..ir import nodes as ir
        out = [ir.ParamSpec(f"gamma{index}", ("d0",), (n,), "ones", role="bias")]
        if self.bias:
            out.append(ir.ParamSpec(f"beta{index}", ("d0",), (n,), "zeros", role="bias"))
        return out

    def _rstd(self, index, name, src, in_shape):
        """s[..] = 1/√(Σ_e src[.., e]²/D + ε): one number per row of the last axis."""
        import sympy as sp
        rows = _Rows(in_shape)
        return rows.reduce(name, index, src, lambda x: x ** 2,
                           lambda z: 1 / sp.sqrt(z / rows.n + sp.Float(self.eps)),
                           kind="rstd", label=f"{self._title()}: 1/√(mean of squares + ε)")

    def _scale(self, index, name, src, rstd, in_shape):
        """h[.., d] = γ[d]·src[.., d]·s[..] (+ β[d])."""
        from ..ir import nodes as ir
        rows = _Rows(in_shape)
        syms: dict = {}
        h = ir.element(syms, f"gamma{index}", rows.d) * rows.element(syms, src) \
            * rows.row_element(syms, rstd)
        if self.bias:
            h = h + ir.element(syms, f"beta{index}", rows.d)
        return rows.node(name, index, src, h, syms, self._params(index, rows.n),
                         kind="norm", label=self._title(), also=rstd)


class _Rows:
    """The index spaces of a last-axis layer: the leading axes (one row each), the
    last axis d of length D, and the summed e.  A vector input has one row, whose
    per-row numbers sit at position 0 of a row space of extent 1."""

    def __init__(self, in_shape: tuple):
        from ..ir import nodes as ir
        self.in_shape = tuple(in_shape)
        self.lead = _LEAD[:len(in_shape) - 1]
        self.d, self.e = ("d", "e") if len(in_shape) > 1 else ("i", "j")
        self.n = in_shape[-1]
        self.full = tuple(zip(self.lead, in_shape[:-1])) + ((self.d, self.n),)
        if self.lead:
            self.space, self.row = tuple(zip(self.lead, in_shape[:-1])), self.lead
        else:
            self.space, self.row = (("a", 1),), (ir.Affine((), 0),)
        self.n_in = 1
        for s in in_shape:
            self.n_in *= s
        self.n_rows = self.n_in // self.n

    def element(self, syms, array, last=None):
        from ..ir import nodes as ir
        return ir.element(syms, array, ir.BATCH, *self.lead, last or self.d)

    def row_element(self, syms, array):
        from ..ir import nodes as ir
        return ir.element(syms, array, ir.BATCH, *self.row)

    def reduce(self, name, index, src, summand, outer, kind, label, op="sum"):
        """A node with one number per row: outer(Σ_e summand(src[.., e])) (``op`` "max":
        outer(max_k ...), over an index named k: the C of a maximum's gradient holds a
        number named e)."""
        from ..ir import nodes as ir
        syms: dict = {}
        e = self.e if op == "sum" else "k"
        z = ir.element(syms, f"z_{name}", ir.BATCH, *(n for n, _ in self.space))
        red = ir.Reduction(f"z_{name}", z, summand(self.element(syms, src, e)),
                           (e,), space=((e, self.n),), op=op)
        return ir.Node(name, index, src, self.n_in, self.n_rows, [], [red], outer(z), syms,
                       kind=kind, space=self.space, in_shape=self.in_shape, label=label)

    def node(self, name, index, src, expr, syms, params, kind, label, also=None):
        """A node over every element: expr of src[.., d] (and of a per-row node ``also``)."""
        from ..ir import nodes as ir
        extra = {} if also is None else {"inputs": [src, also],
                                         "widths": {src: self.n_in, also: self.n_rows}}
        return ir.Node(name, index, src, self.n_in, self.n_in, params, [], expr, syms,
                       kind=kind, space=self.full, in_shape=self.in_shape, label=label,
                       **extra)


class LayerNorm(_Norm):
    """Layer normalisation over the last axis (PyTorch's ``nn.LayerNorm(D, eps)``):
    C[..., d] = X[..., d] − mean_e X[..., e], then
    H[..., d] = γ[d]·C[..., d] / √(mean_e C[..., e]² + ε) + β[d]; the variance is the
    biased one (divided by D) as PyTorch's.  γ (``gamma{k}``, PyTorch's ``weight``)
    starts at 1, β (``beta{k}``, ``bias``) at 0; ``bias=False`` leaves β out.  Four IR
    nodes: ``<name>_mean`` (μ, one per row), ``<name>_c`` (the centred input X − μ),
    ``<name>_rstd`` (s = 1/√(mean_e C² + ε), one per row) and ``<name>`` (γ·C·s + β):
    each sum is computed once per row and read by the row's D elements."""

    eps_default = 1e-5

    def to_nodes(self, index, name, inputs, shapes):
        in_shape = tuple(shapes[0])
        rows = _Rows(in_shape)
        mean = rows.reduce(f"{name}_mean", index, inputs[0], lambda x: x,
                           lambda z: z / rows.n, kind="mean",
                           label=f"{self._title()}: mean")
        syms: dict = {}
        centred = rows.element(syms, inputs[0]) - rows.row_element(syms, mean.name)
        centre = rows.node(f"{name}_c", index, inputs[0], centred, syms, [], kind="centre",
                           label=f"{self._title()}: centre", also=mean.name)
        rstd = self._rstd(index, f"{name}_rstd", centre.name, in_shape)
        return [mean, centre, rstd, self._scale(index, name, centre.name, rstd.name, in_shape)]


class RMSNorm(_Norm):
    """Root-mean-square normalisation over the last axis:
    H[..., d] = γ[d]·X[..., d] / √(mean_e X[..., e]² + ε) + β[d].  γ (``gamma{k}``,
    PyTorch's ``nn.RMSNorm(D, eps).weight``) starts at 1, β (``beta{k}``) at 0;
    PyTorch's RMSNorm has no β: ``bias=False`` is its exact form.  Two IR nodes:
    ``<name>_rstd`` (s = 1/√(mean_e X² + ε), one per row) and ``<name>`` (γ·X·s + β)."""

    eps_default = 1e-6

    def to_nodes(self, index, name, inputs, shapes):
        in_shape = tuple(shapes[0])
        rstd = self._rstd(index, f"{name}_rstd", inputs[0], in_shape)
        return [rstd, self._scale(index, name, inputs[0], rstd.name, in_shape)]
