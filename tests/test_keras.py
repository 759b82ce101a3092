"""What users of other frameworks reach for first: predict / evaluate, targets as
labels or (N,), early stopping, validation_split, callbacks, weight decay and
clipping, loss-domain checks, lr checks, pickling, summary before compiling."""

import copy
import pickle

import numpy as np
import pytest

import symnet as sn


@pytest.fixture(scope="module")
def clf():
    net = sn.Network(sn.Input(3), sn.Dense(6, "tanh"), sn.Dense(4),
                     loss="softmax_cross_entropy")
    return net.compile(dtype="float64", seed=0)


@pytest.fixture(scope="module")
def reg():
    net = sn.Network(sn.Input(2), sn.Dense(5, "tanh"), sn.Dense(1), loss="mse")
    return net.compile(dtype="float64", seed=0)


def _data(n=23, d=3, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, n)
    return X, y, np.eye(k)[y]


# ------------------------------------------------------------------ labels

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_integer_labels_same_loss_and_gradients_as_one_hot(dtype):
    net = sn.Network(sn.Input(3), sn.Dense(6, "relu"), sn.Dense(4),
                     loss="softmax_cross_entropy")
    m = net.compile(dtype=dtype, seed=2)
    X, y, T = _data()
    assert m.loss(X, y) == m.loss(X, T)
    (l1, g1), (l2, g2) = m.loss_and_grad(X, T), m.loss_and_grad(X, y)
    assert l1 == l2
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])
    # the C reads labels: no one-hot matrix is built (the label kernels exist)
    assert "_loss_grad_labels(" in m.c_source and "(int)T[b]" in m.c_source


def test_fit_with_labels_equals_fit_with_one_hot():
    net = sn.Network(sn.Input(3), sn.Dense(6, "tanh"), sn.Dense(4),
                     loss="softmax_cross_entropy")
    a, b = net.compile(dtype="float64", seed=1), net.compile(dtype="float64", seed=1)
    X, y, T = _data()
    for method in ("minibatch", "sgd", "sd"):
        ha = a.fit(X, y, method=method, epochs=3, batch_size=5, seed=3, progress=False,
                   validation_data=(X, y))
        hb = b.fit(X, T, method=method, epochs=3, batch_size=5, seed=3, progress=False,
                   validation_data=(X, T))
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
        assert ha.loss == hb.loss and ha.accuracy == hb.accuracy
        assert ha.val_accuracy == hb.val_accuracy
    a.step(X, y, lr=0.1)
    b.step(X, T, lr=0.1)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_labels_out_of_range_or_not_integer(clf):
    X, y, _ = _data()
    for bad, what in ((4, "label 4"), (-1, "label -1"), (1.5, "label 1.5")):
        yb = y.astype(float)
        yb[7] = bad
        with pytest.raises(ValueError, match=rf"{what} at row 7 .*0\.\.3"):
            clf.loss(X, yb)


def test_one_output_network_takes_n_targets(reg):
    X = np.random.default_rng(0).normal(size=(9, 2))
    t = np.sin(X[:, 0])
    assert reg.loss(X, t) == reg.loss(X, t[:, None])
    l1, g1 = reg.loss_and_grad(X, t)
    l2, g2 = reg.loss_and_grad(X, t[:, None])
    assert l1 == l2 and all(np.array_equal(g1[k], g2[k]) for k in g1)


def test_wrong_target_shape_says_what_fits(clf):
    X, _, _ = _data()
    with pytest.raises(ValueError, match=r"\(N, 4\) rows .* or integer class labels \(N,\)"):
        clf.loss(X, np.zeros((X.shape[0], 3)))
    net = sn.Network(sn.Input(2), sn.Dense(2), loss="mse").compile(dtype="float64")
    with pytest.raises(ValueError, match=r"must be 2-D \(batch, 2\).*got shape \(5,\)"):
        net.loss(np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="T has 4 rows but X has 5"):
        net.loss(np.zeros((5, 2)), np.zeros((4, 2)))


# --------------------------------------------------------- predict / evaluate

