"""BatchNorm1d and BatchNorm2d: batch statistics in training, running statistics in
evaluation.  Forward, loss and gradients against PyTorch in training mode (float64,
1e-10), 50 SGD steps from copied weights with the running statistics, evaluation against
PyTorch's eval mode; a numpy reference and central differences; save/load, export_c
(evaluation), summary; a batch of one refused naming the layer."""

import numpy as np
import pytest

import symnet as sn
import gradcheck

CASES = {   # input shape, the layer below, BatchNorm
    "1d": ((5,), lambda: sn.Dense(4, "tanh"), sn.BatchNorm1d),
    "1d-seq": ((3, 4), lambda: sn.Conv1d(3, 1, activation="tanh"), sn.BatchNorm1d),
    "2d": ((2, 3, 3), lambda: sn.Conv2d(2, 1, activation="tanh"), sn.BatchNorm2d),
}


def _net(case):
    shape, below, bn = CASES[case]
    return sn.Network(sn.Input(shape), below(), bn(name="N"), sn.Flatten(), sn.Dense(3),
                      loss="softmax_cross_entropy")


def _setup(case, dtype="float64", seed=0, batch=6):
    model = _net(case).compile(dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    for k, v in model.params.items():
        if not k.startswith(("mean", "var", "mode")):
            v[...] = rng.normal(size=v.shape) * 0.5 + (1.0 if k.startswith("gamma") else 0.0)
    X = rng.normal(size=(batch, *CASES[case][0])) * 2 + 0.5
    T = np.eye(3)[rng.integers(0, 3, batch)]
    return model, X.astype(dtype), T.astype(dtype)


def _torch_forward(case, P, X, running, training):
    import torch
    import torch.nn.functional as F
    X = torch.tensor(X)
    h = {"1d": lambda: F.linear(X, P["W1"], P["b1"]),
         "1d-seq": lambda: F.conv1d(X, P["W1"], P["b1"]),
         "2d": lambda: F.conv2d(X, P["W1"], P["b1"])}[case]()
    h = F.batch_norm(torch.tanh(h), running[0], running[1], P["gamma2"], P["beta2"],
                     training=training, momentum=0.1, eps=1e-5)
    return F.linear(h.reshape(h.shape[0], -1), P["W4"], P["b4"])


def _torch_params(model):
    import torch
    return {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.params.items()
            if not k.startswith(("mean", "var", "mode"))}


@pytest.mark.parametrize("case", list(CASES))
def test_training_forward_loss_and_gradients_equal_pytorch(case):
    torch = pytest.importorskip("torch")
    model, X, T = _setup(case)
    P = _torch_params(model)
    C = model.params["gamma2"].size
    running = [torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)]
    o = _torch_forward(case, P, X, running, True)
    loss = torch.nn.functional.cross_entropy(o, torch.tensor(T.argmax(1)))
    loss.backward()
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(loss.item(), rel=1e-10)
    for k, p in P.items():
        np.testing.assert_allclose(g[k], p.grad.numpy(), rtol=1e-10,
                                   atol=1e-12 * np.abs(p.grad.numpy()).max(), err_msg=k)


@pytest.mark.parametrize("case", list(CASES))
def test_fifty_sgd_steps_and_the_running_statistics_stay_with_pytorch(case):
    torch = pytest.importorskip("torch")
    model, X, T = _setup(case, seed=1)
    P = _torch_params(model)
    C = model.params["gamma2"].size
    running = [torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)]
    rng = np.random.default_rng(2)
    for _ in range(50):
        rows = rng.permutation(len(X))[:4]          # batches that differ: the stats move
        model.step(X[rows], T[rows], lr=0.1)
        for p in P.values():
            p.grad = None
        o = _torch_forward(case, P, X[rows], running, True)
        torch.nn.functional.cross_entropy(o, torch.tensor(T[rows].argmax(1))).backward()
        with torch.no_grad():
            for p in P.values():
                p -= 0.1 * p.grad
    for k, p in P.items():
        np.testing.assert_allclose(model.params[k], p.detach().numpy(), rtol=0, atol=1e-9,
                                   err_msg=k)
    np.testing.assert_allclose(model.params["mean2"], running[0].numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.params["var2"], running[1].numpy(), rtol=0, atol=1e-9)
    # evaluation: the running statistics, as PyTorch's eval mode
    with torch.no_grad():
        want = _torch_forward(case, P, X, running, False).numpy()
    np.testing.assert_allclose(model.forward(X), want, rtol=1e-10, atol=1e-12)
    assert model.evaluate(X, T)["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(torch.tensor(want), torch.tensor(T.argmax(1))).item(),
        rel=1e-10)


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_equal_central_differences(case):
    model, X, T = _setup(case, seed=3)
    gradcheck.check(model, X, T)


