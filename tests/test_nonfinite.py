"""NaN or inf in the data never reaches the parameters: ``step`` refuses it (as
``fit`` does) with the parameters unchanged, and ``loss`` / ``evaluate`` refuse
it instead of reporting numbers computed from it."""

import warnings

import numpy as np
import pytest

import symnet as sn
from symnet import guards


def _net(loss="mse", out=2):
    return sn.Network(sn.Input(3, name="I"), sn.Dense(4, "relu"), sn.Dense(out, name="O"),
                      loss=loss)


@pytest.fixture(scope="module", params=["float32", "float64"])
def model(request):
    return _net().compile(dtype=request.param, seed=0)


def _data(dtype):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(5, 3)).astype(dtype), rng.normal(size=(5, 2)).astype(dtype))


def _snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def _assert_unchanged(model, before):
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])


@pytest.mark.parametrize("where", ["X", "T"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("layout", ["fast", "list"])
def test_step_refuses_non_finite_data_and_keeps_params(model, where, bad, layout):
    X, T = _data(model.dtype)
    model.step(X, T, 0.1)        # work buffers sized: the next call takes the fast path
    (X if where == "X" else T)[2, 1] = bad
    if layout == "list":         # the checked path
        X, T = X.tolist(), T.tolist()
    before = _snapshot(model)
    with pytest.raises(ValueError, match=rf"{where} holds NaN or inf in 1 row\(s\), first at "
                                         r"row 2.*step was not taken"):
        model.step(X, T, 0.1)
    _assert_unchanged(model, before)
    # the model still works on clean data
    Xc, Tc = _data(model.dtype)
    assert np.isfinite(model.step(Xc, Tc, 0.1))
    assert np.isfinite(model.forward(Xc)).all()


def test_relu_hiding_a_nan_from_the_loss_is_still_refused():
    """A ReLU maps NaN to 0 in the forward pass (the loss stays finite) but the
    first layer's gradient is NaN: the step must be refused all the same."""
    m = _net().compile(dtype="float64", seed=0)
    m.params["W1"] = -np.abs(m.params["W1"])          # every unit of the NaN row off...
    X, T = _data(np.float64)
    X[:] = np.abs(X)
    X[0, 0] = np.nan
    before = _snapshot(m)
    with pytest.raises(ValueError, match="X holds NaN or inf"):
        m.step(X, T, 0.1)
    _assert_unchanged(m, before)


def test_step_split_into_calls_refuses_too(monkeypatch):
    m = _net().compile(dtype="float64", seed=0)
    monkeypatch.setattr(guards, "WORK_BYTES", 2 * 8 * m.meta["work_per_row"])   # 2 rows
    m = _net().compile(dtype="float64", seed=0)
    X, T = _data(np.float64)
    assert m.rows_per_call < X.shape[0]
    X[4, 0] = np.inf
    before = _snapshot(m)
    with pytest.raises(ValueError, match="row 4"):
        m.step(X, T, 0.1)
    _assert_unchanged(m, before)


def test_overflowing_step_is_not_taken_and_warns():
    """Finite data whose gradient overflows float32: no step, a warning, NaN back."""
    m = _net().compile(dtype="float32", seed=0)
    X, T = _data(np.float32)
    X *= np.float32(1e30)
    before = _snapshot(m)
    with pytest.warns(RuntimeWarning, match="step was not taken"):
        loss = m.step(X, T, 0.1)
    assert np.isnan(loss)
    _assert_unchanged(m, before)


@pytest.mark.parametrize("where", ["X", "T"])
def test_loss_and_evaluate_refuse_non_finite_data(model, where):
    X, T = _data(model.dtype)
    (X if where == "X" else T)[3, 0] = np.nan
    with pytest.raises(ValueError, match=rf"{where} holds NaN or inf .* row 3"):
        model.loss(X, T)
    with pytest.raises(ValueError, match=rf"{where} holds NaN or inf .* row 3"):
        model.evaluate(X, T)
    with pytest.raises(ValueError, match=rf"{where} holds NaN or inf .* row 3"):
        model.loss_and_grad(X, T)


def test_evaluate_of_a_classifier_refuses_nan_inputs():
    m = _net("softmax_cross_entropy", 3).compile(dtype="float64", seed=0)
    X = np.zeros((4, 3))
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match="X holds NaN or inf"):
        m.evaluate(X, np.array([0, 1, 2, 0]))


def test_forward_still_propagates_row_by_row(model):
    X, _ = _data(model.dtype)
    X[1, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Y = model.forward(X)
    np.testing.assert_array_equal(np.delete(Y, 1, axis=0), model.forward(np.delete(X, 1, axis=0)))
