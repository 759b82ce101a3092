"""The user's language: Input, Dense, Network.

>>> import symnet as sn
>>> I = sn.Input(2, name="I")
>>> H1 = sn.Dense(8, "tanh", name="H1")(I)
>>> O = sn.Dense(1, "sigmoid", name="O")(H1)
>>> net = sn.Network(I, O, loss="mse")
>>> [p for p in net.param_shapes()]
['W1', 'b1', 'W2', 'b2']
"""

from __future__ import annotations

import copy
import keyword

from . import ir
from .guards import generated_name

# Names the generated C uses itself, or that C reserves.
C_KEYWORDS = frozenset("""
auto break case char const continue default do double else enum extern float for goto
if inline int long register restrict return short signed sizeof static struct switch
typedef union unsigned void volatile while _Bool _Complex _Imaginary
""".split())
# Built-in names, known without importing sympy (a cache hit never needs it).
ACTIVATION_NAMES = ("linear", "relu", "tanh", "sigmoid", "softplus", "leaky_relu", "elu",
                    "gelu", "swish")
LOSS_NAMES = ("mse", "bce", "softmax_cross_entropy")

RESERVED = frozenset("""
b i j k n t T X params grads work batch lr loss real inv_batch acc out idx main
""".split())


def check_name(name, what: str) -> str:
    """Refuse names that are not plain C identifiers or that collide with ours."""
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
        raise ValueError(f"{what} name {name!r} is not a plain identifier "
                         "(letters, digits, underscore; not starting with a digit)")
    if name in C_KEYWORDS or keyword.iskeyword(name):
        raise ValueError(f"{what} name {name!r} is a C or Python keyword; choose another")
    if name in RESERVED or name.startswith(("symnet", "sn_", "__")) or generated_name(name):
        raise ValueError(f"{what} name {name!r} is reserved by the generated code; "
                         "choose another")
    return name


