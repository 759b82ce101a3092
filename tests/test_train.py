"""Training: the notes' three update rules against numpy, the compiled epoch against
stepping from Python, reproducibility, bad data, divergence, Ctrl-C, optimizers."""

import os
import signal
import sys
import warnings

import numpy as np
import numpy_reference as ref
import pytest

import symnet as sn
from symnet import datasets
from symnet.runtime import schedules, train
from symnet.runtime.train import sample_indices

ACTS = ["tanh", "linear"]


@pytest.fixture(scope="module")
def xor64():
    net = sn.Network(sn.Input(2), sn.Dense(8, "tanh"), sn.Dense(1, "sigmoid"), loss="bce")
    return net.compile(dtype="float64")


@pytest.fixture(scope="module")
def reg64():
    """3 → 4 (tanh) → 2 (linear), mse, float64: small enough to check against numpy."""
    net = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.Dense(2), loss="mse")
    return net.compile(dtype="float64")


@pytest.fixture(scope="module")
def reg32():
    net = sn.Network(sn.Input(3), sn.Dense(16, "tanh"), sn.Dense(2), loss="mse")
    return net.compile(dtype="float32")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(10, 3))
    T = rng.normal(size=(10, 2))
    return X, T


def _params(model):
    return {k: v.astype(np.float64).copy() for k, v in model.params.items()}


def _numpy_steps(params, X, T, batches, lrs):
    """The notes' rule W ← W − η_t (1/|N(t)|) Σ_{n∈N(t)} ∂L_n/∂W, in numpy."""
    p = {k: v.copy() for k, v in params.items()}
    for rows, lr in zip(batches, lrs):
        _, g = ref.loss_and_grad(p, X[rows], T[rows], ACTS, "mse")
        for k in p:
            p[k] -= lr * g[k]
    return p


def _assert_params(model, expected, rtol=1e-12):
    for k, v in expected.items():
        np.testing.assert_allclose(model.params[k], v, rtol=rtol, atol=1e-14, err_msg=k)


# ------------------------------------------------------------ the three rules

@pytest.mark.parametrize("method,args", [
    ("sd", {"epochs": 3000, "lr": 2.0}),
    ("sgd", {"epochs": 1000, "lr": 0.5}),
    ("minibatch", {"epochs": 1500, "lr": 1.0, "batch_size": 2}),
])
def test_each_method_learns_xor(xor64, method, args):
    X, T = datasets.xor()
    xor64.init_params(0)
    hist = xor64.fit(X, T, method=method, seed=0, progress=False, **args)
    assert hist.stopped == "completed" and hist.method == method
    out = xor64.forward(X)
    assert ((out > 0.5) == (T > 0.5)).all(), out.ravel()
    assert np.abs(out - T).max() < 0.1
    assert hist.val_accuracy == [] and hist.final_loss < 0.05


def test_sgd_epoch_is_the_notes_rule(reg64, data):
    X, T = data
    reg64.init_params(3)
    start = _params(reg64)
    lr = schedules.RobbinsMonro(0.1, tau=3)
    hist = reg64.fit(X, T, method="sgd", epochs=1, lr=lr, seed=11, progress=False)
    idx = sample_indices("sgd", len(X), np.random.default_rng(11))
    assert hist.steps == len(X) and len(set(idx.tolist())) < len(X)  # with replacement
    expected = _numpy_steps(start, X, T, [[n] for n in idx], lr.values(0, len(X)))
    _assert_params(reg64, expected)
    np.testing.assert_array_equal(hist.lr, lr.values(0, len(X)))


def test_minibatch_epoch_is_the_notes_rule_with_a_short_last_batch(reg64, data):
    X, T = data
    reg64.init_params(4)
    start = _params(reg64)
    hist = reg64.fit(X, T, method="minibatch", batch_size=4, epochs=2, lr=0.3, seed=5,
                     progress=False)
    rng = np.random.default_rng(5)
    batches = []
    for _ in range(2):
        perm = sample_indices("minibatch", len(X), rng)
        assert sorted(perm.tolist()) == list(range(len(X)))   # without replacement
        batches += [perm[0:4], perm[4:8], perm[8:10]]          # last batch: its own mean
    assert hist.steps_per_epoch == [3, 3]
    _assert_params(reg64, _numpy_steps(start, X, T, batches, [0.3] * 6))


