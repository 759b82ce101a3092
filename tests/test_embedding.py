"""Embedding on integer inputs: forward, loss and gradients against PyTorch (float64,
1e-10) and 50 SGD steps from copied weights; a numpy reference (rows gathered, gradient
summed into the rows used, np.add.at) and central differences; float32, save/load,
export_c, summary, formulas; indices out of range refused naming the layer and value."""

import numpy as np
import pytest

import symnet as sn
import gradcheck

NUM, DIM, L = 7, 4, 5


def _net(norm=True):
    layers = [sn.Embedding(NUM, DIM, name="E")] + ([sn.LayerNorm()] if norm else []) \
        + [sn.Flatten(), sn.Dense(3)]
    return sn.Network(sn.Input(L, dtype="int"), *layers, loss="softmax_cross_entropy")


def _setup(dtype="float64", seed=0, norm=True):
    model = _net(norm).compile(dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    for k, v in model.params.items():
        v[...] = rng.normal(size=v.shape) * 0.5 + (1.0 if k.startswith("gamma") else 0.0)
    X = rng.integers(0, NUM, (9, L))
    X[0, :3] = 2                              # a row used several times in one example
    T = np.eye(3)[rng.integers(0, 3, 9)]
    return model, X, T.astype(dtype)


def _torch(model, X):
    import torch
    import torch.nn.functional as F
    P = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.params.items()}
    h = F.embedding(torch.tensor(X), P["WE"] if "WE" in P else P["W1"])
    if "gamma2" in P:
        h = F.layer_norm(h, (DIM,), P["gamma2"], P["beta2"], 1e-5)
    k = 4 if "gamma2" in P else 3
    return P, F.linear(h.reshape(h.shape[0], -1), P[f"W{k}"], P[f"b{k}"])


def test_forward_loss_and_gradients_equal_pytorch():
    torch = pytest.importorskip("torch")
    model, X, T = _setup()
    P, o = _torch(model, X)
    np.testing.assert_allclose(model.forward(X), o.detach().numpy(), rtol=1e-10, atol=1e-13)
    loss = torch.nn.functional.cross_entropy(o, torch.tensor(T.argmax(1)))
    loss.backward()
    L_, g = model.loss_and_grad(X, T)
    assert L_ == pytest.approx(loss.item(), rel=1e-10)
    for k, p in P.items():
        np.testing.assert_allclose(g[k], p.grad.numpy(), rtol=1e-10,
                                   atol=1e-12 * np.abs(p.grad.numpy()).max(), err_msg=k)


def test_fifty_sgd_steps_from_copied_weights_stay_with_pytorch():
    torch = pytest.importorskip("torch")
    model, X, T = _setup(seed=1)
    P, _ = _torch(model, X)
    for _ in range(50):
        model.step(X, T, lr=0.2)
        for p in P.values():
            p.grad = None
        _, o = _torch_with(P, X)
        torch.nn.functional.cross_entropy(o, torch.tensor(T.argmax(1))).backward()
        with torch.no_grad():
            for p in P.values():
                p -= 0.2 * p.grad
    for k, p in P.items():
        np.testing.assert_allclose(model.params[k], p.detach().numpy(), rtol=0, atol=1e-9,
                                   err_msg=k)


def _torch_with(P, X):
    import torch
    import torch.nn.functional as F
    h = F.layer_norm(F.embedding(torch.tensor(X), P["W1"]), (DIM,), P["gamma2"], P["beta2"],
                     1e-5)
    return P, F.linear(h.reshape(h.shape[0], -1), P["W4"], P["b4"])


def test_gradient_is_summed_into_the_rows_used_as_numpy_says():
    model, X, T = _setup(seed=2, norm=False)
    W, W3, b3 = (model.params[k].copy() for k in ("W1", "W3", "b3"))
    H = W[X].reshape(len(X), -1)
    O = H @ W3.T + b3
    S = np.exp(O - O.max(1, keepdims=True))
    S /= S.sum(1, keepdims=True)
    dO = (S - T) / len(X)
    dH = (dO @ W3).reshape(len(X), L, DIM)
    gW = np.zeros_like(W)
    np.add.at(gW, X, dH)                        # every use of a row adds into it
    _, g = model.loss_and_grad(X, T)
    np.testing.assert_allclose(g["W1"], gW, rtol=1e-12, atol=1e-15)
    unused = sorted(set(range(NUM)) - set(X.ravel()))
    assert (g["W1"][unused] == 0).all()
    np.testing.assert_allclose(model.forward(X), O, rtol=1e-12)


def test_gradients_equal_central_differences():
    model, X, T = _setup(seed=3)
    gradcheck.check(model, X.astype(np.float64), T)