def test_training_equals_the_numpy_batch_statistics():
    model, X, T = _setup("2d", seed=4, batch=5)
    W1, b1 = model.params["W1"], model.params["b1"]
    H = np.tanh(np.einsum("ck,bkyx->bcyx", W1[:, :, 0, 0], X) + b1[None, :, None, None])
    mu = H.mean(axis=(0, 2, 3), keepdims=True)
    var = H.var(axis=(0, 2, 3), keepdims=True)
    N = (H - mu) / np.sqrt(var + 1e-5) * model.params["gamma2"][None, :, None, None] \
        + model.params["beta2"][None, :, None, None]
    O = N.reshape(5, -1) @ model.params["W4"].T + model.params["b4"]
    S = np.exp(O - O.max(1, keepdims=True))
    S /= S.sum(1, keepdims=True)
    assert model.loss(X, T) == pytest.approx(-np.mean(np.log((S * T).sum(1))), rel=1e-12)
    model.step(X, T, lr=0.0 + 1e-300)         # one step: the running statistics move
    n = 5 * 9
    np.testing.assert_allclose(model.params["mean2"], 0.1 * mu.ravel(), rtol=1e-12)
    np.testing.assert_allclose(model.params["var2"], 0.9 + 0.1 * var.ravel() * n / (n - 1),
                               rtol=1e-12)


def test_fit_keeps_running_statistics_and_float32_trains():
    model, X, T = _setup("1d", dtype="float32", seed=5, batch=40)
    before = model.evaluate(X, T)["loss"]
    model.fit(X, T, method="minibatch", batch_size=8, epochs=20, lr=0.2, seed=0,
              progress=False)
    assert model.evaluate(X, T)["loss"] < before
    assert not np.allclose(model.params["mean2"], 0)       # the statistics were kept
    assert model.params["mode2"][0] == 0                    # evaluate left evaluation mode


def test_save_load_and_export_in_evaluation_mode(tmp_path):
    import test_export as te
    model, X, T = _setup("1d-seq", seed=6)
    for _ in range(3):
        model.step(X, T, lr=0.1)
    model.save(tmp_path / "m.npz")
    back = sn.load(tmp_path / "m.npz")
    assert back.network.describe() == model.network.describe()
    for k in ("mean2", "var2"):
        np.testing.assert_array_equal(back.params[k], model.params[k])
    np.testing.assert_array_equal(back.forward(X), model.forward(X))
    rng = np.random.default_rng(6)
    Xe, _ = te._data(model, rng)
    got, _, _ = te._run_forward(model, tmp_path, Xe)
    np.testing.assert_array_equal(got, model.forward(Xe))      # evaluation mode


def test_a_batch_of_one_in_training_is_refused_naming_the_layer():
    model, X, T = _setup("1d", seed=7)
    match = r"layer 'N' \(BatchNorm1d\): a batch of 1 example\(s\) has one value per channel"
    for call in (lambda: model.loss_and_grad(X[:1], T[:1]), lambda: model.loss(X[:1], T[:1]),
                 lambda: model.step(X[:1], T[:1], lr=0.1)):
        with pytest.raises(ValueError, match=match):
            call()
    assert model.forward(X[:1]).shape == (1, 3)        # evaluation takes one example
    with pytest.raises(ValueError, match=r"momentum must be a number in \(0, 1\]"):
        sn.BatchNorm2d(momentum=0)
    with pytest.raises(ValueError, match=r"takes inputs of 3 axes"):
        sn.Network(sn.Input(4), sn.BatchNorm2d(), loss="mse")


