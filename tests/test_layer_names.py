"""Names users give: an input called X in a several-input network, and a layer's
parameters reached by the layer's name (``params_of``) in the layers' order."""

import numpy as np
import pytest
import sympy as sp

import symnet as sn


def _cell_net(x_name, h_name):
    X, H = sn.Input(3, name=x_name), sn.Input(4, name=h_name)
    cell = sn.Layer(4, lambda x, h, W, U, b, i, j: sp.tanh(
        sn.sum_j(W[i, j] * x[j]) + sn.sum_j(U[i, j] * h[j]) + b[i]),
        params={"W": ("out", "x"), "U": ("out", "h"), "b": ("out",)}, inputs=("x", "h"),
        name="cell")
    return sn.Network([X, H], sn.Dense(2, name="O")(cell([X, H])), loss="mse")


@pytest.mark.parametrize("names", [("X", "H"), ("H", "X"), ("X", "X_packed")])
def test_an_input_named_X_compiles_and_computes_the_same(names):
    """The README allows X as a name; several inputs side by side get another C name."""
    rng = np.random.default_rng(0)
    Xv, Hv, T = rng.normal(size=(5, 3)), rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    model = _cell_net(*names).compile(dtype="float64", seed=1)
    other = _cell_net("A", "B").compile(dtype="float64", seed=1)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, other.params[k])
    np.testing.assert_array_equal(model.forward([Xv, Hv]), other.forward([Xv, Hv]))
    loss, g = model.loss_and_grad({names[0]: Xv, names[1]: Hv}, T)
    loss2, g2 = other.loss_and_grad({"A": Xv, "B": Hv}, T)
    assert loss == loss2
    for k in g:
        np.testing.assert_array_equal(g[k], g2[k])


def test_an_input_named_X_in_a_merge_network():
    a, b = sn.Input(2, name="X"), sn.Input(2, name="Y")
    net = sn.Network([a, b], sn.Dense(1, name="O")(sn.Add(name="sum")([a, b])), loss="mse")
    m = net.compile(dtype="float64", seed=0)
    x, y = np.ones((3, 2)), np.full((3, 2), 2.0)
    np.testing.assert_allclose(m.forward([x, y]), (x + y) @ m.params["W2"].T + m.params["b2"])


def _conv_net():
    return sn.Network(sn.Input((1, 8, 8), name="I"), sn.Conv2d(2, 3, name="conv1"),
                      sn.MaxPool2d(2, name="pool"), sn.Conv2d(3, 2, name="conv2"),
                      sn.Flatten(), sn.Dense(4, "tanh", name="fc"), sn.Dense(2, name="O"),
                      loss="mse")


def test_params_of_reaches_a_layer_by_name():
    model = _conv_net().compile(dtype="float64", seed=0)
    for layer, number in (("conv1", 1), ("conv2", 3), ("fc", 5), ("O", 6)):
        p = model.params_of(layer)
        assert sorted(p) == ["W", "b"]
        assert p["W"].shape == model.params[f"W{number}"].shape
        p["b"] = np.arange(p["b"].size, dtype=float)          # writes into the model
        np.testing.assert_array_equal(model.params[f"b{number}"], np.arange(p["b"].size))
    assert dict(model.params_of("pool")) == {}
    with pytest.raises(ValueError, match=r"no layer 'conv3'; its layers with parameters: "
                                         r"conv1, conv2, fc, O"):
        model.params_of("conv3")
    with pytest.raises(ValueError, match=r"parameter W has shape"):
        model.params_of("fc")["W"] = np.zeros((2, 2))


def test_layer_params_is_the_gap_free_order_of_the_layers():
    net = _conv_net()
    order = [(layer, p) for layer, p in net.layer_params().items() if p]
    assert [layer for layer, _ in order] == ["conv1", "conv2", "fc", "O"]
    assert [p["W"] for _, p in order] == ["W1", "W3", "W5", "W6"]
    # every parameter once, in the model's order
    assert [n for _, p in order for n in p.values()] == list(net.compile(dtype="float64").params)


def test_params_of_a_shared_layer_and_of_a_several_input_layer():
    model = _cell_net("X", "H").compile(dtype="float64", seed=0)
    assert sorted(model.params_of("cell")) == ["U", "W", "b"]
    I = sn.Input(3, name="I")
    shared = sn.Dense(3, "tanh", name="h")
    net = sn.Network(I, sn.Dense(1, name="O")(shared(shared(I))), loss="mse")
    m = net.compile(dtype="float64")
    assert m.params_of("h")["W"] is not None
    np.testing.assert_array_equal(m.params_of("h")["W"], m.params_of("h_2")["W"])


def test_old_model_files_still_load(tmp_path):
    """The parameter names in files are unchanged (W1, W3, ...)."""
    model = _conv_net().compile(dtype="float64", seed=2)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        assert sorted(k for k in z.files if k.startswith("param/W")) == \
            ["param/W1", "param/W3", "param/W5", "param/W6"]
    again = sn.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.params_of("conv2")["W"], model.params["W3"])