def test_predict_and_evaluate_classifier(clf):
    X, y, T = _data(n=50)
    O = clf.forward(X)
    P = clf.predict(X)
    np.testing.assert_allclose(P, np.exp(O) / np.exp(O).sum(axis=1, keepdims=True),
                               rtol=1e-12)
    np.testing.assert_array_equal(clf.predict_proba(X), P)
    np.testing.assert_array_equal(clf.predict_classes(X), O.argmax(axis=1))
    # any chunk size gives the same numbers, and nothing trains
    before = {k: v.copy() for k, v in clf.params.items()}
    np.testing.assert_allclose(clf.predict(X, batch_size=7), P, rtol=1e-14)
    ev = clf.evaluate(X, y, batch_size=7)
    assert ev["accuracy"] == np.mean(O.argmax(axis=1) == y)
    ref = -np.mean(np.log(P[np.arange(len(y)), y]))
    assert ev["loss"] == pytest.approx(ref, rel=1e-12)
    assert clf.evaluate(X, T)["loss"] == pytest.approx(ref, rel=1e-12)
    for k in before:
        np.testing.assert_array_equal(before[k], clf.params[k])


def test_predict_and_evaluate_bce_and_regression(reg):
    net = sn.Network(sn.Input(2), sn.Dense(1, "sigmoid"), loss="bce")
    m = net.compile(dtype="float64", seed=0)
    X = np.random.default_rng(1).normal(size=(30, 2))
    t = (X[:, 0] > 0).astype(float)
    np.testing.assert_array_equal(m.predict_classes(X), (m.forward(X)[:, 0] > 0.5))
    assert m.predict_classes(X).shape == (30,)
    assert m.evaluate(X, t)["accuracy"] == np.mean((m.forward(X)[:, 0] > 0.5) == t)
    O = reg.predict(X)
    np.testing.assert_array_equal(O, reg.forward(X))
    ev = reg.evaluate(X, t)
    assert ev["mse"] == pytest.approx(np.mean((O[:, 0] - t) ** 2), rel=1e-12)
    assert ev["mae"] == pytest.approx(np.mean(np.abs(O[:, 0] - t)), rel=1e-12)
    assert ev["loss"] == pytest.approx(ev["mse"], rel=1e-12)
    with pytest.raises(ValueError, match="classification loss"):
        reg.predict_classes(X)
    with pytest.raises(ValueError, match="classification loss"):
        reg.predict_proba(X)


def test_predict_large_batch_in_chunks(reg):
    X = np.random.default_rng(2).normal(size=(20000, 2))
    np.testing.assert_array_equal(reg.predict(X, batch_size=3000), reg.forward(X))


# ------------------------------------------------- early stopping, callbacks

def test_early_stopping_restores_best_parameters():
    net = sn.Network(sn.Input(3), sn.Dense(16, "tanh"), sn.Dense(4),
                     loss="softmax_cross_entropy")
    m = net.compile(dtype="float64", seed=0)
    X, y, _ = _data(n=40)
    Xv, yv, _ = _data(n=40, seed=9)        # unrelated labels: validation loss rises
    seen = []

    def remember(hist):
        seen.append({k: v.copy() for k, v in m.params.items()})

    hist = m.fit(X, y, epochs=200, lr=0.5, batch_size=8, seed=0, progress=False,
                 validation_data=(Xv, yv), early_stopping=3, callbacks=[remember])
    assert hist.stopped == "early_stopping"
    best = int(np.argmin(hist.val_loss)) + 1
    assert hist.best_epoch == best and hist.epochs == best + 3
    for k in m.params:
        np.testing.assert_array_equal(m.params[k], seen[best - 1][k])
    assert m.loss(Xv, yv) == pytest.approx(min(hist.val_loss), rel=1e-12)
    # without restoring: the last epoch's parameters stay
    m2 = net.compile(dtype="float64", seed=0)
    m2.fit(X, y, epochs=200, lr=0.5, batch_size=8, seed=0, progress=False,
           validation_data=(Xv, yv), early_stopping=3, restore_best=False)
    for k in m2.params:
        np.testing.assert_array_equal(m2.params[k], seen[-1][k])


