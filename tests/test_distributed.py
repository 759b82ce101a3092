"""Data-parallel fit over MPI (symnet.runtime.distributed), checked against one process.

Each P in (2, 3) launches ``mpiexec -n P python -m mpi4py tests/mpi_worker.py``
once: every process trains the worker's scenarios on its uneven part of one
data set and saves what it got.  Here, one process without MPI computes what
the union of the parts must give (``fit`` on the concatenated data for sd;
for minibatch and sgd, a loop over the same global batches N(t), each the
union of the processes' batches) and the results are compared to 1e-12.

Without mpi4py or mpiexec these tests skip, unless SYMNET_REQUIRE_MPI=1 (set by
.ci/run), where they fail instead.
"""

import json
import math
import os
import re
import subprocess
import sys
import time

import mpi_worker as W
import numpy as np
import pytest

from symnet.runtime.distributed import steps_per_epoch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "mpi_worker.py")
TOL = 1e-12


def _launcher(n):
    try:
        import mpi4py  # noqa: F401

        from symnet.runtime.distributed import mpiexec
        return mpiexec(n)
    except (ImportError, FileNotFoundError) as exc:
        if os.environ.get("SYMNET_REQUIRE_MPI") == "1":
            pytest.fail(f"MPI required (SYMNET_REQUIRE_MPI=1) but unavailable: {exc}")
        pytest.skip(f"no MPI here ({exc}); pip install '.[mpi]'")


def _launch(n, args, timeout=240, module=True):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = _launcher(n) + [sys.executable] + (["-m", "mpi4py"] if module else []) + \
        [WORKER, *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT, stdin=subprocess.DEVNULL)
    return proc, time.perf_counter() - start


