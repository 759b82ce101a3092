"""symnet: neural networks as composed differentiable functions, compiled to C.

Declare a network, read the chain-rule derivation sympy gives for it, and
train it with kernels generated from that derivation.

>>> import symnet as sn
>>> net = sn.Network(sn.Input(2), sn.Dense(4, "tanh"), sn.Dense(1, "sigmoid"), loss="bce")
>>> net.n_out
1
"""

__version__ = "0.1.0"

from .dsl import Dense, Input, Layer, Network  # noqa: E402
from . import datasets, schedules  # noqa: E402
from .history import History  # noqa: E402
from .io import load  # noqa: E402

__all__ = ["Dense", "Input", "Layer", "Network", "__version__", "History", "datasets",
           "schedules", "load"]
