"""Independent float64 reference for convolution networks (test oracle).

Explicit Python loops written from the definitions (PyTorch's conventions:
cross-correlation, NCHW, weights (out, in, kh, kw), floor division for the
output size, zero padding), with every derivative by hand -- no sympy, no
code shared with symnet.  Max pooling passes the gradient to the first largest
element of its window in row-major order.

A network is a list of layer tuples:
    ("conv", W, b, stride, pad, act[, dilation])
                                       W: (co, ci, kh, kw) or (co, ci, k) for 1-D;
                                       stride, pad, dilation: a number or one per axis
    ("maxpool", k, stride[, pad]) / ("avgpool", k, stride[, pad])
                                       k, stride, pad: a number or (h, w); on a
                                       (B, C, L) batch, numbers (1-D pooling)
    ("flatten",)
    ("dense", W, b, act)
"""

from __future__ import annotations

import numpy as np

ACT = {
    "linear": (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.where(z > 0, z, 0.0), lambda z: np.where(z > 0, 1.0, 0.0)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
}


def _two(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def conv2d(X, W, stride, pad, dilation=1):
    """Z[b,c,y,x] = Σ_k Σ_u Σ_v W[c,k,u,v]·X[b,k,y·sh+u·dh−ph,x·sw+v·dw−pw] (0 outside X);
    stride, pad and dilation: a number or (height, width)."""
    B, C, H, Wd = X.shape
    co, ci, kh, kw = W.shape
    (sh, sw), (ph, pw), (dh, dw) = _two(stride), _two(pad), _two(dilation)
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (Wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    Z = np.zeros((B, co, OH, OW))
    for b in range(B):
        for c in range(co):
            for y in range(OH):
                for x in range(OW):
                    s = 0.0
                    for k in range(ci):
                        for u in range(kh):
                            for v in range(kw):
                                iy, ix = y * sh + u * dh - ph, x * sw + v * dw - pw
                                if 0 <= iy < H and 0 <= ix < Wd:
                                    s += W[c, k, u, v] * X[b, k, iy, ix]
                    Z[b, c, y, x] = s
    return Z


def conv2d_backward(X, W, stride, pad, D, dilation=1):
    """(dX, dW) for Z = conv2d(X, W) and D = ∂L/∂Z."""
    B, C, H, Wd = X.shape
    co, ci, kh, kw = W.shape
    (sh, sw), (ph, pw), (dh, dw) = _two(stride), _two(pad), _two(dilation)
    dX, dW = np.zeros_like(X), np.zeros_like(W)
    for b in range(B):
        for c in range(co):
            for y in range(D.shape[2]):
                for x in range(D.shape[3]):
                    for k in range(ci):
                        for u in range(kh):
                            for v in range(kw):
                                iy, ix = y * sh + u * dh - ph, x * sw + v * dw - pw
                                if 0 <= iy < H and 0 <= ix < Wd:
                                    dW[c, k, u, v] += D[b, c, y, x] * X[b, k, iy, ix]
                                    dX[b, k, iy, ix] += D[b, c, y, x] * W[c, k, u, v]
    return dX, dW


def pool(X, k, stride, kind, pad=0):
    """Max or average over each window of a (B, C, H, W) or (B, C, L) batch; ``pad``
    elements on each side count as −∞ for the maximum and as zeros in the average
    (which divides by the whole window: PyTorch's count_include_pad=True)."""
    if X.ndim == 3:   # 1-D: height 1
        return pool(X[:, :, None, :], (1, _first(k)), (1, _first(stride)), kind,
                    (0, _first(pad)))[:, :, 0, :]
    B, C, H, W = X.shape
    (kh, kw), (sh, sw), (ph, pw) = _two(k), _two(stride), _two(pad)
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    Z = np.zeros((B, C, OH, OW))
    for b in range(B):
        for c in range(C):
            for y in range(OH):
                for x in range(OW):
                    best, total = -np.inf, 0.0
                    for u in range(kh):
                        for v in range(kw):
                            iy, ix = y * sh + u - ph, x * sw + v - pw
                            if 0 <= iy < H and 0 <= ix < W:
                                best = max(best, X[b, c, iy, ix])
                                total += X[b, c, iy, ix]
                    Z[b, c, y, x] = best if kind == "maxpool" else total / (kh * kw)
    return Z


def pool_backward(X, k, stride, kind, D, pad=0):
    if X.ndim == 3:
        return pool_backward(X[:, :, None, :], (1, _first(k)), (1, _first(stride)), kind,
                             D[:, :, None, :], (0, _first(pad)))[:, :, 0, :]
    dX = np.zeros_like(X)
    B, C, H, W = X.shape
    (kh, kw), (sh, sw), (ph, pw) = _two(k), _two(stride), _two(pad)
    for b in range(B):
        for c in range(C):
            for y in range(D.shape[2]):
                for x in range(D.shape[3]):
                    best, at = -np.inf, None
                    for u in range(kh):
                        for v in range(kw):
                            iy, ix = y * sh + u - ph, x * sw + v - pw
                            if not (0 <= iy < H and 0 <= ix < W):
                                continue   # padding: no gradient
                            if kind == "avgpool":
                                dX[b, c, iy, ix] += D[b, c, y, x] / (kh * kw)
                            elif X[b, c, iy, ix] > best:   # strict: first on ties
                                best, at = X[b, c, iy, ix], (iy, ix)
                    if kind == "maxpool":
                        dX[b, c, at[0], at[1]] += D[b, c, y, x]
    return dX


def _as2d(layer, X):
    """A 1-D conv is a 2-D one of height 1."""
    if layer[0] == "conv" and layer[1].ndim == 3:
        W = layer[1][:, :, None, :]
        return W, X[:, :, None, :]
    return layer[1], X


def _axes(layer):
    """stride, pad and dilation per axis; a 1-D conv has height 1, stride 1, no padding
    and no dilation there."""
    s, p = layer[3], layer[4]
    d = layer[6] if len(layer) > 6 else 1
    if layer[1].ndim == 3:
        return (1, _first(s)), (0, _first(p)), (1, _first(d))
    return s, p, d


def _first(v):
    return v[0] if isinstance(v, (tuple, list)) else v


def loss_and_grad(net, X, T, loss="mse"):
    """(loss, grads list aligned with net: (dW, db) or None) for the loss mean
    over the batch ("mse": mean over outputs of (o − t)²; "softmax_cross_entropy")."""
    acts, cache = [X], []
    H = X
    for layer in net:
        if layer[0] == "conv":
            W, Hin = _as2d(layer, H)
            Z = conv2d(Hin, W, *_axes(layer)) + layer[2][None, :, None, None]
            if layer[1].ndim == 3:
                Z = Z[:, :, 0, :]
            cache.append(Z)
            H = ACT[layer[5]][0](Z)
        elif layer[0] in ("maxpool", "avgpool"):
            cache.append(None)
            H = pool(H, layer[1], layer[2], layer[0], *layer[3:])
        elif layer[0] == "flatten":
            cache.append(H.shape)
            H = H.reshape(H.shape[0], -1)
        else:
            Z = H @ layer[1].T + layer[2]
            cache.append(Z)
            H = ACT[layer[3]][0](Z)
        acts.append(H)
    O, B = H, X.shape[0]
    if loss == "mse":
        L = float(((O - T) ** 2).mean(axis=1).mean())
        G = 2.0 * (O - T) / O.shape[1] / B
    else:
        m = O.max(axis=1, keepdims=True)
        logp = O - m - np.log(np.exp(O - m).sum(axis=1, keepdims=True))
        L = float(-(T * logp).sum(axis=1).mean())
        G = (np.exp(logp) * T.sum(axis=1, keepdims=True) - T) / B
    grads = [None] * len(net)
    for n in range(len(net) - 1, -1, -1):
        layer, Hin = net[n], acts[n]
        if layer[0] == "dense":
            D = G * ACT[layer[3]][1](cache[n])
            grads[n] = (D.T @ Hin, D.sum(axis=0))
            G = D @ layer[1]
        elif layer[0] == "conv":
            D = G * ACT[layer[5]][1](cache[n])
            W, Hin2 = _as2d(layer, Hin)
            D2 = D[:, :, None, :] if layer[1].ndim == 3 else D
            s, p, d = _axes(layer)
            dX, dW = conv2d_backward(Hin2, W, s, p, D2, d)
            if layer[1].ndim == 3:
                dX, dW = dX[:, :, 0, :], dW[:, :, 0, :]
            grads[n] = (dW, D.sum(axis=tuple(k for k in range(D.ndim) if k != 1)))
            G = dX
        elif layer[0] == "flatten":
            G = G.reshape(cache[n])
        else:
            G = pool_backward(Hin, layer[1], layer[2], layer[0], G, *layer[3:])
    return L, grads
