"""Independent float64 numpy back-propagation for dense MLPs (test oracle).

Written from the definitions in DESIGN.md only, with every derivative by hand
(no sympy), so that it can check what symnet's compiler derives.

Network: for layers k = 1..L, ``Z_k = H_{k-1} W_k^T + b_k`` and
``H_k = f_k(Z_k)``, with ``H_0 = X`` (batch, in) and output ``O = H_L``.
``params`` maps "W1", "b1", "W2", ... to arrays (W: (out, in), b: (out,));
a layer without bias simply has no "b_k" key. The loss is the mean over the
batch of a per-example loss of the output row o and target row t.

Kinks: at exactly z = 0 every piecewise activation takes its LEFT derivative,
so relu'(0) = 0 (as DESIGN.md requires) and leaky_relu'(0) = 0.01. elu
(alpha = 1) is continuously differentiable, elu'(0) = 1 from either side.

>>> import numpy as np
>>> params = {"W1": np.array([[1.0, -1.0]]), "b1": np.array([0.5])}
>>> L, g = loss_and_grad(params, np.array([[1.0, 2.0]]), np.array([[0.0]]),
...                      ["linear"], "mse")
>>> L, g["W1"].tolist(), g["b1"].tolist()
(0.25, [[-1.0, -2.0]], [-1.0])
"""

from __future__ import annotations

import numpy as np

__all__ = ["ACTIVATIONS", "LOSSES", "forward", "loss", "loss_and_grad",
           "finite_difference_grad", "n_layers"]

_GELU_C = np.sqrt(2.0 / np.pi)
_GELU_A = 0.044715


def _sigmoid(z):
    # exp(-log(1 + exp(-z))): no overflow for either sign of z
    return np.exp(-np.logaddexp(0.0, -z))


def _gelu(z):
    return 0.5 * z * (1.0 + np.tanh(_GELU_C * (z + _GELU_A * z ** 3)))


def _dgelu(z):
    th = np.tanh(_GELU_C * (z + _GELU_A * z ** 3))
    du = _GELU_C * (1.0 + 3.0 * _GELU_A * z ** 2)
    return 0.5 * (1.0 + th) + 0.5 * z * (1.0 - th ** 2) * du


# name -> (f(z), f'(z)), elementwise on float64 arrays
ACTIVATIONS = {
    "linear": (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.where(z > 0, z, 0.0), lambda z: np.where(z > 0, 1.0, 0.0)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "softplus": (lambda z: np.logaddexp(0.0, z), _sigmoid),
    "leaky_relu": (lambda z: np.where(z > 0, z, 0.01 * z),
                   lambda z: np.where(z > 0, 1.0, 0.01)),
    "elu": (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
            lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0)))),
    "gelu": (_gelu, _dgelu),
    "swish": (lambda z: z * _sigmoid(z),
              lambda z: _sigmoid(z) + z * _sigmoid(z) * (1.0 - _sigmoid(z))),
}


def _log_softmax(o):
    m = o.max(axis=1, keepdims=True)
    return o - m - np.log(np.exp(o - m).sum(axis=1, keepdims=True))


# name -> (per-example loss (batch,), d(per-example loss)/d o (batch, out))
LOSSES = {
    "mse": (lambda o, t: ((o - t) ** 2).mean(axis=1),
            lambda o, t: 2.0 * (o - t) / o.shape[1]),
    "bce": (lambda o, t: -(t * np.log(o) + (1 - t) * np.log(1 - o)).mean(axis=1),
            lambda o, t: (-t / o + (1 - t) / (1 - o)) / o.shape[1]),
    "softmax_cross_entropy": (
        lambda o, t: -(t * _log_softmax(o)).sum(axis=1),
        lambda o, t: np.exp(_log_softmax(o)) * t.sum(axis=1, keepdims=True) - t),
}


def n_layers(params) -> int:
    """Number of layers: the largest k with a "Wk" key (W1..Wk all present)."""
    k = 0
    while f"W{k + 1}" in params:
        k += 1
    return k


def _check(params, activations):
    if isinstance(activations, str):
        activations = [activations] * n_layers(params)
    activations = list(activations)
    if len(activations) != n_layers(params) or not activations:
        raise ValueError(f"{len(activations)} activations for {n_layers(params)} layers")
    for a in activations:
        if a not in ACTIVATIONS:
            raise ValueError(f"unknown activation {a!r}; known: {sorted(ACTIVATIONS)}")
    return activations


def _forward_cache(params, X, activations):
    """Pre-activations Z_k and outputs H_k (H[0] = X) of every layer."""
    activations = _check(params, activations)
    H = [np.asarray(X, dtype=np.float64)]
    Z = []
    for k, act in enumerate(activations, start=1):
        W = np.asarray(params[f"W{k}"], dtype=np.float64)
        if W.ndim != 2 or W.shape[1] != H[-1].shape[1]:
            raise ValueError(f"W{k} has shape {W.shape}, input has {H[-1].shape[1]} features")
        z = H[-1] @ W.T
        if f"b{k}" in params:
            z = z + np.asarray(params[f"b{k}"], dtype=np.float64)
        Z.append(z)
        H.append(ACTIVATIONS[act][0](z))
    return activations, Z, H


def forward(params, X, activations):
    """Network output O, shape (batch, outputs)."""
    return _forward_cache(params, X, activations)[2][-1]


def loss(params, X, T, activations, loss):
    """Mean over the batch of the per-example loss."""
    O = forward(params, X, activations)
    return float(LOSSES[loss][0](O, np.asarray(T, dtype=np.float64)).mean())


def loss_and_grad(params, X, T, activations, loss):
    """(L, grads): the batch-mean loss and its gradient for every parameter
    (same keys and shapes as ``params``), by hand-written back propagation."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {sorted(LOSSES)}")
    activations, Z, H = _forward_cache(params, X, activations)
    T = np.asarray(T, dtype=np.float64)
    O = H[-1]
    if T.shape != O.shape:
        raise ValueError(f"T has shape {T.shape}, output has {O.shape}")
    B = O.shape[0]
    ell, dell = LOSSES[loss]
    L = float(ell(O, T).mean())
    dH = dell(O, T) / B                     # dL/dO
    grads = {}
    for k in range(len(activations), 0, -1):
        delta = dH * ACTIVATIONS[activations[k - 1]][1](Z[k - 1])   # dL/dZ_k
        grads[f"W{k}"] = delta.T @ H[k - 1]
        if f"b{k}" in params:
            grads[f"b{k}"] = delta.sum(axis=0)
        dH = delta @ np.asarray(params[f"W{k}"], dtype=np.float64)  # dL/dH_{k-1}
    return L, {key: grads[key] for key in params}


def finite_difference_grad(f, params, eps=1e-6):
    """Central differences (f(p + eps) - f(p - eps)) / (2 eps) of the scalar
    function ``f(params)`` for every element of every array in ``params``.
    ``params`` is not modified."""
    p = {k: np.array(v, dtype=np.float64, copy=True) for k, v in params.items()}
    grads = {}
    for key, arr in p.items():
        g = np.zeros_like(arr)
        flat, gflat = arr.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            fp = f(p)
            flat[i] = old - eps
            fm = f(p)
            flat[i] = old
            gflat[i] = (fp - fm) / (2.0 * eps)
        grads[key] = g
    return grads
