"""Random malformed inputs for every Model method; run as a script so that a
crash of the process shows up as a failed test (tests/test_properties.py).

    python tests/fuzz_inputs.py 300      # prints "fuzz ok 300" or fails

Oracle: each call either returns what the same numbers give as a plain
C-contiguous array of the model's dtype, or raises ValueError; a well-formed
input (real numbers, 2-D, right width, at least one row; targets in bce's [0, 1])
never raises.
"""

import sys
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import symnet as sn

NET = sn.Network(sn.Input(3), sn.Dense(4, "softplus"), sn.Dense(2, "sigmoid"), loss="bce")
MODELS = [NET.compile(dtype="float64", seed=0), NET.compile(dtype="float32", seed=0)]

DTYPES = ["float64", "float32", "float16", ">f8", ">f4", "int8", "int64", ">i2", "uint8",
          "bool", "complex64", "complex128", "U3", "datetime64[s]"]


@st.composite
def array_likes(draw, width):
    """Arrays of many dtypes, ranks and layouts, and things that are not arrays."""
    kind = draw(st.sampled_from(["array", "array", "array", "other"]))
    if kind == "other":
        return draw(st.sampled_from([None, "text", 3.5, [], [[]], [[1, 2], [3]], {"a": 1},
                                     [[1, 2, 3]], [[1.0, float("nan"), 2.0]], object(),
                                     [[10**400, 1, 2]], np.float64(2.0)]))
    shape = draw(st.one_of(
        st.tuples(st.integers(0, 6), st.just(width)),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
    arr = draw(hnp.arrays(st.sampled_from(DTYPES).map(np.dtype), shape))
    view = draw(st.sampled_from(["plain", "fortran", "strided", "readonly", "list", "memory",
                                 "masked", "matrix", "unaligned", "object"]))
    if view == "fortran":
        return np.asfortranarray(arr)
    if view == "strided" and arr.ndim == 2:
        big = np.repeat(np.repeat(arr, 2, axis=0), 2, axis=1)
        return big[::2, ::2]
    if view == "readonly":
        arr.setflags(write=False)
    if view == "list":
        return arr.tolist()
    if view == "memory" and arr.dtype.kind in "biuf" and arr.dtype.isnative:
        return memoryview(arr)
    if view == "masked":
        return np.ma.masked_array(arr, mask=draw(hnp.arrays(bool, arr.shape)))
    if view == "matrix" and arr.ndim == 2:
        return np.asmatrix(arr)
    if view == "unaligned" and arr.dtype.kind in "biufc" and arr.size:
        buf = np.zeros(arr.nbytes + 1, np.uint8)
        out = np.frombuffer(buf.data, arr.dtype, arr.size, offset=1).reshape(arr.shape)
        out[...] = arr
        return out
    if view == "object":
        return arr.astype(object)
    return arr


def well_formed(A, width) -> bool:
    if isinstance(A, np.ma.MaskedArray) and np.ma.count_masked(A):
        return False
    try:
        a = np.asarray(A)
    except (ValueError, TypeError):
        return False
    return a.dtype.kind in "biuf" and a.ndim == 2 and a.shape[1] == width and a.shape[0] > 0


def canonical(A, dtype):
    return np.ascontiguousarray(np.asarray(A), dtype=dtype)


def _call(f, *args):
    """f(*args), or None after a ValueError; any other exception fails."""
    try:
        return f(*args)
    except ValueError:
        return None


@settings(max_examples=int(sys.argv[1]) if len(sys.argv) > 1 else 200, deadline=None,
          database=None, suppress_health_check=list(HealthCheck))
@given(X=array_likes(3), T=array_likes(2), lr=st.one_of(st.floats(), st.sampled_from(
    ["fast", None, [0.1, 0.2]])), which=st.sampled_from([0, 1]))
def fuzz(X, T, lr, which):
    m = MODELS[which]
    saved = m.theta.copy()
    ok_x, ok_t = well_formed(X, 3), well_formed(T, 2)
    ok_t = ok_t and ok_x and np.asarray(T).shape[0] == np.asarray(X).shape[0]

    y = _call(m.forward, X)
    assert (y is not None) == ok_x, (X, y)
    if ok_x:
        np.testing.assert_array_equal(y, m.forward(canonical(X, m.dtype)))
    # loss, loss_and_grad and step refuse NaN or inf (in the model's dtype) with ValueError,
    # and targets outside bce's [0, 1]
    ok_t = ok_t and bool(np.isfinite(canonical(X, m.dtype)).all()
                         and np.isfinite(canonical(T, m.dtype)).all()
                         and ((canonical(T, m.dtype) >= 0) & (canonical(T, m.dtype) <= 1)).all())
    loss = _call(m.loss, X, T)
    assert (loss is not None) == ok_t
    if ok_t:
        ref = m.loss(canonical(X, m.dtype), canonical(T, m.dtype))
        assert loss == ref or (np.isnan(loss) and np.isnan(ref))
    lg = _call(m.loss_and_grad, X, T)
    assert (lg is not None) == ok_t
    finite_lr = isinstance(lr, float) and np.isfinite(lr) and lr > 0   # step refuses lr ≤ 0
    stepped = _call(m.step, X, T, lr)
    assert (stepped is not None) == (ok_t and finite_lr)
    if stepped is None:
        np.testing.assert_array_equal(m.theta, saved)  # a refused step changes nothing
    m.theta[...] = saved


if __name__ == "__main__":
    warnings.simplefilter("ignore", RuntimeWarning)  # numpy: 1e300 cast to float32 is inf
    fuzz()
    print("fuzz ok", sys.argv[1] if len(sys.argv) > 1 else 200)
