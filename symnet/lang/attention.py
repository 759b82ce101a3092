"""Layers over sequences (batch, steps, features), PyTorch's batch_first layout.

``Pointwise(units, activation)`` is a Dense layer applied at every position
(PyTorch's ``nn.Linear`` on the last axis): H[b,t,i] = f(Σ_j W[i,j]·X[b,t,j] + b[i]),
one matrix product of batch·steps rows.

``MultiHeadAttention(heads, causal=False)`` is self-attention as PyTorch's
``nn.MultiheadAttention(D, heads, batch_first=True)`` computes it, written as
tensor formulas (d = D / heads, h a head, e a feature of a head):

    Y[b,t,i]      = Σ_j W[i,j]·X[b,t,j] + c[i]          (i < 3D: queries, keys, values)
    S[b,h,t,u]    = Σ_e (1/√d)·Y[b,t,h·d+e]·Y[b,u,D+h·d+e]    (−∞ where masked)
    M[b,h,t]      = max_u S[b,h,t,u]
    E[b,h,t,u]    = exp(S[b,h,t,u] − M[b,h,t])
    Z[b,h,t]      = Σ_u E[b,h,t,u]
    P[b,h,t,u]    = E[b,h,t,u] / Z[b,h,t]                 (softmax over the keys u)
    A[b,t,h,e]    = Σ_u P[b,h,t,u]·Y[b,u,2D+h·d+e]          (the values)
    O[b,t,i]      = Σ_j Wo[i,j]·A[b,t,j] + co[i]

where S is masked (−∞, so P = 0) at the keys u > t when ``causal``.
Subtracting the row's maximum M changes nothing in P but keeps every
exponential ≤ 1; its derivative is zero in exact arithmetic (Σ_u E·∂L/∂E = 0), so
no gradient is sent through M (``ir.Node.shift``: no pass for ∂L/∂M, none for its
argmax); each exponential is computed once (E), and its derivative is E itself.
The scale 1/√d sits inside the sum, so the C's small product of the scores stores
S itself (α·Σ), and the values are read where the projection wrote them (each row
of V, along e, is contiguous).  sympy derives every
gradient from these element formulas (the softmax's Jacobian included); the
C has a loop per formula.  W, c, Wo, co are PyTorch's in_proj_weight,
in_proj_bias, out_proj.weight and out_proj.bias.

>>> import symnet as sn
>>> S = sn.Input((6, 8), name="S")
>>> A = sn.MultiHeadAttention(2, name="A")(S)
>>> sn.Network(S, sn.Dense(1, name="O")(sn.Flatten()(A)), loss="mse").param_shapes()["W1"]
(24, 8)
"""

from __future__ import annotations

import math

from ..ir import nodes as ir
from .base import ACTIVATION_NAMES, LayerBase, _check_size, check_flag, check_name

POS, HEAD, KEY, FEAT = "tq", "hd", "tk", "e"      # loop names: position, head, key, head feature


# MultiHeadAttention(8, 2) as PyTorch's (embed_dim, num_heads) puts 2 in causal
_TORCH_HEADS = ("; PyTorch's MultiheadAttention(embed_dim, num_heads) is "
                "sn.MultiHeadAttention(num_heads): the width is the input's")


def _where(layer) -> str:
    name = layer.name or getattr(layer, "_net_name", None)
    return f"{type(layer).__name__} {name!r}" if name else f"{type(layer).__name__}"


def _sequence(layer, shapes) -> tuple:
    if len(shapes) != 1 or len(shapes[0]) != 2:
        raise ValueError(f"{_where(layer)} reads one (steps, features) sequence, got "
                         f"shape{'s' if len(shapes) > 1 else ''} "
                         f"{', '.join(map(str, shapes))}")
    return shapes[0]


