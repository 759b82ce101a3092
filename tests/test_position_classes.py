"""Softmax cross-entropy with a class per position: an output (L, C) is L rows of C
classes (its last axis), the loss of an example the mean over its positions, as
PyTorch's ``cross_entropy`` on (N·L, C) rows and Keras's on (N, L, C).

Checked against a numpy forward and back-propagation written here, central
differences, PyTorch where installed, and training: labels (N, L) and one-hot rows
(N, L, C), C and NumPy backends, predict/accuracy per position, and the refusals."""

import numpy as np
import pytest

import symnet as sn
from gradcheck import check

L, D, H, C = 5, 4, 8, 3


def network(loss="softmax_cross_entropy"):
    S = sn.Input((L, D), name="S")
    x = sn.Pointwise(H, "tanh", name="P")(S)
    return sn.Network(S, sn.Pointwise(C, name="O")(x), loss=loss)


def data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, L, D)), rng.integers(0, C, (n, L))


def numpy_loss_and_grads(p, X, y):
    """Forward and back-propagation by hand: z = tanh(X·W1ᵀ + b1), O = z·W2ᵀ + b2,
    L = mean over examples and positions of logsumexp(O) − O[y]."""
    N = X.shape[0]
    A = np.tanh(X @ p["W1"].T + p["b1"])                         # (N, L, H)
    O = A @ p["W2"].T + p["b2"]                                  # (N, L, C)
    m = O.max(-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(O - m).sum(-1))
    loss = np.mean(lse - np.take_along_axis(O, y[..., None], -1)[..., 0])
    dO = np.exp(O - lse[..., None])
    np.put_along_axis(dO, y[..., None], np.take_along_axis(dO, y[..., None], -1) - 1, -1)
    dO /= N * L
    g = {"W2": np.einsum("nlc,nlh->ch", dO, A), "b2": dO.sum((0, 1))}
    dZ = (dO @ p["W2"]) * (1 - A ** 2)
    g.update(W1=np.einsum("nlh,nld->hd", dZ, X), b1=dZ.sum((0, 1)))
    return loss, g, O


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("as_rows", [False, True])
def test_loss_and_gradients_equal_a_numpy_back_propagation(backend, as_rows):
    X, y = data()
    model = network().compile(dtype="float64", seed=3, backend=backend)
    want_loss, want, O = numpy_loss_and_grads(model.params, X, y)
    np.testing.assert_allclose(model.forward(X), O, rtol=1e-12, atol=1e-14)
    T = np.eye(C)[y] if as_rows else y
    loss, grads = model.loss_and_grad(X, T)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for name in want:
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-10, atol=1e-14,
                                   err_msg=name)


@pytest.mark.parametrize("as_rows", [False, True])
def test_gradients_agree_with_central_differences(as_rows):
    X, y = data(seed=1)
    model = network().compile(dtype="float64", seed=4)
    check(model, X, np.eye(C)[y] if as_rows else y)


def test_the_loss_is_the_mean_over_positions_not_one_class_among_all():
    """One position right with certainty and one wrong: the mean of the two rows'
    cross-entropies (not a softmax over all L·C numbers)."""
    net = sn.Network(sn.Input((2, 2)), sn.Pointwise(2, name="O"),
                     loss="softmax_cross_entropy")
    model = net.compile(dtype="float64")
    model.params["W1"][...] = np.eye(2)
    model.params["b1"][...] = 0
    X = np.array([[[5.0, 0.0], [0.0, 0.0]]])
    y = np.array([[0, 1]])
    want = (np.log(1 + np.exp(-5.0)) + np.log(2.0)) / 2
    assert model.loss(X, y) == pytest.approx(want, rel=1e-13)