def test_float32_trains():
    model, X, T = _setup(dtype="float32", seed=4)
    before = model.loss(X, T)
    model.fit(X, T, method="minibatch", batch_size=3, epochs=30, lr=0.2, seed=0,
              progress=False)
    assert model.loss(X, T) < 0.5 * before


def test_save_load_and_export(tmp_path):
    import test_export as te
    model, X, T = _setup(seed=5)
    model.save(tmp_path / "m.npz")
    back = sn.load(tmp_path / "m.npz")
    assert back.network.input.dtype == "int"
    assert back.network.describe() == model.network.describe()
    np.testing.assert_array_equal(back.forward(X), model.forward(X))
    rng = np.random.default_rng(5)
    rows = te.STEPS * te.BATCH
    Xe = rng.integers(0, NUM, (rows, L)).astype(np.float64)
    Te = np.eye(3)[rng.integers(0, 3, rows)]
    lr, idx = np.array([0.05, 0.02, 0.01]), rng.permutation(rows).astype(np.int64)
    want = te._reference(model, Xe, Te, lr, idx)
    got = te._run_harness(model, tmp_path, te._native_flags(), Xe, Te, lr, idx)
    for k in ("O", "grads", "params", "params_train"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_exported_c_gives_a_zero_embedding_for_an_index_out_of_range(tmp_path):
    """Python refuses 10, -1 and 2.5 for Embedding(7, ...); the C (a sum over the table's
    rows of [index == v]) gives those positions a zero embedding, reading nothing outside
    the table, as docs/export.md says."""
    from pathlib import Path
    import test_export as te
    model, _, _ = _setup(norm=False, seed=4)
    X = np.array([[10, -1, 2.5, 6, 0], [3, 7, -0.5, 1, 1]])
    with pytest.raises(ValueError, match=r"layer 'E' \(Embedding\(7, 4\)\): index 10"):
        model.forward(X)
    got, _, _ = te._run_forward(model, tmp_path, X)
    W, V, b = (np.array(model.params[k]) for k in ("W1", "W3", "b3"))
    valid = (X == np.round(X)) & (X >= 0) & (X < NUM)
    E = np.where(valid[..., None], W[np.where(valid, X, 0).astype(int)], 0.0)
    np.testing.assert_allclose(got, E.reshape(len(X), -1) @ V.T + b, rtol=1e-12, atol=1e-13)
    page = (Path(__file__).resolve().parent.parent / "docs" / "export.md").read_text()
    para = " ".join(page.split("**Indices out of range.**")[1].split("\n\n")[0].split())
    assert "gives a zero embedding, without reading outside the table" in para


def test_summary_and_formulas():
    net = _net(norm=False)
    rows = {r.name: r for r in net.compile().summary(batch_size=2).layers}
    assert rows["E"].params == NUM * DIM
    text = str(net.formulas())
    assert "z_E[b,l,d] = Σ_v W1[v,d]·(1 if Eq(I[b,l], v) else 0)" in text
    assert "g_W1[v,d] = Σ_b Σ_l delta_E[b,l,d]·(1 if Eq(I[b,l], v) else 0)" in text


@pytest.mark.parametrize("bad,shown", [(7, "index 7 at X['I'][1, 3]"),
                                       (-1, "index -1 at X['I'][1, 3]"),
                                       (2.5, "index 2.5 at X['I'][1, 3]")])
def test_indices_out_of_range_are_refused_naming_the_layer_and_value(bad, shown):
    model, X, T = _setup(seed=6)
    X = X.astype(np.float64)
    X[1, 3] = bad
    for call in (lambda: model.forward(X), lambda: model.loss(X, T),
                 lambda: model.step(X, T, lr=0.1),
                 lambda: model.fit(X, T, epochs=1, progress=False)):
        with pytest.raises(ValueError, match=r"layer 'E' \(Embedding\(7, 4\)\): " +
                           shown.replace("[", r"\[").replace("]", r"\]")
                           + r" \(example 1, position 3\) is not a whole number in 0..6"):
            call()


def test_embedding_needs_an_integer_input():
    with pytest.raises(ValueError, match=r"Embedding\(7, 4\).*reads integer indices: call it "
                                         r"on an sn.Input\(L, dtype='int'\)"):
        sn.Network(sn.Input(L), sn.Embedding(NUM, DIM), sn.Flatten(), sn.Dense(1), loss="mse")
    with pytest.raises(ValueError, match="Input dtype must be 'float' or 'int', got 'long'"):
        sn.Input(3, dtype="long")


def test_summary_counts_the_table_sums():
    rows = {r.name: r for r in _net(norm=False).compile().summary(batch_size=3).layers}
    assert rows["E"].flops_forward == 2 * 3 * L * DIM * NUM     # Σ_v for every output
    assert rows["E"].flops_backward == 2 * 3 * L * DIM * NUM    # g_W: the same terms
