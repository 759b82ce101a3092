"""Dropout and BatchNorm in data-parallel fit over MPI (symnet.runtime.distributed).

``mpiexec -n P python -m mpi4py tests/mpi_worker.py --stateful OUT`` trains the
worker's STATEFUL scenarios; here they are checked against a plain loop in one
process (numpy statistics of the hidden layer, gradients of each process's batch
weighted by its size) and against plain ``fit``.  Skips without MPI, as
tests/test_distributed.py.
"""

import json

import mpi_worker as W
import numpy as np
import pytest
from test_distributed import _launch

TOL = 1e-12


def _run(P, out):
    W.stateful_network("dropout").compile(dtype="float64")  # compiled once here
    W.stateful_network("bn").compile(dtype="float64")
    out.mkdir()
    proc, _ = _launch(P, ["--stateful", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = {}
    for r in range(P):
        arrays = np.load(out / f"rank{r}.npz")
        info = json.loads((out / f"rank{r}.json").read_text())
        for name, v in info.items():
            res.setdefault(name, []).append(dict(v, theta=arrays[name]))
    return res


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    base = tmp_path_factory.mktemp("stateful2")
    return _run(2, base / "a"), _run(2, base / "b")


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    return _run(1, tmp_path_factory.mktemp("stateful1") / "a")


def test_dropout_masks_differ_between_processes_and_repeat_with_the_seed(two):
    a, b = two
    ranks = a["dropout"]
    assert all(r["error"] is None for r in ranks), [r["error"] for r in ranks]
    # the same data and parameters on both: only different masks make the losses differ
    assert ranks[0]["first_loss"] != ranks[1]["first_loss"]
    assert np.array_equal(ranks[0]["theta"], ranks[1]["theta"])
    assert np.array_equal(ranks[0]["theta"], b["dropout"][0]["theta"])
    # every process ends with the seed given to fit, its step moved on by the 4 steps
    assert ranks[0]["params"]["rng2"][:2] == [5.0, 4.0]


def test_dropout_one_process_equals_plain_fit(one):
    r = one["dropout"][0]
    model = W.stateful_network("dropout").compile(dtype="float64", seed=0)
    X, T = W.data(n=23)
    model.fit(X[:8], T[:8], progress=False, **W.fit_args(W.STATEFUL["dropout"]))
    np.testing.assert_allclose(r["theta"], model.theta, rtol=0, atol=TOL)


def _hidden(p, X):
    return np.tanh(X @ np.asarray(p["W1"]).T + np.asarray(p["b1"]))


def _reference_bn(P, spec):
    """Plain loop: each step's gradient the size-weighted mean of the processes'
    (each normalising by its own batch), running statistics those of the union of
    the batches (numpy, from the hidden layer's values)."""
    model = W.stateful_network("bn").compile(dtype="float64", seed=0)
    X, T = W.data(n=sum(W.SIZES[P]))
    parts = [(W.part(X, W.SIZES[P], r), W.part(T, W.SIZES[P], r)) for r in range(P)]
    bs = spec.get("batch_size", max(W.SIZES[P]))
    steps = max(-(-n // bs) for n in W.SIZES[P])
    for _ in range(spec["epochs"]):
        for s in range(steps):
            batches = [(x[s * bs:(s + 1) * bs], t[s * bs:(s + 1) * bs]) for x, t in parts]
            batches = [(x, t) for x, t in batches if len(x)]
            N = sum(len(x) for x, _ in batches)
            g = {k: np.zeros_like(v) for k, v in model.params.items()}
            for x, t in batches:
                _, gr = model.loss_and_grad(x, t)
                for k in g:
                    g[k] += len(x) / N * gr[k]
            H = _hidden(model.params, np.concatenate([x for x, _ in batches]))
            mu, var = H.mean(axis=0), H.var(axis=0, ddof=1)
            new = {k: np.array(v) for k, v in model.params.items()}
            for k in ("W1", "b1", "gamma2", "beta2", "W3", "b3"):
                new[k] -= spec["lr"] * g[k]
            new["mean2"] = 0.9 * new["mean2"] + 0.1 * mu
            new["var2"] = 0.9 * new["var2"] + 0.1 * var
            for k, v in new.items():
                model.params[k] = v
    return model


@pytest.mark.parametrize("name", ["bn", "bn_sd"])
def test_batchnorm_per_process_statistics_and_shared_running_statistics(two, name):
    a, b = two
    ranks = a[name]
    assert all(r["error"] is None for r in ranks), [r["error"] for r in ranks]
    assert np.array_equal(ranks[0]["theta"], ranks[1]["theta"])
    assert np.array_equal(ranks[0]["theta"], b[name][0]["theta"])
    ref = _reference_bn(2, W.STATEFUL[name])
    for k, v in ref.params.items():
        if k == "mode2":
            continue
        np.testing.assert_allclose(ranks[0]["params"][k], v, rtol=0, atol=TOL, err_msg=k)
    assert not np.allclose(ranks[0]["params"]["mean2"], 0)     # they did move


@pytest.mark.parametrize("name", ["bn", "bn_sd"])
def test_batchnorm_one_process_equals_plain_fit(one, name):
    r = one[name][0]
    assert r["error"] is None, r["error"]
    model = W.stateful_network("bn").compile(dtype="float64", seed=0)
    X, T = W.data(n=23)
    model.fit(X, T, progress=False, **W.fit_args(W.STATEFUL[name]))
    for k, v in model.params.items():     # mode2: the training flag, which each call sets
        if k != "mode2":
            np.testing.assert_allclose(r["params"][k], v, rtol=0, atol=TOL, err_msg=k)


def test_batchnorm_sgd_refused_on_every_process(two):
    for r in two[0]["bn_sgd"]:
        assert "layer 'N' (BatchNorm1d)" in r["error"]
        assert "method 'sgd'" in r["error"] and "batch_size ≥ 2" in r["error"]


def test_batchnorm_last_batch_of_one_refused_before_training(two):
    """Process 1's 9 examples in batches of 4 leave one: refused, and the others stop
    with it before any step."""
    r0, r1 = two[0]["bn_one_left"]
    assert "layer 'N' (BatchNorm1d)" in r1["error"] and "9 examples" in r1["error"]
    assert "last batch of one example (batch_size 4)" in r1["error"]
    assert "fit stopped before training: process 1 of 2 failed" in r0["error"]


@pytest.mark.parametrize("name", ["bn", "bn_sd"])
def test_batchnorm_at_three_processes_against_the_plain_loop(tmp_path, name):
    ranks = _run(3, tmp_path / "a")[name]
    assert all(r["error"] is None for r in ranks), [r["error"] for r in ranks]
    assert all(np.array_equal(ranks[0]["theta"], r["theta"]) for r in ranks)
    ref = _reference_bn(3, W.STATEFUL[name])
    for k, v in ref.params.items():
        if k != "mode2":
            np.testing.assert_allclose(ranks[0]["params"][k], v, rtol=0, atol=TOL, err_msg=k)
