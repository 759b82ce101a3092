"""Independent float64 numpy forward and back-propagation for the normalisation and
softmax layers (test oracle), every derivative by hand from the textbook forms:

- LayerNorm: x̂ = (x − μ)/σ, σ = √(var + ε) (biased variance), y = γ·x̂ + β;
  ∂L/∂x = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))/σ with ĝ = γ·∂L/∂y.
- RMSNorm: r = √(mean(x²) + ε), y = γ·x/r + β; ∂L/∂x = ĝ/r − x·mean(ĝ·x)/r³.
- softmax: s = exp(x − max x)/Σ exp(x − max x); ∂L/∂x = s·(∂L/∂s − Σ ∂L/∂s·s).

All over the last axis.  ``mlp`` runs X → Dense(tanh) → norm → Dense(linear) with the
loss mean_b mean_i (o − t)², the network of ``tests/test_norm.py``'s torch-free checks.
"""

import numpy as np


def layer_norm(x, gamma, beta, eps):
    mu = x.mean(-1, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    xh = (x - mu) / sigma
    y = gamma * xh + (0 if beta is None else beta)

    def back(dy):
        g = dy * gamma
        dx = (g - g.mean(-1, keepdims=True) - xh * (g * xh).mean(-1, keepdims=True)) / sigma
        lead = tuple(range(dy.ndim - 1))
        return dx, {"gamma": (dy * xh).sum(lead), "beta": dy.sum(lead)}
    return y, back


def rms_norm(x, gamma, beta, eps):
    r = np.sqrt((x ** 2).mean(-1, keepdims=True) + eps)
    y = gamma * x / r + (0 if beta is None else beta)

    def back(dy):
        g = dy * gamma
        dx = g / r - x * (g * x).mean(-1, keepdims=True) / r ** 3
        lead = tuple(range(dy.ndim - 1))
        return dx, {"gamma": (dy * x / r).sum(lead), "beta": dy.sum(lead)}
    return y, back


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    s = e / e.sum(-1, keepdims=True)

    def back(dy):
        return s * (dy - (dy * s).sum(-1, keepdims=True)), {}
    return s, back


def mlp(params, X, T, norm, eps=None):
    """Loss and gradients (keys as symnet's: W1, b1, gamma2, beta2, W3, b3) of
    X → Dense(tanh) → ``norm`` ("layernorm", "rmsnorm", "softmax") → Dense, loss mse."""
    Z1 = X @ params["W1"].T + params["b1"]
    H1 = np.tanh(Z1)
    if norm == "softmax":
        H2, back = softmax(H1)
    else:
        f = layer_norm if norm == "layernorm" else rms_norm
        H2, back = f(H1, params["gamma2"], params.get("beta2"), eps)
    O = H2 @ params["W3"].T + params["b3"]
    B, n = O.shape
    L = ((O - T) ** 2).sum() / (B * n)
    dO = 2 * (O - T) / (B * n)
    g = {"W3": dO.T @ H2, "b3": dO.sum(0)}
    dH1, own = back(dO @ params["W3"])
    g.update({f"{k}2": v for k, v in own.items() if f"{k}2" in params})
    dZ1 = dH1 * (1 - H1 ** 2)
    g.update({"W1": dZ1.T @ X, "b1": dZ1.sum(0)})
    return L, g
