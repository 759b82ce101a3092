"""GRU and LSTM from a given initial state: ``GRU(h)(S, H0)`` and ``LSTM(h)(S, (H0, C0))``,
PyTorch's ``gru(x, h_0)`` and ``lstm(x, (h_0, c_0))``.

Checked against a numpy loop of PyTorch's documented equations started from h_0 (and
c_0), float64 central differences (the state coming from a Dense layer, so its
gradient flows back through the initial state), and, when installed, PyTorch itself
(one and two layers: forward, loss, every gradient).
"""

import numpy as np
import pytest
from gradcheck import check

import symnet as sn

L, D, H = 4, 3, 5


def sig(z):
    return 1 / (1 + np.exp(-z))


def gru_ref(X, W, U, b, c, h):
    """The last state of PyTorch's GRU (batch_first) from h_0 = h."""
    for t in range(X.shape[1]):
        gx, gh = X[:, t] @ W.T + b, h @ U.T + c
        (xr, xz, xn), (hr, hz, hn) = np.split(gx, 3, axis=1), np.split(gh, 3, axis=1)
        r, z = sig(xr + hr), sig(xz + hz)
        h = (1 - z) * np.tanh(xn + r * hn) + z * h
    return h


def lstm_ref(X, W, U, b, c, h, C):
    """The last state of PyTorch's LSTM (batch_first) from h_0 = h, c_0 = C."""
    for t in range(X.shape[1]):
        i, f, g, o = np.split(X[:, t] @ W.T + b + h @ U.T + c, 4, axis=1)
        C = sig(f) * C + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(C)
    return h


def network(kind, layers=1):
    """S (L, D) and the initial state(s) as Inputs of layers·H features → GRU/LSTM → Dense(2)."""
    S = sn.Input((L, D), name="S")
    H0 = sn.Input(layers * H, name="H0")
    if kind == "gru":
        ins, state = [S, H0], H0
    else:
        C0 = sn.Input(layers * H, name="C0")
        ins, state = [S, H0, C0], (H0, C0)
    layer = (sn.GRU if kind == "gru" else sn.LSTM)(H, num_layers=layers, name="R")
    return sn.Network(ins, sn.Dense(2, name="O")(layer(S, state)), loss="mse")


def cells(model):
    us = sorted((n for n in model.params if n.startswith("U")), key=lambda n: int(n[1:]))
    return [[model.params[f"{x}{u[1:]}"] for x in "WUbc"] for u in us]


def randomise(model, rng, scale=0.5):
    for k, v in model.params.items():
        model.params[k] = rng.normal(scale=scale, size=v.shape)