def test_restore_best_without_validation_data_gives_the_parameters_of_the_best_loss():
    """sd's training loss of an epoch is measured before its one update: the parameters
    put back are those before the best epoch's update, whose loss is min(hist.loss).  A
    minibatch epoch's loss is a mean over its steps: the end of the best epoch is put back."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    T = (X @ [1.0, -2.0, 0.5])[:, None]
    m = sn.Network(sn.Input(3), sn.Dense(1), loss="mse").compile(dtype="float64", seed=0)
    # a step size near sd's stability limit: the loss goes down once, then up
    hist = m.fit(X, T, method="sd", epochs=60, lr=0.95, early_stopping=3, progress=False)
    assert hist.stopped == "early_stopping" and 1 < hist.best_epoch < hist.epochs
    assert m.loss(X, T) == pytest.approx(min(hist.loss), rel=1e-12)

    seen = []
    m.init_params(0)
    hist = m.fit(X, T, epochs=60, batch_size=8, lr=0.4, seed=0, early_stopping=3,
                 progress=False, callbacks=lambda h: seen.append(m.theta.copy()))
    assert hist.stopped == "early_stopping"
    np.testing.assert_array_equal(m.theta, seen[hist.best_epoch - 1])


def test_restore_best_also_when_all_epochs_are_done():
    """Early stopping that never stops training still puts the best epoch back."""
    net = sn.Network(sn.Input(3), sn.Dense(16, "tanh"), sn.Dense(4),
                     loss="softmax_cross_entropy")
    m = net.compile(dtype="float64", seed=0)
    X, y, _ = _data(n=40)
    Xv, yv, _ = _data(n=40, seed=9)        # unrelated labels: validation loss rises
    seen = []
    hist = m.fit(X, y, epochs=5, lr=0.5, batch_size=8, seed=0, progress=False,
                 validation_data=(Xv, yv), early_stopping=50,
                 callbacks=lambda h: seen.append(m.theta.copy()))
    assert hist.stopped == "completed" and hist.best_epoch < hist.epochs == 5
    np.testing.assert_array_equal(m.theta, seen[hist.best_epoch - 1])


def test_validation_split_holds_out_the_last_rows(clf):
    X, y, _ = _data(n=40)
    m = copy.deepcopy(clf)
    hist = m.fit(X, y, epochs=2, validation_split=0.25, progress=False, seed=0)
    assert len(hist.val_loss) == 2 and hist.steps_per_epoch == [1, 1]   # 30 rows, batch 32
    assert hist.val_loss[-1] == pytest.approx(m.loss(X[30:], y[30:]), rel=1e-12)
    with pytest.raises(ValueError, match="not both"):
        m.fit(X, y, validation_split=0.1, validation_data=(X, y))
    with pytest.raises(ValueError, match="validation_split"):
        m.fit(X, y, validation_split=1.5)


def test_callback_stops_training(clf):
    X, y, _ = _data()
    m = copy.deepcopy(clf)
    calls = []
    hist = m.fit(X, y, epochs=10, progress=False,
                 callbacks=[lambda h: calls.append(h.epochs) or h.epochs == 4])
    assert hist.stopped == "callback" and hist.epochs == 4 and calls == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="callable"):
        m.fit(X, y, callbacks=[3])
    with pytest.raises(ValueError, match="early_stopping"):
        m.fit(X, y, early_stopping=0)


@pytest.mark.parametrize("loss", ["labels", "one_hot", "bce"])
def test_training_accuracy_is_counted_on_each_batch_before_its_update(loss):
    """As the loss: the mean over the epoch's batches, each before its update."""
    X, y, T = _data(n=40)
    if loss == "bce":
        net = sn.Network(sn.Input(3), sn.Dense(5, "tanh"), sn.Dense(2, "sigmoid"), loss="bce")
        T = (X[:, :2] > 0).astype(float)
    else:
        net = sn.Network(sn.Input(3), sn.Dense(5, "tanh"), sn.Dense(4),
                         loss="softmax_cross_entropy")
        T = y if loss == "labels" else T
    m = net.compile(dtype="float64", seed=0)
    ref = copy.deepcopy(m)
    hist = m.fit(X, T, epochs=2, batch_size=8, shuffle=False, lr=0.5, progress=False)
    for e in range(2):
        want = []
        for s in range(0, 40, 8):                      # the same steps, one at a time
            want.append(ref.evaluate(X[s:s + 8], T[s:s + 8])["accuracy"])
            ref.step(X[s:s + 8], T[s:s + 8], lr=0.5)
        assert hist.accuracy[e] == pytest.approx(np.mean(want), abs=1e-12)
    assert len(set(hist.accuracy)) > 0 and hist.stopped == "completed"


