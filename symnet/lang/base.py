"""The language's first pieces: Input, the base of every layer, and the checks
of names and sizes that all layers share.

Every layer module (``layers``, ``tensor``, ``conv``, ``merge``, ``recurrent``)
and the graph walk (``compose``) build on this module; ``dsl`` puts Dense and
Network on top of them.  Nothing here imports sympy.

>>> I = Input((1, 8, 8), name="I")
>>> I.n, I.shape
(64, (1, 8, 8))
>>> check_name("H1", "layer")
'H1'
"""

from __future__ import annotations

import copy
import itertools
import numbers

# Built-in names, known without importing sympy (a cache hit never needs it).
ACTIVATION_NAMES = ("linear", "relu", "tanh", "sigmoid", "softplus", "leaky_relu", "elu",
                    "gelu", "swish")
# Activations over a whole layer (vector-valued): Dense(n, "softmax") is Dense then Softmax.
VECTOR_ACTIVATIONS = ("softmax",)
LOSS_NAMES = ("mse", "bce", "softmax_cross_entropy")
TARGET = "T"     # the targets' name in the derivation and the C

_CREATED = itertools.count()   # applications in the order they were made: a topological one


def check_name(name, what: str) -> str:
    """Refuse names that are not plain ASCII identifiers.  Any identifier is
    fine otherwise (``out``, ``X``, ``loss``, ``lr``, ``exp``, ``int``): the
    generated C writes a name that it already uses as ``sn_u_<name>``
    (``symnet.backend.c.cnames``).  ``T`` names the targets and is refused."""
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
        raise ValueError(f"{what} name {name!r} is not a plain identifier "
                         "(ASCII letters, digits, underscore; not starting with a digit)")
    if name == TARGET:
        raise ValueError(f"{what} name {name!r} is the name of the targets in the "
                         "derivation (L = 𝓛(O, T)); choose another")
    return name


def _is_integer(n) -> bool:
    """A Python or numpy integer (sizes computed with numpy, ``np.int64(3)``), not a
    bool; numpy is not imported for it: numpy's integers are ``numbers.Integral``."""
    return not isinstance(n, bool) and isinstance(n, numbers.Integral) \
        and type(n).__name__ not in ("bool_", "bool")


def _check_size(n, what: str) -> int:
    if not _is_integer(n) or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


def check_flag(value, what: str, hint: str = "") -> bool:
    """True or False (numpy's bool too); anything else is refused rather than read
    by its truth value (``bias="no"`` is truthy, and ``GRU(8, 4)`` would put 4 in
    ``return_sequences``).  ``what`` names the layer and the argument."""
    if not (isinstance(value, bool) or (type(value).__module__ == "numpy"
                                        and type(value).__name__ in ("bool_", "bool"))):
        raise ValueError(f"{what} must be True or False, got {value!r}{hint}")
    return bool(value)


class Input:
    """The network's input: ``n`` features per example, or a tensor shape
    ``(C, H, W)`` / ``(C, L)`` per example (batches are then (batch, C, H, W)).
    ``dtype="int"``: integer indices (token ids) for ``sn.Embedding``; they are passed
    as numbers of the model's dtype, checked to be whole and in range."""

    DTYPES = ("float", "int")

    def __init__(self, n, name: str | None = None, dtype: str = "float"):
        if dtype not in self.DTYPES:
            raise ValueError(f"Input dtype must be 'float' or 'int', got {dtype!r}")
        self.dtype = dtype
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
        extra = ", dtype='int'" if self.dtype == "int" else ""
        return f"Input({n}, name={self.name!r}{extra})"


class LayerBase:
    """Base of all layers (``Dense``, the general ``symnet.Layer``).  A layer
    turns into IR nodes (``to_node``).

    Calling a layer on the previous one (``Dense(8)(I)``) returns a copy bound
    to that input; that is the functional form of ``Network``.
    """

    units: int
    name: str | None
    input = None
    inputs = None        # every input of an application (merges have several)
    origin = None        # the layer object an application was made from
    # the layout of the output: "channels_first" (convolutions, pooling, BatchNorm: a
    # (C, H, W) or (C, L) tensor), "kept" (that of the inputs: Dropout, the merges), or
    # None (not known: a sequence's (L, D) is the default reading)
    layout = None
    seq = 0              # creation number of an application
    n_inputs = 1         # how many inputs the layer takes (None: min_inputs or more)
    min_inputs = 2       # the fewest a layer of n_inputs None takes, in a list
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
        many = isinstance(previous, (list, tuple))
        given = list(previous) if many else [previous]
        for p in given:
            if not isinstance(p, (Input, LayerBase)):
                raise ValueError(f"{self!r} can only be called on an Input or a layer "
                                 f"(or a list of them), got {p!r}")
        if self.n_inputs is None and (not many or len(given) < self.min_inputs):
            raise ValueError(f"{self!r} merges two or more inputs: call it on a list, "
                             "e.g. Add()([a, b])")
        if self.n_inputs is not None and len(given) != self.n_inputs:
            raise ValueError(f"{self!r} takes {self.n_inputs} input(s), got {len(given)}")
        bound = copy.copy(self)
        bound.origin = self.origin if self.origin is not None else self
        bound.input, bound.inputs = given[0], given
        bound.seq = next(_CREATED)
        return bound

    def out_shape_of(self, in_shapes: list[tuple]) -> tuple:
        """One example of the output given the inputs' (ValueError when they do not fit)."""
        return self.output_shape(in_shapes[0])

    def to_node(self, index: int, name: str, input_name: str, n_in: int):
        """One IR node, or a list of nodes whose last one is the layer's output."""
        raise NotImplementedError

    def to_nodes(self, index: int, name: str, inputs: list[str], shapes: list[tuple]):
        """IR node(s) of one application on the buffers ``inputs`` of ``shapes``."""
        shape = shapes[0]
        if self.tensor:
            return self.to_node(index, name, inputs[0], shape)
        size = 1
        for s in shape:
            size *= s
        return self.to_node(index, name, inputs[0], size)

    def describe(self) -> dict:
        raise NotImplementedError

    # In a loss term (symnet.lang.pinn) an applied layer stands for its output:
    # u * sn.d(u, x), O[k] for one unit of a wider output.
    def _sympy_(self):
        from .symbols import layer_sympy
        return layer_sympy(self)

    def __getitem__(self, k):
        from .symbols import value
        if self.inputs is None:
            raise TypeError(f"{self!r} is not applied yet; O[k] is unit k of an output")
        return value(self, k)

    def _expr(self):
        import sympy
        return sympy.sympify(self)

    def __add__(self, o): return self._expr() + o  # noqa: E704
    def __radd__(self, o): return o + self._expr()  # noqa: E704
    def __sub__(self, o): return self._expr() - o  # noqa: E704
    def __rsub__(self, o): return o - self._expr()  # noqa: E704
    def __mul__(self, o): return self._expr() * o  # noqa: E704
    def __rmul__(self, o): return o * self._expr()  # noqa: E704
    def __truediv__(self, o): return self._expr() / o  # noqa: E704
    def __rtruediv__(self, o): return o / self._expr()  # noqa: E704
    def __pow__(self, o): return self._expr() ** o  # noqa: E704
    def __neg__(self): return -self._expr()  # noqa: E704
