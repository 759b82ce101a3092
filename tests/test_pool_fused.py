"""Max pooling's backward fused with the loop after it (the activation's derivative and
the bias sums) where the windows tile the input: the C takes the fused form exactly
there, and the gradients equal the loop reference with many ties (first maximum in
row-major order) and windows where the activation's derivative is 0."""

import numpy as np
import pytest
from conv_cases import assert_matches_loop_reference, build, reference_net

import symnet as sn
from symnet.__main__ import c_source

FUSED = "fused with: "

# (input shape, layers, whether the pool's backward fuses)
CASES = {
    "relu_2x2": ((2, 6, 8), lambda: [
        sn.Conv2d(3, 3, padding=1, activation="relu"), sn.MaxPool2d(2),
        sn.Flatten(), sn.Dense(3)], True),
    "tanh_rect_2x3": ((1, 6, 9), lambda: [
        sn.Conv2d(2, 3, padding="same", activation="tanh"), sn.MaxPool2d((2, 3)),
        sn.Flatten(), sn.Dense(3)], True),
    "relu_long_rows_twice": ((1, 20, 20), lambda: [
        sn.Conv2d(2, 5, activation="relu"), sn.MaxPool2d(2), sn.Conv2d(3, 3, activation="relu"),
        sn.MaxPool2d(2), sn.Flatten(), sn.Dense(3)], True),
    "relu_1d": ((2, 12), lambda: [
        sn.Conv1d(3, 3, padding=1, activation="relu"), sn.MaxPool1d(3),
        sn.Flatten(), sn.Dense(3)], True),
    # not a tiling: a row and a column left over, overlapping windows, padding
    "relu_left_over": ((1, 7, 7), lambda: [
        sn.Conv2d(2, 3, activation="relu"), sn.MaxPool2d(2), sn.Flatten(), sn.Dense(3)],
        False),
    "relu_overlapping": ((1, 6, 6), lambda: [
        sn.Conv2d(2, 2, activation="relu"), sn.MaxPool2d(2, stride=1), sn.Flatten(),
        sn.Dense(3)], False),
    "relu_padded": ((1, 6, 6), lambda: [
        sn.Conv2d(2, 3, activation="relu"), sn.MaxPool2d(2, padding=1), sn.Flatten(),
        sn.Dense(3)], False),
}


def _build(name, seed=0):
    """Parameters and inputs of few distinct values (halves): exact ties in the windows,
    whole windows at ReLU's 0."""
    shape, layers, fused = CASES[name]
    net, model, _, _ = build((shape, layers), loss="softmax_cross_entropy", seed=seed)
    rng = np.random.default_rng(seed)
    for k in model.params:
        model.params[k] = rng.integers(-2, 3, model.params[k].shape) * 0.5
    X = rng.integers(-2, 3, (4, *shape)) * 1.0
    T = np.eye(net.n_out)[rng.integers(0, net.n_out, 4)]
    return net, model, X, T, fused


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_exactly_where_the_windows_tile_the_input(name):
    net, _, _, _, fused = _build(name)
    src = c_source(net)
    assert (FUSED in src) == fused
    if fused:   # ∂L/∂H of the pooled layer is neither zeroed nor stored
        assert "memset(dL_dH1" not in src and "dL_dH1[b * " not in src   # no C access


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_with_ties_match_the_loop_reference(name):
    net, model, X, T, _ = _build(name)
    assert_matches_loop_reference(net, model, X, T)


def test_the_inputs_have_ties_and_dead_windows():
    """The cases above do test ties: some window holds its maximum twice, and some
    window's maximum is ReLU's 0 (its routed element gets ReLU′ = 0)."""
    net, model, X, _, _ = _build("relu_2x2")
    ref = reference_net(net, model)
    from conv_reference import ACT, conv2d
    Z = conv2d(X, ref[0][1], 1, 1) + ref[0][2][None, :, None, None]
    H = ACT["relu"][0](Z)
    win = H.reshape(4, 3, 3, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(4, 3, 3, 4, 4)
    top = win.max(-1, keepdims=True)
    assert ((win == top).sum(-1) > 1).any()
    assert (top == 0).any()