@pytest.fixture(scope="module", params=[2, 3], ids=["2proc", "3proc"])
def runs(request, tmp_path_factory):
    """{scenario: [(theta, hist, error) per process]} and P."""
    P = request.param
    W.network().compile(dtype="float64")  # compiled once here; the processes load it
    W.network("linear").compile(dtype="float64")
    W.network("conv").compile(dtype="float64")
    W.network("graph").compile(dtype="float64")
    out = tmp_path_factory.mktemp(f"mpi{P}")
    proc, _ = _launch(P, [str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = {}
    for r in range(P):
        arrays = np.load(out / f"rank{r}.npz")
        info = json.loads((out / f"rank{r}.json").read_text())
        for name, v in info.items():
            res.setdefault(name, []).append((arrays[name], v["hist"], v["error"]))
    return res, P


# ------------------------------------------------------------- one-process references

def _data(kind="tanh"):
    X, T = W.data(kind=kind)
    return X, W.targets(kind, T)


def _model(kind="tanh"):
    return W.network(kind).compile(dtype="float64", seed=0)   # process 0's start


def _global_batches(P, spec, epoch_perms):
    """The global batches N(t) of one epoch, as row numbers of the whole data set."""
    sizes = W.SIZES[P]
    starts = np.cumsum([0] + sizes[:-1])
    bs = 1 if spec["method"] == "sgd" else spec["batch_size"]
    steps = steps_per_epoch(spec["method"], sizes, bs)
    batches = []
    for s in range(steps):
        rows = []
        for r, n in enumerate(sizes):
            if spec["method"] == "sgd":
                rows += [starts[r] + s % n]
            else:
                rows += list(starts[r] + epoch_perms[r][s * bs:(s + 1) * bs])
        batches.append(np.array(rows))
    return batches


def _rows(A, rows):
    return [a[rows] for a in A] if isinstance(A, list) else A[rows]


def _reference_loop(P, spec, n_steps=None):
    """Plain loop over the global batches; momentum written out here."""
    kind = spec.get("net", "tanh")
    model = _model(kind)
    X, T = _data(kind)
    sizes = W.SIZES[P]
    rngs = [np.random.default_rng([spec["seed"], r]) for r in range(P)] \
        if spec.get("shuffle", True) else None
    v = {k: np.zeros_like(a) for k, a in model.params.items()}
    mu = spec.get("momentum", 0.0) if spec.get("optimizer") == "momentum" else 0.0
    epoch_losses, done = [], 0
    for _ in range(spec["epochs"]):
        perms = [rng.permutation(n) for rng, n in zip(rngs, sizes)] if rngs else \
            [np.arange(n) for n in sizes]
        total = count = 0.0
        for rows in _global_batches(P, spec, perms):
            loss, grads = model.loss_and_grad(_rows(X, rows), _rows(T, rows))
            for k in v:
                v[k] = mu * v[k] + grads[k]
                model.params[k] = model.params[k] - spec["lr"] * v[k]
            total, count, done = total + loss * rows.size, count + rows.size, done + 1
            if done == n_steps:
                break
        epoch_losses.append(total / count)
        if done == n_steps:
            break
    return model.theta.copy(), epoch_losses


def _one_process_fit(spec, kind="tanh", **extra):
    model = _model(kind)
    X, T = _data(kind)
    hist = model.fit(X, T, progress=False, **W.fit_args(spec), **extra)
    return model.theta.copy(), hist


def _same_on_all(results):
    theta0, hist0, err0 = results[0]
    for theta, hist, err in results[1:]:
        assert theta.tobytes() == theta0.tobytes()      # bit-identical
        assert hist == hist0 and err == err0


# ------------------------------------------------------------------------ the tests

def test_sd_equals_one_process_on_concatenated_data(runs):
    res, P = runs
    _same_on_all(res["sd"])
    theta, hist, _ = res["sd"][0]
    ref, ref_hist = _one_process_fit(W.SCENARIOS["sd"])
    assert hist["steps"] == ref_hist.steps == 25 and hist["stopped"] == "completed"
    np.testing.assert_allclose(theta, ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(hist["loss"], ref_hist.loss, rtol=TOL)
    assert ref_hist.loss[-1] < 0.6 * ref_hist.loss[0]       # it did train


def test_early_stopping_weight_decay_and_clipping_as_in_one_process(runs):
    res, P = runs
    _same_on_all(res["early"])
    theta, hist, _ = res["early"][0]
    ref, ref_hist = _one_process_fit(W.SCENARIOS["early"], validation_data=W.validation())
    assert hist["stopped"] == ref_hist.stopped == "early_stopping"
    assert hist["best_epoch"] == ref_hist.best_epoch and hist["epochs"] == ref_hist.epochs
    np.testing.assert_allclose(theta, ref, rtol=0, atol=TOL)


def test_sd_convolution_network(runs):
    """A Conv2d network (image inputs, flattened per example) likewise."""
    res, P = runs
    _same_on_all(res["conv_sd"])
    theta, hist, _ = res["conv_sd"][0]
    ref, ref_hist = _one_process_fit(W.SCENARIOS["conv_sd"], kind="conv",
                                     validation_data=W.validation("conv"))
    np.testing.assert_allclose(hist["val_loss"], ref_hist.val_loss, rtol=TOL)
    assert hist["val_accuracy"] == ref_hist.val_accuracy and len(hist["val_loss"]) == 10
    np.testing.assert_allclose(theta, ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(hist["loss"], ref_hist.loss, rtol=TOL)
    assert ref_hist.loss[-1] < ref_hist.loss[0]


def test_a_class_per_position_with_labels(runs):
    """Sequences with a class label per position (softmax cross-entropy over the last
    axis): the processes' batches together equal one process's loop, and the
    validation accuracy is the share of positions right, as in one process."""
    res, P = runs
    _same_on_all(res["tags_mb"])
    theta, hist, _ = res["tags_mb"][0]
    spec = W.SCENARIOS["tags_mb"]
    ref, ref_losses = _reference_loop(P, spec)
    np.testing.assert_allclose(theta, ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(hist["loss"], ref_losses, rtol=TOL)
    model = _model("tags")
    model.theta[...] = theta
    Xv, yv = W.validation("tags")
    assert hist["val_accuracy"][-1] == float((model.predict_classes(Xv) == yv).mean())


def test_sd_adam_schedule_and_validation_of_process_0(runs):
    res, P = runs
    _same_on_all(res["sd_adam"])
    theta, hist, _ = res["sd_adam"][0]
    spec = W.SCENARIOS["sd_adam"]
    ref, ref_hist = _one_process_fit(spec, validation_data=W.validation())
    np.testing.assert_allclose(theta, ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(hist["lr"], ref_hist.lr, rtol=0, atol=0)
    np.testing.assert_allclose(hist["val_loss"], ref_hist.val_loss, rtol=TOL)
    assert hist["val_accuracy"] == ref_hist.val_accuracy and len(hist["val_loss"]) == 20


@pytest.mark.parametrize("name", ["minibatch", "minibatch_seed", "sgd", "graph_mb"])
def test_global_batches_equal_one_process_loop(runs, name):
    res, P = runs
    _same_on_all(res[name])
    theta, hist, _ = res[name][0]
    spec = W.SCENARIOS[name]
    ref, ref_losses = _reference_loop(P, spec)
    steps = steps_per_epoch(spec["method"], W.SIZES[P], spec.get("batch_size", 1))
    assert hist["steps_per_epoch"] == [steps] * spec["epochs"]
    np.testing.assert_allclose(theta, ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(hist["loss"], ref_losses, rtol=TOL)
    assert not np.allclose(theta, _model(spec.get("net", "tanh")).theta)   # it moved


def test_several_outputs_validation_metrics_of_process_0(runs):
    """Two outputs with validation data: each output's validation metrics per epoch
    (val_O1_mse, val_O2_accuracy, ...), computed by process 0 as model.evaluate gives
    them; no training ones (as no training accuracy with comm)."""
    res, _ = runs
    _same_on_all(res["graph_mb"])
    theta, hist, _ = res["graph_mb"][0]
    model = _model("graph")
    model.theta[...] = theta
    ev = model.evaluate(*W.validation("graph"))
    keys = ["val_O1_mse", "val_O1_mae", "val_O2_accuracy"]
    assert sorted(hist["per_output"]) == sorted(keys) and len(hist["val_O1_mse"]) == 2
    for k in keys:
        assert hist[k][-1] == pytest.approx(ev[k[4:]], rel=1e-12)
    assert hist["val_loss"][-1] == pytest.approx(ev["loss"], rel=1e-12)


def test_uneven_parts_are_not_a_mean_of_means(runs):
    """The loop reference would differ if each step averaged the processes' means."""
    res, P = runs
    theta = res["minibatch"][0][0]
    model = _model()
    X, T = _data()
    sizes, bs, spec = W.SIZES[P], 4, W.SCENARIOS["minibatch"]
    starts = np.cumsum([0] + sizes[:-1])
    for _ in range(spec["epochs"]):
        for s in range(steps_per_epoch("minibatch", sizes, bs)):
            gs = [model.loss_and_grad(X[a + s * bs:a + min(n, (s + 1) * bs)],
                                      T[a + s * bs:a + min(n, (s + 1) * bs)])[1]
                  for a, n in zip(starts, sizes) if s * bs < n]
            for k in model.params:
                model.params[k] = model.params[k] - spec["lr"] * np.mean([g[k] for g in gs], 0)
    assert np.abs(model.theta - theta).max() > 1e-6


def test_divergence_rolls_back_as_in_one_process(runs):
    res, P = runs
    _same_on_all(res["diverge"])
    theta, hist, _ = res["diverge"][0]
    spec = W.SCENARIOS["diverge"]
    with pytest.warns(RuntimeWarning, match="diverged"):
        ref, ref_hist = _one_process_fit(spec, kind="linear")
    assert hist["stopped"] == ref_hist.stopped == "diverged"
    assert hist["steps"] == ref_hist.steps and np.isfinite(theta).all()
    np.testing.assert_allclose(theta, ref, rtol=1e-9)


def test_minibatch_divergence_mid_epoch_as_in_one_process(runs):
    """Equal parts of 8: the step batches (2 rows from each process) are contiguous
    blocks of a reordered copy of the data, so one-process fit on that copy with
    batch 2P takes the same steps, through its compiled epoch loop."""
    res, P = runs
    _same_on_all(res["diverge_mb"])
    theta, hist, _ = res["diverge_mb"][0]
    spec = W.SCENARIOS["diverge_mb"]
    X, T = W.data(n=8 * P)
    T = W.targets("linear", T)
    order = [r * 8 + s * 2 + j for s in range(4) for r in range(P) for j in range(2)]
    model = _model("linear")
    with pytest.warns(RuntimeWarning, match="diverged"):
        ref_hist = model.fit(X[order], T[order], method="minibatch", batch_size=2 * P,
                             epochs=spec["epochs"], lr=spec["lr"], shuffle=False,
                             progress=False)
    assert hist["stopped"] == ref_hist.stopped == "diverged"
    assert hist["steps"] == ref_hist.steps and hist["steps"] % 4 != 0   # mid-epoch
    assert hist["steps_per_epoch"] == ref_hist.steps_per_epoch
    np.testing.assert_allclose(theta, model.theta, rtol=1e-9)


def test_ctrl_c_on_one_process_stops_all_after_that_step(runs):
    res, P = runs
    _same_on_all(res["interrupt"])
    theta, hist, _ = res["interrupt"][0]
    assert hist["stopped"] == "interrupted" and hist["steps"] == 5   # SIGINT in step 5
    ref, ref_losses = _reference_loop(P, W.SCENARIOS["interrupt"], n_steps=5)
    np.testing.assert_allclose(theta, ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(hist["loss"], ref_losses, rtol=TOL)


def test_parameters_that_drift_apart_are_made_equal_with_a_warning(runs):
    """Process 1's update moves a parameter by 1e-9 in step 2: at the end every
    process holds process 0's parameters (the digest check) and says so."""
    res, P = runs
    thetas = [t for t, _, _ in res["drift"]]
    for t in thetas[1:]:
        assert t.tobytes() == thetas[0].tobytes()
    for _, hist, _ in res["drift"]:
        assert any("parameters differed after fit" in w for w in hist["warnings"])
        # at the user's call of fit, not inside symnet (it pointed at train.py)
        assert hist["warned_at"] == ["mpi_worker.py"] * len(hist["warnings"])
    for _, hist, _ in res["sd"]:
        assert hist["warnings"] == []


def test_failing_process_raises_on_every_process(runs):
    res, P = runs
    errors = [e for _, _, e in res["fail"]]
    assert errors[1] == "RuntimeError: boom in call 3"
    for r, e in enumerate(errors):
        if r != 1:
            assert e.startswith("DistributedError:") and f"process 1 of {P}" in e \
                and "step 3" in e and "boom in call 3" in e


def test_setup_errors_are_agreed(runs):
    res, P = runs
    for _, _, e in res["mismatch"]:
        assert e == ("ValueError: the processes' networks differ: parameter W1 has shape "
                     "(5, 3) on process 0 but (6, 3) on process 1")
    errors = [e for _, _, e in res["bad_data"]]
    assert errors[1].startswith("ValueError: X holds NaN or inf in 1 row(s), first at row 2")
    for r, e in enumerate(errors):
        if r != 1:
            assert e.startswith("DistributedError: fit stopped before training: "
                                f"process 1 of {P} failed: ValueError: X holds NaN")
    # nothing was trained: each process kept its own start (no broadcast happened)
    thetas = [t for t, _, _ in res["bad_data"]]
    assert not np.array_equal(thetas[0], thetas[1])


def test_processes_given_different_seeds_refuse_to_train(runs):
    """fit's seed is one for all processes (process r shuffles with [seed, r]): process 1
    with seed 8 where process 0 has 7 is refused on every process, before any step."""
    res, _ = runs
    for _, _, e in res["seed_differs"]:
        assert e == ("ValueError: fit argument seed is 8 on process 1 but 7 on process 0: "
                     "pass the same on every process")


def test_validation_data_only_on_another_process_is_refused_everywhere(runs):
    """Process 0 computes the validation: validation_data given on process 1 alone
    would be ignored without a word; every process raises the same ValueError."""
    res, _ = runs
    for _, _, e in res["val_elsewhere"]:
        assert e == ("ValueError: validation_data is given on process 1 but not on "
                     "process 0, which computes the validation for all: give it on "
                     "process 0 (or the same on every process)")


def test_other_validation_data_than_process_0s_is_named_in_a_warning(runs):
    """Process 1 gives other validation_data than process 0: it trains, with process 0's
    validation on every process, and process 1 alone is warned that its own is unused.
    The same validation_data on every process (sd_adam, early, ...) warns nowhere."""
    res, P = runs
    thetas = [t for t, _, _ in res["val_differs"]]
    hists = [h for _, h, _ in res["val_differs"]]
    assert all(e is None for _, _, e in res["val_differs"])
    for r in range(1, P):
        assert thetas[r].tobytes() == thetas[0].tobytes()
        assert hists[r]["val_loss"] == hists[0]["val_loss"]
    _, ref_hist = _one_process_fit(W.SCENARIOS["val_differs"],
                                   validation_data=W.validation())
    np.testing.assert_allclose(hists[0]["val_loss"], ref_hist.val_loss, rtol=TOL)
    warning = ("fit: process 1's validation_data differs from process 0's and is not "
               "used: process 0 computes the validation for all on its validation_data; "
               "give the whole validation set there")
    assert [h["warnings"] for h in hists] == [[], [warning]] + [[]] * (P - 2)
    assert hists[1]["warned_at"] == ["mpi_worker.py"]        # the user's call of fit
    for name in ("sd_adam", "early", "conv_sd", "tags_mb"):
        assert all(h["warnings"] == [] for _, h, _ in res[name])


@pytest.mark.parametrize("how,module", [("raise", True), ("exit", True), ("raise", False)],
                         ids=["raise", "exit", "raise-without-m-mpi4py"])
def test_failing_process_ends_the_run_within_seconds(how, module):
    """Process 1 fails in its third step of a run of ~10⁶ steps per process; the job
    must end with an error instead of waiting on the collective (limit 60 s)."""
    W.network().compile(dtype="float64")
    try:
        proc, seconds = _launch(2, ["--fail", how], timeout=60, module=module)
    except subprocess.TimeoutExpired:
        pytest.fail("the job hung after one process failed")
    assert proc.returncode != 0
    assert "finished" not in proc.stdout
    if how == "raise":
        assert "RuntimeError: process 1 fails on purpose" in proc.stderr
        assert "DistributedError: training stopped because process 1 of 2 failed" \
            in proc.stderr
    assert not math.isnan(seconds)


@pytest.mark.parametrize("what,errors", [
    ("shuffle", ["DistributedError: fit stopped before training: process 1 of 2 failed: "
                 "ValueError: shuffle must be True or False, got 'yes'",
                 "ValueError: shuffle must be True or False, got 'yes'"]),
    ("callback", ["DistributedError: training stopped because process 1 of 2 failed in a "
                  "callback after epoch 2 of this fit: RuntimeError: callback fails on "
                  "purpose",
                  "RuntimeError: callback fails on purpose"])])
def test_an_error_on_one_process_reaches_every_process(what, errors):
    """Process 1 alone gives a bad argument, or its callback raises; each process
    catches its error (no ``-m mpi4py`` abort to rescue a process left waiting)."""
    W.network().compile(dtype="float64")
    try:
        proc, _ = _launch(2, ["--one-sided", what], timeout=60, module=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the job hung after process 1's {what} error")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == errors


def test_comm_must_be_a_communicator():
    model = _model()
    X, T = _data()
    with pytest.raises(ValueError, match="comm must be an mpi4py communicator such as "
                                         "MPI.COMM_WORLD, got object"):
        model.fit(X, T, comm=object())


def test_mpi4py_not_imported_without_comm():
    code = ("import sys, symnet as sn, numpy as np\n"
            "m = sn.Network(sn.Input(2), sn.Dense(1), loss='mse').compile()\n"
            "m.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=2, progress=False)\n"
            "print(sorted(k for k in sys.modules if k.startswith('mpi4py')))\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_example_same_accuracy_as_one_process():
    """examples/distributed.py on 2 processes: sd + Adam gives the one-process accuracy
    exactly, minibatch (other batches) within 1.5 points; both ≥ 95 %."""
    _launcher(2)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = _launcher(2) + [sys.executable, "-m", "mpi4py",
                          os.path.join(ROOT, "examples", "distributed.py")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                          cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "test accuracy" in line]
    assert len(rows) == 2, proc.stdout
    accs = [[float(x) for x in re.findall(r"(\d+\.\d+)%", line)]
            for line in rows]
    (sd, sd1), (mb, mb1) = accs
    assert sd == sd1 and sd >= 95
    assert abs(mb - mb1) <= 1.5 and min(mb, mb1) >= 95


@pytest.mark.slow
def test_ctrl_c_to_mpiexec_stops_every_process_at_the_same_step():
    """SIGINT to mpiexec (what Ctrl-C in its terminal sends) reaches every process;
    each ends fit at the same step, with the same parameters, stopped="interrupted"."""
    import signal
    W.network().compile(dtype="float64")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = _launcher(2) + [sys.executable, "-m", "mpi4py", WORKER, "--sigint"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        seen, deadline = set(), time.monotonic() + 120
        while len(seen) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()    # mpiexec may join the processes' lines
            seen.update(re.findall(r"started (\d)", line))
            if not line:
                break
        assert len(seen) == 2, "the processes did not start training"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("Ctrl-C did not end the run")
    assert proc.returncode == 0, err
    results = [json.loads(m) for m in re.findall(r"\{[^{}]*\}", out)]
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert all(r["stopped"] == "interrupted" for r in results)
    assert results[0]["steps"] == results[1]["steps"] > 0
    assert results[0]["theta"] == results[1]["theta"]


def test_reset_optimizer_with_comm_drops_the_one_process_state():
    """fit(comm=..., reset_optimizer=True) dropped the model's own optimizer state (which a
    later fit without comm continues) before fit checked its arguments; once the reset moved
    after the checks, the comm path did not make it at all.  One process, COMM_SELF."""
    pytest.importorskip("mpi4py")
    script = """
import json, numpy as np, symnet as sn
from mpi4py import MPI
net = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.Dense(1), loss="mse")
rng = np.random.default_rng(0)
X, T = rng.normal(size=(8, 3)), rng.normal(size=(8, 1))
out = {}
for reset in (False, True):
    m = net.compile(dtype="float64", seed=0)
    m.fit(X, T, method="sd", epochs=2, optimizer="adam", lr=0.01, progress=False)
    m.fit(X, T, method="sd", epochs=1, optimizer="adam", lr=0.01, progress=False,
          comm=MPI.COMM_SELF, reset_optimizer=reset)
    out[str(reset)] = None if m.optimizer is None else m.optimizer.t
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"False": 2, "True": None}
