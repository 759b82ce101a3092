"""Convolution, pooling and flattening: tensor layers with their formulas written for you.

Inputs are (channels, height, width) per example (``sn.Input((C, H, W))``,
batches (batch, C, H, W) as in PyTorch) or (channels, length) for 1-D.

>>> import symnet as sn
>>> net = sn.Network(sn.Input((1, 8, 8)), sn.Conv2d(4, 3, padding="same", activation="relu"),
...                  sn.MaxPool2d(2), sn.Flatten(), sn.Dense(10),
...                  loss="softmax_cross_entropy")
>>> net.param_shapes()
{'W1': (4, 1, 3, 3), 'b1': (4,), 'W4': (10, 64), 'b4': (10,)}

``Conv2d`` is the tensor formula h[c,y,x] = f(Σ_k Σ_u Σ_v W[c,k,u,v]·x[k, y·s + u − p,
x·s + v − p] + b[c]) (see ``symnet.lang.tensor``); sympy derives its gradients like
any other layer's.  Max pooling passes the gradient to the first largest element
of each window (the first in row-major order when several are equal).
"""

from __future__ import annotations

from .base import ACTIVATION_NAMES, LayerBase, _is_integer, check_flag, check_name

_ACT = ACTIVATION_NAMES


def _int(v, what, where, low=1):
    if not _is_integer(v) or v < low:
        raise ValueError(f"{where}: {what} must be an integer ≥ {low}, got {v!r}")
    return int(v)


def _pair(v, what, where, dims, low=1):
    if isinstance(v, str) and what in ("stride", "padding", "dilation"):
        # Conv2d(8, 3, "relu"): the activation given where the stride goes
        hint = (f"; an activation goes by name: activation={v!r}" if v in _ACT
                else f"; padding={v!r} goes by name" if v in ("same", "valid") else "")
        raise ValueError(f"{where}: {what} must be an integer ≥ {low}, got {v!r}{hint}")
    if isinstance(v, (tuple, list)):
        if len(v) != dims:
            raise ValueError(f"{where}: {what} needs {dims} number{'s' if dims > 1 else ''}"
                             f", got {v!r}")
        return tuple(_int(a, what, where, low) for a in v)
    return (_int(v, what, where, low),) * dims


class _Spatial(LayerBase):
    """Shared shape logic of convolutions and pools over ``dims`` spatial axes."""

    layout = "channels_first"
    tensor = True
    dims = 2

    def _where(self, in_shape=None):
        name = self.name or getattr(self, "_net_name", None)
        return f"layer {name!r} ({self._title()})" if name else f"layer {self._title()!r}"

    def _spatial(self, in_shape, kernel, stride, pad, dilation=None):
        where = self._where()
        if len(in_shape) != self.dims + 1:
            want = "(channels, height, width)" if self.dims == 2 else "(channels, length)"
            raise ValueError(f"{where}: needs an input of shape {want}, got {in_shape} "
                             f"from the layer below")
        out = []
        for n, k, s, p, d in zip(in_shape[1:], kernel, stride, pad,
                                 dilation or (1,) * self.dims):
            span = d * (k - 1) + 1     # the positions a (dilated) kernel covers
            if span > n + 2 * p:
                size = k if d == 1 else f"{k} dilated by {d}: {span}"
                raise ValueError(f"{where}: the kernel ({size}) is larger than the padded "
                                 f"input ({n} + 2·{p} = {n + 2 * p}); input shape {in_shape}")
            o = (n + 2 * p - span) // s + 1
            if o < 1:
                raise ValueError(f"{where}: stride {s} leaves no output for input {in_shape}")
            out.append(o)
        return tuple(out)


