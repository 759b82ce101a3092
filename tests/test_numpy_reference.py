"""Tests of the independent numpy reference back-propagation and of the
stand-alone helper modules symnet.runtime.schedules, symnet.runtime.history, symnet.datasets."""

import importlib
import importlib.util
import math
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _load(name, path):
    """Import ``name`` normally; if that fails (e.g. the package __init__ is
    unfinished), load the module straight from its file."""
    try:
        return importlib.import_module(name)
    except Exception:
        alias = "_standalone_" + name.replace(".", "_")
        spec = importlib.util.spec_from_file_location(alias, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[alias] = mod
        spec.loader.exec_module(mod)
        return mod


ref = _load("numpy_reference", os.path.join(HERE, "numpy_reference.py"))
schedules = _load("symnet.runtime.schedules", os.path.join(ROOT, "symnet", "schedules.py"))
history = _load("symnet.runtime.history", os.path.join(ROOT, "symnet", "history.py"))
datasets = _load("symnet.datasets", os.path.join(ROOT, "symnet", "datasets.py"))


# --------------------------------------------------------------------------
# numpy reference back-propagation
# --------------------------------------------------------------------------

ACTS = ["linear", "relu", "tanh", "sigmoid", "softplus", "leaky_relu", "elu",
        "gelu", "swish"]
LOSSES = ["mse", "bce", "softmax_cross_entropy"]


def _problem(act, loss, seed, sizes=(3, 5, 4, 3), batch=6, bias=(True, False, True)):
    """A small MLP, data and targets; activations [act, act, out]."""
    rng = np.random.default_rng(seed)
    params = {}
    for k in range(1, len(sizes)):
        params[f"W{k}"] = rng.normal(size=(sizes[k], sizes[k - 1])) / np.sqrt(sizes[k - 1])
        if bias[k - 1]:
            params[f"b{k}"] = rng.normal(scale=0.3, size=sizes[k])
    X = rng.normal(size=(batch, sizes[0]))
    out = "sigmoid" if loss == "bce" else act
    acts = [act] * (len(sizes) - 2) + [out]
    if loss == "softmax_cross_entropy":
        T = rng.dirichlet(np.ones(sizes[-1]), size=batch)      # probability rows
    elif loss == "bce":
        T = rng.uniform(size=(batch, sizes[-1]))
    else:
        T = rng.normal(size=(batch, sizes[-1]))
    return params, X, T, acts


def _away_from_kinks(act, loss, min_abs=1e-3):
    """First seed whose pre-activations all stay |z| > min_abs."""
    for seed in range(100):
        params, X, T, acts = _problem(act, loss, seed)
        _, Z, _ = ref._forward_cache(params, X, acts)
        if all(np.abs(z).min() > min_abs for z in Z):
            return params, X, T, acts
    raise AssertionError("no seed away from kinks")  # pragma: no cover


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTS)
def test_reference_gradient_matches_finite_differences(act, loss):
    params, X, T, acts = _away_from_kinks(act, loss)
    L, g = ref.loss_and_grad(params, X, T, acts, loss)
    assert set(g) == set(params)
    assert "b2" not in g                       # layer 2 has no bias
    for k in params:
        assert g[k].shape == params[k].shape
    assert L == pytest.approx(ref.loss(params, X, T, acts, loss), rel=1e-14)
    fd = ref.finite_difference_grad(lambda p: ref.loss(p, X, T, acts, loss), params)
    for k in params:
        np.testing.assert_allclose(g[k], fd[k], rtol=1e-6, atol=1e-8, err_msg=k)


def test_loss_is_batch_mean_of_per_example_losses():
    params, X, T, acts = _problem("tanh", "softmax_cross_entropy", 0)
    L, g = ref.loss_and_grad(params, X, T, acts, "softmax_cross_entropy")
    parts = [ref.loss_and_grad(params, X[i:i + 1], T[i:i + 1], acts,
                               "softmax_cross_entropy") for i in range(len(X))]
    assert L == pytest.approx(np.mean([p[0] for p in parts]), rel=1e-12)
    for k in params:
        np.testing.assert_allclose(g[k], np.mean([p[1][k] for p in parts], axis=0),
                                   rtol=1e-12, atol=1e-15)


