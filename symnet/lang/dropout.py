"""Dropout: inverted dropout with its masks from a counter-based generator in the C.

In training each element is kept with probability 1 − p and then scaled by 1/(1 − p),
or set to 0; in evaluation the layer is the identity:

    H[b, e] = X[b, e] · m(seed, step, training, b, e),   m = 1/(1 − p) or 0 (training), 1

The mask m comes from Philox4x32-10 with the counter (element e, example b, step) and the
key seed: the same seed gives the same masks for any thread count and chunking.  Its
derivative with respect to X is m itself (sympy's, as for any formula).  The layer's
state is a frozen parameter ``rng{k}`` of three numbers, (seed, step, training), which the
model sets: ``training`` is 1 in ``loss``, ``loss_and_grad``, ``step`` and ``fit`` and 0
in ``forward``, ``predict``, ``evaluate`` and ``export_c``; ``step`` advances after every
update; ``fit(seed=s)`` starts from (s, 0).

>>> import symnet as sn
>>> net = sn.Network(sn.Input(4), sn.Dense(8, "relu"), sn.Dropout(0.5), sn.Dense(1),
...                  loss="mse")
>>> net.param_shapes()["rng2"]
(3,)
"""

from __future__ import annotations

import math

from .base import LayerBase, check_name

SEED, STEP, TRAINING = 0, 1, 2      # the positions in rng{k}
SEED_RANGE = 1 << 24                # seeds and steps are held exactly by float32 below this


class Dropout(LayerBase):
    """Inverted dropout with probability ``p`` (0 ≤ p < 1) of zeroing each element
    (PyTorch's ``nn.Dropout(p)``); any input shape.  See the module docstring."""

    layout = "kept"
    tensor = True

    def __init__(self, p: float = 0.5, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"{self._where()}: p (the probability of dropping an element) "
                             f"must be a number in [0, 1), got {p!r}")
        self.p = float(p)

    def _where(self):
        name = self.name or getattr(self, "_net_name", None)
        title = f"Dropout({self.p})" if hasattr(self, "p") else "Dropout"
        return f"layer {name!r} ({title})" if name else f"layer {title!r}"

    def __repr__(self):
        return f"Dropout({self.p!r}, name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "dropout", "p": self.p, "name": self.name}

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def to_node(self, index, name, input_name, in_shape):
        import sympy as sp

        from ..ir import nodes as ir
        from ..scalar.primitives import dropout_mask
        in_shape = tuple(in_shape)
        names = ("i",) if len(in_shape) == 1 else tuple(f"a{k}" for k in range(len(in_shape)))
        space = tuple(zip(names, in_shape))
        syms: dict = {}
        x = ir.element(syms, input_name, ir.BATCH, *names)
        rng = f"rng{index}"
        state = [ir.element(syms, rng, ir.Affine((), k)) for k in (SEED, STEP, TRAINING)]
        flat, stride = sp.S.Zero, 1           # the element's position in the example, e
        for n, size in reversed(space):
            flat += stride * sp.Symbol(n, integer=True)
            stride *= size
        mask = dropout_mask(*state, sp.Symbol(ir.BATCH, integer=True), flat, sp.Float(self.p))
        spec = ir.ParamSpec(rng, ("state",), (3,), "zeros", role="state", trainable=False)
        n = math.prod(in_shape)
        return ir.Node(name, index, input_name, n, n, [spec], [], x * mask, syms,
                       kind="dropout", space=space, in_shape=in_shape,
                       label=f"Dropout({self.p:g})")
