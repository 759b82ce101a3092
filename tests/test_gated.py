"""GRU and LSTM: the cells for unroll and the sequence layers over (batch, steps, features).

Checked three ways: a numpy loop written from PyTorch's documented equations (gate
order r, z, n and i, f, g, o), float64 central differences of the loss, and, when
installed, PyTorch itself (nn.GRU / nn.LSTM with batch_first=True, weights copied):
forward, loss, every gradient, and 50 SGD steps.
"""

import numpy as np
import pytest
from gradcheck import check

import symnet as sn

L, D, H = 4, 3, 5


def sig(z):
    return 1 / (1 + np.exp(-z))


def gru_ref(X, W, U, b, c):
    """Every state of PyTorch's GRU (batch_first) from h_0 = 0."""
    h, out = np.zeros((X.shape[0], U.shape[1])), []
    for t in range(X.shape[1]):
        gx, gh = X[:, t] @ W.T + b, h @ U.T + c
        r, z, n = np.split(gx, 3, axis=1), np.split(gh, 3, axis=1), None
        rg = sig(r[0] + z[0])
        zg = sig(r[1] + z[1])
        n = np.tanh(r[2] + rg * z[2])
        h = (1 - zg) * n + zg * h
        out.append(h)
    return np.stack(out, 1)


def lstm_ref(X, W, U, b, c):
    """Every state of PyTorch's LSTM (batch_first) from h_0 = C_0 = 0."""
    h = C = np.zeros((X.shape[0], U.shape[1]))
    out = []
    for t in range(X.shape[1]):
        i, f, g, o = np.split(X[:, t] @ W.T + b + h @ U.T + c, 4, axis=1)
        C = sig(f) * C + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(C)
        out.append(h)
    return np.stack(out, 1)


REF = {"gru": gru_ref, "lstm": lstm_ref}
LAYER = {"gru": sn.GRU, "lstm": sn.LSTM}


def network(kind, sequences=False):
    S = sn.Input((L, D), name="S")
    h = LAYER[kind](H, return_sequences=sequences)(S)
    if sequences:
        h = sn.Flatten(name="F")(h)
    return sn.Network(S, sn.Dense(2, name="O")(h), loss="mse")


def data(rng, n=6):
    return rng.normal(size=(n, L, D)), rng.normal(size=(n, 2))


def cell_params(model, kind):
    p = model.params
    k = next(n for n in p if n.startswith("U"))[1:]
    return [p[f"{x}{k}"] for x in "WUbc"]


def head(model):
    """The output layer's W and b (the only parameters with 2 rows)."""
    p = model.params
    W = next(n for n in p if n.startswith("W") and p[n].shape[0] == 2)
    return W, "b" + W[1:]


def randomise(model, rng, scale=0.5):
    for k, v in model.params.items():
        model.params[k] = rng.normal(scale=scale, size=v.shape)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("sequences", [False, True])
