"""The jet kernels on many rows: blocks of examples (the last one padded), chunks
taken by threads, per-chunk sums.  A batch of several blocks must give the sum of
the same kernel's one-row calls (each a single padded block on one thread), and
the term's value must equal the residual assembled from model.forward,
model.jacobian and model.hessian (the network's own kernels and the jets'
forward pass) row by row."""

import numpy as np
import pytest
import sympy

import symnet as sn
from symnet.runtime import pinn

NU = 0.01 / sympy.pi
ROWS = 389          # six blocks of 64 and one of 5


@pytest.fixture(scope="module")
def model():
    tx = sn.Input(2, name="tx")
    h = sn.Dense(7, "tanh")(tx)
    h = sn.Dense(5, "tanh")(h)
    u = sn.Dense(1, name="u")(h)
    t, x = sn.coords(tx, "t x")
    pde = sn.d(u, t) + u * sn.d(u, x) - NU * sn.d(u, x, x)
    net = sn.Network(tx, u, loss={"pde": pde**2, "data": "mse"})
    m = net.compile(dtype="float64", seed=0)
    rng = np.random.default_rng(3)
    for k in m.params:
        m.params[k] = rng.normal(0, 0.8, m.params[k].shape)
    return m


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(4).uniform(-1, 1, (ROWS, 2))


def test_many_rows_equal_the_sum_of_one_row_calls(model, X):
    k = pinn.term_kernels(model)
    L, g, _, _ = k.term("pde", X, None, 1.0)
    L1, g1 = 0.0, np.zeros_like(g)
    for i in range(ROWS):
        Li, gi, _, _ = k.term("pde", X[i:i + 1], None, 1.0)
        L1 += Li
        g1 += gi
    assert L == pytest.approx(L1, rel=1e-12)
    np.testing.assert_allclose(g, g1, rtol=1e-11, atol=1e-12 * np.abs(g1).max())


def test_many_rows_hessian_vector_equals_the_sum_of_one_row_calls(model, X):
    k = pinn.term_kernels(model)
    v = np.random.default_rng(5).normal(size=model.theta.shape)
    hv = k.term("pde", X, None, 1.0, vec=v)[3]
    hv1 = sum(k.term("pde", X[i:i + 1], None, 1.0, vec=v)[3] for i in range(ROWS))
    np.testing.assert_allclose(hv, hv1, rtol=1e-11, atol=1e-12 * np.abs(hv1).max())


def test_many_rows_term_equals_the_residual_from_forward_jacobian_hessian(model, X):
    T = np.zeros((3, 1))
    obj = pinn.Objective(model, {"pde": X, "data": (X[:3], T)})
    obj.loss_grad()
    o = model.forward(X)[:, 0]
    J, H = model.jacobian(X)[:, 0], model.hessian(X)
    r = J[:, 0] + o * J[:, 1] - float(NU) * H[:, 1, 1]
    assert obj.last_terms["pde"] == pytest.approx(np.mean(r ** 2), rel=1e-12)


def test_jacobian_of_tanh_against_numpy():
    """The jets' tanh (a branch-free function, not libm's) through tanh′ = 1 − tanh²,
    with pre-activations from −30 to 30 (both of its branches and the saturation):
    absolute error a few ulp of 1 (1 − tanh² cancels where tanh is near ±1)."""
    net = sn.Network(sn.Input(1), sn.Dense(1, "tanh"), loss="mse")
    m = net.compile(dtype="float64", seed=0)
    m.params["W1"] = [[1.0]]
    m.params["b1"] = [0.0]
    x = np.concatenate([np.linspace(-30, 30, 3001), [0.0, 1e-300, 0.6249, 0.625, 0.6251,
                                                     19.0, 23.0]])[:, None]
    J = m.jacobian(x)[:, 0, 0]
    want = 1 - np.tanh(x[:, 0]) ** 2
    np.testing.assert_allclose(J, want, rtol=1e-13, atol=2e-15)


