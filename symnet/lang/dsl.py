"""The user's language: Dense and the Network declaration (Input and the
base of every layer come from ``symnet.lang.base``; the user's ``symnet.Network``,
with ``compile()``, ``formulas()`` and ``summary()``, is ``symnet.api.network``).

>>> import symnet as sn
>>> I = sn.Input(2, name="I")
>>> H1 = sn.Dense(8, "tanh", name="H1")(I)
>>> O = sn.Dense(1, "sigmoid", name="O")(H1)
>>> net = sn.Network(I, O, loss="mse")
>>> [p for p in net.param_shapes()]
['W1', 'b1', 'W2', 'b2']
"""

from __future__ import annotations

from . import compose

from ..ir import nodes as ir
from .base import (ACTIVATION_NAMES, LOSS_NAMES, VECTOR_ACTIVATIONS, Input, LayerBase,
                   _check_size, check_flag, check_name)


class Dense(LayerBase):
    """A fully connected layer: H = f(W·x + b), W of shape (units, inputs).

    ``activation`` is a name (see ``symnet.scalar.primitives.ACTIVATIONS``), a sympy
    expression of one symbol, or a Python function of one sympy symbol; or
    "softmax", which couples the outputs: H = softmax(W·x + b), two IR nodes
    (``<name>_z`` = W·x + b, then ``symnet.lang.norm.Softmax`` on it; its Jacobian derived).
    ``bias=False`` leaves out b (H = f(W·x)).  ``init`` sets W's initialisation:
    "glorot" (uniform), "he" (normal), "normal" (N(0, 1)), "zeros", or a number;
    by default the one that suits the activation (He for ReLU-like, else Glorot);
    biases start at zero.  ``trainable=False`` freezes the layer: no gradient
    is computed for its parameters and no update changes them.

    >>> Dense(4, "relu", init="he", bias=False, trainable=False)
    Dense(4, 'relu', name=None, bias=False, init='he', trainable=False)
    """

    INITS = ("glorot", "he", "normal", "zeros")

    def __init__(self, units: int, activation="linear", bias: bool = True,
                 name: str | None = None, init=None, trainable: bool = True):
        self.units = _check_size(units, "Dense units")
        self.name = None if name is None else check_name(name, "layer")
        self.activation_spec = activation
        self._activation = None
        if isinstance(activation, str):
            if activation not in ACTIVATION_NAMES + VECTOR_ACTIVATIONS:
                known = ", ".join(ACTIVATION_NAMES + VECTOR_ACTIVATIONS)
                raise ValueError(
                    f"unknown activation {activation!r}; known: {known}, "
                    "or a sympy expression / Python function of one symbol")
            self.activation_name = activation
        else:
            self.activation_name = self.activation.name
        where = f"layer {self.name or f'Dense({units})'!r}"
        self.bias = check_flag(bias, f"{where}: bias")
        number = isinstance(init, (int, float)) and not isinstance(init, bool)
        if not (init is None or number or init in self.INITS):
            raise ValueError(f"layer {self.name or f'Dense({units})'!r}: init must be one of "
                             f"{', '.join(self.INITS)} or a number, got {init!r}")
        self.init = float(init) if number else init
        self.trainable = check_flag(trainable, f"{where}: trainable")

    @property
    def activation(self):
        """The activation's record (sympy form); resolved on first use."""
        if self._activation is None:
            from ..scalar.primitives import activation as resolve
            if self.activation_spec in VECTOR_ACTIVATIONS:   # the linear part's activation
                self._activation = resolve("linear")
                return self._activation
            where = f"activation of layer {self.name or f'Dense({self.units})'!r}"
            self._activation = resolve(self.activation_spec, where)
        return self._activation

    def __repr__(self):
        extra = "" if self.bias else ", bias=False"
        extra += "" if self.init is None else f", init={self.init!r}"
        extra += "" if self.trainable else ", trainable=False"
        return f"Dense({self.units}, {self.activation_name!r}, name={self.name!r}{extra})"

    def describe(self) -> dict:
        d = {"kind": "dense", "units": self.units, "activation": self.activation_name,
             "bias": self.bias, "name": self.name}
        if self.init is not None:          # only when given: older files stay the same
            d["init"] = self.init
        if not self.trainable:
            d["trainable"] = False
        return d

    def to_node(self, index, name, input_name, n_in):
        """H[b,i] = f(Σ_j W[i,j]·x[b,j] + b[i]): a general ``Layer`` whose one
        sum is a contraction (a matrix product)."""
        from .layers import Layer, sum_j
        if self.activation_name == "softmax":
            return self._softmax_nodes(index, name, input_name, n_in)
        f = self.activation.expr
        if self.bias:
            params = {"W": ("out", "in"), "b": ("out",)}
            formula = lambda x, W, b, i, j: f(sum_j(W[i, j] * x[j]) + b[i])  # noqa: E731
        else:
            params = {"W": ("out", "in")}
            formula = lambda x, W, i, j: f(sum_j(W[i, j] * x[j]))  # noqa: E731
        init = self.activation.init if self.init is None else self.init
        layer = Layer(self.units, formula, params, init={"W": init}, name=self.name,
                      trainable=self.trainable)
        node = layer.to_node(index, name, input_name, n_in)
        node.kind, node.activation = "dense", self.activation
        return node

    def _softmax_nodes(self, index, name, input_name, n_in):
        """z = W·x + b (a linear Dense node ``<name>_z``), then H = softmax(z)."""
        from .norm import Softmax
        linear = Dense(self.units, "linear", self.bias, init=self.init,
                       trainable=self.trainable)
        z = linear.to_node(index, f"{name}_z", input_name, n_in)
        soft = Softmax(name=self.name)
        soft._net_name = name
        return [z, *soft.to_nodes(index, name, [z.name], [(self.units,)])]


