"""Whatever array-like a user passes: the right answer or a clear ValueError.

The reference answer is always the forward pass of the same numbers as a
plain float64 C-contiguous array.
"""

import numpy as np
import pytest

import symnet as sn
from symnet import guards


def _net():
    return sn.Network(sn.Input(3, name="I"), sn.Dense(4, "tanh"), sn.Dense(2, name="O"),
                      loss="mse")


@pytest.fixture(scope="module")
def model():
    return _net().compile(dtype="float64", seed=0)


X = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
T = np.array([[0.1, 0.2], [0.3, -0.4]])


def _same_as_float64(model, A, values=X):
    np.testing.assert_array_equal(model.forward(A), model.forward(np.array(values, float)))


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint16", "int64", "float16", "float32",
                                   ">f8", ">f4", ">i4", "<f8"])
def test_real_dtypes_are_converted(model, dtype):
    A = X.astype(dtype)
    _same_as_float64(model, A, A.astype(np.float64))
    assert model.loss(A, T) == model.loss(A.astype(np.float64), T)


def test_float32_model_converts_float64_and_back(model):
    m32 = _net().compile(dtype="float32", seed=0)
    np.testing.assert_allclose(m32.forward(X), model.forward(X), rtol=1e-5, atol=1e-6)
    assert m32.forward(X).dtype == np.float32


@pytest.mark.parametrize("bad, message", [
    (X.astype(complex), "real numbers, got dtype complex128"),
    (X.astype(object), "real numbers, got dtype object"),
    (np.array([["a", "b", "c"]]), "real numbers"),
    (np.zeros((2, 3), "datetime64[s]"), "real numbers"),
    (np.zeros((2, 3), [("a", "f8")]), "real numbers"),
    ([[10**400, 1, 2]], "real numbers"),
    (None, "real numbers"),
    ({"a": 1}, "real numbers"),
    ("text", "real numbers"),
    ([[1, 2, 3], [4, 5]], "cannot be read as a numeric array"),
    (np.float64(1.0), r"must be 2-D.*got shape \(\)"),
    (np.zeros(()), r"must be 2-D.*got shape \(\)"),
    (np.zeros((2, 3, 1)), r"must be 2-D.*got shape \(2, 3, 1\)"),
    (np.zeros((0, 3)), "empty batch"),
    (np.zeros((2, 0)), r"0 columns"),
    (np.ma.masked_array(X, mask=[[0, 1, 0], [0, 0, 0]]), "masked array with 1 masked"),
])
def test_bad_inputs_are_refused_clearly(model, bad, message):
    with pytest.raises(ValueError, match=message):
        model.forward(bad)
    with pytest.raises(ValueError, match=message):
        model.step(bad, T, lr=0.1)


def test_bad_targets_are_refused_clearly(model):
    for bad in (T.astype(complex), T[:, :1], T[None], [[1, 2], [3]]):
        with pytest.raises(ValueError):
            model.loss_and_grad(X, bad)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_array_likes_give_the_right_answer(model):
    _same_as_float64(model, X.tolist())
    _same_as_float64(model, [tuple(r) for r in X])
    _same_as_float64(model, memoryview(X))
    _same_as_float64(model, memoryview(np.ascontiguousarray(X.astype(np.float32))),
                     X.astype(np.float32).astype(float))
    y = model.forward(np.asmatrix(X))
    assert type(y) is np.ndarray
    _same_as_float64(model, np.asmatrix(X))
    _same_as_float64(model, np.ma.masked_array(X, mask=False))
    _same_as_float64(model, X[:, ::-1][:, ::-1])   # negative strides
    _same_as_float64(model, np.broadcast_to(X[:1], (2, 3)), np.repeat(X[:1], 2, axis=0))


def test_unaligned_array_gives_the_right_answer(model):
    """A C-contiguous float64 array at an odd address: the C may assume
    alignment (vector loads), so it must get an aligned copy."""
    buf = np.zeros(X.size * 8 + 1, np.uint8)
    A = np.frombuffer(buf.data, dtype=np.float64, count=X.size, offset=1).reshape(X.shape)
    A[...] = X
    assert not A.flags.aligned and A.flags.c_contiguous
    assert model.as_inputs(A).ctypes.data % 8 == 0
    _same_as_float64(model, A)
    before = {k: v.copy() for k, v in model.params.items()}
    _, g = model.loss_and_grad(X, T)
    model.step(A, T, lr=0.5)
    for k in before:
        np.testing.assert_allclose(model.params[k], before[k] - 0.5 * g[k], rtol=1e-12,
                                   atol=1e-15)
        model.params[k] = before[k]


def test_nan_and_inf_propagate_row_by_row(model):
    """forward follows IEEE arithmetic: a non-finite input affects only its own
    row's output; nothing crashes.  loss refuses such data (tests/test_nonfinite.py)."""
    A = np.vstack([X, [[np.nan, 0, 0]], [[np.inf, -np.inf, 0]]])
    Y = model.forward(A)
    np.testing.assert_array_equal(Y[:2], model.forward(X))
    assert np.isnan(Y[2]).all()
    with pytest.raises(ValueError, match="X holds NaN or inf in 1 row"):
        model.loss(A[:3], np.vstack([T, [[0, 0]]]))
    with pytest.raises(ValueError, match="T holds NaN or inf in 1 row"):
        model.loss(X, [[np.nan, 0], [0, 0]])