@pytest.mark.parametrize("kw, says", [
    (dict(batch_size=6), r"with 7 examples and batch_size=6 the last minibatch of each "
                         r"epoch would hold 1 example: use a batch_size for which "
                         r"7 % batch_size != 1, e.g. 5, or drop one example"),
    (dict(batch_size=1), r"batch_size=1 makes every batch one example"),
    (dict(method="sgd"), r"method='sgd' takes one example per step: use "
                         r"method='minibatch' with batch_size of 2 or more"),
], ids=["short-last-minibatch", "batch_size-1", "sgd"])
def test_fit_refuses_a_batch_of_one_before_its_first_step(kw, says):
    """A batch of one in any step of the epoch (a short last minibatch, sgd) is refused
    before the first step: the parameters, running statistics and optimizer unchanged."""
    model, X, T = _setup("1d", seed=7, batch=7)
    model.step(X, T, lr=0.1, optimizer="adam")                    # an optimizer state
    before = {k: np.array(v) for k, v in model.params.items()}
    moments = model.optimizer.s1.copy(), model.optimizer.t
    with pytest.raises(ValueError, match=r"layer 'N' \(BatchNorm1d\): a batch of 1 example "
                                         r"has one value per channel in training.*" + says):
        model.fit(X, T, epochs=2, optimizer="adam", seed=0, progress=False, **kw)
    for k, v in before.items():
        np.testing.assert_array_equal(model.params[k], v, err_msg=k)
    np.testing.assert_array_equal(model.optimizer.s1, moments[0])
    assert model.optimizer.t == moments[1]
    hist = model.fit(X, T, batch_size=5, epochs=2, progress=False)    # the suggested size
    assert hist.steps_per_epoch == [2, 2]


def test_summary_counts_the_sums_over_the_batch():
    rows = {r.name: r for r in _net("2d").compile().summary(batch_size=4).layers}
    # Σ over 4 examples × 9 positions once for each of the 2 channels (symnet.plan.batchsum),
    # 2 flops a term: 2·4·9·2 = 2·B·n_out
    assert rows["N_c"].flops_forward == rows["N"].flops_forward == 2 * 4 * 9 * 2
    assert rows["N"].params == 2 * 2 + 2 * 2 + 1        # γ, β, mean, var, mode


def test_a_training_batch_larger_than_one_call_is_refused_naming_the_layer(monkeypatch):
    """Its statistics would be those of the call's parts: refused, not approximated."""
    from symnet import guards
    monkeypatch.setattr(guards, "CHUNK", 4)           # 4 rows per compiled call
    model, X, T = _setup("1d", seed=7)
    assert model.rows_per_call == 4 and X.shape[0] == 6
    before = {k: np.array(v) for k, v in model.params.items() if not k.startswith("mode")}
    match = (r"layer 'N' \(BatchNorm1d\): a training batch of 6 examples is more than one "
             r"compiled call takes \(4 rows")
    for call in (lambda: model.loss_and_grad(X, T), lambda: model.loss(X, T),
                 lambda: model.step(X, T, lr=0.1),
                 lambda: model.fit(X, T, method="sd", epochs=1, progress=False)):
        with pytest.raises(ValueError, match=match):
            call()
    for k, v in before.items():                          # nothing was changed
        np.testing.assert_array_equal(model.params[k], v, err_msg=k)
    assert model.forward(X).shape == (6, 3)              # evaluation: any batch
    model.loss_and_grad(X[:4], T[:4])                     # one call's batch: taken
    # fit's minibatch runs a whole batch in one runtime call: exact, so allowed
    model.fit(X, T, method="minibatch", batch_size=6, epochs=1, progress=False)


def test_validation_loss_is_evaluation_mode_and_takes_any_size(monkeypatch):
    """fit's validation loss uses the running statistics (as evaluate), so validation
    data larger than one compiled call is no training batch and is taken."""
    from symnet import guards
    monkeypatch.setattr(guards, "CHUNK", 4)
    model, X, T = _setup("1d", seed=3, batch=8)
    Xv, Tv = X[:6] * 0.5, T[:6]
    hist = model.fit(X, T, method="minibatch", batch_size=4, epochs=2, lr=0.1,
                     validation_data=(Xv, Tv), progress=False, shuffle=False)
    assert hist.val_loss[-1] == model.evaluate(Xv, Tv)["loss"]