def test_activation_values_and_kink_conventions():
    A = ref.ACTIVATIONS
    z = np.array([-1.0, 0.0, 1.0])
    np.testing.assert_allclose(A["relu"][0](z), [0, 0, 1])
    np.testing.assert_allclose(A["leaky_relu"][0](z), [-0.01, 0, 1])
    np.testing.assert_allclose(A["elu"][0](z), [math.exp(-1) - 1, 0, 1])
    np.testing.assert_allclose(A["softplus"][0](z), np.log1p(np.exp(z)))
    np.testing.assert_allclose(A["sigmoid"][0](z), 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(A["swish"][0](z), z / (1 + np.exp(-z)))
    np.testing.assert_allclose(A["gelu"][0](np.array([1.0])), [0.8411919906082768])
    zero = np.array([0.0])
    assert A["relu"][1](zero)[0] == 0.0          # ReLU'(0) = 0
    assert A["leaky_relu"][1](zero)[0] == 0.01   # left slope at the kink
    assert A["elu"][1](zero)[0] == 1.0
    # large |z| stays finite
    big = np.array([-800.0, 800.0])
    for name, (f, df) in A.items():
        assert np.all(np.isfinite(df(big))), name
        if name != "linear":
            assert np.all(np.isfinite(f(big))), name


def test_forward_shapes_and_hand_example():
    params = {"W1": np.array([[1.0, 2.0], [-1.0, 0.5]]), "b1": np.array([0.0, 1.0]),
              "W2": np.array([[1.0, 1.0]])}
    X = np.array([[1.0, 1.0], [2.0, -1.0]])
    O = ref.forward(params, X, ["relu", "linear"])
    # layer 1: z = [[3, 0.5], [0, -2.5]] -> relu [[3, 0.5], [0, 0]]
    np.testing.assert_allclose(O, [[3.5], [0.0]])
    with pytest.raises(ValueError):
        ref.forward(params, X, ["relu"])
    with pytest.raises(ValueError):
        ref.forward(params, X, ["relu", "nope"])


def test_finite_difference_does_not_modify_params():
    p = {"a": np.array([1.0, 2.0]), "M": np.eye(2)}
    keep = {k: v.copy() for k, v in p.items()}
    g = ref.finite_difference_grad(lambda q: float((q["a"] ** 2).sum() + 3 * q["M"][0, 1]), p)
    np.testing.assert_allclose(g["a"], [2.0, 4.0], rtol=1e-8)
    np.testing.assert_allclose(g["M"], [[0, 3], [0, 0]], atol=1e-8)
    for k in p:
        np.testing.assert_array_equal(p[k], keep[k])


# --------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------

S = schedules


def _all_schedules():
    return [S.Constant(0.1), S.RobbinsMonro(0.1, 100), S.PowerDecay(0.5, 10, 0.75),
            S.PowerDecay(0.5, 10, 0.5), S.StepDecay(1.0, 0.5, 7),
            S.Exponential(0.3, 0.99), S.Cosine(0.2, 50), S.Cosine(0.2, 50, 0.01)]


def test_schedule_known_values():
    assert S.Constant(0.1)(12345) == 0.1
    assert S.RobbinsMonro(0.1, 100)(0) == pytest.approx(0.1)
    assert S.RobbinsMonro(0.1, 100)(100) == pytest.approx(0.05)
    assert S.RobbinsMonro(0.1, 100)(300) == pytest.approx(0.025)
    assert S.PowerDecay(1.0, 1, 0.5)(3) == pytest.approx(0.5)
    assert S.PowerDecay(2.0, 2, 1.0)(2) == pytest.approx(1.0)
    s = S.StepDecay(1.0, 0.5, 10)
    assert [s(t) for t in (0, 9, 10, 19, 20, 25)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert S.Exponential(1.0, 0.5)(3) == pytest.approx(0.125)
    c = S.Cosine(1.0, 10, 0.1)
    assert c(0) == pytest.approx(1.0)
    assert c(5) == pytest.approx(0.55)
    assert c(10) == pytest.approx(0.1)
    assert c(1000) == pytest.approx(0.1)
    assert isinstance(c(3), float)


def test_robbins_monro_classification():
    rm = {type(s).__name__ + str(getattr(s, "p", "")) + str(getattr(s, "eta_min", "")):
          s.robbins_monro for s in _all_schedules()}
    assert rm == {"Constant": False, "RobbinsMonro1.0": True, "PowerDecay0.75": True,
                  "PowerDecay0.5": False, "StepDecay": False, "Exponential": False,
                  "Cosine0.0": False, "Cosine0.01": False}
    assert S.PowerDecay(1, 1, 1.0).robbins_monro
    assert not S.PowerDecay(1, 1, 0.3).robbins_monro
    assert not S.StepDecay(1, 1.0, 5).robbins_monro


def test_schedule_str():
    s = S.RobbinsMonro(0.1, 100)
    assert str(s) == ("RobbinsMonro(eta0=0.1, tau=100): eta_t = 0.1/(1 + t/100)  "
                      "[Robbins–Monro: sum eta = inf, sum eta^2 < inf]")
    assert repr(s) == str(s)
    for sch in _all_schedules():
        text = str(sch)
        assert text.startswith(type(sch).__name__ + "(")
        assert "eta_t =" in text
        assert ("not Robbins–Monro" in text) == (not sch.robbins_monro)


@pytest.mark.parametrize("t0,n", [(0, 1), (0, 100), (37, 64), (5, 0)])
def test_vectorised_values_equal_scalar_calls(t0, n):
    for s in _all_schedules():
        v = s.values(t0, n)
        assert v.dtype == np.float64 and v.shape == (n,)
        np.testing.assert_allclose(v, [s(t) for t in range(t0, t0 + n)],
                                   rtol=1e-15, atol=0, err_msg=str(s))


@pytest.mark.parametrize("make,arg", [
    (lambda: S.Constant(0), "lr"), (lambda: S.Constant(-0.1), "lr"),
    (lambda: S.Constant(float("inf")), "lr"), (lambda: S.Constant("0.1"), "lr"),
    (lambda: S.RobbinsMonro(0.1, 0), "tau"), (lambda: S.RobbinsMonro(-1, 10), "eta0"),
    (lambda: S.PowerDecay(0.1, 10, 0), "p"), (lambda: S.PowerDecay(0.1, 10, 1.5), "p"),
    (lambda: S.StepDecay(0.1, 0, 10), "drop"), (lambda: S.StepDecay(0.1, 1.5, 10), "drop"),
    (lambda: S.StepDecay(0.1, 0.5, 0), "every"), (lambda: S.StepDecay(0.1, 0.5, 2.5), "every"),
    (lambda: S.Exponential(0.1, 1.01), "gamma"), (lambda: S.Exponential(0.1, 0), "gamma"),
    (lambda: S.Cosine(0.1, 0), "total_steps"), (lambda: S.Cosine(0.1, 10, -1), "eta_min"),
    (lambda: S.Cosine(0.1, 10, 0.2), "eta_min"),
])
def test_bad_schedule_arguments_raise(make, arg):
    with pytest.raises(ValueError, match=arg) as e:
        make()
    assert "got" in str(e.value)


def test_bad_steps_raise():
    with pytest.raises(ValueError):
        S.Constant(0.1)(-1)
    with pytest.raises(ValueError):
        S.Constant(0.1).values(0, -1)


def test_as_schedule_and_dict_round_trip():
    c = S.as_schedule(0.05)
    assert isinstance(c, S.Constant) and c(10) == 0.05
    assert S.as_schedule(np.float32(0.5))(0) == 0.5
    r = S.RobbinsMonro(0.1, 10)
    assert S.as_schedule(r) is r
    for bad in ("0.1", None, [0.1], True):
        with pytest.raises(TypeError, match="step size"):
            S.as_schedule(bad)
    for s in _all_schedules():
        d = s.to_dict()
        s2 = S.from_dict(d)
        assert type(s2) is type(s) and s2 == s
        np.testing.assert_array_equal(s2.values(0, 20), s.values(0, 20))
    with pytest.raises(ValueError):
        S.from_dict({"type": "Nope"})


# --------------------------------------------------------------------------
# history
# --------------------------------------------------------------------------

def _history(n=20, diverge=False):
    h = history.History(method="minibatch")
    for e in range(n):
        h.record_epoch(10.0 * 0.6 ** e, lr=np.full(5, 0.1 / (1 + e)),
                       accuracy=min(1.0, 0.1 * e), val_loss=11.0 * 0.6 ** e)
    if diverge:
        h.record_epoch(float("nan"), lr=[0.1] * 5)
        h.stopped = "diverged"
    h.wall_time = 1.25
    return h


def test_history_record_and_str():
    h = _history(20)
    assert h.epochs == 20 and h.steps == 100 and h.lr.shape == (100,)
    assert h.steps_per_epoch == [5] * 20
    assert h.final_loss == pytest.approx(10 * 0.6 ** 19)
    assert h.val_accuracy == []
    text = str(h)
    assert "minibatch" in text and "completed" in text and "steps=100" in text
    assert "val_loss" in text and "val_accuracy" not in text
    assert "..." in text                      # long tables are shortened
    short = str(_history(3))
    assert "..." not in short and len(short.splitlines()) == 2 + 1 + 3
    hd = _history(3, diverge=True)
    assert hd.diverged and "diverged" in str(hd) and "nan" in str(hd)
    d = hd.to_dict()
    assert d["method"] == "minibatch" and len(d["lr"]) == hd.steps


def test_history_scalar_lr():
    h = history.History(method="sd")
    h.record_epoch(1.0, lr=0.1, steps=3)
    assert h.steps == 3 and h.lr.tolist() == [0.1, 0.1, 0.1]
    assert "sd" in str(history.History(method="sd"))   # empty history prints


def test_history_plot_to_file(tmp_path):
    pytest.importorskip("matplotlib")
    h = _history(20, diverge=True)
    path = tmp_path / "loss.png"
    fig = h.plot(path=str(path))
    assert path.exists() and path.stat().st_size > 1000
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"            # 10 .. 10*0.6^19: > 2 decades
    assert len(ax.get_lines()) == 2
    fig2 = _history(3).plot(path=str(tmp_path / "short.png"))
    assert fig2.axes[0].get_yscale() == "linear"


def test_history_per_output_metrics(tmp_path):
    """Several outputs' metrics (per_output): attributes, to_dict keys beside the fields
    (a field keeps its name), columns of the table, curves of the accuracy panel."""
    h = history.History(method="sd")
    for e in range(3):
        h.record_epoch(1.0 / (e + 1), lr=0.1, steps=1,
                       outputs={"moon_accuracy": 0.5 + 0.1 * e, "radius_mse": 2.0 - e,
                                "val_moon_accuracy": 0.4 + 0.1 * e})
    assert h.moon_accuracy == [0.5, 0.6, 0.7] and h.radius_mse == [2.0, 1.0, 0.0]
    assert h.accuracy == [] and h.per_output["val_moon_accuracy"] == h.val_moon_accuracy
    d = h.to_dict()
    assert d["radius_mse"] == [2.0, 1.0, 0.0] and d["per_output"] == h.per_output
    assert set(d) == set(h.__dataclass_fields__) | set(h.per_output)
    text = str(h)
    assert text.splitlines()[2].split() == ["epoch", "loss", "moon_accuracy", "radius_mse",
                                            "val_moon_accuracy"]
    with pytest.raises(AttributeError, match="no attribute 'moon_loss'"):
        _ = h.moon_loss
    h2 = history.History()
    h2.record_epoch(1.0, lr=0.1, steps=1, outputs={"val_accuracy": 0.5})  # output "val"
    assert h2.val_accuracy == [] and h2.to_dict()["val_accuracy"] == []
    assert h2.per_output == {"val_accuracy": [0.5]}
    pytest.importorskip("matplotlib")
    fig = h.plot(path=str(tmp_path / "h.png"))
    acc_ax = fig.axes[1]
    assert [line.get_label() for line in acc_ax.get_lines()] == [
        "moon training accuracy", "moon validation accuracy"]


def test_history_plot_into_axes():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    fig = Figure()
    ax = fig.add_subplot()
    assert _history(4).plot(ax=ax) is fig


# --------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------

D = datasets


def test_digits():
    X, y = D.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.all(np.round(X * 16) == X * 16)
    assert set(y.tolist()) == set(range(10))
    X2, _ = D.load_digits()
    X2[0, 0] = 5.0                               # callers get their own copies
    assert D.load_digits()[0][0, 0] == X[0, 0]


def test_digits_is_the_known_data_set():
    """Class counts, pixel total and the first image of the UCI digits test set."""
    X, y = D.load_digits()
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert int(round((X * 16).sum())) == 561718
    assert (X[0, :16] * 16).tolist() == [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0]
    assert y[:5].tolist() == [0, 1, 2, 3, 4]


def test_one_hot():
    T = D.one_hot([0, 2, 1, 2])
    np.testing.assert_array_equal(T, [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]])
    assert T.dtype == np.float64
    assert D.one_hot(np.array([1]), k=4).shape == (1, 4)
    with pytest.raises(ValueError):
        D.one_hot([0, 3], k=3)
    with pytest.raises(ValueError):
        D.one_hot([-1, 0])
    with pytest.raises(ValueError):
        D.one_hot([[0, 1]])


def test_train_test_split():
    X = np.arange(40.0).reshape(20, 2)
    y = np.arange(20)
    a = D.train_test_split(X, y, test_fraction=0.25, seed=3)
    b = D.train_test_split(X, y, test_fraction=0.25, seed=3)
    c = D.train_test_split(X, y, test_fraction=0.25, seed=4)
    Xtr, Xte, ytr, yte = a
    assert Xtr.shape == (15, 2) and Xte.shape == (5, 2)
    assert sorted(np.concatenate([ytr, yte]).tolist()) == list(range(20))
    np.testing.assert_array_equal(Xtr[:, 0], 2 * ytr)     # rows stay paired
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[3], c[3])
    with pytest.raises(ValueError):
        D.train_test_split(X, y, test_fraction=1.0)
    with pytest.raises(ValueError):
        D.train_test_split(X, y[:5])


