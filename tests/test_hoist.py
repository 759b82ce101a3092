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