class Conv2d(_Spatial):
    """A 2-D convolution (cross-correlation, as in PyTorch):
    H[b,c,y,x] = f(Σ_k Σ_u Σ_v W[c,k,u,v]·X[b,k,y·s+u·d−p,x·s+v·d−p] + b[c]).

    ``padding`` an int, ``"valid"`` (0) or ``"same"`` (stride 1, odd kernel); ``dilation`` d spaces the
    kernel's taps d apart (PyTorch's dilation); weights W{k} of shape
    (out_channels, in_channels, kh, kw), bias b{k} of shape (out_channels,).
    """

    def __init__(self, out_channels: int, kernel_size, stride=1, padding=0,
                 activation="linear", bias: bool = True, name: str | None = None,
                 dilation=1):
        self.name = None if name is None else check_name(name, "layer")
        where = self._where()
        self.out_channels = _int(out_channels, "out_channels", where)
        where = self._where()
        self.kernel = _pair(kernel_size, "kernel_size", where, self.dims)
        self.stride = _pair(stride, "stride", where, self.dims)
        self.dilation = _pair(dilation, "dilation", where, self.dims)
        if padding == "valid":        # PyTorch's and Keras's name for no padding
            padding = 0
        if padding == "same":
            if any(s != 1 for s in self.stride) or any(k % 2 == 0 for k in self.kernel):
                raise ValueError(f"{where}: padding='same' needs stride 1 and an odd kernel, "
                                 f"got stride {stride}, kernel {kernel_size}")
            self.pad = tuple(d * (k // 2) for k, d in zip(self.kernel, self.dilation))
        else:
            self.pad = _pair(padding, "padding", where, self.dims, low=0)
        self.padding_spec = padding
        if isinstance(activation, str) and activation not in _ACT:
            raise ValueError(f"{where}: unknown activation {activation!r}; known: "
                             f"{', '.join(_ACT)}, or a sympy expression / Python function")
        self.activation_spec = activation
        self.bias = check_flag(bias, f"{where}: bias")

    def _title(self):
        if not hasattr(self, "out_channels"):      # out_channels itself refused
            return type(self).__name__
        return f"{type(self).__name__}({self.out_channels})"

    def __repr__(self):
        dil = f", dilation={self.dilation}" if any(d != 1 for d in self.dilation) else ""
        return (f"{type(self).__name__}({self.out_channels}, {self.kernel}, stride={self.stride}, "
                f"padding={self.pad}{dil}, name={self.name!r})")

    def describe(self) -> dict:
        act = self.activation_spec
        if not isinstance(act, str):
            from ..scalar.primitives import activation
            act = activation(act).name
        d = {"kind": type(self).__name__.lower(), "out_channels": self.out_channels,
             "kernel_size": list(self.kernel), "stride": list(self.stride),
             "padding": list(self.pad), "activation": act, "bias": self.bias,
             "name": self.name}
        if any(k != 1 for k in self.dilation):   # absent when 1: older files still load
            d["dilation"] = list(self.dilation)
        return d

    def output_shape(self, in_shape):
        return (self.out_channels,) + self._spatial(in_shape, self.kernel, self.stride,
                                                    self.pad, self.dilation)

    def to_node(self, index, name, input_name, in_shape):
        import sympy as sp

        from ..scalar.primitives import activation as resolve
        from .tensor import TensorLayer, indices
        out = self.output_shape(in_shape)
        act = resolve(self.activation_spec, f"activation of {self._where()}")
        f = act.expr
        cin = in_shape[0]
        c, k = indices("c k")
        pos = tuple(sp.Symbol(n, integer=True) for n in ("y", "x")[2 - self.dims:])
        red = tuple(sp.Symbol(n, integer=True) for n in ("u", "v")[2 - self.dims:])
        limits = [(k, 0, cin - 1)] + [(r, 0, n - 1) for r, n in zip(red, self.kernel)]
        params = {"W": (self.out_channels, cin, *self.kernel)}
        if self.bias:
            params["b"] = (self.out_channels,)

        def formula(x, W, b=None):
            at = [p * s + r * d - q
                  for p, r, s, q, d in zip(pos, red, self.stride, self.pad, self.dilation)]
            z = sp.Sum(W[(c, k, *red)] * x[(k, *at)], *limits)
            return f(z + b[c]) if b is not None else f(z)
        if not self.bias:
            formula = (lambda fn: (lambda x, W: fn(x, W)))(formula)
        dil = f", dilation {self.dilation}" if any(d != 1 for d in self.dilation) else ""
        label = (f"{type(self).__name__}({self.out_channels}, {self.kernel}, stride "
                 f"{self.stride}, padding {self.pad}{dil}), {act.name}")
        layer = TensorLayer(out, formula, (c, *pos), params,
                            init={"W": act.init}, name=self.name, kind="conv", label=label,
                            activation=act)
        layer.where = self._where()
        return layer.to_node(index, name, input_name, in_shape)


class Conv1d(Conv2d):
    """A 1-D convolution over (channels, length) inputs: H[b,c,x] =
    f(Σ_k Σ_u W[c,k,u]·X[b,k,x·s+u−p] + b[c]); W{k}: (out, in, kernel)."""

    dims = 1


class _Pool(_Spatial):
    def __init__(self, kernel_size, stride=None, padding=0, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")
        where = self._where()
        self.kernel = _pair(kernel_size, "kernel_size", where, self.dims)
        self.stride = self.kernel if stride is None else _pair(stride, "stride", where,
                                                                  self.dims)
        where = self._where()     # with the kernel known
        self.pad = _pair(padding, "padding", where, self.dims, low=0)
        for p, k in zip(self.pad, self.kernel):
            if p > k // 2:   # PyTorch's rule: every window keeps an element of the input
                raise ValueError(f"{where}: padding {p} must be at most half the kernel "
                                 f"size ({k} // 2 = {k // 2}), got padding={padding!r}")

    def _title(self):
        if not hasattr(self, "kernel"):            # the kernel size itself refused
            return type(self).__name__
        return f"{type(self).__name__}({self.kernel})"

    def _label(self):
        pad = f", padding {self.pad}" if any(self.pad) else ""
        return f"{type(self).__name__}({self.kernel}, stride {self.stride}{pad})"

    def __repr__(self):
        pad = f", padding={self.pad}" if any(self.pad) else ""
        return (f"{type(self).__name__}({self.kernel}, stride={self.stride}{pad}, "
                f"name={self.name!r})")

    def describe(self) -> dict:
        d = {"kind": type(self).__name__.lower(), "kernel_size": list(self.kernel),
             "stride": list(self.stride), "name": self.name}
        if any(self.pad):      # absent when 0: files saved before padding existed still load
            d["padding"] = list(self.pad)
        return d

    def output_shape(self, in_shape):
        return (in_shape[0],) + self._spatial(in_shape, self.kernel, self.stride, self.pad)


class AvgPool2d(_Pool):
    """H[b,c,y,x] = Σ_u Σ_v X[b,c,y·s+u−p,x·s+v−p] / (kh·kw); stride defaults to the
    kernel; ``padding`` (≤ kernel // 2) adds zeros that count in the average (PyTorch's
    count_include_pad=True)."""

    def to_node(self, index, name, input_name, in_shape):
        import math

        import sympy as sp

        from .tensor import TensorLayer, indices
        out = self.output_shape(in_shape)
        c = indices("c")
        pos = indices(" ".join(("y", "x")[2 - self.dims:]))
        win = indices(" ".join(("u", "v")[2 - self.dims:]))
        pos, win = (pos, win) if self.dims > 1 else ((pos,), (win,))
        n = math.prod(self.kernel)
        limits = [(w, 0, k - 1) for w, k in zip(win, self.kernel)]

        def formula(x):
            at = (p * s + w - q for p, w, s, q in zip(pos, win, self.stride, self.pad))
            return sp.Sum(x[(c, *at)], *limits) / n
        layer = TensorLayer(out, formula, (c, *pos), name=self.name, kind="pool",
                            label=self._label())
        layer.where = self._where()
        return layer.to_node(index, name, input_name, in_shape)


class MaxPool2d(_Pool):
    """H[b,c,y,x] = max_{u,v} X[b,c,y·s+u−p,x·s+v−p]; the gradient goes to the first
    largest element of each window.  Stride defaults to the kernel size; ``padding``
    (≤ kernel // 2) adds −∞ at the borders (no window is all padding)."""

    def to_node(self, index, name, input_name, in_shape):
        import math

        from ..ir import nodes as ir
        out = self.output_shape(in_shape)
        pos, win = ("y", "x")[2 - self.dims:], ("u", "v")[2 - self.dims:]
        syms: dict = {}
        z = ir.element(syms, f"z_{name}", ir.BATCH, "c", *pos)
        xe = ir.element(syms, input_name, ir.BATCH, "c",
                        *(ir.Affine(((p, s), (w, 1)), -q)
                          for p, w, s, q in zip(pos, win, self.stride, self.pad)))
        red = ir.Reduction(f"z_{name}", z, xe, win, space=tuple(zip(win, self.kernel)),
                           op="max")
        space = tuple(zip(("c", *pos), out))
        return ir.Node(name, index, input_name, math.prod(in_shape), math.prod(out), [], [red],
                       z, syms, kind="pool", space=space, in_shape=tuple(in_shape),
                       label=self._label())


class AvgPool1d(AvgPool2d):
    """Average pooling over (channels, length) inputs: H[b,c,x] = Σ_v X[b,c,x·s+v−p] / k;
    stride defaults to the kernel size; ``padding`` zeros count in the average
    (PyTorch's AvgPool1d).

    >>> AvgPool1d(4, stride=3, padding=2).output_shape((2, 10))   # (10 + 4 − 4) // 3 + 1
    (2, 4)
    """

    dims = 1


class MaxPool1d(MaxPool2d):
    """Max pooling over (channels, length) inputs: H[b,c,x] = max_v X[b,c,x·s+v−p]; the
    gradient goes to the first largest element of each window.  Stride defaults to the
    kernel size; ``padding`` is −∞ (PyTorch's MaxPool1d).

    >>> import symnet as sn
    >>> net = sn.Network(sn.Input((3, 16)), sn.Conv1d(4, 3, dilation=2), sn.MaxPool1d(2),
    ...                  sn.Flatten(), sn.Dense(1), loss="mse")
    >>> net.layers[1].output_shape((4, 12)), net.param_shapes()["W1"]
    ((4, 6), (4, 3, 3))
    """

    dims = 1


class Flatten(LayerBase):
    """(C, H, W) per example → C·H·W features in NCHW order (a view: no copy, no loop)."""

    tensor = True

    def __init__(self, name: str | None = None):
        self.name = None if name is None else check_name(name, "layer")

    def __repr__(self):
        return f"Flatten(name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "flatten", "name": self.name}

    def output_shape(self, in_shape):
        n = 1
        for s in in_shape:
            n *= s
        return (n,)

    def to_node(self, index, name, input_name, in_shape):
        from ..ir import nodes as ir
        n = self.output_shape(in_shape)[0]
        syms: dict = {}
        x = ir.element(syms, input_name, ir.BATCH, ir.OUT)
        return ir.Node(name, index, input_name, n, n, [], [], x, syms, kind="flatten",
                       in_shape=tuple(in_shape), label="Flatten()")