def test_history_training_accuracy_and_plot(tmp_path, clf):
    X, y, _ = _data()
    m = copy.deepcopy(clf)
    hist = m.fit(X, y, epochs=3, progress=False, validation_data=(X, y), method="sd")
    assert len(hist.accuracy) == 3 and hist.accuracy == hist.val_accuracy   # sd: at the end
    pytest.importorskip("matplotlib")
    fig = hist.plot(tmp_path / "h.png")
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["loss", "accuracy", "step size η_t"]
    assert (tmp_path / "h.png").stat().st_size > 0


# ---------------------------------------------------- weight decay, clipping

def _reference_steps(model, X, T, steps, lr, opt, wd, clip, mu=0.9, b1=0.9, b2=0.999,
                     eps=1e-8):
    """numpy float64 updates from the model's own gradient kernel (loss_and_grad)."""
    ref = copy.deepcopy(model)
    theta = {k: np.array(v, np.float64) for k, v in ref.params.items()}
    s1 = {k: np.zeros_like(v) for k, v in theta.items()}
    s2 = {k: np.zeros_like(v) for k, v in theta.items()}
    for t in range(1, steps + 1):
        for k, v in theta.items():
            ref.params[k] = v
        _, g = ref.loss_and_grad(X, T)
        norm = np.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in g.values()))
        c = min(1.0, clip / norm) if clip else 1.0
        for k in theta:
            gk = c * g[k]
            if opt == "sgd":
                theta[k] = theta[k] - lr * (gk + wd * theta[k])
            elif opt == "momentum":
                s1[k] = mu * s1[k] + gk + wd * theta[k]
                theta[k] = theta[k] - lr * s1[k]
            else:
                s1[k] = b1 * s1[k] + (1 - b1) * gk
                s2[k] = b2 * s2[k] + (1 - b2) * gk ** 2
                step = (s1[k] / (1 - b1 ** t)) / (np.sqrt(s2[k] / (1 - b2 ** t)) + eps)
                theta[k] = theta[k] - lr * (step + wd * theta[k])
    return theta


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("wd, clip", [(0.1, None), (0.0, 0.05), (0.05, 0.02)])
@pytest.mark.parametrize("method", ["sd", "minibatch"])
def test_weight_decay_and_clipping_equal_numpy_reference(reg, opt, wd, clip, method):
    X = np.random.default_rng(3).normal(size=(16, 2))
    T = np.sin(X[:, :1])
    m = copy.deepcopy(reg)
    expected = _reference_steps(m, X, T, 4, 0.05, opt, wd, clip)
    m.fit(X, T, method=method, epochs=4, batch_size=16, shuffle=False, lr=0.05,
          optimizer=opt, weight_decay=wd, clip_norm=clip, progress=False)
    for k in expected:
        np.testing.assert_allclose(m.params[k], expected[k], rtol=1e-10, atol=1e-13)
    # and the terms matter: without them the result differs
    plain = copy.deepcopy(reg)
    plain.fit(X, T, method=method, epochs=4, batch_size=16, shuffle=False, lr=0.05,
              optimizer=opt, progress=False)
    assert not np.allclose(plain.params["W1"], m.params["W1"], rtol=1e-6, atol=0)


