"""BatchNorm with synchronised statistics over MPI: ``BatchNorm1d(sync=True)``.

``mpiexec -n P python -m mpi4py tests/mpi_worker.py --synced OUT`` trains the worker's
SYNCED scenarios on the uneven parts SIZES[P] (processes with a last batch of one
example, and with no examples in the last steps).  Every step must be the step of one
process on the union of the processes' batches: here one process without MPI takes
exactly those union batches, one ``fit(method="sd", epochs=1)`` each (the one-process
BatchNorm, statistics and running statistics of its batch), and the parameters, running
statistics and losses are compared at 1e-12.  The same again with two threads in the C
(OMP_NUM_THREADS=2, threads for every run of per-example ops).  Skips without MPI, as
tests/test_distributed.py.

Without MPI: the C's hook itself (a hook that adds a copy of the batch's sums gives the
gradient of the batch twice over), ``sync=True`` without ``comm`` the same as without
sync, save/load of the flag, and exported C without the hook.
"""

import json
import os
from unittest import mock

import mpi_worker as W
import numpy as np
import pytest
from test_distributed import _launch

import symnet as sn

TOL = 1e-12


def _run(P, out, names=None, env=None):
    for kind in ("bn", "bn2d", "mixed"):
        W.synced_network(kind).compile(dtype="float64")     # compiled once here
    out.mkdir()
    with mock.patch.dict(os.environ, env or {}):
        proc, _ = _launch(P, ["--synced", str(out), *(names or [])])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = {}
    for r in range(P):
        arrays = np.load(out / f"rank{r}.npz")
        info = json.loads((out / f"rank{r}.json").read_text())
        for name, v in info.items():
            res.setdefault(name, []).append(dict(v, theta=arrays[name]))
    return res


@pytest.fixture(scope="module", params=[2, 3], ids=["2proc", "3proc"])
def runs(request, tmp_path_factory):
    P = request.param
    return _run(P, tmp_path_factory.mktemp(f"synced{P}") / "a"), P


@pytest.fixture(scope="module")
def threaded(tmp_path_factory):
    """Two processes, each with two threads in the C for every run of per-example ops
    (SYMNET_PARALLEL_MIN=1: any work pays for a thread)."""
    env = {"OMP_NUM_THREADS": "2", "SYMNET_PARALLEL_MIN": "1"}
    with mock.patch.dict(os.environ, env):
        for kind in ("bn", "bn2d"):
            W.synced_network(kind).compile(dtype="float64")
    return _run(2, tmp_path_factory.mktemp("synced_threads") / "a", ["bn", "bn2d"], env)


