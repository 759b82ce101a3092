"""Every user-error path of the core raises a clear ValueError before C runs."""

import numpy as np
import pytest

import symnet as sn


@pytest.fixture(scope="module")
def model():
    net = sn.Network(sn.Input(3, name="I"), sn.Dense(4, "tanh"), sn.Dense(2, name="O"),
                     loss="mse")
    return net.compile(dtype="float64", seed=0)


def test_wrong_feature_count_names_input_layer_and_shapes(model):
    with pytest.raises(ValueError, match=r"input layer 'I'.*expected shape \(batch, 3\), "
                                         r"got \(5, 4\)"):
        model.forward(np.zeros((5, 4)))


def test_wrong_target_shape(model):
    with pytest.raises(ValueError, match=r"output layer 'O'.*\(batch, 2\), got \(5, 3\)"):
        model.loss(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="T has 4 rows but X has 5"):
        model.step(np.zeros((5, 3)), np.zeros((4, 2)), lr=0.1)


def test_wrong_rank(model):
    with pytest.raises(ValueError, match=r"must be 2-D.*got shape \(3,\).*X\[None, :\]"):
        model.forward(np.zeros(3))
    with pytest.raises(ValueError, match="must be 2-D"):
        model.loss_and_grad(np.zeros((2, 3)), np.zeros((2, 2, 1)))


def test_a_one_axis_array_is_pointed_to_the_layout_its_length_fits(model):
    """X[None, :] only where the length is the input's width; a column of N examples
    for an input of width 1; (N,) targets are for one output or class labels."""
    column = sn.Network(sn.Input(1, name="I"), sn.Dense(1), loss="mse").compile(
        dtype="float64", seed=0)
    with pytest.raises(ValueError, match=r"^X must be 2-D \(batch, 1\) for input layer 'I', "
                                         r"got shape \(50,\); for a column of N examples "
                                         r"use X\[:, None\] \(or X\.reshape\(-1, 1\)\)$"):
        column.fit(np.zeros(50), np.zeros(50), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"got shape \(5,\)$"):     # neither: no advice
        model.forward(np.zeros(5))
    with pytest.raises(ValueError, match=r"^T must be 2-D \(batch, 2\) for output layer 'O' "
                                         r"\(loss mse\), got shape \(30,\): targets of shape "
                                         r"\(N,\) are taken for a network with one output and "
                                         r"as class labels for a softmax cross-entropy$"):
        model.fit(np.zeros((30, 3)), np.zeros(30), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"got shape \(2,\): .*; for one example use "
                                         r"T\[None, :\]$"):
        model.loss(np.zeros((1, 3)), np.zeros(2))


def test_empty_batch(model):
    with pytest.raises(ValueError, match="empty batch"):
        model.forward(np.zeros((0, 3)))


def test_non_numeric_arrays_refused(model):
    with pytest.raises(ValueError, match="real numbers"):
        model.forward(np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match="real numbers"):
        model.forward(np.array([[1, None, 3]], dtype=object))


def test_params_untouched_by_refused_step(model):
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError):
        model.step(np.zeros((2, 3)), np.zeros((2, 5)), lr=1.0)
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])


def test_non_contiguous_fortran_and_integer_inputs_give_right_answer(model):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 3))
    expected = model.forward(X)
    np.testing.assert_allclose(model.forward(np.asfortranarray(X)), expected)
    big = np.zeros((12, 6))
    big[::2, ::2] = X
    np.testing.assert_allclose(model.forward(big[::2, ::2]), expected)
    Xi = np.array([[1, 2, 3], [0, -1, 2]])
    np.testing.assert_allclose(model.forward(Xi), model.forward(Xi.astype(float)))
    np.testing.assert_allclose(model.forward([[1, 2, 3]]), model.forward(np.array([[1., 2, 3]])))
    ro = X.copy()
    ro.setflags(write=False)
    np.testing.assert_allclose(model.forward(ro), expected)


@pytest.mark.parametrize("name", ["1abc", "a-b", "a b", "x*/y", "é", "", "T"])
def test_bad_names_refused_at_declaration(name):
    with pytest.raises(ValueError, match="name"):
        sn.Dense(3, name=name)
    with pytest.raises(ValueError, match="name"):
        sn.Input(3, name=name)


def test_duplicate_and_colliding_names():
    with pytest.raises(ValueError, match="two layers are named 'A'"):
        sn.Network(sn.Input(2), sn.Dense(2, name="A"), sn.Dense(1, name="A"))
    net = sn.Network(sn.Input(2), sn.Dense(2, name="W2"), sn.Dense(1))
    with pytest.raises(ValueError, match="collide"):
        net.graph()


def test_unknown_activation_and_loss_list_known_ones():
    with pytest.raises(ValueError, match="unknown activation 'rleu'.*relu.*tanh"):
        sn.Dense(3, "rleu")
    with pytest.raises(ValueError, match="unknown loss 'mae'.*mse.*bce.*softmax_cross_entropy"):
        sn.Network(sn.Input(2), sn.Dense(1), loss="mae")


def test_bad_sizes_and_structure():
    with pytest.raises(ValueError, match="positive integer"):
        sn.Input(0)
    with pytest.raises(ValueError, match="positive integer"):
        sn.Dense(2.5)
    with pytest.raises(ValueError, match="starts with an Input"):
        sn.Network(sn.Dense(2))
    with pytest.raises(ValueError, match="at least one layer"):
        sn.Network(sn.Input(2))
    with pytest.raises(ValueError, match="dtype"):
        sn.Network(sn.Input(2), sn.Dense(1)).compile(dtype="int8")


