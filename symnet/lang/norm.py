"""Softmax and normalisation over the last axis: tensor formulas written once, derived.

Each layer here is one or two tensor formulas (``symnet.tensor``) over the input's
last axis d (of length D), the leading axes carried along; sympy derives every
gradient, as for any other layer:

- softmax:   h[d] = 1 / Σ_e exp(x[e] − x[d])   (= exp(x[d]) / Σ_e exp(x[e]); this form
  never overflows: the term e = d is 1, so the sum is ≥ 1 and a huge term gives h = 0)
- LayerNorm: c[d] = x[d] − Σ_e x[e]/D,   h[d] = γ[d]·c[d] / √(Σ_e c[e]²/D + ε) + β[d]
- RMSNorm:   h[d] = γ[d]·x[d] / √(Σ_e x[e]²/D + ε) + β[d]

>>> import symnet as sn
>>> net = sn.Network(sn.Input((4, 8)), sn.LayerNorm(), sn.Flatten(), sn.Dense(3, "softmax"),
...                  loss="mse")
>>> net.param_shapes()
{'gamma1': (8,), 'beta1': (8,), 'W3': (3, 32), 'b3': (3,)}

Parameters as PyTorch's ``nn.LayerNorm(D)`` / ``nn.RMSNorm(D)``: ``gamma{k}`` is
``weight``, ``beta{k}`` is ``bias`` (PyTorch's RMSNorm has no bias: ``bias=False``
gives its exact form).  Each sum is computed for every output element (the IR's
reductions have the output's indices), so a row of D features costs D² terms.
"""

from __future__ import annotations

from .base import LayerBase, check_name

_LEAD = ("a", "a1", "a2")      # index names of the leading axes (never b, n, t0, ...)


def _number(v, what: str, where: str, low: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > low \
            or v == float("inf"):
        raise ValueError(f"{where}: {what} must be a finite number > {low:g}, got {v!r}")
    return float(v)


def last_axis(in_shape: tuple):
    """The index symbols of an input of ``in_shape``: (leading..., d) and the summed e."""
    from .tensor import indices
    lead = tuple(indices(n) for n in _LEAD[:len(in_shape) - 1])
    d, e = indices("d e" if len(in_shape) > 1 else "i j")   # a vector reads as Dense does
    return lead, d, e


def softmax_formula(x, lead: tuple, d, e, n: int):
    """softmax over the last axis, h[..., d] = 1 / Σ_e exp(x[..., e] − x[..., d]):
    exp(x_d)/Σ_e exp(x_e) divided through by exp(x_d), so no term overflows to inf/inf."""
    import sympy as sp
    return 1 / sp.Sum(sp.exp(x[(*lead, e)] - x[(*lead, d)]), (e, 0, n - 1))


class _LastAxis(LayerBase):
    """Shared parts: the name, the shape (unchanged) and the tensor path."""

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

    def _tensor(self, in_shape, formula, params=None, init=None, kind="norm", label=""):
        from .tensor import TensorLayer
        lead, d, _ = last_axis(in_shape)
        layer = TensorLayer(tuple(in_shape), formula, (*lead, d), params, init, name=self.name,
                            kind=kind, label=label or self._title())
        layer.where = self._where()
        return layer


class Softmax(_LastAxis):
    """softmax over the last axis: H[..., d] = exp(X[..., d]) / Σ_e exp(X[..., e]),
    computed as 1 / Σ_e exp(X[..., e] − X[..., d]); its Jacobian is derived by sympy.
    ``Dense(n, "softmax")`` is a Dense layer followed by this one."""

    title = "Softmax()"

    def __init__(self, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")

    def __repr__(self):
        return f"Softmax(name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "softmax", "name": self.name}

    def to_node(self, index, name, input_name, in_shape):
        lead, d, e = last_axis(in_shape)
        n = in_shape[-1]
        layer = self._tensor(in_shape, lambda x: softmax_formula(x, lead, d, e, n),
                             kind="softmax", label="softmax")
        return layer.to_node(index, name, input_name, in_shape)


class _Norm(_LastAxis):
    eps_default = 1e-5

    def __init__(self, eps: float | None = None, bias: bool = True, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")
        self.eps = _number(self.eps_default if eps is None else eps, "eps", self._where())
        self.bias = bool(bias)

    def _title(self):
        return f"{type(self).__name__}(eps={getattr(self, 'eps', self.eps_default):g})"

    def __repr__(self):
        extra = "" if self.bias else ", bias=False"
        return f"{type(self).__name__}(eps={self.eps!r}{extra}, name={self.name!r})"

    def describe(self) -> dict:
        d = {"kind": type(self).__name__.lower(), "eps": self.eps, "name": self.name}
        if not self.bias:
            d["bias"] = False
        return d

    def _scale(self, index, name, input_name, in_shape):
        """h[..., d] = γ[d]·x[..., d] / √(Σ_e x[..., e]²/D + ε) (+ β[d])."""
        import sympy as sp
        lead, d, e = last_axis(in_shape)
        n = in_shape[-1]
        params = {"gamma": (n,), **({"beta": (n,)} if self.bias else {})}

        def formula(x, gamma, beta=None):
            ms = sp.Sum(x[(*lead, e)] ** 2, (e, 0, n - 1)) / n
            h = gamma[d] * x[(*lead, d)] / sp.sqrt(ms + sp.Float(self.eps))
            return h + beta[d] if beta is not None else h
        if not self.bias:
            formula = (lambda fn: (lambda x, gamma: fn(x, gamma)))(formula)
        layer = self._tensor(in_shape, formula, params, {"gamma": "ones", "beta": "zeros"}
                             if self.bias else {"gamma": "ones"})
        return layer.to_node(index, name, input_name, in_shape)


class LayerNorm(_Norm):
    """Layer normalisation over the last axis (PyTorch's ``nn.LayerNorm(D, eps)``):
    C[..., d] = X[..., d] − mean_e X[..., e], then
    H[..., d] = γ[d]·C[..., d] / √(mean_e C[..., e]² + ε) + β[d]; the variance is the
    biased one (divided by D) as PyTorch's.  γ (``gamma{k}``, PyTorch's ``weight``)
    starts at 1, β (``beta{k}``, ``bias``) at 0; ``bias=False`` leaves β out.  Two IR
    nodes: ``<name>_c`` (the centred input) and ``<name>``."""

    eps_default = 1e-5

    def to_nodes(self, index, name, inputs, shapes):
        import sympy as sp
        in_shape = tuple(shapes[0])
        lead, d, e = last_axis(in_shape)
        n = in_shape[-1]
        centre = self._tensor(in_shape, lambda x: x[(*lead, d)] - sp.Sum(
            x[(*lead, e)], (e, 0, n - 1)) / n, label=f"{self._title()}: centre")
        first = centre.to_node(index, f"{name}_c", inputs[0], in_shape)
        return [first, self._scale(index, name, first.name, in_shape)]


class RMSNorm(_Norm):
    """Root-mean-square normalisation over the last axis:
    H[..., d] = γ[d]·X[..., d] / √(mean_e X[..., e]² + ε) + β[d].  γ (``gamma{k}``,
    PyTorch's ``nn.RMSNorm(D, eps).weight``) starts at 1, β (``beta{k}``) at 0;
    PyTorch's RMSNorm has no β: ``bias=False`` is its exact form."""

    eps_default = 1e-6

    def to_node(self, index, name, input_name, in_shape):
        return self._scale(index, name, input_name, tuple(in_shape))