def test_weight_decay_and_clip_norm_refuse_bad_values(reg):
    X = np.zeros((2, 2))
    for kw in ({"weight_decay": -1}, {"weight_decay": float("nan")}, {"clip_norm": 0},
               {"clip_norm": -2.0}):
        with pytest.raises(ValueError, match=list(kw)[0]):
            reg.fit(X, np.zeros(2), **kw)


# ------------------------------------------------------- declaration checks

def test_bce_on_an_output_outside_0_1_is_refused_naming_the_layer():
    with pytest.raises(ValueError, match=r"output layer 'out'.*'linear'.*'sigmoid'"):
        sn.Network(sn.Input(2), sn.Dense(1, name="out"), loss="bce")
    with pytest.raises(ValueError, match=r"output layer 'O'.*'relu'.*sigmoid"):
        sn.Network(sn.Input(2), sn.Dense(1, "relu"), loss="bce")


def test_softmax_cross_entropy_needs_two_outputs():
    with pytest.raises(ValueError, match=r"at least 2 outputs.*'O' has 1.*'sigmoid'.*bce"):
        sn.Network(sn.Input(2), sn.Dense(1), loss="softmax_cross_entropy")


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf"), -1])
def test_step_refuses_non_positive_or_non_finite_lr(reg, lr):
    X, T = np.zeros((2, 2)), np.zeros((2, 1))
    before = {k: v.copy() for k, v in reg.params.items()}
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        reg.step(X, T, lr=lr)
    for k in before:
        np.testing.assert_array_equal(before[k], reg.params[k])


# --------------------------------------------------- init, frozen, pickling

def test_dense_init_schemes():
    net = sn.Network(sn.Input(50), sn.Dense(40, init="zeros"), sn.Dense(30, init=0.25),
                     sn.Dense(200, init="normal"), sn.Dense(2, "relu", init="he"),
                     loss="mse")
    m = net.compile(dtype="float64", seed=0)
    assert not m.params["W1"].any()
    assert (m.params["W2"] == 0.25).all()
    assert abs(m.params["W3"].std() - 1) < 0.05
    assert abs(m.params["W4"].std() - np.sqrt(2 / 200)) < 0.03
    with pytest.raises(ValueError, match="init must be one of"):
        sn.Dense(3, init="uniformish")
    # compile(init=...) sets every weight matrix
    m = net.compile(dtype="float64", seed=0, init="zeros")
    assert not any(m.params[f"W{k}"].any() for k in range(1, 5))
    with pytest.raises(ValueError, match="init must be one of"):
        net.compile(init="bogus")


def test_frozen_layer_gets_no_gradient_and_no_update():
    net = sn.Network(sn.Input(3), sn.Dense(5, "tanh", trainable=False), sn.Dense(2),
                     loss="mse")
    m = net.compile(dtype="float64", seed=0)
    X = np.random.default_rng(0).normal(size=(12, 3))
    T = np.random.default_rng(1).normal(size=(12, 2))
    assert "g_W1[" not in m.c_source and "g_b1[" not in m.c_source   # not computed
    frozen = {k: m.params[k].copy() for k in ("W1", "b1")}
    _, g = m.loss_and_grad(X, T)
    assert not g["W1"].any() and g["W2"].any()
    for opt in ("sgd", "momentum", "adam"):
        m.fit(X, T, epochs=2, batch_size=5, optimizer=opt, weight_decay=0.1, clip_norm=1.0,
              progress=False)
    m.step(X, T, lr=0.1)
    for k in frozen:
        np.testing.assert_array_equal(frozen[k], m.params[k])
    # the trainable layer's gradient is what it is with the first layer unfrozen
    free = sn.Network(sn.Input(3), sn.Dense(5, "tanh"), sn.Dense(2), loss="mse")
    f = free.compile(dtype="float64")
    for k in m.params:
        f.params[k] = m.params[k]
    np.testing.assert_allclose(f.loss_and_grad(X, T)[1]["W2"], m.loss_and_grad(X, T)[1]["W2"],
                               rtol=1e-13)
    assert "trainable=False" in repr(net)