def data(rng, kind, n=6, layers=1):
    X = [rng.normal(size=(n, L, D)), rng.normal(size=(n, layers * H))]
    if kind == "lstm":
        X.append(rng.normal(size=(n, layers * H)))
    return X, rng.normal(size=(n, 2))


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_initial_state_equals_numpy_loop(kind, rng):
    model = network(kind).compile(dtype="float64")
    randomise(model, rng)
    X, T = data(rng, kind)
    W, U, b, c = cells(model)[0]
    h = gru_ref(X[0], W, U, b, c, X[1]) if kind == "gru" else \
        lstm_ref(X[0], W, U, b, c, X[1], X[2])
    p = model.params
    Wo = next(n for n in p if n.startswith("W") and p[n].shape[0] == 2)
    np.testing.assert_allclose(model.forward(X), h @ p[Wo].T + p["b" + Wo[1:]],
                               rtol=1e-12, atol=1e-13)
    # a zero initial state is the layer without one
    zero = [X[0]] + [np.zeros_like(x) for x in X[1:]]
    plain = sn.Network(sn.Input((L, D), name="S"),
                       (sn.GRU if kind == "gru" else sn.LSTM)(H, name="R"),
                       sn.Dense(2, name="O"), loss="mse").compile(dtype="float64")
    plain.params.update(model.params)
    np.testing.assert_allclose(model.forward(zero), plain.forward(X[0]), rtol=1e-13,
                               atol=1e-15)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_gradient_through_the_initial_state(kind, rng):
    """h_0 (and c_0) from a Dense layer of another input: its parameters' gradients
    pass through the initial state; all checked by central differences."""
    S, Z = sn.Input((L, D), name="S"), sn.Input(2, name="Z")
    h0 = sn.Dense(H, "tanh", name="E")(Z)
    state = h0 if kind == "gru" else (h0, sn.Dense(H, name="F")(Z))
    rec = (sn.GRU if kind == "gru" else sn.LSTM)(H, return_sequences=True)(S, state)
    out = sn.Dense(2, name="O")(sn.Flatten(name="Fl")(rec))
    model = sn.Network([S, Z], out, loss="mse").compile(dtype="float64")
    randomise(model, rng)
    X = [rng.normal(size=(5, L, D)), rng.normal(size=(5, 2))]
    T = rng.normal(size=(5, 2))
    _, g = model.loss_and_grad(X, T)
    encoder = next(n for n in g if n.startswith("W") and g[n].shape == (H, 2))
    assert np.abs(g[encoder]).max() > 0       # the initial state's layer learns
    check(model, X, T)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_initial_state_equals_pytorch(kind, layers, rng):
    torch = pytest.importorskip("torch")
    torch.set_default_dtype(torch.float64)
    model = network(kind, layers).compile(dtype="float64")
    randomise(model, rng)
    rnn = (torch.nn.GRU if kind == "gru" else torch.nn.LSTM)(D, H, num_layers=layers,
                                                                batch_first=True)
    us = sorted((n for n in model.params if n.startswith("U")), key=lambda n: int(n[1:]))
    pairs = {}
    for layer, u in enumerate(us):
        for x, t in zip("WUbc", ("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
            pairs[f"{x}{u[1:]}"] = getattr(rnn, f"{t}_l{layer}")
    with torch.no_grad():
        for name, t in pairs.items():
            t.copy_(torch.from_numpy(model.params[name]))
    X, T = data(rng, kind, layers=layers)
    # PyTorch's h_0 is (num_layers, batch, H); ours (batch, num_layers·H)
    states = [torch.from_numpy(x.reshape(len(x), layers, H).transpose(1, 0, 2).copy())
              for x in X[1:]]
    out, _ = rnn(torch.from_numpy(X[0]), states[0] if kind == "gru" else tuple(states))
    Wo = next(n for n in model.params if n.startswith("W") and model.params[n].shape[0] == 2)
    o = out[:, -1] @ torch.from_numpy(model.params[Wo]).T + \
        torch.from_numpy(model.params["b" + Wo[1:]])
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
def test_initial_state_saves_and_loads(kind, rng, tmp_path):
    model = network(kind, 2).compile(dtype="float32", seed=0)
    X, _ = data(rng, kind, layers=2)
    X = [x.astype(np.float32) for x in X]
    model.save(tmp_path / "m.npz")
    again = sn.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.forward(X), model.forward(X))


def test_initial_state_errors_name_the_layer():
    S = sn.Input((L, D), name="S")
    with pytest.raises(ValueError, match=r"GRU 'R'.*6 features.*expected 5"):
        sn.GRU(H, name="R")(S, sn.Input(6, name="H0"))
    with pytest.raises(ValueError, match=r"LSTM 'R'.*pair \(h0, c0\)"):
        sn.LSTM(H, name="R")(S, sn.Input(H, name="H0"))
    with pytest.raises(ValueError, match=r"GRU 'R'.*one Input or layer h0"):
        sn.GRU(H, name="R")(S, (sn.Input(H), sn.Input(H)))
    with pytest.raises(ValueError, match=r"GRU 'R'.*expected 10 \(num_layers 2"):
        sn.GRU(H, num_layers=2, name="R")(S, sn.Input(H, name="H0"))
    with pytest.raises(ValueError, match=r"initial_state takes Inputs or applied layers"):
        sn.GRU(H, name="R")(S, sn.Dense(H))
    with pytest.raises(ValueError, match=r"RNNCell 'h'.*GRUCell and LSTMCell"):
        sn.recurrent.unroll(sn.recurrent.RNNCell(H), L)(S, sn.Input(H))