def linear_node(name: str, index: int, src: str, steps: int, width: int, units: int,
                W: str, b: str, activation=None, kind: str = "linear") -> ir.Node:
    """H[b,t,i] = f(Σ_j W[i,j]·src[b,t,j] + b[i]) at every position t: one matrix product."""
    syms: dict = {}
    rname = f"z_{name}"
    r = ir.element(syms, rname, ir.BATCH, POS, ir.OUT)
    summand = ir.element(syms, W, ir.OUT, ir.IN) * ir.element(syms, src, ir.BATCH, POS, ir.IN)
    red = ir.Reduction(rname, r, summand, (ir.IN,), contraction=W, input=src, rows=steps,
                       space=((ir.IN, width),))
    init = activation.init if activation is not None else "glorot"
    params = [ir.ParamSpec(W, ("out", "in"), (units, width), init),
              ir.ParamSpec(b, ("out",), (units,), "zeros", role="bias")]
    pre = r + ir.element(syms, b, ir.OUT)
    outer = activation.expr(pre) if activation is not None else pre
    return ir.Node(name, index, src, steps * width, steps * units, params, [red], outer, syms,
                   kind=kind, activation=activation, space=((POS, steps), (ir.OUT, units)),
                   in_shape=(steps, width))


class Pointwise(LayerBase):
    """A Dense layer at every position of a (steps, features) sequence: PyTorch's
    ``nn.Linear`` on the last axis.  W (units, features), b (units,); ``units=None``:
    as many as the input has features."""


    tensor = True

    def __init__(self, units: int | None, activation="linear", name: str | None = None):
        self.units = None if units is None else _check_size(units, "Pointwise units")
        self.name = None if name is None else check_name(name, "layer")
        if activation not in ACTIVATION_NAMES:
            raise ValueError(f"Pointwise: unknown activation {activation!r}; known: "
                             f"{', '.join(ACTIVATION_NAMES)}")
        self.activation_name = activation

    def __repr__(self):
        return f"Pointwise({self.units}, {self.activation_name!r}, name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "pointwise", "units": self.units, "activation": self.activation_name,
                "name": self.name}

    def output_shape(self, in_shape):
        steps, width = _sequence(self, [in_shape])
        return (steps, self.units or width)

    def to_node(self, index, name, input_name, in_shape):
        from ..scalar.primitives import activation
        act = activation(self.activation_name, f"activation of {_where(self)}")
        steps, width = in_shape
        return linear_node(name, index, input_name, steps, width, self.units or width,
                           f"W{index}",
                           f"b{index}", None if act.name == "linear" else act,
                           kind="pointwise")