def test_model_pickles_and_deep_copies(clf):
    X, y, _ = _data()
    for other in (pickle.loads(pickle.dumps(clf)), copy.deepcopy(clf)):
        assert other is not clf and other.dtype == clf.dtype
        np.testing.assert_array_equal(other.forward(X), clf.forward(X))
        other.step(X, y, lr=0.5)        # independent parameters
        assert not np.array_equal(other.forward(X), clf.forward(X))


def test_summary_before_compiling():
    net = sn.Network(sn.Input(3), sn.Dense(4, "relu"), sn.Dense(2), loss="mse")
    s = net.summary(batch_size=10)
    assert s.total("params") == 3 * 4 + 4 + 4 * 2 + 2
    assert s.as_dict() == net.compile().summary(batch_size=10).as_dict()


def test_bias_false_in_repr():
    assert "bias=False" in repr(sn.Dense(3, bias=False))
    assert "bias" not in repr(sn.Dense(3))


def test_derivation_shows_weight_decay_and_clipping_terms():
    net = sn.Network(sn.Input(2), sn.Dense(3, "tanh"), sn.Dense(1, "sigmoid"), loss="bce")
    assert "Update" not in str(net.formulas())
    text = str(net.formulas(weight_decay=0.01, clip_norm=2.0))
    assert "c = min(1, 2/‖g‖₂)" in text and "θ ← θ − η·(c·g_θ + λ·θ),  λ = 0.01" in text
    adam = str(net.formulas(optimizer="adam", weight_decay=0.1))
    assert "+ ε) + λ·θ),  λ = 0.1   (decoupled weight decay, AdamW)" in adam
    assert r"\lambda\theta" in net.formulas(optimizer="momentum", weight_decay=0.1).latex()


def test_bce_accepts_a_custom_output_activation():
    import sympy as sp
    z = sp.Symbol("z")
    net = sn.Network(sn.Input(2), sn.Dense(1, 1 / (1 + sp.exp(-z))), loss="bce")
    assert net.n_out == 1


def test_check_gradients_with_a_frozen_layer_in_front():
    """Frozen parameters sit after the trainable ones in the flat array."""
    net = sn.Network(sn.Input(3), sn.Dense(4, "tanh", trainable=False), sn.Dense(3, "tanh"),
                     sn.Dense(2), loss="mse")
    m = net.compile(dtype="float64", seed=0, init="he")
    X = np.random.default_rng(0).normal(size=(6, 3))
    T = np.random.default_rng(1).normal(size=(6, 2))
    assert sn.check_gradients(m, X, T, verbose=False) < 1e-6
    assert m.meta["params"][0]["offset"] > m.meta["params"][2]["offset"]


def test_derivation_of_a_frozen_layer_has_no_gradient_lines():
    net = sn.Network(sn.Input(2), sn.Dense(3, "tanh", trainable=False), sn.Dense(1),
                     loss="mse")
    text = str(net.formulas())
    assert "g_W1" not in text and "g_b1" not in text and "g_W2[i,j]" in text
    # nothing below the trainable layer needs a delta: H1 is not back-propagated at all
    assert "∂L/∂W1" not in text and "δ_H1" not in text and "dL_dH1" not in text
    mid = str(sn.Network(sn.Input(2), sn.Dense(3, "tanh"), sn.Dense(3, "tanh", trainable=False),
                         sn.Dense(1), loss="mse").formulas())
    assert "δ_H2" in mid and "g_W2" not in mid and "g_W1[i,j]" in mid