FOLD = {   # a BatchNorm after a layer without activation folds into its W and b
    "dense": ((5,), lambda: sn.Dense(4, name="D"), sn.BatchNorm1d),
    "conv1d": ((3, 6), lambda: sn.Conv1d(3, 2, name="D"), sn.BatchNorm1d),
    "conv2d": ((2, 5, 5), lambda: sn.Conv2d(3, 3, name="D"), sn.BatchNorm2d),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(FOLD))
def test_export_folds_batchnorm_into_the_layer_before(case, dtype, tmp_path):
    shape, below, bn = FOLD[case]
    net = sn.Network(sn.Input(shape), below(), bn(name="N"), sn.Flatten(),
                     sn.Dense(3, "tanh"), loss="mse")
    model = net.compile(dtype=dtype, seed=1)
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(24, *shape)) * 2 + 1).astype(dtype)
    T = rng.normal(size=(24, 3)).astype(dtype)
    model.fit(X, T, method="minibatch", batch_size=8, epochs=3, lr=0.1, seed=0,
              progress=False)
    assert np.abs(model.params["mean2"]).max() > 0.05      # running statistics of their own
    import test_export as te
    got, c, h = te._run_forward(model, tmp_path, X[:7])
    want = model.predict(X[:7])
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(got, want, **tol)
    # the folded weights round differently: a few ulp of the largest output (measured at
    # most 11.25), the exception docs/export.md's "Same numbers" states
    assert np.abs(got - want).max() <= 16 * np.spacing(np.abs(want).max())
    # the BatchNorm is gone from the C: its parameters, its two nodes and its sums
    n = model.params["W1"].size + model.params["b1"].size + model.params["W4"].size + 3
    assert f"#define NET_N_PARAMS {n}" in h
    for name in ("gamma2", "mean2", "N_c", "z_N"):
        assert name not in c, name
    # the trained values themselves: W scaled per output channel, b moved
    P = {k: v.astype(np.float64) for k, v in model.params.items()}
    s = P["gamma2"] / np.sqrt(P["var2"] + 1e-5)
    W = P["W1"] * s.reshape((-1,) + (1,) * (P["W1"].ndim - 1))
    from symnet.backend.c.export import literals
    assert ", ".join(literals(W.ravel()[:2].astype(dtype))) in c


def test_a_batchnorm_that_cannot_fold_stays_in_the_export(tmp_path):
    """After an activation (tanh) the BatchNorm is not affine in the layer's W: it stays,
    with its running statistics, and the export still computes what predict does."""
    model, X, T = _setup("1d", seed=9, batch=12)
    for _ in range(3):
        model.step(X, T, lr=0.1)
    import test_export as te
    got, c, h = te._run_forward(model, tmp_path, X)
    np.testing.assert_allclose(got, model.forward(X), rtol=1e-12, atol=1e-13)   # the logits
    assert "gamma2" in c and "mean2" in c
    assert f"#define NET_N_PARAMS {model.theta.size}" in h


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_each_sum_over_the_batch_runs_once_per_channel(kind):
    """symnet.plan.batchsum: no loop of the plan runs over two batch indices (the B² loops
    of a sum per output element are gone); the four sums (two forward, two backward) each
    have a buffer of their own and a BatchSum after them."""
    from symnet.plan.lower import plan
    from symnet.plan.ops import BatchSum, Loop
    p = plan(_net(kind).graph())
    for op in p.forward + p.backward:
        if isinstance(op, Loop):
            assert sum(e == "batch" for _, e in op.indices) <= 1, op.comment
    assert [(s["target"], s["kind"]) for s in p.batch_sums] == \
        [("z_N_c", 0), ("z_N", 0), ("dL_dN_c", 1), (p.batch_sums[3]["target"], 1)]
    assert [op.buffer for op in p.forward + p.backward if isinstance(op, BatchSum)] == \
        [s["name"] for s in p.batch_sums]
    assert p.unsynced == []
