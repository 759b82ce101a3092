"""The direct convolution route: a correlation with a short window (at most
DIRECT_WINDOW numbers), stride 1 along x and no padding computes its forward and weight
gradient from the input's rows in place, no im2col (its input gradient still through
col2im).  Which route each layer takes, then the results against float64 central
differences, the explicit-loop reference (tests/conv_reference.py) and numpy slices, with
rows wider than a tile and more output channels than a tile's rows."""

import numpy as np
import pytest

import symnet as sn
from conv_cases import assert_matches_torch, build, case_tests
from symnet.plan import lower
from symnet.plan.ops import Conv

CASES = {
    # LeNet's first layer: one input channel, 5×5
    "lenet_first": ((1, 12, 12), lambda: [
        sn.Conv2d(6, 5, activation="relu"), sn.MaxPool2d(2), sn.Flatten(), sn.Dense(3)]),
    # a direct layer after another: its input gradient through col2im; stride along y,
    # dilation along both axes
    "second_layer_stride_y_dilation": ((2, 13, 11), lambda: [
        sn.Conv2d(3, 2, activation="tanh"),
        sn.Conv2d(9, (2, 3), stride=(2, 1), dilation=(2, 2), activation="relu"),
        sn.Flatten(), sn.Dense(2)]),
    # rows of 38 outputs: full tiles of 16 or 32 columns and a rest; 9 output channels
    "wide_rows": ((1, 5, 40), lambda: [
        sn.Conv2d(9, 3, activation="tanh"), sn.Flatten(), sn.Dense(2)]),
    "conv1d": ((2, 30), lambda: [
        sn.Conv1d(3, 4, dilation=2, activation="tanh"), sn.Conv1d(2, 3), sn.Flatten(),
        sn.Dense(2)]),
}

test_gradients_match_central_differences, test_loss_and_gradients_match_the_loop_reference = \
    case_tests(CASES)


def _direct(net) -> list:
    """Per convolution of the plan, whether its forward runs direct."""
    p = lower.plan(net.graph())
    return [op.direct for op in p.forward if isinstance(op, Conv)]


def test_short_windows_without_padding_run_direct():
    assert _direct(build(CASES["lenet_first"])[0]) == [True]
    assert _direct(build(CASES["second_layer_stride_y_dilation"])[0]) == [True, True]
    assert _direct(build(CASES["conv1d"])[0]) == [True, True]
    # LeNet's second layer (6×5×5 = 150 numbers), padding, a stride along x: im2col
    for layers in ([sn.Conv2d(16, 5)], [sn.Conv2d(2, 3, padding=1)],
                   [sn.Conv2d(2, 3, stride=(1, 2))]):
        net = sn.Network(sn.Input((6, 12, 12)), *layers, sn.Flatten(), sn.Dense(2))
        assert _direct(net) == [False]


def test_backward_of_a_direct_layer_is_direct_too():
    p = lower.plan(build(CASES["second_layer_stride_y_dilation"])[0].graph())
    backward = [op for op in p.backward if isinstance(op, Conv)]
    assert [(op.direct, op.gW is not None, op.dX is not None) for op in backward] == \
        [(True, True, True), (True, True, False)]


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_forward_and_weight_gradient_equal_numpy_slices(dtype, rtol):
    """Z = b + Σ_{u,v} W[:, :, u, v]·X shifted by (u, v) and g_W[c,k,u,v] = Σ_{b,y,x}
    δ[b,c,y,x]·X[b,k,y+u,x+v], δ = ∂L/∂Z through a last Dense(1) with mse: numpy slices and
    einsum, not loops over positions; rows of 36 outputs, 7 output channels."""
    net = sn.Network(sn.Input((1, 6, 40)), sn.Conv2d(7, (3, 5)), sn.Flatten(), sn.Dense(1),
                     loss="mse")
    model = net.compile(dtype=dtype, seed=2)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(4, 1, 6, 40)).astype(dtype)
    P = {k: v.astype(np.float64) for k, v in model.params.items()}
    OH, OW = 4, 36
    Z = np.zeros((4, 7, OH, OW)) + P["b1"][None, :, None, None]
    for u in range(3):
        for v in range(5):
            Z += np.einsum("ck,bkyx->bcyx", P["W1"][:, :, u, v], X[:, :, u:u + OH, v:v + OW])
    O = Z.reshape(4, -1) @ P["W3"].T + P["b3"]
    np.testing.assert_allclose(model.forward(X), O, rtol=rtol, atol=rtol)
    T = rng.normal(size=(4, 1)).astype(dtype)
    _, g = model.loss_and_grad(X, T)
    # L = mean over the batch of (o − t)² (docs/getting-started.md), o = W3·flat(Z) + b3
    delta = ((2 * (O - T) / 4) @ P["W3"]).reshape(Z.shape)
    gW = np.zeros_like(P["W1"])
    for u in range(3):
        for v in range(5):
            gW[:, :, u, v] = np.einsum("bcyx,bkyx->ck", delta, X[:, :, u:u + OH, v:v + OW])
    scale = np.abs(gW).max()
    np.testing.assert_allclose(g["W1"], gW, rtol=20 * rtol, atol=20 * rtol * scale)
    np.testing.assert_allclose(g["b1"], delta.sum(axis=(0, 2, 3)), rtol=20 * rtol,
                               atol=20 * rtol * scale)


def test_lenet_shape_against_pytorch():
    """A LeNet-like stack (a direct first layer, an im2col second) against PyTorch's
    autograd in float64."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net = sn.Network(sn.Input((1, 16, 16)), sn.Conv2d(6, 5, activation="relu"),
                     sn.MaxPool2d(2), sn.Conv2d(4, 3, activation="relu"), sn.MaxPool2d(2),
                     sn.Flatten(), sn.Dense(3), loss="softmax_cross_entropy")
    assert _direct(net) == [True, False]
    model = net.compile(dtype="float64", seed=7)
    rng = np.random.default_rng(7)
    X = rng.normal(size=(5, 1, 16, 16))
    T = np.eye(3)[rng.integers(0, 3, 5)]
    P = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.params.items()}
    h = F.max_pool2d(F.relu(F.conv2d(torch.tensor(X), P["W1"], P["b1"])), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, P["W3"], P["b3"])), 2).flatten(1)
    o = h @ P["W6"].T + P["b6"]
    assert_matches_torch(model, X, T, P, o)


def test_the_bench_network_takes_both_routes():
    """The conv workload of ``python -m symnet.bench``: its first layer (1×5×5) direct, the
    second (6×5×5) through im2col, as the bench prints."""
    from symnet.bench import conv as workload
    assert workload.conv_routes(workload.network()) == "z_H1 direct, z_H3 im2col"