def test_forward_equals_numpy_loop(kind, sequences, rng):
    model = network(kind, sequences).compile(dtype="float64", seed=0)
    randomise(model, rng)
    X, _ = data(rng)
    hs = REF[kind](X, *cell_params(model, kind))
    feats = hs.reshape(len(X), -1) if sequences else hs[:, -1]
    Wo, bo = head(model)
    expect = feats @ model.params[Wo].T + model.params[bo]
    np.testing.assert_allclose(model.forward(X), expect, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("sequences", [False, True])
def test_gradients_central_differences(kind, sequences, rng):
    model = network(kind, sequences).compile(dtype="float64", seed=0)
    randomise(model, rng)
    X, T = data(rng)
    check(model, X, T)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_parameter_shapes_are_pytorchs(kind):
    net = network(kind)
    g = 3 if kind == "gru" else 4
    shapes = net.param_shapes()
    assert shapes["W1"] == (g * H, D) and shapes["U1"] == (g * H, H)
    assert shapes["b1"] == (g * H,) and shapes["c1"] == (g * H,)


def test_cells_in_unroll_and_stacked_layers(rng):
    """Cells are usable with unroll directly; two sequence layers stack (h, h2)."""
    S = sn.Input((L, D), name="S")
    h = sn.recurrent.unroll(sn.recurrent.GRUCell(H, name="g"), steps=L)(S)
    model = sn.Network(S, sn.Dense(2, name="O")(h), loss="mse").compile(dtype="float64",
                                                                         seed=0)
    randomise(model, rng)
    X, T = data(rng)
    p = model.params
    expect = gru_ref(X, p["W1"], p["U1"], p["b1"], p["c1"])[:, -1] @ p["W6"].T + p["b6"]
    np.testing.assert_allclose(model.forward(X), expect, rtol=1e-12)
    net = sn.Network(S, sn.LSTM(4, return_sequences=True), sn.GRU(3), sn.Dense(2, name="O"),
                     loss="mse")
    assert "h2_4" in net.names
    m = net.compile(dtype="float64", seed=0)
    randomise(m, rng)
    p = m.params
    hs = lstm_ref(X, p["W1"], p["U1"], p["b1"], p["c1"])
    k = next(n for n in p if n.startswith("U") and n != "U1")[1:]
    h2 = gru_ref(hs, p[f"W{k}"], p[f"U{k}"], p[f"b{k}"], p[f"c{k}"])[:, -1]
    Wo, bo = head(m)
    np.testing.assert_allclose(m.forward(X), h2 @ p[Wo].T + p[bo], rtol=1e-12)
    check(m, X, T)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_float32_trains_saves_loads_exports(kind, rng, tmp_path):
    model = network(kind, True).compile(dtype="float32", seed=0)
    X, T = data(rng, 32)
    X, T = X.astype(np.float32), T.astype(np.float32)
    before = model.loss(X, T)
    for _ in range(30):
        model.step(X, T, lr=0.1)
    assert model.loss(X, T) < 0.9 * before
    model.save(tmp_path / "m.npz")
    again = sn.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.forward(X), model.forward(X))
    model.export_c(tmp_path / "c")
    code = (tmp_path / "c" / "net.c").read_text()
    assert "h_gx" in code and "h_4_gh" in code and "sigmoid" in code.lower()


def test_formulas_and_summary_name_the_gates():
    net = network("lstm")
    text = net.formulas() if isinstance(net.formulas(), str) else str(net.formulas())
    assert "h_2_c[b,i]" in text and "U1" in text
    model = net.compile(dtype="float64", seed=0)
    s = model.summary() if isinstance(model.summary(), str) else str(model.summary())
    assert "lstm_memory" in s and "h_4_gh" in s


def test_errors_name_the_layer():
    S = sn.Input((L, D), name="S")
    with pytest.raises(ValueError, match="GRUCell units must be a positive integer"):
        sn.recurrent.GRUCell(0)
    with pytest.raises(ValueError, match=r"GRU 'g' reads a \(steps, features\) sequence, "
                                         r"got shape \(3, 4, 5\)"):
        sn.GRU(4, name="g")(sn.Input((3, 4, 5)))
    with pytest.raises(ValueError, match="LSTM 'm' reads a .steps, features. sequence"):
        sn.LSTM(4, name="m")(sn.Dense(3)(sn.Input(3)))
    x = sn.recurrent.Slice(0, D)(S)
    g = sn.recurrent.unroll(sn.recurrent.GRUCell(H, name="g"), steps=L)(S)
    with pytest.raises(ValueError, match="LSTMCell 'c': the previous state must be an "
                                         "LSTMCell's output"):
        sn.recurrent.LSTMCell(H, name="c")([x, g])


