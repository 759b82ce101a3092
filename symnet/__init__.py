"""symnet: neural networks as composed differentiable functions, compiled to C.

Declare a network, read the chain-rule derivation sympy gives for it, and
train it with kernels generated from that derivation.

>>> import symnet as sn
>>> net = sn.Network(sn.Input(2), sn.Dense(4, "tanh"), sn.Dense(1, "sigmoid"), loss="bce")
>>> net.n_out
1
"""

from .version import __version__  # noqa: E402,F401

from .lang.base import Input  # noqa: E402
from .lang.dsl import Dense  # noqa: E402
from .api.network import Network, load  # noqa: E402
from .lang.merge import Add, Concatenate, Multiply, Slice  # noqa: E402
from .lang.norm import LayerNorm, RMSNorm, Softmax  # noqa: E402
from .lang.dropout import Dropout  # noqa: E402
from .lang.batchnorm import BatchNorm1d, BatchNorm2d  # noqa: E402
from .lang.embedding import Embedding  # noqa: E402
from .lang.conv import AvgPool1d, AvgPool2d, Conv1d, Conv2d, Flatten, MaxPool1d, MaxPool2d  # noqa: E402
from . import datasets  # noqa: E402
from .lang import recurrent  # noqa: E402
from .lang.recurrent import GRU, LSTM  # noqa: E402
from .lang.attention import (MultiHeadAttention, Pointwise, PositionalEmbedding,  # noqa: E402
                             TransformerBlock)
from .runtime import schedules  # noqa: E402
from .runtime.check import check_gradients  # noqa: E402
from .runtime.history import History  # noqa: E402

_LAZY = ("Layer", "n_in", "sum_j", "sum_k")


def __getattr__(name):
    # symnet.Layer needs sympy; importing symnet (e.g. to load a cached model) does not.
    if name in _LAZY:
        from .lang import layers
        return getattr(layers, name)
    if name in ("coords", "d", "target"):   # loss terms with input derivatives
        from .lang import pinn
        return getattr(pinn, name)
    if name == "indices":
        from .lang.tensor import indices
        return indices
    if name == "BuildError":               # the compiler failed: command, message, .c path
        from .backend.c.build import BuildError
        return BuildError
    if name in ("sigmoid", "softplus"):
        from .scalar import primitives
        return getattr(primitives, name)
    raise AttributeError(f"module 'symnet' has no attribute {name!r}")


__all__ = ["Add", "AvgPool1d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d",
           "BuildError", "Concatenate", "Conv1d", "Conv2d",
           "Dense", "Dropout", "Embedding", "Flatten", "GRU", "History", "Input", "LSTM", "Layer",
           "LayerNorm", "MaxPool1d", "MaxPool2d", "MultiHeadAttention", "Multiply", "Network",
           "Pointwise", "PositionalEmbedding", "RMSNorm", "Slice", "Softmax", "TransformerBlock",
           "check_gradients", "coords", "d", "datasets", "indices", "load", "n_in", "target",
           "recurrent", "schedules", "sigmoid", "softplus", "sum_j", "sum_k",
           "__version__"]
