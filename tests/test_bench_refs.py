"""The benchmark's reference steps compute the right thing, and agree with each other.

The numpy reference is checked against central finite differences of an independent
float64 forward pass; every optional framework is checked against the numpy reference.
``torch.compile`` and PyTensor's C backend take 10-30 s to compile on a fresh machine,
so they run only with ``SYMNET_SLOW_TESTS=1``.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from symnet.bench import refs

SLOW = os.environ.get("SYMNET_SLOW_TESTS") == "1"


# ------------------------------------------------------------------ an independent float64 loss


ACTIVATIONS64 = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
}


def loss64(workload, params, X, T):
    """Batch-mean loss in float64, written from the definitions, sharing no code with refs."""
    h = X.astype(np.float64)
    for k, act in enumerate(workload.activations, 1):
        z = h @ params[f"W{k}"].astype(np.float64).T + params[f"b{k}"].astype(np.float64)
        h = ACTIVATIONS64[act](z)
    T = T.astype(np.float64)
    if workload.loss == "mse":
        return np.mean(np.mean((h - T) ** 2, axis=1))
    shifted = h - h.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return np.mean(-np.sum(T * log_softmax, axis=1))


def finite_difference(workload, params, X, T, name, index, eps=1e-6):
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    p64[name][index] += eps
    up = loss64(workload, p64, X, T)
    p64[name][index] -= 2 * eps
    down = loss64(workload, p64, X, T)
    return (up - down) / (2 * eps)


def one_numpy_step(workload, lr):
    X, T = refs.make_data(workload)
    params = refs.init_params(workload)
    step = refs.make_numpy_step(workload, params, X, T, lr)
    step()
    return X, T, params, step.params()


# ------------------------------------------------------------------ workloads and data


def test_workloads_are_the_documented_ones():
    assert refs.WORKLOADS["tiny"].sizes == (2, 8, 8, 1)
    assert refs.WORKLOADS["small"].sizes == (64, 128, 64, 10)
    assert refs.WORKLOADS["medium"].sizes == (784, 256, 128, 10)
    assert refs.WORKLOADS["large"].sizes == (1024, 1024, 1024, 10)
    assert [w.batch for w in refs.WORKLOADS.values()] == [4, 32, 128, 256]
    assert refs.WORKLOADS["tiny"].activations == ("tanh", "tanh", "sigmoid")
    assert refs.WORKLOADS["tiny"].loss == "mse"
    assert refs.WORKLOADS["medium"].activations == ("relu", "relu", "linear")
    assert refs.WORKLOADS["medium"].loss == "softmax_cross_entropy"


@pytest.mark.parametrize("name", list(refs.WORKLOADS))
def test_data_and_params_shapes(name):
    wl = refs.WORKLOADS[name]
    X, T = refs.make_data(wl)
    assert X.dtype == T.dtype == np.float32
    assert X.shape == (wl.batch, wl.sizes[0]) and T.shape == (wl.batch, wl.sizes[-1])
    if wl.loss == "softmax_cross_entropy":
        assert set(np.unique(T)) <= {0.0, 1.0} and np.all(T.sum(axis=1) == 1)
    else:
        assert np.all((T > 0) & (T < 1))
    params = refs.init_params(wl)
    assert list(params) == wl.param_names()
    for k in range(1, wl.n_layers + 1):
        assert params[f"W{k}"].shape == (wl.sizes[k], wl.sizes[k - 1])
        assert params[f"b{k}"].shape == (wl.sizes[k],)
        assert params[f"W{k}"].dtype == params[f"b{k}"].dtype == np.float32
    assert np.array_equal(refs.make_data(wl, seed=0)[0], X)
    assert not np.array_equal(refs.make_data(wl, seed=1)[0], X)


def test_flops_per_step():
    # tiny: products 2*4*2*8 = 128, 2*4*8*8 = 512, 2*4*8*1 = 64; 3 each, less layer 1's input grad
    assert refs.flops_per_step(refs.WORKLOADS["tiny"]) == 3 * (128 + 512 + 64) - 128
    large = 2 * 256 * (1024 * 1024 + 1024 * 1024 + 1024 * 10)
    assert refs.flops_per_step(refs.WORKLOADS["large"]) == 3 * large - 2 * 256 * 1024 * 1024


# ------------------------------------------------------------------ numpy reference vs finite differences


def test_numpy_step_matches_finite_differences_tiny():
    wl, lr = refs.WORKLOADS["tiny"], 0.5
    X, T, before, after = one_numpy_step(wl, lr)
    for name in wl.param_names():
        grad_step = (before[name].astype(np.float64) - after[name]) / lr
        grad_fd = np.array(
            [finite_difference(wl, before, X, T, name, i) for i in np.ndindex(before[name].shape)]
        ).reshape(before[name].shape)
        np.testing.assert_allclose(
            grad_step, grad_fd, rtol=1e-3, atol=1e-4 * np.abs(grad_fd).max(), err_msg=name
        )


def test_numpy_step_matches_finite_differences_small():
    """17 000 parameters: check a random sample of elements of every parameter."""
    wl, lr = refs.WORKLOADS["small"], 0.5
    X, T, before, after = one_numpy_step(wl, lr)
    rng = np.random.default_rng(3)
    for name in wl.param_names():
        grad_step = (before[name].astype(np.float64) - after[name]) / lr
        flat = rng.choice(before[name].size, size=min(12, before[name].size), replace=False)
        for i in flat:
            index = np.unravel_index(i, before[name].shape)
            fd = finite_difference(wl, before, X, T, name, index)
            scale = np.abs(grad_step).max()
            assert abs(grad_step[index] - fd) <= 1e-3 * abs(fd) + 1e-4 * scale, (name, index)


def test_numpy_step_is_in_place_and_repeatable():
    wl = refs.WORKLOADS["small"]
    X, T = refs.make_data(wl)
    params = refs.init_params(wl)
    original = {k: v.copy() for k, v in params.items()}
    a = refs.make_numpy_step(wl, params, X, T, 0.1)
    b = refs.make_numpy_step(wl, params, X, T, 0.1)
    for _ in range(3):
        a()
    b()
    assert all(np.array_equal(params[k], original[k]) for k in params)  # caller's copy untouched
    assert not np.array_equal(a.params()["W1"], b.params()["W1"])
    b()
    b()
    assert all(np.array_equal(a.params()[k], b.params()[k]) for k in params)


# ------------------------------------------------------------------ other frameworks vs numpy

FAST_REFS = ["torch", "jax", "pytensor.numba"]
SLOW_REFS = ["torch.compile", "pytensor"]


@pytest.mark.parametrize("workload", ["tiny", "small"])
@pytest.mark.parametrize(
    "name",
    FAST_REFS
    + [
        pytest.param(n, marks=pytest.mark.skipif(not SLOW, reason="SYMNET_SLOW_TESTS=1"))
        for n in SLOW_REFS
    ],
)
def test_reference_agrees_with_numpy(name, workload):
    pytest.importorskip(refs.REFERENCES[name][0])
    wl, lr = refs.WORKLOADS[workload], 0.1
    X, T = refs.make_data(wl)
    params = refs.init_params(wl)
    ours = refs.make_numpy_step(wl, params, X, T, lr)
    try:
        theirs = refs.REFERENCES[name][1](wl, params, X, T, lr)
    except refs.ReferenceUnavailable as exc:
        pytest.skip(str(exc))
    assert theirs.reference == name
    for _ in range(2):  # the second step checks that the update really landed in place
        ours()
        theirs()
    mine, other = ours.params(), theirs.params()
    for k in wl.param_names():
        assert other[k].dtype == np.float32 and other[k].shape == params[k].shape
        update = mine[k] - params[k]
        err = np.abs((other[k] - params[k]) - update).max()
        assert err <= 1e-4 * np.abs(update).max() + 1e-7, (k, err, np.abs(update).max())


def test_make_reference_steps_reports_what_it_skips():
    wl = refs.WORKLOADS["tiny"]
    X, T = refs.make_data(wl)
    steps, skipped = refs.make_reference_steps(wl, refs.init_params(wl), X, T, 0.1, names=["numpy"])
    assert list(steps) == ["numpy"] and skipped == {}
    assert "numpy" in refs.available_references()


def test_importing_refs_imports_no_optional_framework():
    code = (
        "import sys, symnet.bench.refs; "
        "print(sorted(m for m in ('torch', 'jax', 'pytensor') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ timing helpers


def test_time_call_measures_microseconds():
    calls = []
    median, per_repeat = refs.time_call(lambda: calls.append(1), min_time=0.01, repeats=3)
    assert len(per_repeat) == 3 and 0 < median < 1000
    assert len(calls) > 3
    assert min(per_repeat) <= median <= max(per_repeat)


def test_measure_peak_gflops_is_positive():
    assert refs.measure_peak_gflops(seconds=0.02, n=128) > 0


def test_time_calls_takes_turns_and_times_each():
    """Every function is timed in every repeat (in turns), and a call that sleeps
    3 ms measures longer than one that sleeps none."""
    import time as _time
    order = []

    def fast():
        order.append("f")

    def slow():
        order.append("s")
        _time.sleep(0.003)
    out = refs.time_calls({"fast": fast, "slow": slow}, min_time=0.03, repeats=3)
    assert set(out) == {"fast", "slow"}
    assert out["slow"] >= 3000 > out["fast"]
    # after the warm-ups, the repeats alternate: f...f s...s f...f s...s f...f s...s
    timed = "".join(order[order.index("s", order.index("s") + 1):])
    runs = [r for r in timed.replace("fs", "f|s").replace("sf", "s|f").split("|") if r]
    assert len(runs) >= 6


@pytest.mark.parametrize("timer", ["time_call", "time_calls"])
def test_timing_starts_after_the_first_calls_that_are_not_the_steady_state(timer):
    """A function whose first WARM_CALLS + 2 calls take 20 ms and the rest 1 ms (as
    symnet's first passes time its choice of threads) measures the 1 ms: with one
    untimed call before the estimate of its cost, the repeats met six slow calls of
    seven and the median was 20 ms."""
    import time as _time
    n = [0]

    def fn():
        n[0] += 1
        _time.sleep(0.02 if n[0] <= refs.WARM_CALLS + 2 else 0.001)
    if timer == "time_call":
        us = refs.time_call(fn, min_time=0.07, repeats=7)[0]
    else:
        us = refs.time_calls({"fn": fn}, min_time=0.07, repeats=7)["fn"]
    assert 1000 <= us < 5000
    assert n[0] > refs.WARM_CALLS + 2 + 7


def _tiny_sequences(monkeypatch):
    """symnet.bench.seq shrunk to a tiny size (the step functions read these globals)."""
    from symnet.bench import seq
    for k, v in dict(T_STEPS=4, T_WIDTH=8, T_HEADS=2, T_FF=16, T_BATCH=3,
                     G_STEPS=3, G_IN=2, G_HIDDEN=4, G_BATCH=5).items():
        monkeypatch.setattr(seq, k, v)
    monkeypatch.setattr(seq, "WORKLOADS", {
        "transformer": (seq.transformer_network, (4, 8), 3, seq._transformer_torch, ""),
        "gru": (seq.gru_network, (3, 2), 5, seq._gru_torch, "")})
    return seq


@pytest.mark.parametrize("peak", [None, 1e-6, 1e6])
def test_sequence_bench_shows_each_rate_and_what_a_goal_not_met_takes(peak, monkeypatch,
                                                                      capsys):
    """The rates printed are the step's FLOPs over the times measured: with the bench's
    timing and references replaced by fixed times (symnet 1000 µs, torch 1500, JAX
    800), the lines must give each step's GFLOP/s, the steps the unmet goals take
    (≤ 750 µs for 2x torch, ≤ 800 µs for 1x JAX) with their rates, and, against a peak
    below those rates, that they are beyond it.  The GRU, quicker to compile than the
    transformer, is given the transformer's goals."""
    from symnet.bench import refs as bench_refs
    seq = _tiny_sequences(monkeypatch)
    monkeypatch.setitem(seq.GOALS, "gru", {"torch": 2.0, "jax": 1.0})

    class Step:
        def __init__(self, params):
            self.p = {k: np.array(v) for k, v in params.items()}

        def __call__(self):
            pass

        def params(self):
            return self.p
    monkeypatch.setattr(seq, "reference_step", lambda name, ref, params, X, T: Step(params))
    times = {"symnet": 1000.0, "torch": 1500.0, "jax": 800.0}
    monkeypatch.setattr(bench_refs, "time_calls",
                        lambda fns, min_time: {k: times[k] for k in fns})
    out = seq.run("gru", 0.01, ("torch", "jax"), peak)
    text = capsys.readouterr().out
    make_net, shape, batch, _, _ = seq.WORKLOADS["gru"]
    flops = make_net().compile(dtype="float32").summary(batch, print_fn=None).flops_per_step
    assert out["flops"] == flops and out["symnet_us"] == 1000.0
    assert f"{flops / 1e6:.1f} MFLOP per step" in text
    g = flops / 1e3        # GFLOP/s of a step of 1 µs
    assert f"symnet step     1000.0 µs  {g / 1000:6.1f} GFLOP/s" in text
    assert f"torch  step     1500.0 µs  {g / 1500:6.1f} GFLOP/s" in text
    assert "symnet is 1.50x faster (goal ≥ 2x)" in text
    assert "symnet is 0.80x faster (goal ≥ 1x)" in text
    assert f"≥ 2x torch takes a step of ≤ 750 µs: {g / 750:.1f} GFLOP/s" in text
    assert f"≥ 1x jax takes a step of ≤ 800 µs: {g / 800:.1f} GFLOP/s" in text
    assert ("% of the matmul peak" in text) == (peak is not None)
    assert text.count("beyond what the matrix product reaches") == (2 if peak == 1e-6 else 0)


@pytest.mark.parametrize("workload", ["gru", "transformer"])
def test_jax_sequence_step_agrees_with_symnet(workload, monkeypatch):
    """One jitted JAX SGD step from the same parameters moves them as symnet's step does."""
    pytest.importorskip("jax")
    seq = _tiny_sequences(monkeypatch)
    make_net, shape, batch, _, _ = seq.WORKLOADS[workload]
    X, T = seq._data(shape, batch)
    model = make_net().compile(dtype="float32")
    params = seq._init(model)
    model.params.update(params)
    model.step(X, T, seq.LR)
    step = seq.reference_step(workload, "jax", params, X, T)
    step()
    got = step.params()
    assert set(got) == set(params)
    for k in params:
        ours = np.asarray(model.params[k]) - params[k]
        theirs = got[k] - params[k]
        scale = np.abs(ours).max()
        assert scale > 0, k
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4 * scale, err_msg=k)