def test_make_moons():
    X, y = D.make_moons(101, noise=0.0, seed=0)
    assert X.shape == (101, 2) and y.shape == (101,) and y.dtype == np.int64
    assert (y == 0).sum() == 50 and (y == 1).sum() == 51
    r0 = np.hypot(X[y == 0, 0], X[y == 0, 1])
    r1 = np.hypot(X[y == 1, 0] - 1, X[y == 1, 1] - 0.5)
    np.testing.assert_allclose(r0, 1.0)
    np.testing.assert_allclose(r1, 1.0)
    assert X[y == 0, 1].min() >= -1e-12 and X[y == 1, 1].max() <= 0.5 + 1e-12
    Xa, ya = D.make_moons(200, noise=0.1, seed=7)
    Xb, yb = D.make_moons(200, noise=0.1, seed=7)
    np.testing.assert_array_equal(Xa, Xb)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(Xa, D.make_moons(200, noise=0.1, seed=8)[0])


def test_make_moons_unshuffled_order():
    """Without shuffling: the outer moon from angle 0 to π, then the inner one."""
    X, y = D.make_moons(6, noise=0.0, shuffle=False)
    np.testing.assert_allclose(X[:3], [[1, 0], [0, 1], [-1, 0]], atol=1e-12)
    np.testing.assert_allclose(X[3:], [[0, 0.5], [1, -0.5], [2, 0.5]], atol=1e-12)
    assert y.tolist() == [0, 0, 0, 1, 1, 1]