@pytest.mark.parametrize("lr", ["fast", None, [0.1, 0.2], float("nan"), float("inf"), -np.inf])
def test_bad_learning_rate_refused_and_params_kept(model, lr):
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match="lr must be"):
        model.step(X, T, lr=lr)
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])


def test_split_batches_equal_one_call(model, monkeypatch):
    """When a batch's work memory is over the limit, forward, loss, gradients
    and step split it into calls; the numbers are those of one call."""
    monkeypatch.setattr(guards, "WORK_BYTES", 3 * 8 * model.meta["work_per_row"])  # 3 rows
    split = _net().compile(dtype="float64", seed=0)
    assert split.rows_per_call == 3
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(10, 3)), rng.normal(size=(10, 2))
    np.testing.assert_allclose(split.forward(A), model.forward(A), rtol=1e-14)
    assert split.loss(A, B) == pytest.approx(model.loss(A, B), rel=1e-14)
    (l1, g1), (l2, g2) = split.loss_and_grad(A, B), model.loss_and_grad(A, B)
    assert l1 == pytest.approx(l2, rel=1e-14)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-12, atol=1e-15)
    saved = {k: v.copy() for k, v in model.params.items()}
    try:
        split.step(A, B, lr=0.3)
        model.step(A, B, lr=0.3)
        for k in saved:
            np.testing.assert_allclose(split.params[k], model.params[k], rtol=1e-12)
    finally:
        for k, v in saved.items():
            model.params[k] = v


# ------------------------------------------------------------------ sizes

def test_network_too_large_for_memory_is_refused_before_allocating():
    net = sn.Network(sn.Input(400_000), sn.Dense(400_000), loss="mse")  # 2.6 TB in float64
    with pytest.raises(ValueError, match=r"needs about 2560\.0 GB.*160,000,400,000 param"):
        net.compile(dtype="float64")


def test_memory_limit_setting(monkeypatch):
    monkeypatch.setenv("SYMNET_MAX_MEMORY", "1e6")
    net = sn.Network(sn.Input(300), sn.Dense(300), loss="mse")     # 1.4 MB in float64
    with pytest.raises(ValueError, match=r"needs about 0\.0 GB.*90,300 param.*has 0\.0 GB"):
        net.compile(dtype="float64")
    monkeypatch.setenv("SYMNET_MAX_MEMORY", "lots")
    with pytest.raises(ValueError, match="SYMNET_MAX_MEMORY must be a number"):
        net.compile(dtype="float64")



@pytest.mark.parametrize("value", ["inf", "-1", "0", "nan"])
def test_memory_limit_setting_out_of_range(value, monkeypatch):
    """inf is no limit (it raised OverflowError); 0, a negative or nan is refused
    naming the variable (they read as a machine of 0.0 GB that refused every network)."""
    monkeypatch.setenv("SYMNET_MAX_MEMORY", value)
    net = sn.Network(sn.Input(3), sn.Dense(2), loss="mse")
    if value == "inf":
        net.compile(dtype="float64")
        return
    with pytest.raises(ValueError, match=f"SYMNET_MAX_MEMORY must be a number of bytes above 0 "
                                         f".*got '{value}'"):
        net.compile(dtype="float64")

def test_parameter_too_large_for_int_indexing(monkeypatch):
    monkeypatch.setenv("SYMNET_MAX_MEMORY", "1e15")   # not the limit here
    net = sn.Network(sn.Input(50_000), sn.Dense(50_000), loss="mse")
    with pytest.raises(ValueError, match=r"W1 of shape \(50000, 50000\).*at most 2,147,483,647"):
        net.compile(dtype="float32")


def test_rows_per_call_keeps_indices_and_memory_bounded():
    assert guards.rows_per_call({"work_per_row": 10, "n_in": 2, "n_out": 1}, 8) == 8192
    rows = guards.rows_per_call({"work_per_row": 3_000_000, "n_in": 1_000_000, "n_out": 1}, 4)
    assert rows * 3_000_000 * 4 <= guards.WORK_BYTES and rows * 3_000_000 <= guards.INT_MAX
    assert guards.rows_per_call({"work_per_row": 10**10, "n_in": 1, "n_out": 1}, 8) == 1


@pytest.mark.parametrize("layout", ["fortran", "strided"])
def test_step_takes_any_layout(model, layout):
    """The float64 C-order fast path of step must hand other layouts to the
    full path, not refuse them."""
    A = np.asfortranarray(X) if layout == "fortran" else np.repeat(X, 2, axis=1)[:, ::2]
    B = np.asfortranarray(T) if layout == "fortran" else np.repeat(T, 2, axis=1)[:, ::2]
    saved = {k: v.copy() for k, v in model.params.items()}
    try:
        expected = model.loss(X, T)
        assert model.step(A, B, lr=0.1) == pytest.approx(expected, rel=1e-12)
    finally:
        for k, v in saved.items():
            model.params[k] = v
