"""The BLAS checked in each process (symnet/backend/c/tuning.py, Runtime.check_blas): a
module whose products run on the BLAS times its own loss-and-gradient pass with the BLAS
and on symnet's tiles at its first training call, and runs every product on the tiles
for the rest of the process when the BLAS's pass is more than CHECK_SLOWER times
slower.  Forced here both ways (the plan and the threshold set by the test), since which
way a real machine goes depends on the library's speed in that process."""

import importlib.util
import math

import numpy as np
import pytest

import symnet as sn
from symnet.backend.c import tuning

pytestmark = pytest.mark.skipif(importlib.util.find_spec("scipy_openblas32") is None,
                                reason="scipy-openblas32 (a dependency) not installed")


def _net(width):
    """A network of its own per test (its module and verdict shared with no other test)."""
    X = sn.Input(48, name="X")
    H = sn.Dense(width, "tanh", name="H")(X)
    return sn.Network(X, sn.Dense(10, name="O")(H), loss="softmax_cross_entropy")


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 48))
    T = np.eye(10)[rng.integers(0, 10, n)]
    return X, T


@pytest.fixture
def on_blas(monkeypatch):
    """Every product of the network planned to the BLAS (from M·N·K 0), whatever this
    machine's wisdom says; no verdict of this process kept from another test."""
    monkeypatch.delenv("SYMNET_BLAS_MIN", raising=False)
    monkeypatch.delenv("SYMNET_BLAS_CHECK", raising=False)
    monkeypatch.delenv("SYMNET_BLAS", raising=False)
    monkeypatch.setattr(tuning, "plan", lambda products, tune="fast", s=None, chunked=None:
                        {tuning._shape_key(p): 0.0 for p in products})
    monkeypatch.setattr(tuning, "VERDICTS", {})
    return monkeypatch


def test_a_slow_blas_puts_every_product_on_the_tiles(on_blas):
    on_blas.setattr(tuning, "CHECK_SLOWER", 0.0)      # any pass with the BLAS is "slow"
    m1 = _net(72).compile(dtype="float64", seed=1)
    assert m1.tuning["blas"] is not None
    assert m1.tuning["plan"] and all(v.startswith("blas") for v in m1.tuning["plan"].values())
    m1.grad[...] = 7.0
    X, T = _data()
    theta0 = m1.theta.copy()
    loss1 = m1.step(X, T, 0.1)
    check = m1.tuning["blas_check"]
    assert check["slow"] is True and check["grown"] > 0
    assert m1.tuning["blas"] is None and set(m1.tuning["plan"].values()) == {"symnet"}
    assert (m1.grad == 7.0).all()          # the check's passes left the gradients as they were
    # a second model of the network, loaded after the verdict, takes the tiles too (its
    # load gave the module the BLAS again), and its step gives the first one's bits
    m2 = _net(72).compile(dtype="float64", seed=1)
    assert m2.tuning["blas_check"] == {"slow": True, "by": "another model of this network"}
    assert m2.tuning["blas"] is None
    m2.theta[...] = theta0
    assert m2.step(X, T, 0.1) == loss1
    assert m2.theta.tobytes() == m1.theta.tobytes()
    # and the same as the module's products put on the tiles by hand
    s = tuning.settings()
    m2.theta[...] = theta0
    m2.runtime._tune(m2.runtime._ffi.NULL, math.inf, s["thread_min"], s["threads_max"])
    m2.step(X, T, 0.1)
    assert m2.theta.tobytes() == m1.theta.tobytes()


def test_a_blas_as_fast_as_planned_keeps_the_plan(on_blas):
    on_blas.setattr(tuning, "CHECK_SLOWER", math.inf)
    model = _net(80).compile(dtype="float64", seed=1)
    calls = []
    rechoose = model.runtime._rechoose
    model.runtime._rechoose = lambda: (calls.append(1), rechoose())
    X, T = _data()
    L, g = model.loss_and_grad(X, T)
    assert math.isfinite(L)
    assert calls == [1]       # the choice of threads made anew after the check's passes
    model.loss_and_grad(X, T)
    assert calls == [1]       # once
    check = model.tuning["blas_check"]
    assert check["slow"] is False and check["grown"] > 0
    assert model.tuning["blas"] is not None
    assert all(v.startswith("blas") for v in model.tuning["plan"].values())


def test_fit_checks_on_its_first_minibatch(on_blas):
    on_blas.setattr(tuning, "CHECK_SLOWER", 0.0)
    model = _net(88).compile(dtype="float64", seed=1)
    X, T = _data(96)
    model.fit(X, T, batch_size=32, epochs=2, lr=0.05, progress=False)
    assert model.tuning["blas_check"]["slow"] is True and model.tuning["blas"] is None


@pytest.mark.parametrize("env, width", [({"SYMNET_BLAS_CHECK": "0"}, 96),
                                        ({"SYMNET_BLAS_MIN": "0"}, 104)])
def test_no_check_where_the_user_said_so(on_blas, env, width):
    on_blas.setattr(tuning, "CHECK_SLOWER", 0.0)
    for k, v in env.items():
        on_blas.setenv(k, v)
    model = _net(width).compile(dtype="float64", seed=1)
    X, T = _data()
    model.step(X, T, 0.1)
    assert "blas_check" not in model.tuning and model.tuning["blas"] is not None


def test_the_verdict():
    assert tuning.check_verdict(tuning.CHECK_SLOWER * 1.01)
    assert not tuning.check_verdict(tuning.CHECK_SLOWER)
    assert not tuning.check_verdict(0.9)