def test_plain_loops_equal_the_vector_tiles(model, X, monkeypatch):
    """The products' plain-loop form (compilers without GCC's vectors, or
    -DSN_PLAIN_LOOPS) gives the vector tiles' loss, gradient and H·v: widths 7 and
    5 leave partial tiles of rows and columns, 389 rows a partial block."""
    from symnet.backend.c import build
    k = pinn.term_kernels(model)
    v = np.random.default_rng(6).normal(size=model.theta.shape)
    L, g, _, _ = k.term("pde", X, None, 1.0)
    hv = k.term("pde", X, None, 1.0, vec=v)[3]
    monkeypatch.setenv("CC", " ".join(build.compiler() + ["-DSN_PLAIN_LOOPS"]))
    plain = pinn.TermKernels(model)
    assert plain.lib is not k.lib
    L1, g1, _, _ = plain.term("pde", X, None, 1.0)
    hv1 = plain.term("pde", X, None, 1.0, vec=v)[3]
    assert L1 == pytest.approx(L, rel=1e-12)
    np.testing.assert_allclose(g1, g, rtol=1e-11, atol=1e-12 * np.abs(g).max())
    np.testing.assert_allclose(hv1, hv, rtol=1e-11, atol=1e-12 * np.abs(hv).max())


def test_vector_tiles_build_without_avx(model, X, monkeypatch):
    """SYMNET_PORTABLE=1 (no -march): the 32-byte vectors on SSE2, no register hint."""
    k = pinn.term_kernels(model)
    L, g, _, _ = k.term("pde", X, None, 1.0)
    monkeypatch.setenv("SYMNET_PORTABLE", "1")
    portable = pinn.TermKernels(model)
    assert portable.lib is not k.lib
    L1, g1, _, _ = portable.term("pde", X, None, 1.0)
    assert L1 == pytest.approx(L, rel=1e-12)
    np.testing.assert_allclose(g1, g, rtol=1e-11, atol=1e-12 * np.abs(g).max())


@pytest.mark.parametrize("bad", ["lots", "0", "-8", "1.5"])
def test_a_bad_block_setting_is_refused(bad, model, monkeypatch):
    """SYMNET_JET_BLOCK: a word was taken as unset and 0 as one tile of lanes, without a
    message."""
    from symnet.backend.c import jets
    monkeypatch.setenv("SYMNET_JET_BLOCK", bad)
    with pytest.raises(ValueError, match=f"SYMNET_JET_BLOCK must be a whole number of "
                                         f"examples above 0 .*got '{bad}'"):
        pinn.TermKernels(model)
    monkeypatch.setenv("SYMNET_JET_BLOCK", " 16 ")
    assert jets._env_block() == 16


_THREADS_SCRIPT = """
import numpy as np, sympy, symnet as sn
from symnet.runtime import pinn
tx = sn.Input(2, name="tx")
h = sn.Dense(7, "tanh")(sn.Dense(7, "tanh")(tx))
u = sn.Dense(1, name="u")(h)
t, x = sn.coords(tx, "t x")
pde = sn.d(u, t) + u * sn.d(u, x) - sympy.Rational(1, 100) * sn.d(u, x, x)
m = sn.Network(tx, u, loss={"pde": pde**2, "data": "mse"}).compile(dtype="float64", seed=0)
X = np.random.default_rng(8).uniform(-1, 1, (1000, 2))
L, g, _, _ = pinn.term_kernels(m).term("pde", X, None, 1.0)
print(np.float64(L).tobytes().hex(), g.tobytes().hex())
"""


def test_results_do_not_depend_on_the_number_of_threads():
    """16 blocks on one thread and on two: the same bits (per-chunk sums added in
    chunk order)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[1])
    out = []
    for n in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=n,
                   PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        res = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        out.append(res.stdout.split())
    assert out[0] == out[1]