def test_equals_pytorch_cross_entropy_and_its_50_sgd_steps():
    torch = pytest.importorskip("torch")
    X, y = data(n=8, seed=2)
    model = network().compile(dtype="float64", seed=5)
    p1 = torch.nn.Linear(D, H).double()
    p2 = torch.nn.Linear(H, C).double()
    with torch.no_grad():
        for lin, w, b in ((p1, "W1", "b1"), (p2, "W2", "b2")):
            lin.weight.copy_(torch.from_numpy(model.params[w]))
            lin.bias.copy_(torch.from_numpy(model.params[b]))
    opt = torch.optim.SGD([*p1.parameters(), *p2.parameters()], lr=0.5)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(50):
        opt.zero_grad()
        out = p2(torch.tanh(p1(Xt)))
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, C), yt.reshape(-1))
        loss.backward()
        ours = model.loss(X, y)
        assert ours == pytest.approx(loss.item(), rel=1e-10)
        opt.step()
        model.step(X, y, lr=0.5)
    np.testing.assert_allclose(model.params["W1"], p1.weight.detach().numpy(), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(model.params["W2"], p2.weight.detach().numpy(), rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_training_learns_a_class_per_position_and_predicts_it(backend):
    """Each position's class is the sign pattern of two of its features: a per-position
    classifier must learn it; accuracy, predict and predict_classes are per position."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((400, L, D))
    y = (X[..., 0] > 0).astype(int) + (X[..., 1] > 0).astype(int)        # 0, 1 or 2
    model = network().compile(dtype="float64", seed=0, backend=backend)
    hist = model.fit(X, y, method="minibatch", batch_size=20, epochs=30, lr=0.05,
                     optimizer="adam", seed=0, progress=False)
    assert hist.loss[-1] < 0.5 * hist.loss[0]
    P = model.predict(X)
    assert P.shape == (400, L, C)
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-12)
    classes = model.predict_classes(X)
    assert classes.shape == (400, L)
    right = float((classes == y).mean())
    assert right > 0.9
    assert model.evaluate(X, y)["accuracy"] == pytest.approx(right)
    assert model.evaluate(X, np.eye(C)[y])["accuracy"] == pytest.approx(right)
    # the training accuracy the C counts per step (its last epoch, before each update)
    assert 0.8 < hist.accuracy[-1] <= 1.0


def test_fit_with_validation_data_reports_the_accuracy_per_position():
    X, y = data(n=40, seed=3)
    model = network().compile(dtype="float64", seed=0)
    hist = model.fit(X, y, method="sd", epochs=2, lr=0.1, validation_data=(X, y),
                     progress=False)
    want = float((model.predict_classes(X) == y).mean())
    assert hist.val_accuracy[-1] == pytest.approx(want)


def test_float32_loss_is_stable_for_large_logits():
    net = sn.Network(sn.Input((2, 2)), sn.Pointwise(2, name="O"),
                     loss="softmax_cross_entropy")
    model = net.compile(dtype="float32")
    model.params["W1"][...] = np.eye(2, dtype=np.float32) * 200
    model.params["b1"][...] = 0
    X = np.array([[[1, 0], [0, 1]]], np.float32)       # logits (200, 0) and (0, 200)
    loss = model.loss(X, np.array([[1, 1]]))
    assert np.isfinite(loss) and loss == pytest.approx(100.0, rel=1e-6)   # (200 + 0) / 2


def test_labels_out_of_range_name_the_row_and_the_position():
    model = network().compile(dtype="float64")
    X, y = data(n=3)
    y[2, 4] = C
    with pytest.raises(ValueError, match=rf"label {C} at row 2, position 4 is not an integer "
                                         rf"in 0..{C - 1}"):
        model.loss(X, y)
    with pytest.raises(ValueError, match=rf"must have shape \(batch, {L}, {C}\), or integer "
                                         rf"class labels of shape \(batch, {L}\)"):
        model.loss(X, y[:, :2])


def test_a_last_axis_of_one_class_is_refused():
    with pytest.raises(ValueError, match=r"needs at least 2 outputs \(one per class\), but "
                                         r"output layer 'P' has 1"):
        sn.Network(sn.Input((5, 4)), sn.Pointwise(1, name="P"), loss="softmax_cross_entropy")
    with pytest.raises(ValueError, match=r"output layer 'P' of shape \(1, 4, 4\): the classes "
                                         r"are its first axis \(the channels\).*at least 2"):
        sn.Network(sn.Input((1, 4, 4)), sn.Conv2d(1, 3, padding=1, name="P"),
                   loss="softmax_cross_entropy")


@pytest.mark.parametrize("tail", ["conv", "dropout", "add"])
def test_a_channels_first_output_takes_its_channels_as_the_classes(tail):
    """Conv2d, Conv2d → Dropout, or the Add of a residual block: the output is channels
    first, (C, H, W), so the classes are its channels at each pixel, as PyTorch's
    cross_entropy on (N, C, H, W); its last axis (W) taken as the classes would have
    trained something else, silently.  A sequence's Add and Dropout keep the last axis."""
    I = sn.Input((1, 4, 4))
    c = sn.Conv2d(3, 3, padding=1, name="C")(I)
    out = c if tail == "conv" else sn.Dropout(0.1, name="P")(c) if tail == "dropout" else \
        sn.Add(name="P")([c, sn.Conv2d(3, 3, padding=1)(c)])
    net = sn.Network(I, out, loss="softmax_cross_entropy")
    name = net.output_names[0]
    assert net.classes == {name: 3} and net.classes_first == {name}
    S = sn.Input((4, 3))
    x = sn.Add()([sn.Pointwise(3)(S), sn.Pointwise(3)(S)])
    net = sn.Network(S, sn.Dropout(0.1, name="O")(x), loss="softmax_cross_entropy")
    assert net.classes == {"O": 3} and not net.classes_first


def pixel_network():
    """A 1×1 convolution: O[b,c,y,x] = Σ_k W[c,k]·X[b,k,y,x] + b[c], 3 classes a pixel."""
    return sn.Network(sn.Input((2, 3, 4)), sn.Conv2d(3, 1, name="O"),
                      loss="softmax_cross_entropy")


def numpy_pixels(p, X, y):
    """Loss and gradients of ``pixel_network`` by hand, labels y (N, 3, 4), −1: none."""
    W, b = p["W1"].reshape(3, 2), p["b1"]
    O = np.einsum("ck,nkyx->ncyx", W, X) + b[None, :, None, None]
    Z = O - O.max(1, keepdims=True)
    P = np.exp(Z) / np.exp(Z).sum(1, keepdims=True)
    keep = y >= 0
    one = np.moveaxis(np.eye(3)[np.maximum(y, 0)], -1, 1) * keep[:, None]
    loss = -np.sum(one * np.log(P)) / y.size
    dO = (P * keep[:, None] - one) / y.size
    return loss, {"W1": np.einsum("ncyx,nkyx->ck", dO, X).reshape(p["W1"].shape),
                  "b1": dO.sum((0, 2, 3))}, O


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("as_rows", [False, True])
def test_a_class_per_pixel_equals_a_numpy_back_propagation(backend, as_rows):
    rng = np.random.default_rng(8)
    X, y = rng.standard_normal((5, 2, 3, 4)), rng.integers(0, 3, (5, 3, 4))
    y[1, 2, 3] = y[4, 0, 0] = -1
    model = pixel_network().compile(dtype="float64", seed=1, backend=backend)
    want_loss, want, O = numpy_pixels(model.params, X, y)
    np.testing.assert_allclose(model.forward(X), O, rtol=1e-12, atol=1e-14)
    T = np.moveaxis(np.eye(3)[np.maximum(y, 0)] * (y >= 0)[..., None], -1, 1) if as_rows else y
    loss, grads = model.loss_and_grad(X, T)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for name in want:
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-10, atol=1e-14)
    if backend == "c":
        check(model, X, T)
    P = model.predict(X)
    assert P.shape == (5, 3, 3, 4)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)
    guess = model.predict_classes(X)
    assert guess.shape == (5, 3, 4)
    np.testing.assert_array_equal(guess, O.argmax(1))
    right = float((guess == y)[y >= 0].mean())
    assert model.evaluate(X, T)["accuracy"] == pytest.approx(right)
    hist = model.fit(X, T, method="minibatch", batch_size=5, epochs=1, lr=1e-3, shuffle=False,
                     progress=False)
    assert hist.accuracy[0] == pytest.approx(right)


