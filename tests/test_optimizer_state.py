"""The optimizer's state lives in the model: ``step(..., optimizer=...)`` continues it
from call to call, ``fit`` continues it (``reset_optimizer=True`` starts afresh), and
``save`` / ``symnet.load`` / pickling carry it.  Checked against the update rules
written in numpy on the independent float64 back-propagation of numpy_reference."""

import copy
import pickle

import numpy as np
import numpy_reference as ref
import pytest

import symnet as sn

ACTS = ["tanh", "linear"]
rng = np.random.default_rng(7)
X, T = rng.normal(size=(10, 3)), rng.normal(size=(10, 2))


def _model(seed=0):
    net = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.Dense(2), loss="mse")
    return net.compile(dtype="float64", seed=seed)


def _params(model):
    return {k: v.copy() for k, v in model.params.items()}


def _numpy_run(p, steps, name, lr, mu=0.9, b1=0.9, b2=0.999, eps=1e-8, state=None):
    """``steps`` full-batch updates; state (s1, s2, t) continued when given."""
    p = {k: v.copy() for k, v in p.items()}
    s1, s2, t = state or ({k: np.zeros_like(v) for k, v in p.items()},
                          {k: np.zeros_like(v) for k, v in p.items()}, 0)
    for _ in range(steps):
        t += 1
        _, g = ref.loss_and_grad(p, X, T, ACTS, "mse")
        for k in p:
            if name == "momentum":
                s1[k] = mu * s1[k] + g[k]
                p[k] -= lr * s1[k]
            else:
                s1[k] = b1 * s1[k] + (1 - b1) * g[k]
                s2[k] = b2 * s2[k] + (1 - b2) * g[k] ** 2
                p[k] -= lr * (s1[k] / (1 - b1 ** t)) / (np.sqrt(s2[k] / (1 - b2 ** t)) + eps)
    return p, (s1, s2, t)