def test_sd_epoch_is_one_full_batch_step(reg64, data):
    X, T = data
    reg64.init_params(5)
    start = _params(reg64)
    hist = reg64.fit(X, T, method="sd", epochs=3, lr=0.2, progress=False)
    assert hist.steps == 3 and hist.steps_per_epoch == [1, 1, 1]
    _assert_params(reg64, _numpy_steps(start, X, T, [slice(None)] * 3, [0.2] * 3))
    assert hist.loss[0] == pytest.approx(ref.loss(start, X, T, ACTS, "mse"), rel=1e-12)


@pytest.mark.parametrize("method,each", [("sd", "the whole training set"),
                                         ("sgd", "one example")])
def test_a_batch_size_given_to_sd_or_sgd_is_said_to_be_unused(reg64, data, method, each):
    """It was dropped without a word: fit(method="sgd", batch_size=16) trains on one
    example per step."""
    X, T = data
    reg64.init_params(6)
    with pytest.warns(UserWarning, match=rf"fit\(method='{method}'\): batch_size=16 is not "
                                         rf"used; each step takes {each}"):
        hist = reg64.fit(X, T, method=method, epochs=1, batch_size=16, seed=1,
                         progress=False)
    assert hist.steps == (1 if method == "sd" else len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # without batch_size, and for minibatch
        reg64.fit(X, T, method=method, epochs=1, seed=1, progress=False)
        reg64.fit(X, T, method="minibatch", epochs=1, batch_size=16, seed=1, progress=False)


def test_minibatch_with_batch_n_equals_sd(reg32, data):
    X, T = data
    results = []
    for method, shuffle in (("sd", True), ("minibatch", False), ("minibatch", True)):
        reg32.init_params(1)
        reg32.fit(X, T, method=method, batch_size=len(X), epochs=4, lr=0.1, seed=0,
                  shuffle=shuffle, progress=False)
        results.append(reg32.theta.copy())
    np.testing.assert_array_equal(results[0], results[1])   # same order: bit-identical
    np.testing.assert_allclose(results[0], results[2], rtol=1e-5, atol=1e-6)


# ------------------------------------------------ one compiled call per epoch

@pytest.mark.parametrize("method,B", [("minibatch", 3), ("sgd", 1)])
def test_epoch_in_one_call_equals_stepping_from_python(reg32, data, method, B):
    X, T = data
    X32, T32 = X.astype(np.float32), T.astype(np.float32)
    lr = schedules.Exponential(0.2, gamma=0.9)
    reg32.init_params(2)
    reg32.fit(X, T, method=method, batch_size=B, epochs=3, lr=lr, seed=9, progress=False)
    fitted = reg32.theta.copy()
    reg32.init_params(2)
    rng, t = np.random.default_rng(9), 0
    lr = schedules.as_schedule(lr)
    for _ in range(3):
        idx = sample_indices(method, len(X), rng)
        for s in range(0, len(idx), B):
            rows = idx[s:s + B]
            reg32.step(X32[rows], T32[rows], lr=lr(t))
            t += 1
    np.testing.assert_array_equal(fitted, reg32.theta)


def test_long_epochs_split_into_calls_give_the_same_result(reg32, data, monkeypatch):
    X, T = data
    reg32.init_params(2)
    reg32.fit(X, T, method="minibatch", batch_size=2, epochs=2, lr=0.1, seed=3,
              progress=False)
    whole = reg32.theta.copy()
    monkeypatch.setattr(train, "CALL_FLOPS", 1.0)        # one step per call
    calls = _count_calls(reg32, monkeypatch)
    reg32.init_params(2)
    hist = reg32.fit(X, T, method="minibatch", batch_size=2, epochs=2, lr=0.1, seed=3,
                     progress=False)
    assert calls["n"] == 10 and hist.steps == 10
    np.testing.assert_array_equal(whole, reg32.theta)


def _count_calls(model, monkeypatch, after=None):
    real = model.runtime.train_epoch
    calls = {"n": 0}

    def counted(*args):
        done = real(*args)
        calls["n"] += 1
        if after is not None:
            after(calls["n"])
        return done
    monkeypatch.setattr(model.runtime, "train_epoch", counted)
    return calls


@pytest.mark.parametrize("method", ["sd", "sgd", "minibatch"])
def test_same_seed_gives_bit_identical_parameters(reg32, data, method):
    X, T = data
    runs = []
    for seed in (21, 21, 22):
        reg32.init_params(0)
        reg32.fit(X, T, method=method, batch_size=4, epochs=3, lr=0.05, seed=seed,
                  optimizer="adam", progress=False)
        runs.append(reg32.theta.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    if method != "sd":
        assert not np.array_equal(runs[0], runs[2])


# ------------------------------------------------------------ nothing lost

@pytest.mark.parametrize("where", ["X", "T", "val_X", "val_T"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_data_is_refused_before_any_step(reg64, data, where, bad):
    X, T = data[0].copy(), data[1].copy()
    Xv, Tv = X.copy(), T.copy()
    {"X": X, "T": T, "val_X": Xv, "val_T": Tv}[where][3, 1] = bad
    reg64.init_params(0)
    before = reg64.theta.copy()
    with pytest.raises(ValueError, match=r"NaN or inf .* row 3"):
        reg64.fit(X, T, validation_data=(Xv, Tv), epochs=2, progress=False)
    np.testing.assert_array_equal(before, reg64.theta)


@pytest.mark.parametrize("method", ["sd", "sgd", "minibatch"])
def test_divergence_restores_last_finite_parameters_and_warns(reg64, method):
    X, T = datasets.make_regression_1d(n=12)
    X = np.hstack([X, X ** 2, -X])
    T = np.hstack([T, T])
    reg64.init_params(0)
    start = reg64.theta.copy()
    with pytest.warns(RuntimeWarning, match="diverged at step .*smaller learning rate") \
            as caught:
        hist = reg64.fit(X, T, method=method, batch_size=4, epochs=100, lr=1e3, seed=1,
                         progress=False)
    assert any(w.filename == __file__ for w in caught if "diverged" in str(w.message))
    assert hist.stopped == "diverged" and hist.diverged
    fitted = reg64.theta.copy()
    assert np.isfinite(fitted).all()
    batch = {"sd": 12, "sgd": 1, "minibatch": 4}[method]
    kept = _replay_diverging(reg64, start, X, T, method, batch, lr=1e3, epochs=100, seed=1)
    np.testing.assert_array_equal(fitted, reg64.theta)
    assert hist.steps == kept == len(hist.lr)


@pytest.mark.parametrize("method", ["sd", "minibatch"])
def test_a_loss_not_finite_before_any_step_names_the_output_not_the_step_size(method):
    """bce on a sum of two sigmoids (values up to 2): the loss is NaN at the starting
    parameters.  The warning said "Try a smaller learning rate", which cannot help, and
    pointed inside symnet; it now names the output and its range, at the user's line."""
    I = sn.Input(4)
    a, b = sn.Dense(3, "sigmoid")(I), sn.Dense(3, "sigmoid")(I)
    model = sn.Network(I, sn.Add(name="S")([a, b]), loss="bce").compile(dtype="float64",
                                                                          seed=0)
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(16, 4)), (rng.uniform(size=(16, 3)) > 0.5).astype(float)
    start = model.theta.copy()
    O = model.forward(X)
    assert O.max() > 1                                       # what the message must name
    with pytest.warns(RuntimeWarning) as caught:
        hist = model.fit(X, T, method=method, epochs=2, progress=False)
    [w] = [w for w in caught if "step 0" in str(w.message)]
    text = str(w.message)
    assert "a smaller learning rate will not help" in text
    assert f"Output 'S' gives values in [{O.min():.3g}, {O.max():.3g}]" in text
    assert "needs an output in (0, 1)" in text and "Try a smaller" not in text
    assert w.filename == __file__                            # the user's line
    assert hist.stopped == "diverged" and hist.steps == 0
    np.testing.assert_array_equal(model.theta, start)
    model.theta[0] = np.nan                                   # parameters themselves
    with pytest.warns(RuntimeWarning, match=r"step 0.*The parameters hold NaN or inf"):
        model.fit(X, T, method=method, epochs=1, progress=False)


def _replay_diverging(model, start, X, T, method, batch, lr, epochs, seed) -> int:
    """fit's steps replayed from Python from θ = start: step until a loss is not finite,
    then undo the last update; the number of steps kept."""
    model.theta[...] = start
    rng, prev, kept = np.random.default_rng(seed), start.copy(), 0
    for _ in range(epochs):
        idx = sample_indices(method, len(X), rng)
        for s in range(0, len(idx), batch):
            snapshot = model.theta.copy()
            loss = model.step(X[idx[s:s + batch]], T[idx[s:s + batch]], lr=lr)
            if not np.isfinite(loss):
                model.theta[...] = prev
                return kept - 1
            prev, kept = snapshot, kept + 1
    return kept


@pytest.mark.parametrize("batch_size", [4, 6])
def test_calls_of_odd_and_even_steps_of_a_network_past_the_chunked_pass(batch_size):
    """A network whose update is a pass of its own (not made in the jobs of a chunked
    pass): a call of an odd number of steps (12 rows in batches of 4: three) makes its
    first update in params after keeping θ in prev, an even one (batches of 6) trades
    the two buffers.  Either way θ is that of the same steps one by one, and a
    divergence restores the θ before the last update, as the replay does."""
    net = sn.Network(sn.Input(400), sn.Dense(400, "tanh"), sn.Dense(2), loss="mse")
    model = net.compile(dtype="float64")
    assert "first_in_place = prev != NULL" in model.c_source
    rng = np.random.default_rng(3)
    X, T = rng.normal(size=(12, 400)) / 20, rng.normal(size=(12, 2))
    model.init_params(0)
    start = model.theta.copy()
    model.fit(X, T, method="minibatch", batch_size=batch_size, epochs=3, lr=0.05, seed=2,
              progress=False)
    fitted = model.theta.copy()
    model.theta[...] = start
    rng = np.random.default_rng(2)
    for _ in range(3):
        idx = sample_indices("minibatch", len(X), rng)
        for s in range(0, len(idx), batch_size):
            model.step(X[idx[s:s + batch_size]], T[idx[s:s + batch_size]], lr=0.05)
    np.testing.assert_array_equal(fitted, model.theta)
    assert not np.array_equal(fitted, start)
    # diverging: every call ends with θ before the step whose loss was not finite
    model.theta[...] = start
    with pytest.warns(RuntimeWarning, match="diverged"):
        hist = model.fit(X, T * 1e3, method="minibatch", batch_size=batch_size, epochs=50,
                         lr=50.0, seed=1, progress=False)
    assert hist.diverged and np.isfinite(model.theta).all()
    fitted = model.theta.copy()
    kept = _replay_diverging(model, start, X, T * 1e3, "minibatch", batch_size, lr=50.0,
                             epochs=50, seed=1)
    np.testing.assert_array_equal(fitted, model.theta)
    assert hist.steps == kept


def test_keyboard_interrupt_drops_only_the_call_in_flight(reg32, data, monkeypatch):
    X, T = data
    reg32.init_params(0)
    reg32.fit(X, T, method="minibatch", batch_size=4, epochs=2, lr=0.1, seed=4,
              progress=False)
    two_epochs = reg32.theta.copy()

    def interrupt(n):
        if n == 3:                       # the third epoch's call ran, then Ctrl-C
            raise KeyboardInterrupt
    _count_calls(reg32, monkeypatch, after=interrupt)
    reg32.init_params(0)
    hist = reg32.fit(X, T, method="minibatch", batch_size=4, epochs=10, lr=0.1, seed=4,
                     progress=False)
    assert hist.stopped == "interrupted" and hist.epochs == 2 and hist.steps == 6
    np.testing.assert_array_equal(two_epochs, reg32.theta)


@pytest.mark.parametrize("when", [2, 3])
def test_keyboard_interrupt_drops_a_one_step_call_in_flight(reg32, data, monkeypatch, when):
    """Calls of one step keep no copy of θ: the step's θ before comes from prev.  A
    KeyboardInterrupt right after call `when` drops that step (θ after when − 1 steps,
    replayed with model.step), and one raised before the runtime ran changes nothing."""
    X, T = data
    monkeypatch.setattr(train, "CALL_FLOPS", 1.0)        # one step per call
    real = reg32.runtime.train_epoch
    calls = {"n": 0}

    def counted(*args):
        calls["n"] += 1
        if calls["n"] == when == 3:      # interrupted before the runtime ran
            raise KeyboardInterrupt
        done = real(*args)
        if calls["n"] == when == 2:      # the call ran, then Ctrl-C
            raise KeyboardInterrupt
        return done
    monkeypatch.setattr(reg32.runtime, "train_epoch", counted)
    reg32.init_params(0)
    hist = reg32.fit(X, T, method="minibatch", batch_size=4, epochs=10, lr=0.1, seed=4,
                     progress=False)
    assert hist.stopped == "interrupted" and hist.steps == when - 1
    fitted = reg32.theta.copy()
    reg32.init_params(0)
    idx = sample_indices("minibatch", len(X), np.random.default_rng(4))
    for s in range(when - 1):
        rows = idx[4 * s:4 * s + 4]
        reg32.step(X[rows].astype(np.float32), T[rows].astype(np.float32), lr=0.1)
    np.testing.assert_array_equal(fitted, reg32.theta)


def test_ctrl_c_signal_stops_after_the_call_and_keeps_it(reg32, data, monkeypatch):
    X, T = data
    monkeypatch.setattr(train, "CALL_FLOPS", 1.0)        # one step per call

    def ctrl_c(n):
        if n == 2:
            os.kill(os.getpid(), signal.SIGINT)
    _count_calls(reg32, monkeypatch, after=ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    reg32.init_params(0)
    hist = reg32.fit(X, T, method="minibatch", batch_size=4, epochs=10, lr=0.1, seed=4,
                     progress=False)
    assert signal.getsignal(signal.SIGINT) is handler    # restored
    assert hist.stopped == "interrupted"
    assert hist.steps == 2 and hist.steps_per_epoch == [2] and hist.epochs == 1
    fitted = reg32.theta.copy()
    # the first two steps of the first epoch, replayed from Python
    reg32.init_params(0)
    idx = sample_indices("minibatch", len(X), np.random.default_rng(4))
    for s in (0, 4):
        rows = idx[s:s + 4]
        reg32.step(X[rows].astype(np.float32), T[rows].astype(np.float32), lr=0.1)
    np.testing.assert_array_equal(fitted, reg32.theta)


# ------------------------------------------------------------ optimizers

def _numpy_optimizer(params, X, T, steps, name, lr, mu=0.9, b1=0.9, b2=0.999, eps=1e-8):
    p = {k: v.copy() for k, v in params.items()}
    s1 = {k: np.zeros_like(v) for k, v in p.items()}
    s2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t in range(1, steps + 1):
        _, g = ref.loss_and_grad(p, X, T, ACTS, "mse")
        for k in p:
            if name == "momentum":
                s1[k] = mu * s1[k] + g[k]
                p[k] -= lr * s1[k]
            else:
                s1[k] = b1 * s1[k] + (1 - b1) * g[k]
                s2[k] = b2 * s2[k] + (1 - b2) * g[k] ** 2
                p[k] -= lr * (s1[k] / (1 - b1 ** t)) / (np.sqrt(s2[k] / (1 - b2 ** t)) + eps)
    return p


@pytest.mark.parametrize("name,kw", [("momentum", {"momentum": 0.8}),
                                     ("adam", {"betas": (0.8, 0.99), "eps": 1e-6})])
@pytest.mark.parametrize("method", ["sd", "minibatch"])
def test_optimizer_steps_equal_numpy(reg64, data, name, kw, method):
    X, T = data
    reg64.init_params(6)
    start = _params(reg64)
    reg64.fit(X, T, method=method, batch_size=len(X), shuffle=False, epochs=2, lr=0.05,
              optimizer=name, progress=False, **kw)
    args = {"momentum": {"mu": 0.8}, "adam": {"b1": 0.8, "b2": 0.99, "eps": 1e-6}}[name]
    _assert_params(reg64, _numpy_optimizer(start, X, T, 2, name, 0.05, **args), rtol=1e-10)


@pytest.mark.parametrize("name,lr", [("sgd", 0.1), ("momentum", 0.05), ("adam", 0.01)])
def test_optimizers_reduce_the_loss(reg32, data, name, lr):
    X, T = data
    reg32.init_params(0)
    before = reg32.loss(X, T)
    hist = reg32.fit(X, T, method="minibatch", batch_size=4, epochs=200, lr=lr, seed=0,
                     optimizer=name, progress=False)
    assert hist.stopped == "completed"
    assert reg32.loss(X, T) < 0.5 * before


# ------------------------------------------------------------ history, progress

def test_history_records_step_sizes_and_validation(xor64):
    X, T = datasets.xor()
    xor64.init_params(0)
    lr = schedules.RobbinsMonro(1.0, tau=2)
    hist = xor64.fit(X, T, method="minibatch", batch_size=3, epochs=4, lr=lr, seed=0,
                     validation_data=(X, T), progress=False)
    assert hist.steps_per_epoch == [2, 2, 2, 2] and hist.steps == 8
    np.testing.assert_array_equal(hist.lr, lr.values(0, 8))
    assert len(hist.val_loss) == len(hist.val_accuracy) == 4
    assert hist.val_loss[-1] == pytest.approx(xor64.loss(X, T))
    out = xor64.forward(X)
    assert hist.val_accuracy[-1] == ((out > 0.5) == (T > 0.5)).mean()
    assert hist.wall_time > 0


def test_softmax_accuracy_is_argmax():
    O = np.array([[0.1, 2.0], [3.0, 1.0], [0.0, 1.0]])
    T = np.array([[0, 1], [0, 1], [0, 1]], float)
    assert train.accuracy("softmax_cross_entropy", O, T) == pytest.approx(2 / 3)
    assert train.accuracy("mse", O, T) is None


def test_progress_without_tqdm_prints_a_line_per_epoch(xor64, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)      # import fails
    X, T = datasets.xor()
    xor64.fit(X, T, method="sd", epochs=3, lr=0.1, progress=True)
    err = capsys.readouterr().err
    assert err.count("epoch ") == 3 and "loss" in err


def test_progress_bar_with_tqdm(xor64, capsys):
    pytest.importorskip("tqdm")
    X, T = datasets.xor()
    xor64.fit(X, T, method="sd", epochs=3, lr=0.1, progress=True)
    assert "3/3" in capsys.readouterr().err
    xor64.fit(X, T, method="sd", epochs=3, lr=0.1, progress=False)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------ bad arguments

@pytest.mark.parametrize("kw,match", [
    ({"method": "adagrad"}, "method must be one of .*got 'adagrad'$"),
    ({"method": "adam"}, "got 'adam'; the method says .* optimizer='adam'"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of"),
    ({"optimizer": "adam", "momentum": 0.9}, "momentum= applies to optimizer momentum"),
    ({"optimizer": "sgd", "betas": (0.9, 0.99)}, "betas= applies to optimizer adam"),
    ({"optimizer": "momentum", "momentum": 1.5}, r"momentum must be a number in \[0, 1\)"),
    ({"optimizer": "adam", "betas": (0.9, 1.0)}, r"betas\[1\] must be"),
    ({"optimizer": "adam", "eps": 0}, "eps must be a positive number"),
    ({"lr": -1.0}, "lr must be"),
    ({"validation_data": np.zeros((2, 2))}, "validation_data must be a pair"),
    ({"seed": "a"}, "^fit: seed must be an integer ≥ 0, got 'a'$"),
    ({"seed": -3}, "^fit: seed must be an integer ≥ 0, got -3$"),
    ({"shuffle": "no"}, "^shuffle must be True or False, got 'no'$"),
    ({"shuffle": None}, "^shuffle must be True or False, got None$"),
    ({"early_stopping": 2, "restore_best": "no"},
     "^restore_best must be True or False, got 'no'$"),
    ({"reset_optimizer": "yes"}, "^reset_optimizer must be True or False, got 'yes'$"),
    ({"validation_split": np.True_}, r"^validation_split must be a fraction in \(0, 1\)"),
    ({"validation_split": np.float32(1.5)}, r"^validation_split must be a fraction in"),
])
def test_bad_arguments_are_refused(xor64, kw, match):
    X, T = datasets.xor()
    before = xor64.theta.copy()
    with pytest.raises(ValueError, match=match):
        xor64.fit(X, T, **kw, progress=False)
    np.testing.assert_array_equal(before, xor64.theta)


def test_numpy_scalars_are_taken_for_validation_split_and_shuffle(reg64, data):
    """np.float32(0.25) is the fraction 0.25 (the last 0.25 of the rows held out),
    np.False_ is False: the same History as Python's float and bool."""
    X, T = data
    runs = []
    for split, shuffle in ((0.2, False), (np.float32(0.2), np.False_)):
        reg64.init_params(0)
        hist = reg64.fit(X, T, epochs=2, batch_size=3, lr=0.05, validation_split=split,
                         shuffle=shuffle, progress=False)
        runs.append((hist.loss, hist.val_loss, hist.steps_per_epoch))
    assert runs[0] == runs[1] and runs[0][2] == [3, 3]     # 8 training rows, batches of 3


def test_bad_shapes_are_refused(xor64):
    X, T = datasets.xor()
    with pytest.raises(ValueError, match="T has 3 rows but X has 4"):
        xor64.fit(X, T[:3], progress=False)
    with pytest.raises(TypeError, match="step size"):
        xor64.fit(X, T, lr="fast", progress=False)


@pytest.mark.parametrize("Xv, Tv, match", [
    (np.zeros((3, 3)), np.zeros(3), r"^validation X has 3 columns but input layer 'I' has 2"),
    (np.zeros(3), np.zeros(3), r"^validation X must be 2-D \(batch, 2\)"),
    (np.zeros((3, 2)), np.zeros(2), r"^validation T has 2 rows but validation X has 3"),
    (np.zeros((3, 2)), np.zeros((3, 4)), r"^validation T has 4 columns but output layer 'O'"),
], ids=["X-width", "X-rank", "T-rows", "T-width"])
def test_bad_shapes_of_the_validation_data_are_named_so(xor64, Xv, Tv, match):
    X, T = datasets.xor()
    with pytest.raises(ValueError, match=match):
        xor64.fit(X, T, validation_data=(Xv, Tv), progress=False)


def test_no_warning_when_training_is_fine(xor64):
    X, T = datasets.xor()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xor64.fit(X, T, epochs=5, progress=False)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_a_bad_seed_of_the_initialisation_is_refused_by_name(seed):
    net = sn.Network(sn.Input(2), sn.Dense(1), loss="mse")
    with pytest.raises(ValueError, match=r"seed must be an integer ≥ 0, got"):
        net.compile(dtype="float64", seed=seed)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("method", ["minibatch", "lbfgs"])
def test_fit_warns_once_when_nothing_is_trainable(backend, method):
    """A fixed formula layer and a frozen Dense: fit has nothing to change, and says so
    once per call (not per epoch); the parameters are untouched."""
    import sympy as sp
    X, T = np.random.default_rng(0).random((8, 3)), np.zeros((8, 3))
    for layer in (sn.Layer(3, lambda x, i: sp.tanh(x[i])), sn.Dense(3, trainable=False)):
        model = sn.Network(sn.Input(3), layer, loss="mse").compile(seed=0, backend=backend)
        before = {k: np.array(v) for k, v in model.params.items()}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(X, T, method=method, epochs=3, progress=False)
        mine = [w for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(mine) == 1 and "no trainable parameters" in str(mine[0].message)
        assert mine[0].filename == __file__
        for k, v in before.items():
            assert np.array_equal(model.params[k], v)
    model = sn.Network(sn.Input(3), sn.Dense(3), loss="mse").compile(seed=0, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X, T, method=method, epochs=1, progress=False)