# ------------------------------------------------------------------ PyTorch
def _torch_pair(kind, sequences, rng):
    torch = pytest.importorskip("torch")
    torch.set_default_dtype(torch.float64)
    model = network(kind, sequences).compile(dtype="float64", seed=0)
    randomise(model, rng)
    rnn = (torch.nn.GRU if kind == "gru" else torch.nn.LSTM)(D, H, batch_first=True)
    lin = torch.nn.Linear(L * H if sequences else H, 2)
    W, U, b, c = cell_params(model, kind)
    p = model.params
    Wo, bo = head(model)
    with torch.no_grad():
        for t, a in ((rnn.weight_ih_l0, W), (rnn.weight_hh_l0, U), (rnn.bias_ih_l0, b),
                     (rnn.bias_hh_l0, c), (lin.weight, p[Wo]), (lin.bias, p[bo])):
            t.copy_(torch.from_numpy(a))
    k = next(n for n in p if n.startswith("U"))[1:]
    pairs = {f"W{k}": rnn.weight_ih_l0, f"U{k}": rnn.weight_hh_l0, f"b{k}": rnn.bias_ih_l0,
             f"c{k}": rnn.bias_hh_l0, Wo: lin.weight, bo: lin.bias}

    def forward(X):
        out, _ = rnn(torch.from_numpy(X))
        feats = out.reshape(len(X), -1) if sequences else out[:, -1]
        return lin(feats)
    return torch, model, pairs, forward


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("sequences", [False, True])
def test_equals_pytorch(kind, sequences, rng):
    torch, model, pairs, forward = _torch_pair(kind, sequences, rng)
    X, T = data(rng)
    o = forward(X)
    np.testing.assert_allclose(model.forward(X), o.detach().numpy(), rtol=1e-10, atol=1e-14)
    loss = torch.nn.functional.mse_loss(o, torch.from_numpy(T))
    loss.backward()
    L_, g = model.loss_and_grad(X, T)
    assert L_ == pytest.approx(loss.item(), rel=1e-10)
    for name, t in pairs.items():
        ref = t.grad.numpy()
        np.testing.assert_allclose(g[name], ref, rtol=1e-10,
                                   atol=1e-10 * np.abs(ref).max(), err_msg=name)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_50_sgd_steps_follow_pytorch(kind, rng):
    torch, model, pairs, forward = _torch_pair(kind, False, rng)
    X, T = data(rng, 16)
    opt = torch.optim.SGD(list(pairs.values()), lr=0.1)
    for _ in range(50):
        opt.zero_grad()
        torch.nn.functional.mse_loss(forward(X), torch.from_numpy(T)).backward()
        opt.step()
        model.step(X, T, lr=0.1)
    for name, t in pairs.items():
        assert np.isfinite(t.detach().numpy()).all(), name
        np.testing.assert_allclose(model.params[name], t.detach().numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)