def _check_size(n, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return n


class Input:
    """The network's input: ``n`` features per example, or a tensor shape
    ``(C, H, W)`` / ``(C, L)`` per example (batches are then (batch, C, H, W))."""

    def __init__(self, n, name: str | None = None):
        if isinstance(n, (tuple, list)):
            if not n or len(n) > 4:
                raise ValueError(f"Input shape must have 1 to 4 dimensions, got {tuple(n)!r}")
            self.shape = tuple(_check_size(s, "Input shape entry") for s in n)
            self.n = 1
            for s in self.shape:
                self.n *= s
        else:
            self.n = _check_size(n, "Input size")
            self.shape = (self.n,)
        self.name = None if name is None else check_name(name, "Input")

    def __repr__(self):
        n = self.n if len(self.shape) == 1 else self.shape
        return f"Input({n}, name={self.name!r})"


class LayerBase:
    """Base of all layers (``Dense``, the general ``symnet.Layer``).  A layer
    turns into IR nodes (``to_node``).

    Calling a layer on the previous one (``Dense(8)(I)``) returns a copy bound
    to that input; that is the functional form of ``Network``.
    """

    units: int
    name: str | None
    input = None
    tensor = False      # True: to_node takes the input's shape (a tuple), not its width

    def output_shape(self, in_shape: tuple) -> tuple:
        """One example of the output, for an input of ``in_shape``; ValueError
        when the layer cannot take that input."""
        if len(in_shape) != 1:
            name = self.name or getattr(self, "_net_name", None) or repr(self)
            raise ValueError(f"layer {name!r} takes a vector input but "
                             f"the layer below gives shape {in_shape}; put sn.Flatten() "
                             "before it")
        return (self.units,)

    def __call__(self, previous):
        if not isinstance(previous, (Input, LayerBase)):
            raise ValueError(f"{self!r} can only be called on an Input or a layer, "
                             f"got {previous!r}")
        bound = copy.copy(self)
        bound.input = previous
        return bound

    def to_node(self, index: int, name: str, input_name: str, n_in: int):
        """One IR node, or a list of nodes whose last one is the layer's output."""
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError


class Dense(LayerBase):
    """A fully connected layer: H = f(W·x + b), W of shape (units, inputs).

    ``activation`` is a name (see ``symnet.primitives.ACTIVATIONS``), a sympy
    expression of one symbol, or a Python function of one sympy symbol.
    """

    def __init__(self, units: int, activation="linear", bias: bool = True,
                 name: str | None = None):
        self.units = _check_size(units, "Dense units")
        self.name = None if name is None else check_name(name, "layer")
        self.activation_spec = activation
        self._activation = None
        if isinstance(activation, str):
            if activation not in ACTIVATION_NAMES:
                raise ValueError(
                    f"unknown activation {activation!r}; known: {', '.join(ACTIVATION_NAMES)}, "
                    "or a sympy expression / Python function of one symbol")
            self.activation_name = activation
        else:
            self.activation_name = self.activation.name
        self.bias = bool(bias)

    @property
    def activation(self):
        """The activation's record (sympy form); resolved on first use."""
        if self._activation is None:
            from .primitives import activation as resolve
            where = f"activation of layer {self.name or f'Dense({self.units})'!r}"
            self._activation = resolve(self.activation_spec, where)
        return self._activation

    def __repr__(self):
        return f"Dense({self.units}, {self.activation_name!r}, name={self.name!r})"

    def describe(self) -> dict:
        return {"kind": "dense", "units": self.units, "activation": self.activation_name,
                "bias": self.bias, "name": self.name}

    def to_node(self, index, name, input_name, n_in):
        """H[b,i] = f(Σ_j W[i,j]·x[b,j] + b[i]): a general ``Layer`` whose one
        sum is a contraction (a matrix product)."""
        from .layers import Layer, sum_j
        f = self.activation.expr
        if self.bias:
            params = {"W": ("out", "in"), "b": ("out",)}
            formula = lambda x, W, b, i, j: f(sum_j(W[i, j] * x[j]) + b[i])  # noqa: E731
        else:
            params = {"W": ("out", "in")}
            formula = lambda x, W, i, j: f(sum_j(W[i, j] * x[j]))  # noqa: E731
        layer = Layer(self.units, formula, params, init={"W": self.activation.init},
                      name=self.name)
        node = layer.to_node(index, name, input_name, n_in)
        node.kind, node.activation = "dense", self.activation
        return node


Layer = LayerBase  # the former name of the base class; symnet.Layer is layers.Layer


class Network:
    """A network: layers composed in order, and a loss.

    Sequential: ``Network(Input(784), Dense(256, "relu"), Dense(10), loss=...)``.
    Functional: ``Network(I, O, loss=...)`` where O was built by calling layers
    on I.  Layers are named H1, H2, ... and the last one O unless named;
    parameters are W1, b1, W2, b2, ... in layer order.
    """

    def __init__(self, *layers, loss="mse"):
        if not layers or not isinstance(layers[0], Input):
            raise ValueError("Network(...) starts with an Input, e.g. "
                             "Network(Input(2), Dense(1), loss='mse')")
        if len(layers) == 2 and isinstance(layers[1], LayerBase) and layers[1].input is not None:
            chain = []
            node = layers[1]
            while isinstance(node, LayerBase):
                chain.append(node)
                node = node.input
                if node is None:
                    raise ValueError(f"layer {chain[-1]!r} is not connected to an Input")
            if node is not layers[0]:
                raise ValueError("the output layer is not built on the given Input")
            chain.reverse()
        else:
            chain = list(layers[1:])
            for k, layer in enumerate(chain, 1):
                if not isinstance(layer, LayerBase):
                    raise ValueError(f"argument {k + 1} of Network is not a layer: {layer!r}")
        if not chain:
            raise ValueError("a Network needs at least one layer after its Input")
        self.input = layers[0]
        self.layers = chain
        if isinstance(loss, str) and loss not in LOSS_NAMES:
            raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSS_NAMES)}, or a "
                             "sympy expression of symbols o and t")
        self.loss_spec = loss
        self._loss = None
        self.loss_name = loss if isinstance(loss, str) else self.loss.name
        self.input_name = self.input.name or "I"
        self.names = []
        for k, layer in enumerate(chain, 1):
            default = "O" if k == len(chain) else f"H{k}"
            self.names.append(layer.name or default)
        seen = {self.input_name}
        for n in self.names:
            if n in seen:
                raise ValueError(f"two layers are named {n!r}; names must be unique")
            seen.add(n)
        shape = self.input.shape
        self.shapes = []
        for layer, n in zip(chain, self.names):
            layer._net_name = n     # for messages: the name the network gives it
            shape = layer.output_shape(shape)
            self.shapes.append(shape)
        self._graph = None

    @property
    def loss(self):
        """The loss record (sympy form); resolved on first use."""
        if self._loss is None:
            from .primitives import loss as resolve_loss
            self._loss = resolve_loss(self.loss_spec)
        return self._loss

    # ------------------------------------------------------------------ views
    def graph(self) -> ir.Graph:
        """The IR of this network (built once)."""
        if self._graph is None:
            nodes, prev, shape = [], self.input_name, self.input.shape
            for k, (layer, name) in enumerate(zip(self.layers, self.names), 1):
                made = layer.to_node(k, name, prev, shape if layer.tensor else shape[0])
                made = made if isinstance(made, list) else [made]
                nodes.extend(made)
                prev, shape = name, made[-1].out_shape
            self._graph = ir.Graph(self.input_name, self.input.n, nodes, self.loss,
                                   in_shape=self.input.shape)
            names = [p.name for p in self._graph.params()]
            clash = (set(names) & ({n.name for n in nodes} | {self.input_name}))
            if clash:
                raise ValueError(f"layer name(s) {sorted(clash)} collide with parameter names")
            twice = sorted({p for p in names if names.count(p) > 1})
            if twice:
                raise ValueError(f"parameter name(s) {twice} are used by two layers; "
                                 "rename a parameter")
        return self._graph

    def param_shapes(self) -> dict:
        return {p.name: p.shape for p in self.graph().params()}

    @property
    def n_in(self) -> int:
        return self.input.n

    @property
    def n_out(self) -> int:
        n = 1
        for s in self.shapes[-1]:
            n *= s
        return n

    @property
    def in_shape(self) -> tuple:
        return self.input.shape

    @property
    def out_shape(self) -> tuple:
        return self.shapes[-1]

    def describe(self) -> dict:
        """A JSON-able description (used for caching and saving)."""
        n = self.input.n if len(self.input.shape) == 1 else list(self.input.shape)
        return {"input": {"n": n, "name": self.input_name},
                "layers": [dict(layer.describe(), name=name)
                           for layer, name in zip(self.layers, self.names)],
                "loss": self.loss_name}

    def formulas(self):
        """The chain-rule derivation of this network, for people."""
        from .formulas import Formulas
        return Formulas(self)

    def compile(self, dtype="float32", seed: int = 0, **options):
        """Derive, emit, build (or load from the cache) → a ``Model``."""
        from .model import Model
        return Model(self, dtype=dtype, seed=seed, **options)

    def __repr__(self):
        inner = ", ".join(f"{n}={layer!r}" for n, layer in zip(self.names, self.layers))
        return f"Network({self.input!r}, {inner}, loss={self.loss_name!r})"
