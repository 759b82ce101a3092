"""The frame the convolution and pooling tests share: a network built from a case with
every parameter random (biases non-zero too), and the same network read as the layer list
of the explicit-loop reference (tests/conv_reference.py), compared with it."""

import numpy as np
import pytest

import symnet as sn
from conv_reference import loss_and_grad as reference
from gradcheck import check


def build(case, dtype="float64", loss="mse", seed=0):
    """case = (input shape, a function returning the layers): (net, model, X, T), batch 3."""
    shape, layers = case
    net = sn.Network(sn.Input(shape), *layers(), loss=loss)
    model = net.compile(dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    for k in model.params:
        model.params[k] = rng.normal(0, 0.5, model.params[k].shape)
    X = rng.normal(size=(3, *shape))
    T = rng.normal(size=(3, net.n_out)) if loss == "mse" else \
        np.eye(net.n_out)[rng.integers(0, net.n_out, 3)]
    return net, model, X, T


def reference_net(net, model):
    """The network as conv_reference's list: ("conv", W, b, stride, pad, activation,
    dilation), (pool kind, kernel, stride, pad), ("flatten",), ("dense", W, b, activation);
    a 1-D layer's sizes as ints."""
    out = []
    for k, layer in enumerate(net.layers, 1):
        p = model.params
        one = isinstance(layer, (sn.Conv1d, sn.MaxPool1d, sn.AvgPool1d))
        pick = (lambda t: t[0]) if one else (lambda t: t)
        if isinstance(layer, sn.Conv2d):              # Conv1d too
            out.append(("conv", p[f"W{k}"], p[f"b{k}"], pick(layer.stride), pick(layer.pad),
                        layer.activation_spec, pick(layer.dilation)))
        elif isinstance(layer, (sn.MaxPool2d, sn.AvgPool2d)):   # the 1-D pools too
            kind = "maxpool" if isinstance(layer, sn.MaxPool2d) else "avgpool"
            out.append((kind, pick(layer.kernel), pick(layer.stride), pick(layer.pad)))
        elif isinstance(layer, sn.Flatten):
            out.append(("flatten",))
        else:
            out.append(("dense", p[f"W{k}"], p[f"b{k}"], layer.activation_name))
    return out


def assert_matches_loop_reference(net, model, X, T):
    """Softmax cross-entropy loss and every layer's gradients equal the loop reference's."""
    L_ref, g_ref = reference(reference_net(net, model), X, T, loss="softmax_cross_entropy")
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(L_ref, rel=1e-12)
    assert sum(pair is not None for pair in g_ref) >= 2
    for k, pair in enumerate(g_ref, 1):
        if pair is None:
            continue
        np.testing.assert_allclose(g[f"W{k}"], pair[0], rtol=1e-9, atol=1e-12, err_msg=f"W{k}")
        np.testing.assert_allclose(g[f"b{k}"], pair[1], rtol=1e-9, atol=1e-12, err_msg=f"b{k}")


def case_tests(cases):
    """The two tests every conv test file runs over its CASES: gradients against float64
    central differences, loss and gradients against the loop reference.  A file binds
    them to its own test names (``test_a, test_b = case_tests(CASES)``)."""

    @pytest.mark.parametrize("name", sorted(cases))
    def test_gradients_match_central_differences(name):
        _, model, X, T = build(cases[name])
        check(model, X, T)

    @pytest.mark.parametrize("name", sorted(cases))
    def test_loss_and_gradients_match_the_loop_reference(name):
        assert_matches_loop_reference(*build(cases[name], loss="softmax_cross_entropy"))

    return test_gradients_match_central_differences, \
        test_loss_and_gradients_match_the_loop_reference


def assert_matches_torch(model, X, T, P, o):
    """Softmax cross-entropy loss and gradients equal PyTorch's: ``o`` is PyTorch's output
    computed from the tensors ``P`` (one per parameter of ``model``, requires_grad)."""
    import torch
    import torch.nn.functional as F

    loss = F.cross_entropy(o, torch.tensor(T.argmax(1)))
    loss.backward()
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(loss.item(), rel=1e-10)
    for k, p in P.items():
        np.testing.assert_allclose(g[k], p.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=k)
