"""Max pooling's backward fused with the loop after it (the activation's derivative and
the bias sums) where the windows tile the input: the C takes the fused form exactly
there, and the gradients equal the loop reference with many ties (first maximum in
row-major order) and windows where the activation's derivative is 0."""

import numpy as np
import pytest
from conv_reference import loss_and_grad as reference

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


def _reference_net(net, model):
    out = []
    for k, layer in enumerate(net.layers, 1):
        p = model.params
        one = isinstance(layer, (sn.Conv1d, sn.MaxPool1d))
        pick = (lambda t: t[0]) if one else (lambda t: t)
        if isinstance(layer, sn.Conv2d):
            out.append(("conv", p[f"W{k}"], p[f"b{k}"], pick(layer.stride), pick(layer.pad),
                        layer.activation_spec))
        elif isinstance(layer, sn.MaxPool2d):
            out.append(("maxpool", pick(layer.kernel), pick(layer.stride), pick(layer.pad)))
        elif isinstance(layer, sn.Flatten):
            out.append(("flatten",))
        else:
            out.append(("dense", p[f"W{k}"], p[f"b{k}"], layer.activation_name))
    return out


def _build(name, seed=0):
    """Parameters and inputs of few distinct values (halves): exact ties in the windows,
    whole windows at ReLU's 0."""
    shape, layers, fused = CASES[name]
    net = sn.Network(sn.Input(shape), *layers(), loss="softmax_cross_entropy")
    model = net.compile(dtype="float64", seed=seed)
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
    L_ref, g_ref = reference(_reference_net(net, model), X, T, loss="softmax_cross_entropy")
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(L_ref, rel=1e-12)
    for k, pair in enumerate(g_ref, 1):
        if pair is None:
            continue
        np.testing.assert_allclose(g[f"W{k}"], pair[0], rtol=1e-9, atol=1e-12, err_msg=f"W{k}")
        np.testing.assert_allclose(g[f"b{k}"], pair[1], rtol=1e-9, atol=1e-12, err_msg=f"b{k}")


def test_the_inputs_have_ties_and_dead_windows():
    """The cases above do test ties: some window holds its maximum twice, and some
    window's maximum is ReLU's 0 (its routed element gets ReLU′ = 0)."""
    net, model, X, _, _ = _build("relu_2x2")
    ref = _reference_net(net, model)
    from conv_reference import ACT, conv2d
    Z = conv2d(X, ref[0][1], 1, 1) + ref[0][2][None, :, None, None]
    H = ACT["relu"][0](Z)
    win = H.reshape(4, 3, 3, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(4, 3, 3, 4, 4)
    top = win.max(-1, keepdims=True)
    assert ((win == top).sum(-1) > 1).any()
    assert (top == 0).any()