def test_a_class_per_pixel_equals_pytorch_cross_entropy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    X, y = rng.standard_normal((3, 2, 5, 4)), rng.integers(0, 3, (3, 5, 4))
    y[0, 1, 2] = -1
    net = sn.Network(sn.Input((2, 5, 4)), sn.Conv2d(4, 3, padding=1, activation="tanh"),
                     sn.Conv2d(3, 3, padding=1), loss="softmax_cross_entropy")
    model = net.compile(dtype="float64", seed=1)
    p = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in model.params.items()}
    h = torch.tanh(torch.nn.functional.conv2d(torch.from_numpy(X), p["W1"], p["b1"], padding=1))
    out = torch.nn.functional.conv2d(h, p["W2"], p["b2"], padding=1)
    loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y), ignore_index=-1,
                                             reduction="sum") / y.size
    loss.backward()
    ours, grads = model.loss_and_grad(X, y)
    assert ours == pytest.approx(loss.item(), rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], p[name].grad.numpy(), rtol=1e-10, atol=1e-14)


def test_training_learns_a_class_per_pixel():
    """Each pixel's class is the sign pattern of its two channels (0, 1 or 2)."""
    rng = np.random.default_rng(10)
    X = rng.standard_normal((200, 2, 4, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    net = sn.Network(sn.Input((2, 4, 4)), sn.Conv2d(8, 1, activation="tanh"),
                     sn.Conv2d(3, 1), loss="softmax_cross_entropy")
    model = net.compile(dtype="float32", seed=0)
    hist = model.fit(X[:150], y[:150], method="minibatch", batch_size=20, epochs=30,
                     lr=0.02, optimizer="adam", seed=0, progress=False,
                     validation_data=(X[150:], y[150:]))   # labels (N, H, W) as given
    assert hist.loss[-1] < 0.5 * hist.loss[0]
    right = float((model.predict_classes(X[150:]) == y[150:]).mean())
    assert right > 0.9 and hist.val_accuracy[-1] == pytest.approx(right)


def test_several_outputs_take_labels_per_position_as_one_hot_rows():
    S = sn.Input((L, D), name="S")
    x = sn.Pointwise(H, "tanh", name="P")(S)
    tags = sn.Pointwise(C, name="tags")(x)
    total = sn.Dense(1, name="total")(sn.Flatten()(x))
    net = sn.Network(S, [tags, total], loss={"tags": "softmax_cross_entropy", "total": "mse"})
    model = net.compile(dtype="float64", seed=0)
    X, y = data(n=5)
    r = np.arange(5.0)[:, None]
    one = model.loss(X, {"tags": y, "total": r})
    assert one == pytest.approx(model.loss(X, {"tags": np.eye(C)[y], "total": r}), rel=1e-14)
    O, R = model.forward(X)
    Z = O.reshape(5, L, C)
    lse = np.log(np.exp(Z).sum(-1))
    want = np.mean(lse - np.take_along_axis(Z, y[..., None], -1)[..., 0]) \
        + np.mean((R.reshape(-1) - r[:, 0]) ** 2)
    assert one == pytest.approx(want, rel=1e-12)
    check(model, X, {"tags": y, "total": r})
    y[0, 3:] = -1                # no target there: a row of zeros
    rows = np.eye(C)[np.maximum(y, 0)] * (y >= 0)[..., None]
    assert model.loss(X, {"tags": y, "total": r}) == \
        pytest.approx(model.loss(X, {"tags": rows, "total": r}), rel=1e-14)
    y[0, 3:] = 0
    tags_pred = model.predict(X)[0]
    assert tags_pred.shape == (5, L, C)
    ev = model.evaluate(X, {"tags": y, "total": r})
    assert ev["tags_accuracy"] == pytest.approx(float((Z.argmax(-1) == y).mean()))


def test_formulas_show_the_mean_over_positions():
    text = str(network().formulas())
    assert "inv_batch·Σ_b (1/5)·Σ_q L_b,q" in text
    assert "dL_dO[b,k] = inv_batch·(-T[b,k] + st_O[b]·exp(O[b,k] - lse_O[b]))/5" in text


def test_a_gru_tags_each_token_with_the_parity_so_far():
    """Embedding → GRU(return_sequences) → Pointwise: a tag per token that needs the
    recurrence (the parity of the odd tokens up to it).  Gradients against central
    differences; trained, every tag right, and the share counted by the C never
    passes 1 (it summed a tenth per position: 1.0000000000000007)."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, (600, 10))
    y = np.cumsum(X % 2, axis=1) % 2
    S = sn.Input(10, dtype="int", name="S")
    x = sn.Embedding(4, 8, name="emb")(S)
    x = sn.GRU(16, return_sequences=True, name="gru")(x)
    net = sn.Network(S, sn.Pointwise(2, name="O")(x), loss="softmax_cross_entropy")
    check(net.compile(dtype="float64", seed=0), X[:4], y[:4])
    model = net.compile(dtype="float32", seed=0)
    hist = model.fit(X, y, method="minibatch", batch_size=20, epochs=30, lr=0.01,
                     optimizer="adam", seed=0, progress=False)
    assert max(hist.accuracy) <= 1.0
    assert hist.accuracy[-1] == 1.0
    assert (model.predict_classes(X) == y).all()


def _padded(seed=4):
    """Labels with −1 at the padding of sequences of lengths 5, 3, 1, 4, 5, 2."""
    X, y = data(seed=seed)
    for b, n in enumerate([5, 3, 1, 4, 5, 2]):
        y[b, n:] = -1
    return X, y


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_label_minus_one_marks_a_position_without_a_target(backend):
    """Padding: a position labelled −1 adds nothing to the loss or the gradients; the
    mean still divides by every position (Keras's masked mean over the batch's
    positions; PyTorch's cross_entropy(ignore_index=−1, reduction='sum') / (N·L)).
    The same as rows (N, L, C) with a row of zeros there."""
    X, y = _padded()
    model = network().compile(dtype="float64", seed=3, backend=backend)
    p = model.params
    A = np.tanh(X @ p["W1"].T + p["b1"])
    O = A @ p["W2"].T + p["b2"]
    lse = np.log(np.exp(O).sum(-1))
    keep = y >= 0
    each = lse - np.take_along_axis(O, np.maximum(y, 0)[..., None], -1)[..., 0]
    want = np.sum(np.where(keep, each, 0)) / y.size
    loss, grads = model.loss_and_grad(X, y)
    assert loss == pytest.approx(want, rel=1e-12)
    rows = np.eye(C)[np.maximum(y, 0)] * keep[..., None]
    loss_r, grads_r = model.loss_and_grad(X, rows)
    assert loss_r == pytest.approx(want, rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_r[name], rtol=1e-12, atol=1e-15)
    if backend == "c":
        check(model, X, y)
    # an example with no target at all changes nothing
    X2 = np.concatenate([X, X[:1]])
    y2 = np.concatenate([y, np.full((1, L), -1)])
    _, grads2 = model.loss_and_grad(X2, y2)
    for name in grads:
        np.testing.assert_allclose(grads2[name] * 7, grads[name] * 6, rtol=1e-12, atol=1e-15)


def test_label_minus_one_equals_pytorch_ignore_index():
    torch = pytest.importorskip("torch")
    X, y = _padded(seed=5)
    model = network().compile(dtype="float64", seed=1)
    p = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in model.params.items()}
    out = torch.tanh(torch.from_numpy(X) @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, C), torch.from_numpy(y).reshape(-1),
                                             ignore_index=-1, reduction="sum") / y.size
    loss.backward()
    ours, grads = model.loss_and_grad(X, y)
    assert ours == pytest.approx(loss.item(), rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], p[name].grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_accuracy_counts_only_the_positions_with_a_target(backend):
    X, y = _padded(seed=6)
    model = network().compile(dtype="float64", seed=2, backend=backend)
    guess = model.predict_classes(X)
    keep = y >= 0
    want = float((guess == y)[keep].mean())
    assert model.evaluate(X, y)["accuracy"] == pytest.approx(want)
    # the training accuracy, counted by the kernels before each step's update: one step
    # (sd over the whole batch, minibatch of the whole batch)
    hist = model.fit(X, y, method="minibatch", batch_size=len(X), epochs=1, lr=1e-3,
                     shuffle=False, progress=False)
    assert hist.accuracy[0] == pytest.approx(want)
    # a batch without any target: no step of the parameters, the accuracy measured after
    before = model.theta.copy()
    model.step(X[:2], np.full((2, L), -1), lr=1.0)
    np.testing.assert_array_equal(model.theta, before)
    hist = model.fit(X[:2], np.full((2, L), -1), method="minibatch", batch_size=2, epochs=1,
                     lr=0.1, progress=False)
    assert hist.accuracy == [] and hist.loss == [0.0]      # no accuracy without targets


def test_labels_below_minus_one_are_refused():
    model = network().compile(dtype="float64")
    X, y = data(n=2)
    y[1, 0] = -2
    with pytest.raises(ValueError, match=r"label -2 at row 1, position 0 is not an integer in "
                                         r"0\.\.2 \(or −1: no target there\)"):
        model.loss(X, y)


@pytest.mark.parametrize("which", ["positions", "pixels"])
def test_the_explicit_sympy_form_equals_the_compiled_gradients(which):
    """net.formulas().lambdify evaluates the derived rule on explicit elements (a row
    per position; channels first: class k of pixel q at k·12 + q)."""
    rng = np.random.default_rng(11)
    net = network() if which == "positions" else pixel_network()
    shape = tuple(net.shapes[-1])
    classes, first = 3, which == "pixels"
    X = rng.standard_normal((2, *net.input.shape))
    y = rng.integers(0, classes, (2, *(shape[1:] if first else shape[:-1])))
    T = np.moveaxis(np.eye(classes)[y], -1, 1) if first else np.eye(classes)[y]
    model = net.compile(dtype="float64", seed=1)
    grads = model.loss_and_grad(X, T)[1]
    f = net.formulas()
    for name in ("g_b1", "g_W1"):
        got = f.lambdify(name, batch=2)(X, T, *model.params.values())
        np.testing.assert_allclose(got, grads[name.removeprefix("g_")], rtol=1e-12,
                                   atol=1e-15)


def custom_pixels(layout="channels_first"):
    """pixel_network's 1×1 convolution written as an sn.Layer tensor formula, which
    says its layout itself: O[c,y,x] = Σ_k W[c,k]·X[k,y,x] + b[c]."""
    import sympy as sp
    c, y, x, k = sn.indices("c y x k")
    layer = sn.Layer((3, 3, 4), lambda X, W, b: sp.Sum(W[c, k] * X[k, y, x], (k, 0, 1)) + b[c],
                     index=(c, y, x), params={"W": (3, 2), "b": (3,)}, name="O",
                     layout=layout)
    return sn.Network(sn.Input((2, 3, 4)), layer, loss="softmax_cross_entropy")


def test_a_custom_tensor_layer_says_its_output_is_channels_first():
    """A custom layer's layout was not known: its (C, H, W) output was read as classes on
    the last axis (W), silently.  layout="channels_first" gives a class per pixel over
    the channels, equal to the Conv2d's and to the numpy back-propagation."""
    rng = np.random.default_rng(8)
    X, y = rng.standard_normal((5, 2, 3, 4)), rng.integers(0, 3, (5, 3, 4))
    y[2, 1, 1] = -1
    net = custom_pixels()
    assert net.classes == {"O": 3} and net.classes_first == {"O"}
    for backend in ("c", "numpy"):
        model = net.compile(dtype="float64", seed=1, backend=backend)
        want_loss, want, O = numpy_pixels(model.params, X, y)
        np.testing.assert_allclose(model.forward(X), O, rtol=1e-12, atol=1e-14)
        loss, grads = model.loss_and_grad(X, y)
        assert loss == pytest.approx(want_loss, rel=1e-12)
        for name in want:
            np.testing.assert_allclose(grads[name], want[name], rtol=1e-10, atol=1e-14)
        np.testing.assert_array_equal(model.predict_classes(X), O.argmax(1))
    check(net.compile(dtype="float64", seed=2), X, y)
    # without the layout the last axis is the classes, as for any tensor: 4 of them
    plain = custom_pixels(layout=None)
    assert plain.classes == {"O": 4} and not plain.classes_first


def test_a_custom_layer_that_keeps_its_inputs_layout():
    """An element-wise formula on a Conv1d's output (C, L) with layout="kept" stays
    channels first: a class per position over the channels, and Concatenate joins the
    channels (3 + 3, 6).  Without a layout a (C, L) tensor reads as a sequence: classes
    on its last axis, joined along it (3, 6 + 6)."""
    import sympy as sp
    c, y = sn.indices("c y")
    I = sn.Input((1, 6))
    conv = sn.Conv1d(3, 3, padding=1, name="C")(I)

    def squash(name, layout):
        return sn.Layer((3, 6), lambda X: sp.tanh(X[c, y]), index=(c, y), name=name,
                        layout=layout)(conv)
    net = sn.Network(I, squash("O", "kept"), loss="softmax_cross_entropy")
    assert net.classes == {"O": 3} and net.classes_first == {"O"}
    net = sn.Network(I, squash("O2", None), loss="softmax_cross_entropy")
    assert net.classes == {"O2": 6} and not net.classes_first
    X = np.random.default_rng(0).standard_normal((2, 1, 6))
    for layout, shape in (("kept", (2, 6, 6)), (None, (2, 3, 12))):
        both = sn.Concatenate()([squash(f"A{layout}", layout), squash(f"B{layout}", layout)])
        out = sn.Network(I, both, loss="mse").compile(dtype="float64", seed=0).forward(X)
        assert out.shape == shape
        first, second = np.split(out, 2, axis=1 if layout else 2)   # the same map twice
        np.testing.assert_array_equal(first, second)


def test_a_layout_is_saved_and_a_bad_one_is_refused(tmp_path):
    model = custom_pixels().compile(dtype="float64", seed=1)
    model.save(tmp_path / "m.npz")
    back = sn.load(tmp_path / "m.npz")
    assert back.network.classes_first == {"O"}
    X = np.random.default_rng(1).standard_normal((3, 2, 3, 4))
    y = np.random.default_rng(2).integers(0, 3, (3, 3, 4))
    assert back.loss(X, y) == model.loss(X, y)
    import sympy as sp
    c, y_, x = sn.indices("c y x")
    with pytest.raises(ValueError, match=r"layer 'Q': layout must be one of None, "
                                         r"'channels_first', 'kept', got 'channels_last'"):
        sn.Layer((3, 4), lambda X: X[c, y_], index=(c, y_), name="Q", layout="channels_last")
    with pytest.raises(ValueError, match=r"layer 'Q': layout 'channels_first' needs an output "
                                         r"of channels and positions.*\(3,\)"):
        sn.Layer((3,), lambda X: X[c], index=(c,), name="Q", layout="channels_first")
