"""A model's parameters: the ``Params`` mapping (views into the flat θ), their
seeded initialisation, and the rebuilding of a pickled model.

>>> import numpy as np
>>> theta = np.zeros(6)
>>> p = Params({"W1": theta[:4].reshape(2, 2), "b1": theta[4:]})
>>> p["b1"] = [1.0, 2.0]
>>> p, theta.tolist()
(Params(W1: (2, 2), b1: (2,)), [0.0, 0.0, 0.0, 0.0, 1.0, 2.0])
"""

from __future__ import annotations

import json
import threading
from collections.abc import MutableMapping

import numpy as np

from ..io.files import network_from_description

INITS = ("glorot", "he", "normal", "zeros", "ones")


def check_init(init):
    """``compile(init=...)``: None, a number, or one of ``INITS``."""
    number = isinstance(init, (int, float)) and not isinstance(init, bool)
    if init is None or number or init in INITS:
        return float(init) if number else init
    raise ValueError(f"init must be one of glorot, he, normal, zeros, ones or a number, "
                     f"got {init!r}")


def initialise(views: dict, specs: list, init, rng: np.random.Generator):
    """Seeded values for each parameter of ``specs`` (the plan's ``meta["params"]``)
    into ``views``: Glorot-uniform, He-normal, normal, zeros, ones or a number, as
    the layer asks; ``init`` (``compile(init=...)``, not None) for every matrix."""
    for p in specs:
        shape, view = p["shape"], views[p["name"]]
        fan_out = shape[0]
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scheme = p["init"]
        if init is not None and len(shape) > 1:   # compile(init=...): matrices
            scheme = init
        if isinstance(scheme, (int, float)):
            view[...] = scheme
        elif scheme == "normal":
            view[...] = rng.normal(0.0, 1.0, shape)
        elif scheme == "zeros":
            view[...] = 0
        elif scheme == "ones":
            view[...] = 1
        elif scheme == "he":
            view[...] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        else:
            a = np.sqrt(6.0 / (fan_in + fan_out))
            view[...] = rng.uniform(-a, a, shape)


def rebuild(cls, network_cls, description: str, dtype: str, params: dict, init,
            optimizer=None, backend: str = "c"):
    """A ``cls`` model of a ``network_cls`` network from its pickled state (see
    ``Model.__reduce__``)."""
    network = network_from_description(json.loads(description), network_cls)
    model = cls(network, dtype=dtype, init=init, backend=backend)
    for name, value in params.items():
        model.params[name] = value
    if optimizer is not None:
        from .optimizer import from_arrays
        model.optimizer = from_arrays(model, optimizer, "the pickled model")
    return model


class Params(MutableMapping):
    """Parameters by name (W1, b1, ...): numpy views into one flat array.

    Assigning copies into the existing array after checking the shape, so the
    compiled kernels always see the new values (never halfway through a
    kernel call of another thread)."""

    def __init__(self, views: dict, lock=None):
        self._views = views
        self._lock = lock or threading.Lock()

    def __getitem__(self, name):
        try:
            return self._views[name]
        except KeyError:
            raise KeyError(f"no parameter {name!r}; parameters: "
                           f"{', '.join(self._views)}") from None

    def __setitem__(self, name, value):
        if name not in self._views:
            raise KeyError(f"no parameter {name!r}; parameters: {', '.join(self._views)}")
        view = self._views[name]
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ValueError(f"parameter {name} has shape {view.shape}, got {value.shape}")
        with self._lock:
            view[...] = value

    def __delitem__(self, name):
        raise TypeError("parameters cannot be deleted")

    def __iter__(self):
        return iter(self._views)

    def __len__(self):
        return len(self._views)

    def __repr__(self):
        return "Params(" + ", ".join(f"{k}: {v.shape}" for k, v in self._views.items()) + ")"