def test_frozen_bottom_layers_are_not_back_propagated():
    """Below the lowest trainable layer nothing needs a delta: none is computed."""
    net = sn.Network(sn.Input(3), sn.Dense(5, "tanh", trainable=False),
                     sn.Dense(4, "relu", trainable=False), sn.Dense(2), loss="mse")
    m = net.compile(dtype="float64", seed=0)
    code = m.c_source
    assert "delta_H1[b * 5 + i] =" not in code and "delta_H2[b * 4 + i] =" not in code
    assert "sn_mm_nn(batch, 4, 2, delta_O, W3, dL_dH2" not in code
    X = np.random.default_rng(0).normal(size=(9, 3))
    T = np.random.default_rng(1).normal(size=(9, 2))
    free = sn.Network(sn.Input(3), sn.Dense(5, "tanh"), sn.Dense(4, "relu"), sn.Dense(2),
                      loss="mse").compile(dtype="float64")
    for k in m.params:
        free.params[k] = m.params[k]
    (la, ga), (lb, gb) = m.loss_and_grad(X, T), free.loss_and_grad(X, T)
    assert la == lb
    np.testing.assert_array_equal(ga["W3"], gb["W3"])
    np.testing.assert_array_equal(ga["b3"], gb["b3"])
    assert not ga["W1"].any() and not ga["W2"].any()


def test_convolution_network_with_labels_split_early_stopping_and_evaluate():
    net = sn.Network(sn.Input((1, 6, 6)), sn.Conv2d(2, 3, activation="relu"),
                     sn.MaxPool2d(2), sn.Flatten(), sn.Dense(3),
                     loss="softmax_cross_entropy")
    m = net.compile(dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 1, 6, 6))
    y = rng.integers(0, 3, 40)
    for method in ("sd", "minibatch"):
        hist = m.fit(X, y, method=method, epochs=4, batch_size=8, lr=0.1, progress=False,
                     validation_split=0.25, early_stopping=2, seed=0)
        assert len(hist.accuracy) == len(hist.val_accuracy) == hist.epochs
        assert hist.val_loss[-1] == pytest.approx(m.loss(X[30:], y[30:]), rel=1e-12) \
            or hist.best_epoch is not None
    ev = m.evaluate(X, y, batch_size=7)
    assert ev["accuracy"] == np.mean(m.predict_classes(X) == y)
    np.testing.assert_allclose(m.predict(X).sum(axis=1), 1, rtol=1e-12)
    l1, g1 = m.loss_and_grad(X, y)
    l2, g2 = m.loss_and_grad(X, np.eye(3)[y])
    assert l1 == l2 and all(np.array_equal(g1[k], g2[k]) for k in g1)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_history_plot_of_a_short_fit_has_whole_epoch_ticks(backend, tmp_path):
    """Two outputs, validation data, early stopping: the loss panel has both curves (one
    point per epoch run) and the best epoch, the accuracy panel each output's; epochs and
    steps are ticked at whole numbers (a 5-epoch run had ticks at 1.5, 2.5, ...)."""
    pytest.importorskip("matplotlib")
    a = sn.Input(3, name="A")
    h = sn.Dense(4, "tanh", name="H")(a)
    net = sn.Network(a, [sn.Dense(2, name="O1")(h), sn.Dense(1, "sigmoid", name="O2")(h)],
                     loss=["softmax_cross_entropy", "bce"])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    T = [np.eye(2)[rng.integers(0, 2, 40)], (rng.random((40, 1)) > 0.5).astype(float)]
    model = net.compile(seed=0, backend=backend)
    hist = model.fit(X, T, epochs=30, lr=0.5, validation_split=0.25, early_stopping=2,
                     progress=False, seed=0)
    assert hist.stopped == "early_stopping" and hist.epochs < 30
    fig = hist.plot(path=str(tmp_path / "fit.png"))
    loss_ax, acc_ax, lr_ax = fig.axes
    curves = {line.get_label(): line.get_xdata() for line in loss_ax.get_lines()}
    n = hist.epochs
    assert list(curves["training loss"]) == list(range(1, n + 1))
    assert list(curves["validation loss"]) == list(range(1, n + 1))
    assert list(curves["best epoch"]) == [hist.best_epoch] * 2
    accs = {line.get_label(): list(line.get_ydata()) for line in acc_ax.get_lines()}
    assert accs == {"O1 training accuracy": hist.O1_accuracy,
                    "O1 validation accuracy": hist.val_O1_accuracy,
                    "O2 training accuracy": hist.O2_accuracy,
                    "O2 validation accuracy": hist.val_O2_accuracy}
    for ax in (loss_ax, acc_ax, lr_ax):
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