def _may_name_terms(loss, outputs) -> bool:
    """Cheap test (no sympy import) for a loss that may be a dict of terms: one that
    holds a formula (a dict of loss names alone is a loss per output, whose keys must
    be outputs: a mistyped output name made it a term network that never named it)."""
    if isinstance(loss, dict):
        return any(not isinstance(v, str) for v in loss.values())
    return type(loss).__module__.startswith("sympy")


Layer = LayerBase  # the former name of the base class; symnet.Layer is layers.Layer


class Network:
    """A network: layers composed in order, and a loss.

    Sequential: ``Network(Input(784), Dense(256, "relu"), Dense(10), loss=...)``.
    Functional: ``Network(I, O, loss=...)`` where O was built by calling layers
    on I; any composition: ``Network([I1, I2], [O1, O2], loss={"O1": "mse",
    "O2": "bce"}, loss_weights={"O1": 1.0, "O2": 0.5})`` with merges
    (``Add``, ``Multiply``, ``Concatenate``) and layers applied at several
    places (one parameter set).  Layers are named H1, H2, ... in topological
    order and the output O (O1, O2, ... for several) unless named; inputs I
    (I1, I2, ...); parameters are W1, b1, W2, b2, ... after the node that first
    uses them.  The loss is the weighted sum of the outputs' losses, each
    averaged over the batch.

    >>> import symnet as sn
    >>> I = sn.Input(3, name="I")
    >>> H = sn.Dense(3, "tanh", name="H")(I)
    >>> O = sn.Dense(1, name="O")(sn.Add(name="R")([I, H]))
    >>> sn.Network(I, O, loss="mse").names
    ['H', 'R', 'O']
    """

    def __init__(self, *layers, loss="mse", loss_weights=None):
        if not layers:
            raise ValueError("Network(...) starts with an Input, e.g. "
                             "Network(Input(2), Dense(1), loss='mse')")
        first = layers[0]
        inputs = list(first) if isinstance(first, (list, tuple)) else [first]
        if not inputs or not all(isinstance(x, Input) for x in inputs):
            raise ValueError("Network(...) starts with an Input (or a list of Inputs), e.g. "
                             "Network(Input(2), Dense(1), loss='mse')")
        outs = layers[1] if len(layers) == 2 else None
        functional = isinstance(outs, (list, tuple)) or (
            isinstance(outs, LayerBase) and outs.inputs is not None)
        if functional:
            outputs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            if not outputs:
                raise ValueError("Network(inputs, outputs): give at least one output")
            for o in outputs:
                if not isinstance(o, (LayerBase, Input)):
                    raise ValueError(f"outputs must be layers, got {o!r}")
            if len({id(o) for o in outputs}) != len(outputs):
                raise ValueError("the same layer is given twice as an output")
        else:
            if len(inputs) != 1:
                raise ValueError("the sequential form takes one Input; for several inputs "
                                 "use Network([I1, I2], outputs)")
            prev = inputs[0]
            for k, layer in enumerate(layers[1:], 1):
                if not isinstance(layer, LayerBase):
                    raise ValueError(f"argument {k + 1} of Network is not a layer: {layer!r}")
                if layer.inputs is not None:
                    raise ValueError(f"argument {k + 1} of Network ({layer!r}) is already "
                                     "applied to a layer; the sequential form takes layers "
                                     "not yet called")
                prev = layer(prev)
            if prev is inputs[0]:
                raise ValueError("a Network needs at least one layer after its Input")
            outputs = [prev]
        order = compose.topological(outputs)
        compose.check(inputs, outputs, order)
        self.inputs, self.outputs = inputs, outputs
        self.input = inputs[0]
        self.layers = order
        self._name_nodes()
        for app, n in zip(order, self.names):
            app._net_name = n     # for messages: the name the network gives it
        self._shapes = compose.shapes_of(order, dict(zip(map(id, order), self.names)))
        self.shapes = [self._shapes[id(a)] for a in order]
        self.terms = None      # loss terms with input derivatives (symnet.lang.pinn)
        if _may_name_terms(loss, self.output_names):
            from .pinn import is_term_loss, terms_of
            if is_term_loss(loss, self.output_names):
                self.terms = terms_of(self, loss, loss_weights)
                loss, loss_weights = "mse", None     # the outputs' own kernels
        self._losses(loss, loss_weights)
        self._graph = None
        self._check_domain()

    # ------------------------------------------------------------ declaring
    def _name_nodes(self):
        ins = self.inputs
        self.input_names = [x.name or ("I" if len(ins) == 1 else f"I{m}")
                            for m, x in enumerate(ins, 1)]
        self.input_name = self.input_names[0]
        out_ids = [id(o) for o in self.outputs]
        uses: dict = {}
        self.names = []
        for k, app in enumerate(self.layers, 1):
            origin = app.origin if app.origin is not None else app
            uses.setdefault(id(origin), []).append(k)
            use = len(uses[id(origin)])
            if app.name and (use == 1 or app.name != origin.name):
                name = app.name        # first use, or an application named itself (h_2)
            elif app.name:
                name = f"{app.name}_{use}"
            elif id(app) in out_ids:
                name = "O" if len(out_ids) == 1 else f"O{out_ids.index(id(app)) + 1}"
            else:
                name = f"H{k}"
            self.names.append(name)
        # index of the first use of each layer object: its parameters' number
        self._param_index = [uses[id(a.origin if a.origin is not None else a)][0]
                             for a in self.layers]
        self.shared = [len(uses[id(a.origin if a.origin is not None else a)]) > 1
                       for a in self.layers]
        seen = set()
        for n in self.input_names + self.names:
            if n in seen:
                raise ValueError(f"two layers are named {n!r}; names must be unique")
            seen.add(n)
        self.output_names = [self.names[self.layers.index(o)] for o in self.outputs]

    def _losses(self, loss, loss_weights):
        outs = self.output_names
        if isinstance(loss, dict):
            unknown = sorted(set(loss) - set(outs))
            missing = [o for o in outs if o not in loss]
            if unknown or missing:
                raise ValueError(f"loss names outputs {sorted(loss)}; the outputs are {outs}"
                                 + (f" (unknown: {unknown})" if unknown else "")
                                 + (f" (missing: {missing})" if missing else "")
                                 + ("; loss terms under names of their own need a sympy "
                                    "formula among them (sn.d, the outputs, sn.target)"
                                    if unknown else ""))
            specs = [loss[o] for o in outs]
        elif isinstance(loss, (list, tuple)):
            if len(loss) != len(outs):
                raise ValueError(f"loss lists {len(loss)} losses for {len(outs)} outputs {outs}")
            specs = list(loss)
        else:
            specs = [loss] * len(outs)
        for o, spec in zip(outs, specs):
            if isinstance(spec, str) and spec not in LOSS_NAMES:
                hint = {"cross_entropy": "PyTorch's cross_entropy (on logits) is "
                        "'softmax_cross_entropy' on a linear output layer",
                        "categorical_crossentropy": "Keras's categorical_crossentropy is "
                        "'softmax_cross_entropy' on a linear output layer (the loss "
                        "applies the softmax)",
                        "binary_crossentropy": "Keras's binary_crossentropy is 'bce'",
                        "binary_cross_entropy": "PyTorch's binary_cross_entropy is 'bce'",
                        "mean_squared_error": "that is 'mse'"}.get(spec.lower())
                raise ValueError(f"unknown loss {spec!r} for output {o!r}; known: "
                                 f"{', '.join(LOSS_NAMES)}, or a sympy expression of "
                                 "symbols o and t" + (f" ({hint})" if hint else ""))
        if loss_weights is None:
            weights = [1.0] * len(outs)
        elif isinstance(loss_weights, dict):
            unknown = sorted(set(loss_weights) - set(outs))
            if unknown:
                raise ValueError(f"loss_weights names {unknown}, which are not outputs {outs}")
            weights = [loss_weights.get(o, 1.0) for o in outs]
        else:
            weights = list(loss_weights)
            if len(weights) != len(outs):
                raise ValueError(f"loss_weights lists {len(weights)} weights for "
                                 f"{len(outs)} outputs {outs}")
        for o, w in zip(outs, weights):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not w == w \
                    or w in (float("inf"), float("-inf")):
                raise ValueError(f"loss weight of output {o!r} must be a finite number, "
                                 f"got {w!r}")
        self.loss_specs = specs
        self.loss_weights = [float(w) for w in weights]
        self.loss_spec = specs[0]
        self._loss = None
        self._loss_records = None
        self.loss_names = [s if isinstance(s, str) else None for s in specs]
        if any(n is None for n in self.loss_names):
            self.loss_names = [r.name for r in self.losses]
        self.loss_name = self.loss_names[0]

    @property
    def is_chain(self) -> bool:
        """One input, one output, each layer reading the one before, none shared:
        the form the notes write as O(W3, H2(W2, H1(W1, I)))."""
        if len(self.inputs) != 1 or len(self.outputs) != 1 or any(self.shared):
            return False
        prev = self.input
        for app in self.layers:
            if len(app.inputs) != 1 or app.inputs[0] is not prev or app.n_inputs != 1:
                return False
            prev = app
        return self.loss_weights == [1.0]

    def _check_domain(self):
        """Refuse a loss whose domain an output layer cannot meet, naming the layer;
        ``classes``: the outputs whose softmax cross-entropy takes a class per position
        (an output of several axes: its last axis is the classes, or its first where
        the output is channels first, ``classes_first``), with their count."""
        self.classes, self.classes_first = {}, set()
        for out, name, loss in zip(self.outputs, self.output_names, self.loss_names):
            layer = getattr(out, "layer", out)
            # built-in activations only: a custom one may well map into (0, 1)
            if loss == "bce" and isinstance(layer, Dense) \
                    and layer.activation_name in ACTIVATION_NAMES \
                    and layer.activation_name != "sigmoid":
                raise ValueError(
                    f"loss 'bce' needs outputs in (0, 1), but output layer {name!r} has "
                    f"activation {layer.activation_name!r}; use Dense({layer.units}, "
                    "'sigmoid') there (sigmoid + bce is fused into the stable σ(z) − t), or "
                    "loss='softmax_cross_entropy' on a linear layer of ≥ 2 outputs")
            units = getattr(layer, "units", None)
            if loss == "softmax_cross_entropy" and isinstance(units, int) and units < 2:
                raise ValueError(
                    f"loss 'softmax_cross_entropy' needs at least 2 outputs (one per class), "
                    f"but output layer {name!r} has {units}; for two classes use "
                    f"Dense(1, 'sigmoid') with loss='bce', or Dense(2) with this loss")
            shape = self._shapes[id(out)]
            if loss == "softmax_cross_entropy" and len(shape) > 1:
                # a class per position: the softmax runs over the last axis, at every
                # position of the axes before it (Keras's convention for (L, C)); over
                # the channels of a channels-first output (C, H, W), at every pixel
                # (PyTorch's cross_entropy on (N, C, H, W))
                first = compose.channels_first(out) is not None
                axis = 0 if first else -1
                if shape[axis] < 2:
                    where = "first axis (the channels)" if first else "last axis"
                    raise ValueError(
                        f"loss 'softmax_cross_entropy' on output layer {name!r} of shape "
                        f"{shape}: the classes are its {where} "
                        f"(a class per position), which needs at least 2; for two classes "
                        f"per position use one sigmoid output with loss='bce', or 2 "
                        f"outputs with this loss")
                self.classes[name] = int(shape[axis])
                if first:
                    self.classes_first.add(name)

    @property
    def loss(self):
        """The loss record (sympy form) of the first output; resolved on first use."""
        return self.losses[0]

    @property
    def losses(self) -> list:
        """The loss records of the outputs, in order."""
        if self._loss_records is None:
            from ..scalar.primitives import loss as resolve_loss
            self._loss_records = [resolve_loss(s) for s in self.loss_specs]
        return self._loss_records

    # ------------------------------------------------------------------ views
    def graph(self) -> ir.Graph:
        """The IR of this network (built once)."""
        if self._graph is not None:
            return self._graph
        packed = not self.is_chain and (len(self.inputs) > 1)
        buffers = {id(x): n for x, n in zip(self.inputs, self.input_names)}
        nodes, owner, first_shape = [], {}, {}
        self._layer_params = {}      # layer name -> {name without its number: parameter}
        for k, (app, name) in enumerate(zip(self.layers, self.names), 1):
            srcs = compose.sources(app)
            ins = [buffers[id(s)] for s in srcs]
            shapes = [compose.shape(s, self._shapes) for s in srcs]
            made = app.to_nodes(self._param_index[k - 1], name, ins, shapes)
            made = made if isinstance(made, list) else [made]
            for node in made:
                for p in node.params:
                    first = owner.setdefault(p.name, id(app.origin or app))
                    if first != id(app.origin or app):
                        raise ValueError(f"parameter name(s) {[p.name]} are used by two "
                                         "layers; rename a parameter")
                    # a layer used again shares its parameters: they must fit this use too
                    was, shape = first_shape.setdefault(p.name, (name, tuple(p.shape)))
                    if tuple(p.shape) != shape:
                        given = shapes[0] if len(shapes) == 1 else shapes
                        raise ValueError(
                            f"layer {name!r} is a second use of layer {was!r}, whose "
                            f"parameters it shares, but its input {given} needs "
                            f"{p.name} of shape {tuple(p.shape)}, where {was!r} "
                            f"has {shape}; one layer object is one set of parameters: "
                            "apply it to inputs of one shape, or make a new layer")
            nodes.extend(made)
            buffers[id(app)] = name
            number = str(self._param_index[k - 1])
            self._layer_params[name] = {
                p.name[:-len(number)] if p.name.endswith(number) else p.name: p.name
                for node in made for p in node.params}
        ins = [(n, x.n) for n, x in zip(self.input_names, self.inputs)]
        n_in = sum(w for _, w in ins)
        self._graph = ir.Graph(self._packed_name(nodes) if packed else self.input_name,
                               n_in, nodes,
                               self.losses[0], inputs=ins, outputs=list(self.output_names),
                               losses=dict(zip(self.output_names, self.losses)),
                               weights=dict(zip(self.output_names, self.loss_weights)),
                               classes=dict(self.classes),
                               classes_first=sorted(self.classes_first),
                               in_shape=self.input.shape if len(ins) == 1 else (n_in,),
                               input_shapes={n: x.shape for n, x in
                                             zip(self.input_names, self.inputs)})
        names = [p.name for p in self._graph.params()]
        clash = (set(names) & ({n.name for n in nodes} | set(self.input_names)))
        if clash:
            raise ValueError(f"layer name(s) {sorted(clash)} collide with parameter names")
        return self._graph

    def _packed_name(self, nodes) -> str:
        """The C name of the inputs side by side (several inputs): X, unless an input,
        a layer or a parameter is called so (then X_packed, X_packed2, ...)."""
        taken = set(self.input_names) | set(self.names) | {n.name for n in nodes} \
            | {p.name for n in nodes for p in n.params}
        name, k = "X", 1
        while name in taken:
            name, k = "X_packed" + (str(k) if k > 1 else ""), k + 1
        return name

    def param_shapes(self) -> dict:
        return {p.name: p.shape for p in self.graph().params()}

    def layer_params(self) -> dict:
        """``{layer name: {short name: parameter name}}`` in the order of the layers,
        every layer included (pooling, merges, ... with ``{}``): the short name is
        the parameter's name without the layer's number (W, b, U, ...).  Parameter
        names are numbered by the layer's position, so the numbers skip the layers
        without parameters (W1, W3, ...); here the layers are named instead.

        >>> import symnet as sn
        >>> net = sn.Network(sn.Input((1, 6, 6)), sn.Conv2d(2, 3, name="conv1"),
        ...                  sn.MaxPool2d(2), sn.Flatten(), sn.Dense(1, name="out"), loss="mse")
        >>> net.layer_params()
        {'conv1': {'W': 'W1', 'b': 'b1'}, 'H2': {}, 'H3': {}, 'out': {'W': 'W4', 'b': 'b4'}}
        """
        self.graph()
        return {name: dict(self._layer_params[name]) for name in self.names}

    @property
    def n_in(self) -> int:
        """Features per example (all inputs together)."""
        return sum(x.n for x in self.inputs)

    @property
    def n_out(self) -> int:
        """Outputs per example (all outputs together)."""
        return sum(compose.size(self._shapes[id(o)]) for o in self.outputs)

    @property
    def in_shape(self) -> tuple:
        return self.input.shape

    @property
    def out_shape(self) -> tuple:
        """One example of the (first) output."""
        return self._shapes[id(self.outputs[0])]

    def describe(self) -> dict:
        """A JSON-able description (used for caching and saving)."""
        if self.is_chain:
            n = self.input.n if len(self.input.shape) == 1 else list(self.input.shape)
            return {"input": {"n": n, "name": self.input_name,
                              **({"dtype": "int"} if self.input.dtype == "int" else {})},
                    "layers": [dict(layer.describe(), name=name)
                               for layer, name in zip(self.layers, self.names)],
                    "loss": self.loss_name}
        ids = {id(x): n for x, n in zip(self.inputs, self.input_names)}
        ids.update({id(a): n for a, n in zip(self.layers, self.names)})
        nodes = []
        for app, name, k in zip(self.layers, self.names, self._param_index):
            nodes.append(dict(app.describe(), name=name, params_of=k,
                              inputs=[ids[id(s)] for s in compose.sources(app)]))
        return {"inputs": [{"shape": list(x.shape), "name": n,
                            **({"dtype": "int"} if x.dtype == "int" else {})}
                           for x, n in zip(self.inputs, self.input_names)],
                "nodes": nodes, "outputs": self.output_names,
                "loss": self.loss_names, "loss_weights": self.loss_weights}

    def __repr__(self):
        inner = ", ".join(f"{n}={layer!r}" for n, layer in zip(self.names, self.layers))
        ins = self.input if len(self.inputs) == 1 else self.inputs
        loss = self.loss_name if len(self.outputs) == 1 else self.loss_names
        return f"Network({ins!r}, {inner}, loss={loss!r})"