def _union_batches(P, spec, X, T):
    """Each epoch's steps as the union of the processes' batches (in rank order)."""
    sizes = W.SIZES[P]
    parts = [(W.part(X, sizes, r), W.part(T, sizes, r)) for r in range(P)]
    method = spec["method"]
    if method == "sd":
        return [(np.concatenate([x for x, _ in parts]), np.concatenate([t for _, t in parts]))]
    steps = []
    if method == "sgd":
        for s in range(-(-sum(sizes) // P)):
            steps.append((np.stack([x[s % len(x)] for x, _ in parts]),
                          np.stack([t[s % len(t)] for _, t in parts])))
        return steps
    bs = spec["batch_size"]
    for s in range(max(-(-n // bs) for n in sizes)):
        xs = [x[s * bs:(s + 1) * bs] for x, _ in parts]
        ts = [t[s * bs:(s + 1) * bs] for _, t in parts]
        steps.append((np.concatenate(xs), np.concatenate(ts)))
    return steps


def _reference(P, name):
    """One process, one ``fit(method="sd", epochs=1)`` on each union batch: (model, the
    epochs' losses, each the size-weighted mean of its steps' losses)."""
    spec = W.SYNCED[name]
    kind = spec["net"]
    model = W.synced_network(kind).compile(dtype="float64", seed=0)
    X, T = W.data(n=sum(W.SIZES[P]), kind="conv" if kind == "bn2d" else "tanh")
    losses = []
    for _ in range(spec["epochs"]):
        total = count = 0.0
        for x, t in _union_batches(P, spec, X, T):
            assert len(x) >= 2
            h = model.fit(x, t, method="sd", epochs=1, lr=spec["lr"], progress=False)
            total += h.loss[0] * len(x)
            count += len(x)
        losses.append(total / count)
    return model, losses


def _check(ranks, P, name):
    assert all(r["error"] is None for r in ranks), [r["error"] for r in ranks]
    assert all(np.array_equal(ranks[0]["theta"], r["theta"]) for r in ranks)
    ref, losses = _reference(P, name)
    for k, v in ref.params.items():
        if k.startswith("mode"):          # the training flag, which each call sets
            continue
        got = np.asarray(ranks[0]["params"][k])
        np.testing.assert_allclose(got, v, rtol=TOL, atol=TOL * np.abs(v).max(), err_msg=k)
    np.testing.assert_allclose(ranks[0]["hist"]["loss"], losses, rtol=TOL, atol=0)
    assert not np.allclose(ranks[0]["params"]["mean2"], 0)     # the statistics moved


@pytest.mark.parametrize("name", ["bn", "bn_sd", "bn_sgd", "bn2d"])
def test_synced_batchnorm_equals_one_process_on_the_union_batch(runs, name):
    res, P = runs
    _check(res[name], P, name)


@pytest.mark.parametrize("name", ["bn", "bn2d"])
def test_synced_batchnorm_with_two_threads_in_the_c(threaded, name):
    _check(threaded[name], 2, name)


def test_synced_batchnorm_differs_from_per_process_statistics(runs):
    """The per-process statistics of sync=False (test_distributed_layers' plain loop, the
    same network and steps) give other parameters: the comparison above tells the two
    apart."""
    from test_distributed_layers import _reference_bn
    res, P = runs
    plain = _reference_bn(P, W.SYNCED["bn_sd"])   # (minibatch has batches of one here)
    got = res["bn_sd"][0]["params"]
    assert not np.allclose(got["W1"], plain.params["W1"], rtol=1e-6, atol=0)
    assert not np.allclose(got["mean2"], plain.params["mean2"], rtol=1e-6, atol=0)


def test_sync_must_be_all_or_none_of_the_batchnorm_layers(runs):
    res, _ = runs
    for r in res["mixed"]:
        assert "layer 'N' (BatchNorm1d) has sync=True but layer 'M' (BatchNorm1d) not" \
            in r["error"]


def test_an_exception_in_a_process_hook_stops_every_process(runs):
    """Process 1's callback raises in step 2: its error comes out of its fit after the
    C call (no crash), and the other processes stop with DistributedError naming it."""
    res, P = runs
    errors = [r["error"] for r in res["hook_fails"]]
    assert errors[1] == "RuntimeError: hook fails in call 7"
    for r, e in enumerate(errors):
        if r != 1:
            assert e.startswith("DistributedError: training stopped because process 1 of "
                                f"{P} failed in step 2 of this fit: RuntimeError: hook fails"), e


def test_a_step_of_one_example_over_all_processes_is_refused(runs):
    res, P = runs
    for r in res["one_in_step"]:
        assert r["error"].startswith("ValueError: layer 'N' (BatchNorm1d): sync=True, and step")
        assert f"has 1 example over all {P} processes" in r["error"]
        assert f"batch_size {W.SYNCED['one_in_step']['batch_size'][P]}" in r["error"]


# ------------------------------------------------------------------ without MPI

def _bn_net(sync, kind="1d"):
    if kind == "2d":
        return sn.Network(sn.Input((2, 5, 5)), sn.Conv2d(3, 3, activation="tanh"),
                          sn.BatchNorm2d(name="N", sync=sync), sn.Flatten(), sn.Dense(2),
                          loss="softmax_cross_entropy")
    return sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.BatchNorm1d(name="N", sync=sync),
                      sn.Dense(2), loss="softmax_cross_entropy")


def _xt(kind, n=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2, 5, 5) if kind == "2d" else (n, 3))
    return X, np.eye(2)[rng.integers(0, 2, n)]


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_hook_replaying_the_union_sums_gives_the_union_gradient(kind):
    """Two processes without MPI: one call on the union batch [X; Y] records its sums
    over the batch through the hook; then a call on X alone and one on Y alone, each with
    a hook that hands back the union's sums (as the Allreduce would: forward sums as they
    are, backward sums times |N|/b, this call's scale), must give the union's loss and
    gradient once combined as fit combines processes: Σ b·(loss, gradient) / |N|."""
    X, T = _xt(kind, n=9, seed=0)
    Y, U = _xt(kind, n=5, seed=1)
    model = _bn_net(True, kind).compile(dtype="float64", seed=1)
    model.set_training(True)
    rt = model.runtime
    N = len(X) + len(Y)
    recorded = []
    rt.reduce_hook(lambda values, k: recorded.append((values.copy(), k)), N)
    try:
        loss_u = rt.loss_grad(np.concatenate([X, Y]), np.concatenate([T, U]))
    finally:
        rt.reduce_hook(None)
    grad_u = rt.grads.copy()
    assert [(v.size, k) for v, k in recorded] == \
        [(s["size"], s["kind"]) for s in model.meta["batch_sums"]]
    assert [k for _, k in recorded] == [0, 0, 1, 1]
    loss, grad = 0.0, np.zeros_like(grad_u)
    for x, t in ((X, T), (Y, U)):
        sums, b = iter(recorded), len(x)

        def replay(values, k, sums=sums, b=b):
            v, k0 = next(sums)
            assert k == k0
            values[...] = v if k == 0 else v * N / b

        rt.reduce_hook(replay, N)
        try:
            part = rt.loss_grad(x, t)
        finally:
            rt.reduce_hook(None)
        assert rt.reduce_error is None
        loss += b * part / N
        grad += b * rt.grads / N
    np.testing.assert_allclose(loss, loss_u, rtol=1e-13)
    np.testing.assert_allclose(grad, grad_u, rtol=1e-11, atol=1e-13 * np.abs(grad_u).max())
    # without the hook, each part's own statistics (sync=False over MPI): another gradient
    own = np.zeros_like(grad_u)
    for x, t in ((X, T), (Y, U)):
        rt.loss_grad(x, t)
        own += len(x) * rt.grads / N
    assert not np.allclose(own, grad_u, rtol=1e-6)


def test_an_exception_in_the_hook_is_kept_for_the_caller():
    X, T = _xt("1d")
    model = _bn_net(True).compile(dtype="float64", seed=1)
    model.set_training(True)
    rt = model.runtime

    def bad(values, kind):
        raise RuntimeError("no communicator")

    rt.reduce_hook(bad, len(X))
    try:
        rt.loss_grad(X, T)
    finally:
        rt.reduce_hook(None)
    assert isinstance(rt.reduce_error, RuntimeError)
    assert "no communicator" in str(rt.reduce_error)


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_sync_without_comm_is_the_same_as_without_sync(kind):
    X, T = _xt(kind, n=23)
    out = []
    for sync in (False, True):
        model = _bn_net(sync, kind).compile(dtype="float64", seed=0)
        h = model.fit(X, T, method="minibatch", batch_size=5, epochs=2, lr=0.3, seed=1,
                      progress=False)
        out.append((model.theta.copy(), h.loss))
    assert np.array_equal(out[0][0], out[1][0])
    assert out[0][1] == out[1][1]


def test_sync_is_saved_and_loaded(tmp_path):
    net = _bn_net(True)
    assert net.describe() != _bn_net(False).describe()
    model = net.compile(dtype="float64", seed=0)
    model.save(tmp_path / "m.npz")
    back = sn.load(tmp_path / "m.npz")
    layer = next(a for a in back.network.layers if type(a).__name__ == "BatchNorm1d")
    assert layer.sync is True
    assert "sync=True" in repr(layer)
    model2 = _bn_net(False).compile(dtype="float64", seed=0)
    model2.save(tmp_path / "p.npz")
    layer2 = next(a for a in sn.load(tmp_path / "p.npz").network.layers
                  if type(a).__name__ == "BatchNorm1d")
    assert layer2.sync is False


def test_sync_must_be_a_bool():
    with pytest.raises(ValueError, match=r"layer 'N' \(BatchNorm1d\(\)\): sync must be True "
                                         r"or False, got 'yes'"):
        sn.BatchNorm1d(name="N", sync="yes")


def test_exported_c_has_no_hook(tmp_path):
    model = _bn_net(True).compile(dtype="float64", seed=0)
    assert "sn_reduce" in model.c_source          # the in-process build has the hook
    # forward only: its pass still takes BatchNorm's sums over the batch (a training
    # export of BatchNorm is refused: tests/test_export.py)
    model.export_c(tmp_path, name="net", training=False)
    assert "N_c" in (tmp_path / "net.c").read_text()    # not folded: the sums are there
    for f in tmp_path.iterdir():
        if f.suffix in (".c", ".h"):
            text = f.read_text()
            assert "sn_reduce" not in text and "reduce_hook" not in text, f.name


def test_sync_keeps_the_refusal_of_a_batch_larger_than_one_call_and_allows_batches_of_one():
    from symnet.runtime.distributed import _check_stateful
    model = _bn_net(True).compile(dtype="float64", seed=0)
    R = model.rows_per_call
    with pytest.raises(ValueError, match=rf"layer 'N' \(BatchNorm1d\): batch_size {R + 1} is "
                                         r"more than one compiled call takes"):
        _check_stateful(model, "minibatch", R + 1, R + 5, sync=True)
    with pytest.raises(ValueError, match=r"layer 'N' \(BatchNorm1d\): method 'sd' makes this "
                                         rf"process's {R + 1} examples one batch"):
        _check_stateful(model, "sd", 32, R + 1, sync=True)
    _check_stateful(model, "sgd", 1, 10, sync=True)          # one example per process
    _check_stateful(model, "minibatch", 4, 9, sync=True)     # a last batch of one
    with pytest.raises(ValueError, match="method 'sgd'"):    # without sync: refused
        _check_stateful(model, "sgd", 1, 10, sync=False)


def test_steps_of_one_value_per_channel_over_all_processes_are_refused():
    from symnet.runtime.distributed import _check_global_batches
    model = _bn_net(True).compile(dtype="float64", seed=0)
    _check_global_batches(model, "sgd", 1, [5, 4])           # 2 examples a step
    _check_global_batches(model, "minibatch", 4, [9, 9])     # steps of 8, 8 and 1 + 1
    with pytest.raises(ValueError, match=r"layer 'N' \(BatchNorm1d\): sync=True, and step 1 "
                                         r"of each epoch has 1 example over all 1 process "):
        _check_global_batches(model, "sgd", 1, [5])
    with pytest.raises(ValueError, match=r"step 3 of each epoch has 1 example over all 2 "):
        _check_global_batches(model, "minibatch", 4, [9, 4])


def test_sync_needs_the_c_backend_and_the_same_flag_on_every_batchnorm():
    from symnet.runtime.distributed import _synced
    assert _synced(_bn_net(False).compile(dtype="float64", seed=0)) is False
    assert _synced(_bn_net(True).compile(dtype="float64", seed=0)) is True
    with pytest.raises(ValueError, match=r"layer 'N' \(BatchNorm1d\): sync=True in fit with "
                                         r"comm needs the C backend \(this model's is 'numpy'\)"):
        _synced(_bn_net(True).compile(dtype="float64", seed=0, backend="numpy"))
    net = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.BatchNorm1d(name="A"),
                     sn.Dense(3, "tanh"), sn.BatchNorm1d(name="B", sync=True), sn.Dense(2),
                     loss="softmax_cross_entropy")
    with pytest.raises(ValueError, match=r"layer 'B' \(BatchNorm1d\) has sync=True but "
                                         r"layer 'A' \(BatchNorm1d\) not"):
        _synced(net.compile(dtype="float64", seed=0))
