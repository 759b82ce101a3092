"""Sums and maxima over a row's last axis in a local (``Loop.hoist``, symnet.plan.lower):
LayerNorm's mean and variance, softmax's maximum and Σ are each summed (or maximised) in
a register over the innermost index, so that the loop vectorises, instead of adding
into the memory of the result at every element.  Which loops are hoisted, what the C
says, and the values against an independent numpy computation."""

import numpy as np

import symnet as sn
from symnet.plan.lower import plan
from symnet.plan.ops import Loop

from norm_reference import layer_norm, softmax


def _net(width=16):
    S = sn.Input((5, width), name="S")
    x = sn.Softmax(name="P")(sn.LayerNorm(name="N")(S))
    return sn.Network(S, sn.Dense(3, name="O")(sn.Flatten(name="F")(x)),
                      loss="softmax_cross_entropy")


def _forward_loop(p, target):
    return next(op for op in p.forward if isinstance(op, Loop)
                and any(t == target for t, *_ in op.stmts))


def test_row_sums_and_maxima_are_hoisted():
    p = plan(_net().graph())
    for target in ("z_N_mean", "z_N_rstd", "z_P_sum", "z_P_max"):
        assert _forward_loop(p, target).hoist, target
    # a maximum over a pooling window of a few elements stays a plain loop
    I = sn.Input((1, 4, 4), name="I")
    pooled = sn.Network(I, sn.MaxPool2d(2, name="M"), sn.Flatten(), sn.Dense(1),
                        loss="mse")
    assert not _forward_loop(plan(pooled.graph()), "z_M").hoist


def test_c_sums_in_locals():
    src = _net().compile(dtype="float32").c_source
    mean = src[src.index("/* z_N_mean[b,a] ="):]
    mean = mean[:mean.index("/*", 2)]
    assert "real acc0 = 0;" in mean and "reduction(+:acc0)" in mean
    assert "z_N_mean[b * 5 + a] += S" not in mean      # no add into memory per element
    top = src[src.index("/* z_P_max[b,a] ="):]
    top = top[:top.index("/*", 2)]
    assert "real acc0 = -INFINITY;" in top and "reduction(max:acc0)" in top


def test_values_against_numpy(rng):
    net = _net()
    m = net.compile(dtype="float64", seed=3)
    X = rng.normal(size=(4, 5, 16)) * 3
    X[0, 1, :] = 2.5             # a row of ties: the maximum and the mean of equal numbers
    X[1, 2, 7] = X[1, 2, 3] = 40  # two equal maxima far above the rest
    p = m.params
    y, _ = layer_norm(X, p["gamma1"], p["beta1"], 1e-5)
    s, _ = softmax(y)
    want = s.reshape(4, -1) @ p["W4"].T + p["b4"]
    np.testing.assert_allclose(m.forward(X), want, rtol=1e-12, atol=1e-13)


def test_long_window_route_takes_the_first_maximum(rng):
    """A max over a window of ≥ 8 elements routes its gradient to the first element
    equal to the forward maximum (the C's vectorised minimum of positions): overlapping
    windows of 9 with tied maxima, against numpy's first arg-max."""
    I = sn.Input((2, 20), name="I")
    x = sn.PositionalEmbedding(name="E")(I)          # a parameter before the pool
    net = sn.Network(I, sn.Dense(3, name="O")(sn.Flatten(name="F")(
        sn.MaxPool1d(9, stride=3, name="M")(x))), loss="mse")
    src = net.compile(dtype="float32").c_source
    assert "reduction(min:v_at)" in src
    m = net.compile(dtype="float64", seed=4)
    X = np.round(rng.normal(size=(3, 2, 20)), 1)      # rounded: ties within windows
    X[0, 1, 3:12] = 0.7                               # a window of nine equal elements
    T = rng.normal(size=(3, 3))
    loss, g = m.loss_and_grad(X, T)
    W, b = m.params["W4"], m.params["b4"]
    Xp = X + m.params["P1"]
    starts = range(0, 20 - 9 + 1, 3)
    H = np.stack([Xp[:, :, s:s + 9].max(-1) for s in starts], -1)     # (3, 2, 4)
    O = H.reshape(3, -1) @ W.T + b
    np.testing.assert_allclose(loss, ((O - T) ** 2).mean(), rtol=1e-12)
    dO = 2 * (O - T) / O.size
    dH = (dO @ W).reshape(H.shape)
    # ∂L/∂X by the first arg-max of each window, summed over overlapping windows
    dX = np.zeros_like(X)
    for k, s in enumerate(starts):
        at = Xp[:, :, s:s + 9].argmax(-1)              # numpy: the first maximum
        for bi in range(3):
            for c in range(2):
                dX[bi, c, s + at[bi, c]] += dH[bi, c, k]
    np.testing.assert_allclose(g["P1"], dX.sum(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g["W4"], dO.T @ H.reshape(3, -1), rtol=1e-10, atol=1e-12)