def _stack(kind, layers=2, sequences=False):
    """S (L, D) → GRU/LSTM(H, num_layers=layers) → Dense(2); each layer's W, U, b, c by
    the U parameters' order (the layers' order)."""
    S = sn.Input((L, D), name="S")
    h = LAYER[kind](H, return_sequences=sequences, num_layers=layers, name="R")(S)
    if sequences:
        h = sn.Flatten(name="F")(h)
    model = sn.Network(S, sn.Dense(2, name="O")(h), loss="mse").compile(dtype="float64")
    us = sorted((n for n in model.params if n.startswith("U")), key=lambda n: int(n[1:]))
    return model, [[model.params[f"{x}{u[1:]}"] for x in "WUbc"] for u in us]


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("sequences", [False, True])
def test_num_layers_stack_equals_numpy_loop_and_central_differences(kind, sequences, rng):
    model, cells = _stack(kind, 3, sequences)
    assert len(cells) == 3 and cells[1][0].shape[1] == H      # layer 2 reads layer 1's states
    randomise(model, rng)
    X, T = data(rng)
    hs = X
    for W, U, b, c in cells:
        hs = REF[kind](hs, W, U, b, c)
    feats = hs.reshape(len(X), -1) if sequences else hs[:, -1]
    Wo, bo = head(model)
    np.testing.assert_allclose(model.forward(X), feats @ model.params[Wo].T
                               + model.params[bo], rtol=1e-12, atol=1e-13)
    check(model, X, T)
    with pytest.raises(ValueError, match="num_layers"):
        LAYER[kind](H, num_layers=0)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_num_layers_equals_pytorch(kind, rng):
    torch = pytest.importorskip("torch")
    torch.set_default_dtype(torch.float64)
    model, cells = _stack(kind, 2)
    randomise(model, rng)
    rnn = (torch.nn.GRU if kind == "gru" else torch.nn.LSTM)(D, H, num_layers=2,
                                                                batch_first=True)
    us = sorted((n for n in model.params if n.startswith("U")), key=lambda n: int(n[1:]))
    pairs = {}
    for layer, u in enumerate(us):
        for x, t in zip("WUbc", ("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
            pairs[f"{x}{u[1:]}"] = getattr(rnn, f"{t}_l{layer}")
    with torch.no_grad():
        for name, t in pairs.items():
            t.copy_(torch.from_numpy(model.params[name]))
    Wo, bo = head(model)
    X, T = data(rng)
    out, _ = rnn(torch.from_numpy(X))
    o = out[:, -1] @ torch.from_numpy(model.params[Wo]).T + torch.from_numpy(model.params[bo])
    np.testing.assert_allclose(model.forward(X), o.detach().numpy(), rtol=1e-10, atol=1e-14)
    loss = torch.nn.functional.mse_loss(o, torch.from_numpy(T))
    loss.backward()
    L_, g = model.loss_and_grad(X, T)
    assert L_ == pytest.approx(loss.item(), rel=1e-10)
    for name, t in pairs.items():
        ref = t.grad.numpy()
        np.testing.assert_allclose(g[name], ref, rtol=1e-10,
                                   atol=1e-10 * np.abs(ref).max(), err_msg=name)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_a_sequence_of_one_step(kind, rng):
    """return_sequences and the stacks' inner layers on a sequence of one step: its
    states are one state (the merge of the steps was refused for fewer than two)."""
    S = sn.Input((1, D), name="S")
    h = LAYER[kind](H, return_sequences=True, num_layers=2, name="R")(S)
    model = sn.Network(S, sn.Dense(2, name="O")(sn.Flatten(name="F")(h)),
                       loss="mse").compile(dtype="float64")
    randomise(model, rng)
    # from h_0 = 0 the one step never reads U: the cells have W, b, c alone
    cs = sorted((n for n in model.params if n.startswith("c")), key=lambda n: int(n[1:]))
    assert not any(n.startswith("U") for n in model.params)
    X, T = rng.normal(size=(3, 1, D)), rng.normal(size=(3, 2))
    hs = X
    for c in cs:
        W, b = model.params["W" + c[1:]], model.params["b" + c[1:]]
        hs = REF[kind](hs, W, np.zeros((len(W), H)), b, model.params[c])
    Wo, bo = head(model)
    np.testing.assert_allclose(model.forward(X), hs[:, 0] @ model.params[Wo].T
                               + model.params[bo], rtol=1e-12, atol=1e-13)
    check(model, X, T)


def test_after_an_embedding_or_any_sequence_layer(rng):
    """GRU/LSTM read an Input or another GRU/LSTM's sequence only ("reads a (steps,
    features) sequence: an Input((steps, features)) or a sequence layer's output, got
    Embedding(...)"): Embedding → GRU, the text classifier, could not be written.  The
    sequence's shape now comes from the layers before, whatever they are."""
    tokens = sn.Input(L, dtype="int", name="tok")
    e = sn.Embedding(7, D, name="E")(tokens)
    net = sn.Network(tokens, sn.Dense(2, name="O")(sn.GRU(H, name="g")(e)), loss="mse")
    model = net.compile(dtype="float64", seed=0)
    randomise(model, rng)
    ids = rng.integers(0, 7, size=(6, L))
    T = rng.normal(size=(6, 2))
    hs = gru_ref(model.params_of("E")["W"][ids], *cell_params(model, "gru"))
    Wo, bo = head(model)
    expect = hs[:, -1] @ model.params[Wo].T + model.params[bo]
    np.testing.assert_allclose(model.forward(ids), expect, rtol=1e-12, atol=1e-13)
    check(model, ids, T)
    S = sn.Input((L, 4), name="S")
    a = sn.MultiHeadAttention(2, name="A")(sn.LayerNorm(name="N")(S))
    net = sn.Network(S, sn.Dense(2, name="O")(sn.LSTM(H, name="m")(a)), loss="mse")
    model = net.compile(dtype="float64", seed=0)
    randomise(model, rng)
    check(model, rng.normal(size=(5, L, 4)), rng.normal(size=(5, 2)))