class PositionalEmbedding(LayerBase):
    """H[b,t,i] = X[b,t,i] + P[t,i]: a learned embedding of each position (P of
    shape (steps, features), initialised to zero), added to a sequence."""

    tensor = True

    def __init__(self, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")

    def __repr__(self):
        return f"PositionalEmbedding(name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "positional", "name": self.name}

    def output_shape(self, in_shape):
        return _sequence(self, [in_shape])

    def to_node(self, index, name, input_name, in_shape):
        steps, width = in_shape
        syms: dict = {}
        P = f"P{index}"
        outer = ir.element(syms, input_name, ir.BATCH, POS, ir.OUT) + \
            ir.element(syms, P, POS, ir.OUT)
        return ir.Node(name, index, input_name, steps * width, steps * width,
                       [ir.ParamSpec(P, ("steps", "features"), (steps, width), "zeros",
                                     role="bias")], [], outer, syms, kind="positional",
                       space=((POS, steps), (ir.OUT, width)), in_shape=(steps, width))


class MultiHeadAttention(LayerBase):
    """Self-attention over a (steps, features) sequence with ``heads`` heads (see the
    module docstring for its formulas); the output has the input's shape.
    ``causal``: each position attends to itself and the positions before it only.
    Parameters as PyTorch's ``nn.MultiheadAttention``: W (3D, D) = in_proj_weight,
    c (3D,) = in_proj_bias, Wo (D, D) = out_proj.weight, co (D,) = out_proj.bias."""

    tensor = True

    def __init__(self, heads: int, causal: bool = False, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")
        self.heads = _check_size(heads, f"{_where(self)} heads")
        self.causal = check_flag(causal, f"{_where(self)}: causal", _TORCH_HEADS)

    def __repr__(self):
        return f"MultiHeadAttention({self.heads}, causal={self.causal}, name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "attention", "heads": self.heads, "causal": self.causal,
                "name": self.name}

    def output_shape(self, in_shape):
        steps, width = _sequence(self, [in_shape])
        if width % self.heads:
            raise ValueError(f"{_where(self)}: {self.heads} heads do not divide the width "
                             f"{width} of its input (expected a width that is a multiple of "
                             f"{self.heads}, e.g. {self.heads * max(1, width // self.heads)})")
        return (steps, width)

    def to_node(self, index, name, input_name, in_shape):
        import sympy as sp
        steps, D = self.output_shape(in_shape)
        H, d = self.heads, D // self.heads
        W, c, Wo, co = f"W{index}", f"c{index}", f"Wo{index}", f"co{index}"
        qkv = linear_node(f"{name}_qkv", index, input_name, steps, D, 3 * D, W, c)
        Y = qkv.name
        t, u = (sp.Symbol(n, integer=True) for n in (POS, KEY))

        def y(pos, offset):
            return ir.Affine(((HEAD, d), (FEAT, 1)), offset), pos

        # S[b,h,t,u] = Σ_e (1/√d)·Y[b,t,h·d+e]·Y[b,u,D+h·d+e]
        syms: dict = {}
        S = f"{name}_s"
        r = ir.element(syms, f"z_{S}", ir.BATCH, HEAD, POS, KEY)
        q_at, _ = y(POS, 0)
        k_at, _ = y(KEY, D)
        # the scale inside the sum: the scores are the small product's α·Σ itself (no
        # pass of their own forward, nor of their gradient backward: its products
        # carry the α too)
        summand = sp.Float(1 / math.sqrt(d), 17) * ir.element(syms, Y, ir.BATCH, POS, q_at) \
            * ir.element(syms, Y, ir.BATCH, KEY, k_at)
        red = ir.Reduction(f"z_{S}", r, summand, (FEAT,), space=((FEAT, d),))
        scaled = r
        if self.causal:            # a later key scores −∞: its exponential is 0
            scaled = sp.Piecewise((scaled, u <= t), (-sp.oo, True))
        scores = ir.Node(S, index, Y, steps * 3 * D, H * steps * steps, [], [red],
                         scaled, syms, kind="scores",
                         space=((HEAD, H), (POS, steps), (KEY, steps)),
                         in_shape=(steps, 3 * D))
        # M[b,h,t] = max_u S[b,h,t,u]: no exponential overflows
        syms = {}
        Mn = f"{name}_m"
        r = ir.element(syms, f"z_{Mn}", ir.BATCH, HEAD, POS)
        red = ir.Reduction(f"z_{Mn}", r, ir.element(syms, S, ir.BATCH, HEAD, POS, KEY),
                           (KEY,), space=((KEY, steps),), op="max")
        M = ir.Node(Mn, index, S, H * steps * steps, H * steps, [], [red], r, syms,
                    kind="max", space=((HEAD, H), (POS, steps)), in_shape=(H, steps, steps),
                    shift=True)
        # E[b,h,t,u] = exp(S[b,h,t,u] − M[b,h,t]): each exponential once
        syms = {}
        En = f"{name}_e"
        E = ir.Node(En, index, S, H * steps * steps, H * steps * steps, [], [],
                    sp.exp(ir.element(syms, S, ir.BATCH, HEAD, POS, KEY)
                           - ir.element(syms, Mn, ir.BATCH, HEAD, POS)), syms,
                    kind="exp", space=((HEAD, H), (POS, steps), (KEY, steps)),
                    in_shape=(H, steps, steps), inputs=[S, Mn],
                    widths={S: H * steps * steps, Mn: H * steps})
        # Z[b,h,t] = Σ_u E[b,h,t,u]
        syms = {}
        Zn = f"{name}_z"
        r = ir.element(syms, f"z_{Zn}", ir.BATCH, HEAD, POS)
        red = ir.Reduction(f"z_{Zn}", r, ir.element(syms, En, ir.BATCH, HEAD, POS, KEY),
                           (KEY,), space=((KEY, steps),))
        Z = ir.Node(Zn, index, En, H * steps * steps, H * steps, [], [red], r, syms,
                    kind="softmax_sum", space=((HEAD, H), (POS, steps)),
                    in_shape=(H, steps, steps))
        # P[b,h,t,u] = E[b,h,t,u] / Z[b,h,t]: the softmax over the keys u
        syms = {}
        Pn = f"{name}_p"
        P = ir.Node(Pn, index, En, H * steps * steps, H * steps * steps, [], [],
                    ir.element(syms, En, ir.BATCH, HEAD, POS, KEY)
                    / ir.element(syms, Zn, ir.BATCH, HEAD, POS), syms, kind="softmax",
                    space=((HEAD, H), (POS, steps), (KEY, steps)), in_shape=(H, steps, steps),
                    inputs=[En, Zn], widths={En: H * steps * steps, Zn: H * steps})
        # A[b,t,h,e] = Σ_u P[b,h,t,u]·Y[b,u,2D+h·d+e]: the values read where the
        # projection left them (a small product per example and head whose B, the
        # values, runs along e: no copy of them, nor a pass back for their gradient)
        syms = {}
        An = f"{name}_a"
        v_at, _ = y(KEY, 2 * D)
        r = ir.element(syms, f"z_{An}", ir.BATCH, POS, HEAD, FEAT)
        summand = ir.element(syms, Pn, ir.BATCH, HEAD, POS, KEY) * \
            ir.element(syms, Y, ir.BATCH, KEY, v_at)
        red = ir.Reduction(f"z_{An}", r, summand, (KEY,), space=((KEY, steps),))
        A = ir.Node(An, index, Pn, H * steps * steps, steps * D, [], [red], r, syms,
                    kind="attend", space=((POS, steps), (HEAD, H), (FEAT, d)),
                    in_shape=(H, steps, steps), inputs=[Pn, Y],
                    widths={Pn: H * steps * steps, Y: steps * 3 * D})
        out = linear_node(name, index, An, steps, D, D, Wo, co, kind="attention")
        return [qkv, scores, M, E, Z, P, A, out]


def _width(x) -> int | None:
    """The features of a sequence from the layers that made it (None: not known)."""
    from .base import Input
    from .dropout import Dropout
    from .embedding import Embedding
    from .merge import Add
    from .norm import _LastAxis
    while True:
        if isinstance(x, Input):
            return x.shape[-1]
        if isinstance(x, Pointwise) and x.units is not None:
            return x.units
        if isinstance(x, Embedding):
            return x.dim
        if isinstance(x, (MultiHeadAttention, PositionalEmbedding, _LastAxis, Add,
                          Pointwise, Dropout)) and x.inputs:
            x = x.inputs[0]
            continue
        seq = getattr(x, "seq_shape", None)
        return seq[-1] if seq else None


class TransformerBlock(LayerBase):
    """A pre-norm transformer block over a (steps, features) sequence, PyTorch's
    ``nn.TransformerEncoderLayer(D, heads, ff, dropout=0, batch_first=True,
    norm_first=True)``:

        R = X + MultiHeadAttention(LayerNorm(X))
        H = R + Pointwise(D)(f(Pointwise(ff)(LayerNorm(R))))

    Called on a sequence it applies these layers (named ``<name>_norm1``,
    ``<name>_att``, ``<name>_res1``, ``<name>_norm2``, ``<name>_ff1``, ``<name>_ff2``
    and ``<name>`` when named) and returns the last; each has its own parameters.
    PyTorch's norm1, self_attn, norm2, linear1, linear2 are, in order, the
    LayerNorms' gamma/beta, the attention's W, c, Wo, co and the two Pointwise
    layers' W, b."""

    def __init__(self, heads: int, ff: int, activation="relu", causal: bool = False,
                 eps: float = 1e-5, width: int | None = None, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")
        self.width = None if width is None else _check_size(width, "TransformerBlock width")
        self.heads = _check_size(heads, f"{_where(self)} heads")
        self.ff = _check_size(ff, f"{_where(self)} ff")
        self.causal = check_flag(causal, f"{_where(self)}: causal")
        self.activation, self.eps = activation, eps
        Pointwise(ff, activation)             # refuses an unknown activation here

    def __repr__(self):
        return (f"TransformerBlock({self.heads}, {self.ff}, {self.activation!r}, "
                f"causal={self.causal}, name={self.name!r})")

    def __call__(self, previous):
        from .merge import Add
        from .norm import LayerNorm

        def named(part):
            return None if self.name is None else f"{self.name}_{part}"
        x = previous
        width = self.width or _width(x)
        if width is None:
            raise ValueError(f"{_where(self)}: the width of its input {x!r} is not known "
                             "before the network is built; give it: "
                             "TransformerBlock(heads, ff, width=D)")
        a = MultiHeadAttention(self.heads, self.causal, name=named("att"))(
            LayerNorm(self.eps, name=named("norm1"))(x))
        r = Add(name=named("res1"))([x, a])
        m = Pointwise(self.ff, self.activation, name=named("ff1"))(
            LayerNorm(self.eps, name=named("norm2"))(r))
        m = Pointwise(width, name=named("ff2"))(m)
        return Add(name=self.name)([r, m])
