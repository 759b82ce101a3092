"""Backends: a network's kernel plan in, a runtime out; a runtime's calls take and
return NumPy arrays.

A backend is a module with ``load(network, dtype) -> Runtime``; it plans the
network (``symnet.plan.lower``) unless it has the result cached.  A ``Runtime`` has

- ``meta``: sizes and layout (``symnet.backend.common.plan_meta``), ``dtype``,
  ``n_params``, ``n_in``, ``n_out``, ``backend`` (its name), ``tuning``, ``c_source``;
- ``params``, ``grads``: its flat θ and ∂L/∂θ (the model's parameters are views);
- ``forward(X, out=None) -> O``, ``loss(X, T)``, ``loss_grad(X, T)`` (gradients into
  ``grads``), ``step(X, T, lr)``, ``update(lr, optimizer, s1, s2, hyper, t)`` and
  ``train_epoch(X, T, idx, batch_size, lrs, losses, optimizer, s1, s2, hyper, t0,
  prev, have_prev, correct)``: X and T C-contiguous (batch, width) arrays of the
  dtype, T of width 1 holding class labels where the loss takes them.

``Model`` (``symnet.runtime.model``), training (``symnet.runtime.train``) and
distributed training use nothing else; pointers, cffi and C names stay inside
``symnet.backend.c``.

- ``"c"`` (``symnet.backend.c.runtime``): C99 compiled with cffi, cached by content;
  its function signatures are those of the exported header (``symnet.backend.c.export``).
- ``"numpy"`` (``symnet.backend.numpy``): the same plan run with NumPy; needs no
  compiler.
"""

from __future__ import annotations

BACKENDS = ("c", "numpy")


def load(name: str):
    """The ``load(network, dtype) -> Runtime`` function of backend ``name``."""
    if name == "c":
        from .c.runtime import load as c_load
        return c_load
    if name == "numpy":
        from .numpy import load as numpy_load
        return numpy_load
    raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