def _assert_params(model, want, rtol=1e-12):
    for k, v in want.items():
        np.testing.assert_allclose(model.params[k], v, rtol=rtol, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("name,kw,args", [
    ("adam", {"betas": (0.8, 0.99), "eps": 1e-6}, {"b1": 0.8, "b2": 0.99, "eps": 1e-6}),
    ("momentum", {"momentum": 0.7}, {"mu": 0.7})])
def test_a_loop_of_steps_is_the_optimizer(name, kw, args):
    m = _model()
    start = _params(m)
    losses = [m.step(X, T, 0.05, optimizer=name, **kw) for _ in range(5)]
    assert m.optimizer.name == name and m.optimizer.t == 5
    _assert_params(m, _numpy_run(start, 5, name, 0.05, **args)[0])
    assert losses[-1] < losses[0]


def test_steps_with_lists_and_a_step_split_into_calls_are_the_same(monkeypatch):
    from symnet import guards
    m = _model()
    start = _params(m)
    for _ in range(3):
        m.step(X.tolist(), T.tolist(), 0.05, optimizer="adam")
    _assert_params(m, _numpy_run(start, 3, "adam", 0.05)[0])
    monkeypatch.setattr(guards, "WORK_BYTES", 3 * 8 * m.meta["work_per_row"])
    split = _model()
    assert split.rows_per_call == 3
    for _ in range(3):
        split.step(X, T, 0.05, optimizer="adam")
    _assert_params(split, _numpy_run(start, 3, "adam", 0.05)[0], rtol=1e-10)


def test_fit_continues_the_state_and_reset_starts_afresh():
    m = _model()
    start = _params(m)
    m.fit(X, T, method="sd", epochs=2, lr=0.05, optimizer="adam", progress=False)
    m.fit(X, T, method="sd", epochs=3, lr=0.05, optimizer="adam", progress=False)
    assert m.optimizer.t == 5
    want, state = _numpy_run(start, 5, "adam", 0.05)
    _assert_params(m, want)
    # steps continue what fit left
    m.step(X, T, 0.05, optimizer="adam")
    want, state = _numpy_run(want, 1, "adam", 0.05, state=state)
    _assert_params(m, want)
    # a fresh start: reset_optimizer=True, or model.reset_optimizer()
    m.fit(X, T, method="sd", epochs=2, lr=0.05, optimizer="adam", progress=False,
          reset_optimizer=True)
    _assert_params(m, _numpy_run(want, 2, "adam", 0.05)[0])
    after = _params(m)
    m.reset_optimizer()
    assert m.optimizer is None
    m.step(X, T, 0.05, optimizer="adam")
    _assert_params(m, _numpy_run(after, 1, "adam", 0.05)[0])


def test_minibatch_fit_continues_too():
    m = _model()
    start = _params(m)
    for _ in range(2):
        m.fit(X, T, method="minibatch", batch_size=10, shuffle=False, epochs=2, lr=0.05,
              optimizer="momentum", progress=False)
    _assert_params(m, _numpy_run(start, 4, "momentum", 0.05)[0])


def test_another_optimizer_or_init_params_starts_afresh():
    m = _model()
    m.step(X, T, 0.05, optimizer="adam")
    start = _params(m)
    m.step(X, T, 0.05, optimizer="momentum")
    assert m.optimizer.name == "momentum" and m.optimizer.t == 1
    _assert_params(m, _numpy_run(start, 1, "momentum", 0.05)[0])
    m.init_params(3)
    assert m.optimizer is None


def test_plain_step_leaves_the_state_alone():
    m = _model()
    m.step(X, T, 0.05, optimizer="adam")
    s1 = m.optimizer.s1.copy()
    m.step(X, T, 0.05)
    assert m.optimizer.t == 1
    np.testing.assert_array_equal(m.optimizer.s1, s1)


def _continue(model, steps=2):
    for _ in range(steps):
        model.step(X, T, 0.05, optimizer="adam")
    return _params(model)


def test_save_and_load_keep_the_state(tmp_path):
    m = _model()
    _continue(m, 3)
    m.save(tmp_path / "m.npz")
    again = sn.load(tmp_path / "m.npz")
    assert again.optimizer.name == "adam" and again.optimizer.t == 3
    want = _continue(m)
    got = _continue(again)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    for clone in (copy.deepcopy, lambda model: pickle.loads(pickle.dumps(model))):
        other = clone(m)
        assert other.optimizer.t == m.optimizer.t
        want, got = _continue(m), _continue(other)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_files_without_state_load_with_none(tmp_path):
    m = _model()
    m.save(tmp_path / "plain.npz")
    assert sn.load(tmp_path / "plain.npz").optimizer is None


def test_a_damaged_state_is_refused(tmp_path):
    from symnet.io import files as io
    m = _model()
    m.step(X, T, 0.05, optimizer="adam")
    m.optimizer.s2 = np.zeros(3)        # not the model's size
    m.save(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="optimizer state s2 has shape"):
        sn.load(tmp_path / "bad.npz")
    data = dict(np.load(tmp_path / "bad.npz"))
    data["optimizer/s1"] = data["optimizer/s1"] + 1      # changed after saving
    np.savez(tmp_path / "edited.npz", **data)
    with pytest.raises(ValueError, match="checksum"):
        io.read(tmp_path / "edited.npz")


@pytest.mark.parametrize("kw,match", [({"optimizer": "rmsprop"}, "optimizer must be one of"),
                                      ({"momentum": 0.9}, "momentum= applies to optimizer"),
                                      ({"optimizer": "adam", "betas": (0.9, 1.5)}, "betas"),
                                      ({"optimizer": "adam", "weight_decay": -1},
                                       "weight_decay")])
def test_bad_optimizer_arguments_are_refused_before_anything_changes(kw, match):
    m = _model()
    before = _params(m)
    with pytest.raises(ValueError, match=match):
        m.step(X, T, 0.05, **kw)
    _assert_params(m, before, rtol=0)
    assert m.optimizer is None


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=0), dict(lr=-1.0),
                                 dict(validation_split=2.0), dict(method="lbfgs", lr=0.5)])
def test_a_refused_fit_keeps_the_optimizer_state_it_was_asked_to_reset(bad):
    """reset_optimizer=True dropped Adam's moments and step count before fit checked its
    arguments, so a refused call lost them; now the state goes only once fit runs."""
    m = _model()
    start = _params(m)
    m.fit(X, T, method="sd", epochs=2, lr=0.05, optimizer="adam", progress=False)
    kw = dict(method="sd", epochs=1, lr=0.05, optimizer="adam", progress=False,
              reset_optimizer=True)
    kw.update(bad)
    if kw["method"] == "lbfgs":
        del kw["optimizer"]
    with pytest.raises(ValueError):
        m.fit(X, T, **kw)
    assert m.optimizer.t == 2
    m.fit(X, T, method="sd", epochs=1, lr=0.05, optimizer="adam", progress=False)
    _assert_params(m, _numpy_run(start, 3, "adam", 0.05)[0])
