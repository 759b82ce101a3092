"""Batch normalisation: the statistics of a channel over the examples of the batch.

For channel c, with n = B·S values (B examples, S positions of a channel per example):

    C[b,c,s] = X[b,c,s] − t·Σ_b′ Σ_s′ X[b′,c,s′]/n − (1 − t)·mean[c]
    H[b,c,s] = γ[c]·C[b,c,s] / √(t·Σ_b′ Σ_s′ C[b′,c,s′]²/n + (1 − t)·var[c] + ε) + β[c]

t = 1 in training (batch statistics: the sums run over the batch index b′, so every
example's output depends on the others, and sympy's gradient carries that), t = 0 in
evaluation (the running statistics).  After each training step (``step``, ``fit``) the
model updates mean ← (1 − momentum)·mean + momentum·μ and var ← (1 − momentum)·var +
momentum·σ²·n/(n − 1) (unbiased, as PyTorch's).  ``mean{k}``, ``var{k}`` and ``mode{k}``
(t) are frozen parameters: saved, loaded and exported with the model.

PyTorch's ``nn.BatchNorm1d(C)`` / ``nn.BatchNorm2d(C)``: weight = ``gamma{k}``, bias =
``beta{k}``, running_mean = ``mean{k}``, running_var = ``var{k}``.  Each sum over the
batch is computed once per channel, in a buffer of its own (``symnet.plan.batchsum``).

``sync=True``: in ``fit(comm=...)`` the statistics are those of the step's batch over
all processes (the sums over b′ run over every process's examples, forward and
backward, through the plan's hook), as PyTorch's ``SyncBatchNorm``; without ``comm`` it
is the same as ``sync=False``.  The flag is part of the network (saved and loaded).
"""

from __future__ import annotations

import math

from .base import LayerBase, check_name
from .norm import not_a_width


class _BatchNorm(LayerBase):
    tensor = True
    layout = "channels_first"     # (C,), (C, L), (C, H, W): per channel
    ranks: tuple = ()

    def __init__(self, eps: float = 1e-5, momentum: float = 0.1, name: str | None = None,
                 sync: bool = False):
        self.name = None if name is None else check_name(name, "layer")
        if not isinstance(sync, bool):
            raise ValueError(f"{self._where()}: sync must be True or False, got {sync!r}")
        self.sync = bool(sync)
        not_a_width(eps, self._where(), f"nn.{type(self).__name__}")
        for what, v, hi in (("eps", eps, math.inf), ("momentum", momentum, 1.0)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= hi \
                    or v == math.inf:
                raise ValueError(f"{self._where()}: {what} must be a number in "
                                 f"{'(0, 1]' if hi == 1.0 else '(0, ∞)'}, got {v!r}")
        self.eps, self.momentum = float(eps), float(momentum)

    def _where(self):
        name = self.name or getattr(self, "_net_name", None)
        title = f"{type(self).__name__}()"
        return f"layer {name!r} ({title})" if name else f"layer {title!r}"

    def __repr__(self):
        return (f"{type(self).__name__}(eps={self.eps!r}, momentum={self.momentum!r}, "
                f"name={self.name!r}{', sync=True' if self.sync else ''})")

    def describe(self) -> dict:
        out = {"kind": type(self).__name__.lower(), "eps": self.eps,
               "momentum": self.momentum, "name": self.name}
        if self.sync:           # (absent when False: the descriptions saved before it)
            out["sync"] = True
        return out

    def output_shape(self, in_shape):
        if len(in_shape) not in self.ranks:
            want = " or ".join(f"{r} axes" for r in self.ranks)
            raise ValueError(f"{self._where()}: takes inputs of {want} (channels first), "
                             f"got shape {in_shape}")
        return tuple(in_shape)

    def to_nodes(self, index, name, inputs, shapes):
        import sympy as sp

        from ..ir import nodes as ir
        # 1/B, the examples the statistics run over: this call's batch, or the step's
        # batch over all processes where a fit synchronises them (the C's inv_stat)
        INV_BATCH = sp.Symbol("inv_stat", positive=True)
        in_shape = tuple(shapes[0])
        x, C = inputs[0], in_shape[0]
        out = ("c",) + ("y", "x")[2 - (len(in_shape) - 1):] if len(in_shape) > 1 else ("c",)
        summed = ("u", "v")[2 - (len(in_shape) - 1):] if len(in_shape) > 1 else ()
        space = tuple(zip(out, in_shape))
        S = math.prod(in_shape[1:])
        red_space = (("bb", "batch"),) + tuple(zip(summed, in_shape[1:]))
        over = tuple(n for n, _ in red_space)
        mean, var, mode = f"mean{index}", f"var{index}", f"mode{index}"

        def flag(syms):
            t = ir.element(syms, mode, ir.Affine((), 0))
            return sp.Piecewise((1, t > sp.Float(0.5)), (0, True))

        syms: dict = {}
        zc = ir.element(syms, f"z_{name}_c", ir.BATCH, *out)
        red = ir.Reduction(f"z_{name}_c", zc, ir.element(syms, x, "bb", "c", *summed), over,
                           space=red_space)
        t = flag(syms)
        centred = ir.element(syms, x, ir.BATCH, *out) - t * zc * INV_BATCH / S \
            - (1 - t) * ir.element(syms, mean, "c")
        first = ir.Node(f"{name}_c", index, x, math.prod(in_shape), math.prod(in_shape), [],
                        [red], centred, syms, kind="batchnorm", space=space, in_shape=in_shape,
                        label=f"{type(self).__name__}(): centre")
        s2: dict = {}
        z = ir.element(s2, f"z_{name}", ir.BATCH, *out)
        red2 = ir.Reduction(f"z_{name}", z, ir.element(s2, first.name, "bb", "c", *summed) ** 2,
                            over, space=red_space)
        t = flag(s2)
        scale = ir.element(s2, f"gamma{index}", "c") * ir.element(s2, first.name, ir.BATCH, *out)
        outer = scale / sp.sqrt(t * z * INV_BATCH / S + (1 - t) * ir.element(s2, var, "c")
                                + sp.Float(self.eps)) + ir.element(s2, f"beta{index}", "c")
        params = [ir.ParamSpec(f"gamma{index}", ("c",), (C,), "ones", role="bias"),
                  ir.ParamSpec(f"beta{index}", ("c",), (C,), "zeros", role="bias"),
                  ir.ParamSpec(mean, ("c",), (C,), "zeros", role="state", trainable=False),
                  ir.ParamSpec(var, ("c",), (C,), "ones", role="state", trainable=False),
                  ir.ParamSpec(mode, ("state",), (1,), "zeros", role="state",
                               trainable=False)]
        second = ir.Node(name, index, first.name, first.n_out, first.n_out, params, [red2],
                         outer, s2, kind="batchnorm", space=space, in_shape=in_shape,
                         label=f"{type(self).__name__}()")
        # what export_c needs to fold this layer into a Dense or Conv before it
        second.fold = {"eps": self.eps, "gamma": f"gamma{index}", "beta": f"beta{index}",
                       "mean": mean, "var": var}
        return [first, second]


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (C,) or (C, L) inputs over the batch (and L), per channel."""

    ranks = (1, 2)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (C, H, W) inputs over the batch, H and W, per channel."""

    ranks = (3,)
