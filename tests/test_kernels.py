"""The blocked, threaded matrix kernels: exact gradients on sizes that reach
every path (plain loops, register tiles, edge tiles, several panels of depth,
two threads), the portable build, and bit-identical results whatever the
number of threads."""

import os
import subprocess
import sys

import numpy as np
import pytest

import numpy_reference as ref
import symnet as sn
from gradcheck import check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 300 inputs: two panels of depth 256; 70 and 37 units: full and edge column
# tiles (32 wide under AVX-512, 24 otherwise); batch 45: full and edge row tiles
# (8 or 4 rows); 45·70·300 multiply-adds
# exercises the tiles; two threads are exercised by the determinism test below
# through OMP_NUM_THREADS (products below the threshold run on one).
SIZES, ACTS, LOSS, BATCH = (300, 70, 37, 5), ("relu", "tanh", "linear"), \
    "softmax_cross_entropy", 45


def _net():
    layers = [sn.Input(SIZES[0])] + [sn.Dense(w, a) for w, a in zip(SIZES[1:], ACTS)]
    return sn.Network(*layers, loss=LOSS)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(BATCH, SIZES[0]))
    T = np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], BATCH)]
    return X, T


@pytest.fixture(scope="module")
def model64():
    return _net().compile(dtype="float64", seed=3)


def test_blocked_kernels_match_numpy_reference(model64):
    X, T = _data()
    params = {k: v.copy() for k, v in model64.params.items()}
    L, grads = model64.loss_and_grad(X, T)
    L_ref, g_ref = ref.loss_and_grad(params, X, T, list(ACTS), LOSS)
    assert L == pytest.approx(L_ref, rel=1e-12)
    for k in params:
        np.testing.assert_allclose(grads[k], g_ref[k], rtol=1e-9, atol=1e-13, err_msg=k)


def test_blocked_kernels_gradcheck(model64):
    X, T = _data(1)
    check(model64, X, T, rtol=1e-6)


def test_blocked_kernels_float32_close_to_float64():
    model = _net().compile(dtype="float32", seed=3)
    X, T = _data(2)
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    _, grads = model.loss_and_grad(X.astype(np.float32), T.astype(np.float32))
    _, g_ref = ref.loss_and_grad(params, X.astype(np.float32), T, list(ACTS), LOSS)
    for k in params:
        scale = np.abs(g_ref[k]).max()
        np.testing.assert_allclose(grads[k], g_ref[k], rtol=0, atol=2e-5 * scale, err_msg=k)


_STEPS = """
import hashlib, sys, numpy as np
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from test_kernels import _net, _data
model = _net().compile(dtype=sys.argv[2], seed=3)
X, T = _data()
X, T = X.astype(model.dtype), T.astype(model.dtype)
for _ in range(3):
    model.step(X, T, lr=0.05)
print(hashlib.sha256(model.theta.tobytes()).hexdigest())
L, g = model.loss_and_grad(X, T)
np.save(sys.argv[3], np.concatenate([[L]] + [g[k].ravel() for k in sorted(g)]))
"""


def _run(env_extra, dtype, out):
    env = dict(os.environ, **env_extra)
    proc = subprocess.run([sys.executable, "-c", _STEPS, ROOT, dtype, str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()[-1]


def test_same_seed_same_bits_with_one_or_two_threads(tmp_path):
    # every blocked product on symnet's own kernels, on threads
    par = {"SYMNET_PARALLEL_MIN": "1000", "SYMNET_BLAS": "0"}
    one = _run({"OMP_NUM_THREADS": "1", **par}, "float32", tmp_path / "a.npy")
    two = _run({"OMP_NUM_THREADS": "2", **par}, "float32", tmp_path / "b.npy")
    again = _run({"OMP_NUM_THREADS": "2", **par}, "float32", tmp_path / "c.npy")
    assert one == _run({"OMP_NUM_THREADS": "1", "SYMNET_BLAS": "0"}, "float32",
                       tmp_path / "d.npy")
    assert one == two == again


def test_portable_build_gradients(tmp_path):
    """SYMNET_PORTABLE=1 (no -march=native) compiles a different module whose
    gradients still agree with the independent numpy reference."""
    _run({"SYMNET_PORTABLE": "1"}, "float64", tmp_path / "p.npy")
    got = np.load(tmp_path / "p.npy")
    model = _net().compile(dtype="float64", seed=3)
    X, T = _data()
    for _ in range(3):
        L_ref, g_ref = ref.loss_and_grad(dict(model.params), X, T, list(ACTS), LOSS)
        for k in model.params:
            model.params[k] = model.params[k] - 0.05 * g_ref[k]
    L_ref, g_ref = ref.loss_and_grad(dict(model.params), X, T, list(ACTS), LOSS)
    want = np.concatenate([[L_ref]] + [g_ref[k].ravel() for k in sorted(g_ref)])
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12)


def test_portable_flags_differ():
    from symnet.backend.c import build
    old = os.environ.get("SYMNET_PORTABLE")
    try:
        os.environ["SYMNET_PORTABLE"] = "1"
        portable = build.flags()
    finally:
        if old is None:
            del os.environ["SYMNET_PORTABLE"]
        else:
            os.environ["SYMNET_PORTABLE"] = old
    assert "-march=native" not in portable
    assert "-march=native" in build.flags() or os.environ.get("SYMNET_PORTABLE") == "1"
