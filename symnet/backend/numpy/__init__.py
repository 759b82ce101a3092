"""The NumPy backend: the kernel plan run op by op with NumPy, no compiler needed.

``net.compile(backend="numpy")`` gives a model whose every call (forward, loss,
gradients, step, fit, predict, evaluate, save/load) runs the same plan as the C
backend, read by ``execute.Compiled``; useful where no C compiler is installed
and as a readable executable form of the plan.  It is slower than the C.

>>> import numpy as np, symnet as sn
>>> from symnet.backend import numpy as nb
>>> net = sn.Network(sn.Input(2), sn.Dense(3, "tanh"), sn.Dense(1), loss="mse")
>>> rt = nb.load(net, "float64")
>>> rt.forward(np.ones((4, 2))).ravel().tolist()     # θ = 0
[0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

from .runtime import Runtime, load

__all__ = ["Runtime", "load"]
