"""The Network the user declares (``symnet.Network``), and ``symnet.load``.

The declaration itself (layers, checks, names, the IR, ``describe``) is
``symnet.lang.dsl.Network``; this subclass adds the calls that run the later
stages on it: ``formulas()`` (``symnet.read.formulas``), ``summary()``
(``symnet.read.summary``) and ``compile()`` (the whole pipeline, to a
``symnet.api.model.Model``).  Each imports its stage when called: importing
symnet imports neither sympy nor the compiler.

>>> import symnet as sn
>>> net = sn.Network(sn.Input(3), sn.Dense(4, "relu"), sn.Dense(2), loss="mse")
>>> isinstance(net, Network), net.summary(batch_size=10).total("params")
(True, 26)
"""

from __future__ import annotations

from ..lang import dsl

from ..io import files as io


class Network(dsl.Network):
    __doc__ = dsl.Network.__doc__

    def formulas(self, optimizer=None, weight_decay=0.0, clip_norm=None):
        """The chain-rule derivation of this network, for people.  With
        ``optimizer``, ``weight_decay`` or ``clip_norm`` (as given to ``fit``) it ends
        with the parameter update and its extra terms."""
        if getattr(self, "terms", None):        # loss terms: jets, then the chain rule
            from ..read.terms import TermFormulas
            return TermFormulas(self)
        from ..read.formulas import Formulas
        return Formulas(self, optimizer=optimizer, weight_decay=weight_decay,
                        clip_norm=clip_norm)

    def compile(self, dtype="float32", seed: int = 0, init=None, tune="fast", backend="c"):
        """Derive, emit, build (or load from the cache) → a ``Model``.

        ``seed`` seeds the initial parameters; ``init`` ("glorot", "he", "normal",
        "zeros", "ones" or a number) overrides the initialisation of every weight
        matrix (by default each layer's own: its ``init=``, else suited to its
        activation).
        ``tune`` says how much the planner may time to choose
        where each matrix product runs on this machine (symnet's kernels or the BLAS):
        "off" nothing, "fast" (default) what is not yet known, within ~0.15 s, "full"
        more sizes (seconds, once); the choices are cached per CPU model, compiler and
        product shape, and ``model.tuning["plan"]`` shows them (the C backend).
        ``backend``: ``"c"`` (compiled C) or ``"numpy"`` (the same plan run with NumPy,
        no compiler needed; slower), see ``symnet.backend``.
        """
        from .model import Model
        return Model(self, dtype=dtype, seed=seed, init=init, tune=tune, backend=backend)

    def summary(self, batch_size: int = 32, dtype: str = "float32", print_fn=None):
        """Parameters, memory and flops per training step, before compiling
        (``symnet.read.summary``): a ``Summary`` whose ``str()`` and ``repr()`` are the
        table, so that a prompt shows it and ``print`` prints it, once; ``print_fn``
        (e.g. a logger's ``info``) is also given the table.

        >>> import symnet as sn
        >>> net = sn.Network(sn.Input(3), sn.Dense(4, "relu"), sn.Dense(2), loss="mse")
        >>> net.summary(batch_size=10).total("params")
        26
        """
        from ..read.summary import summarize
        return summarize(self, batch_size, dtype).show(print_fn)

    def plot(self, path=None, ax=None):
        """Draw the network's graph with matplotlib and return the figure: a box per
        input and layer (name, kind, one example's shape; the outputs with their
        losses), an arrow from each box to the layers that read it.

        With ``path`` the figure is saved there (PNG, SVG, PDF: by the suffix) through
        the Agg backend, no display needed; with ``ax`` it is drawn into that
        matplotlib Axes.  matplotlib is an optional dependency
        (``pip install symnet[plot]``); without it this raises ImportError.
        """
        from ..read.plot import draw
        return draw(self, path=path, ax=ax)


def load(path, network=None, dtype=None, backend="c"):
    """The model saved at ``path`` (``model.save``): network rebuilt, compiled,
    parameters restored (``symnet.io.files`` reads and checks the file).

    With ``network`` given, the file must hold that network (same description),
    else ValueError.  ``dtype`` defaults to the saved one; ``backend`` as in
    ``Network.compile``.  The optimizer's state, when the file has one, is restored
    too (``model.optimizer``).
    """
    if network is not None and not isinstance(network, dsl.Network):
        raise TypeError(f"symnet.load: network must be an sn.Network (the network the "
                        f"file was saved from), got {type(network).__name__} {network!r}")
    network, saved, params, state = io.read(path, network, cls=Network, optimizer=True)
    model = network.compile(dtype=dtype or saved, backend=backend)
    for name, value in params.items():
        model.params[name] = value
    if state:
        from ..runtime.optimizer import from_arrays
        model.optimizer = from_arrays(model, state, str(path))
    return model
