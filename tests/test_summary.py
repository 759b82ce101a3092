"""model.summary(): figures worked out by hand for small networks."""

import pytest

import symnet as sn
from symnet.read.summary import summarize


@pytest.fixture(scope="module")
def model():
    net = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.Dense(2, "sigmoid"), loss="bce")
    return net.compile(dtype="float64")


def test_two_layer_network_by_hand(model):
    s = model.summary(batch_size=5)          # float64: 8 bytes a number
    H1, O = s.layers
    # H1: W1 4×3 + b1 4 = 16 numbers; z_H1 and H1 are 5×4 each; backward keeps
    # dL_dH1 and delta_H1 (5×4 each) beside g_W1, g_b1.
    assert (H1.name, H1.n_in, H1.n_out, H1.activation) == ("H1", 3, 4, "tanh")
    assert (H1.params, H1.param_bytes) == (16, 128)
    assert H1.activation_bytes == 2 * 5 * 4 * 8
    assert H1.gradient_bytes == (16 + 2 * 5 * 4) * 8
    assert (H1.flops_forward, H1.flops_backward) == (2 * 5 * 4 * 3, 2 * 5 * 4 * 3)
    # O: W3 2×4 + b 2 = 10; the loss is fused with the sigmoid: no dL_dO, only delta_O.
    assert (O.params, O.param_bytes) == (10, 80)
    assert O.activation_bytes == 2 * 5 * 2 * 8
    assert O.gradient_bytes == (10 + 5 * 2) * 8
    assert (O.flops_forward, O.flops_backward) == (2 * 5 * 2 * 4, 2 * 2 * 5 * 2 * 4)
    assert s.update_flops == 2 * 26
    assert s.flops_per_step == 120 + 80 + 120 + 160 + 52
    assert s.total("params") == 26
    # the batch run in chunks (symnet.plan.schedule.halves): the partial sums of the
    # bias gradients g_b1 (4) and g_b2 (2), room for them per example of the batch
    assert s.scratch_bytes == (4 + 2) * 5 * 8
    # dL_dH1 takes z_H1's place (symnet.plan.share): z_H1 is read only to store
    # H1 = tanh(z_H1), dL_dH1 first written by the backward pass; z_O stays (the loss
    # reads it: softplus of ±z_O), and so does everything else
    assert s.shared_bytes == 5 * 4 * 8
    assert s.bytes == 128 + 80 + 320 + 160 + 448 + 160 + s.scratch_bytes - s.shared_bytes


def test_work_memory_is_the_buffer_the_model_allocates(model):
    s = model.summary(batch_size=7)
    grads_of_params = s.total("param_bytes")
    work = s.total("activation_bytes") + s.total("gradient_bytes") - grads_of_params
    assert work + s.scratch_bytes - s.shared_bytes == model.meta["work_per_row"] * 7 * 8
    assert s.bytes == s.total("param_bytes") + work + grads_of_params + s.scratch_bytes \
        - s.shared_bytes


def test_softmax_output_keeps_its_upstream_gradient():
    net = sn.Network(sn.Input(2), sn.Dense(3), loss="softmax_cross_entropy")
    s = summarize(net, batch_size=4, dtype="float32")
    (O,) = s.layers
    assert (O.params, O.activation_bytes) == (9, 2 * 4 * 3 * 4)
    # dL_dO, which delta_O shares (a linear output: δ = ∂L/∂O, no copy)
    assert O.gradient_bytes == (9 + 4 * 3) * 4
    assert (O.flops_forward, O.flops_backward) == (48, 48)  # no dL_dI at the first layer
    assert s.flops_per_step == 48 + 48 + 18


def test_table_text(model):
    text = str(model.summary(batch_size=5))
    lines = text.splitlines()
    assert lines[0] == "batch size 5, float64 (8 bytes per number)"
    assert lines[1].split() == ["layer", "in", "→", "out", "activation", "params", "param",
                                "B", "activ.", "B", "grad", "B", "fwd", "flops", "bwd", "flops"]
    assert lines[2].split() == ["H1", "3", "→", "4", "tanh", "16", "128", "320", "448",
                                "120", "120"]
    assert lines[5].split() == ["total", "26", "208", "480", "608", "200", "280"]
    assert "flops per training step: 532" in text
    assert model.summary(5).as_dict()["flops_per_step"] == 532


def test_bad_arguments():
    net = sn.Network(sn.Input(2), sn.Dense(1), loss="mse")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        summarize(net, batch_size=0)
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64', got 'int8'"):
        summarize(net, dtype="int8")
    with pytest.raises(ValueError, match="no column 'flops'"):
        summarize(net).total("flops")


def test_parameters_that_no_step_trains_are_counted_apart():
    """BatchNorm's running statistics and its mode flag, Dropout's random stream and a
    frozen layer's weights are numbers the layer keeps (the column, as Keras's summary)
    but not ones the update trains (the line under the table, the update's flops)."""
    net = sn.Network(sn.Input(4), sn.Dense(3), sn.BatchNorm1d(), sn.Dropout(0.2),
                     sn.Dense(1, trainable=False), loss="mse")
    s = summarize(net, batch_size=8, dtype="float32")
    # W 3×4 + b 3 = 15; γ, β 3 each (train) + mean, var 3 each and t 1 (state) = 13;
    # the stream 3; the frozen W 1×3 + b 1 = 4
    assert s.total("params") == 15 + 13 + 3 + 4
    assert s.trainable == 15 + 6
    assert s.update_flops == 2 * (15 + 6)
    assert s.as_dict()["trainable"] == 21
    assert "parameters: 35, of which 21 train and 14 do not" in str(s)


def test_a_network_that_trains_every_parameter_says_nothing_more(model):
    s = model.summary(batch_size=5)
    assert s.trainable == s.total("params") == 26 and "do not" not in str(s)