def test_xor_and_regression():
    X, T = D.xor()
    assert X.shape == (4, 2) and T.shape == (4, 1)
    assert X.dtype == T.dtype == np.float64
    np.testing.assert_array_equal(T[:, 0], np.logical_xor(X[:, 0], X[:, 1]))
    X, T = D.make_regression_1d(50, seed=1)
    assert X.shape == (50, 1) and T.shape == (50, 1)
    assert X.min() >= -2 and X.max() <= 2 and np.all(np.diff(X[:, 0]) >= 0)
    np.testing.assert_allclose(T[:, 0], np.sin(3 * X[:, 0]) + 0.3 * X[:, 0] ** 2)
    Xn, Tn = D.make_regression_1d(50, noise=0.1, seed=1)
    np.testing.assert_array_equal(Xn, X)
    assert 0 < np.abs(Tn - T).max() < 1.0
    np.testing.assert_array_equal(Tn, D.make_regression_1d(50, noise=0.1, seed=1)[1])


def test_standardize():
    X, _ = D.load_digits()
    Xs, mean, std = D.standardize(X)
    assert np.all(np.isfinite(Xs))
    np.testing.assert_allclose(Xs.mean(axis=0), 0, atol=1e-12)
    nonconst = X.std(axis=0) > 0
    np.testing.assert_allclose(Xs.std(axis=0)[nonconst], 1, rtol=1e-12)
    Xt, _, _ = D.standardize(X[:10], mean, std)
    np.testing.assert_allclose(Xt, Xs[:10])


def test_history_plot_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import now fails
    with pytest.raises(ImportError, match="pip install matplotlib"):
        _history(3).plot()