def test_functional_and_sequential_forms_agree():
    I = sn.Input(2, name="I")
    H1 = sn.Dense(8, "tanh", name="H1")(I)
    O = sn.Dense(1, "sigmoid", name="O")(H1)
    f = sn.Network(I, O, loss="mse").compile(dtype="float64", seed=5)
    s = sn.Network(sn.Input(2), sn.Dense(8, "tanh"), sn.Dense(1, "sigmoid"),
                   loss="mse").compile(dtype="float64", seed=5)
    X = np.random.default_rng(0).normal(size=(4, 2))
    np.testing.assert_array_equal(f.forward(X), s.forward(X))
    assert list(f.params) == ["W1", "b1", "W2", "b2"]
    assert f.params["W1"].shape == (8, 2)


def test_params_assignment_checks_shape(model):
    with pytest.raises(ValueError, match=r"W1 has shape \(4, 3\), got \(3, 4\)"):
        model.params["W1"] = np.zeros((3, 4))
    with pytest.raises(KeyError, match="no parameter 'W9'"):
        model.params["W9"] = 1


def test_reading_a_missing_parameter_lists_the_parameters(model):
    """A bare KeyError: 'W9' before; a Mapping as before otherwise."""
    with pytest.raises(KeyError, match="no parameter 'W9'; parameters: W1, b1, W2, b2"):
        model.params["W9"]
    assert "W9" not in model.params and model.params.get("W9") is None
    assert "W1" in model.params and model.params.get("W1") is model.params["W1"]


def test_bce_targets_outside_zero_one_are_refused_naming_the_output_and_row():
    """bce's −t·log o − (1 − t)·log(1 − o) has no minimum for t outside [0, 1] (class
    labels 0..2 trained to a negative loss): refused by every call that takes T, before
    anything changes; 0/1 labels and probabilities are taken."""
    model = sn.Network(sn.Input(3), sn.Dense(1, "sigmoid", name="P"),
                       loss="bce").compile(dtype="float64", seed=0)
    X, y = np.zeros((4, 3)), np.array([0, 1, 2, 1])
    Ty = y[:, None].astype(np.float64)     # the layout of step's fast path
    before = model.theta.copy()
    match = (r"^T holds the targets of output layer 'P' \(loss bce\), which must be in "
             r"\[0, 1\]: got 2 at row 2; class labels 0\.\.2 are the targets of a softmax "
             r"cross-entropy: Dense\(3\) with loss='softmax_cross_entropy'")
    for call in (lambda: model.fit(X, y, epochs=1, progress=False),
                 lambda: model.fit(X, y, method="sd", epochs=1, progress=False),
                 lambda: model.step(X, Ty, lr=0.1),
                 lambda: model.step(X, y, lr=0.1, optimizer="adam"),
                 lambda: model.loss(X, y), lambda: model.loss_and_grad(X, Ty),
                 lambda: model.evaluate(X, y)):
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.raises(ValueError, match=r"^validation T holds the targets of output layer "
                                         r"'P' \(loss bce\), which must be in \[0, 1\]: got "
                                         r"-0\.5 at row 1$"):
        model.fit(X, y.clip(0, 1), epochs=1, validation_data=(X[:2], [1, -0.5]),
                  progress=False)
    np.testing.assert_array_equal(model.theta, before)
    model.loss(X, [0, 1, 0.25, 1.0])                     # probabilities are targets


def test_bce_targets_of_one_output_among_several_are_checked_by_name():
    I = sn.Input(3)
    H = sn.Dense(4, "tanh")(I)
    net = sn.Network(I, [sn.Dense(2, name="R")(H), sn.Dense(2, "sigmoid", name="B")(H)],
                     loss={"R": "mse", "B": "bce"})
    model = net.compile(dtype="float64", seed=0)
    X, R = np.zeros((3, 3)), np.full((3, 2), 5.0)      # mse: any value
    B = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 3.0]])
    with pytest.raises(ValueError, match=r"^T\['B'\] holds the targets of output layer 'B' "
                                         r"\(loss bce\), which must be in \[0, 1\]: got 3 at "
                                         r"row 2, column 1$"):
        model.loss(X, {"R": R, "B": B})
    model.loss(X, {"R": R, "B": B.clip(0, 1)})


def test_bce_targets_of_an_output_of_several_axes_name_the_index_in_it():
    """The column of the targets side by side (5: the sixth number of T's row) meant
    nothing to a user who gave T['A'] of shape (N, 3, 2): the index in it is named."""
    S = sn.Input((3, 2))
    x = sn.Pointwise(4, "tanh")(S)
    net = sn.Network(S, [sn.Dense(1, name="B")(sn.Flatten()(x)),
                         sn.Pointwise(2, "sigmoid", name="A")(x)], loss={"A": "bce", "B": "mse"})
    model = net.compile(dtype="float64", seed=0)
    A = np.full((4, 3, 2), 0.5)
    A[3, 2, 1] = 2.0
    with pytest.raises(ValueError, match=r"^T\['A'\] holds the targets of output layer 'A' "
                                         r"\(loss bce\), which must be in \[0, 1\]: got 2 at "
                                         r"row 3, index \(2, 1\)$"):
        model.loss(np.zeros((4, 3, 2)), {"A": A, "B": np.zeros((4, 1))})