@pytest.mark.parametrize("ref", ["jax", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pinn_reference_agrees_with_symnet(ref, dtype):
    """From the same parameters, the reference PINN loss (nested derivatives in the loss),
    its gradient and one Adam step equal symnet's compiled ones (3 layers, 40 + 8 points)."""
    pytest.importorskip(ref)
    from symnet.bench import pinn
    data = pinn._data(0, 40, 8)
    ours = pinn.symnet_step(dtype, layers=3, data=data)
    theirs = pinn.REFERENCES[ref](dtype, ours.params(), data)
    a = pinn.agreement(ours, theirs)
    tol = {"float32": 1e-4, "float64": 1e-10}[dtype]
    assert a["loss"] < tol and a["grad"] < tol, a
    assert a["step"] < (1e-3 if dtype == "float32" else 1e-8), a


def test_pinn_jax_float64_leaves_float32_alone():
    """The float64 JAX PINN step does not switch JAX to 64 bits for the rest of the process."""
    jax = pytest.importorskip("jax")
    from symnet.bench import pinn
    data = pinn._data(0, 20, 4)
    params = pinn.symnet_step("float64", layers=3, data=data).params()
    pinn.jax_step("float64", params, data)()
    assert jax.numpy.asarray(1.0).dtype == np.float32
    step = pinn.jax_step("float32", params, data)
    step()
    assert all(v.dtype == np.float32 for v in step.params().values())
