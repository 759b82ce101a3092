"""Dropout: the masks (Philox4x32-10, written again here in Python), their statistics,
the same masks on one and two threads, identity in evaluation (forward, evaluate,
export_c), equality with a network multiplied by the same mask, gradients against
central differences, fit(seed=...) reproducible, save/load and bad input."""

import numpy as np
import pytest

import symnet as sn
import gradcheck

M32 = 0xFFFFFFFF


def philox_multiplier(seed, step, b, e, p):
    """Dropout's multiplier of element e of example b at ``step``: Philox4x32-10 with the
    counter (e, b, step, 0) and the key (seed, 0), as Random123 defines it."""
    c = [e & M32, b & M32, step & M32, 0]
    k = [seed & M32, 0]
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & M32, p1 & M32, ((p0 >> 32) ^ c[3] ^ k[1]) & M32,
             p0 & M32]
        k = [(k[0] + 0x9E3779B9) & M32, (k[1] + 0xBB67AE85) & M32]
    u = (c[0] >> 8) / 16777216.0
    return 1.0 / (1.0 - p) if u >= p else 0.0


def masks(seed, step, batch, n, p):
    return np.array([[philox_multiplier(seed, step, b, e, p) for e in range(n)]
                     for b in range(batch)])


def test_philox_matches_the_published_known_answer():
    """Random123's known-answer test of philox4x32_10: counter 0, key 0 -> 6627e8d5 ...
    (our first output word, its top 24 bits, decide the mask)."""
    c, k = [0, 0, 0, 0], [0, 0]
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & M32, p1 & M32, ((p0 >> 32) ^ c[3] ^ k[1]) & M32,
             p0 & M32]
        k = [(k[0] + 0x9E3779B9) & M32, (k[1] + 0xBB67AE85) & M32]
    assert c == [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]


def readout(batch, n, p, dtype="float64", seed=0, step=0):
    """The C's multipliers m[b, e] of a batch: for X = identity rows, W = ones and loss
    mean (z·m)², ∂L/∂W[e, b] = 2·m[b, e]²/(batch·n)."""
    net = sn.Network(sn.Input(batch), sn.Dense(n, bias=False), sn.Dropout(p), loss="mse")
    model = net.compile(dtype=dtype)
    model.params["W1"][...] = 1
    model.dropout_seed(seed, step)
    X = np.eye(batch, dtype=dtype)
    _, g = model.loss_and_grad(X, np.zeros((batch, n), dtype))
    return np.sqrt(g["W1"].T * batch * n / 2)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_masks_are_philox_and_drop_a_fraction_p_keeping_the_mean(p):
    m = readout(8, 1000, p, seed=5, step=3)
    np.testing.assert_allclose(m, masks(5, 3, 8, 1000, p), rtol=1e-12)
    dropped = (m == 0).mean()
    sigma = np.sqrt(p * (1 - p) / m.size)
    assert abs(dropped - p) < 4 * sigma                  # 8000 elements
    assert abs(m.mean() - 1) < 4 * sigma / (1 - p)       # inverted dropout keeps the mean
    assert set(np.unique(m.round(12))) == {0.0, round(1 / (1 - p), 12)}


def test_masks_change_with_the_step_and_the_seed_and_float32_draws_the_same():
    base = readout(4, 64, 0.5)
    assert not np.array_equal(base, readout(4, 64, 0.5, step=1))
    assert not np.array_equal(base, readout(4, 64, 0.5, seed=1))
    np.testing.assert_array_equal(readout(4, 64, 0.5, dtype="float32") > 0, base > 0)


def _seq_net(dropout=True):
    layers = [sn.Conv1d(3, 2, activation="tanh")] + ([sn.Dropout(0.4)] if dropout else []) \
        + [sn.Flatten(), sn.Dense(3)]
    return sn.Network(sn.Input((2, 9)), *layers, loss="softmax_cross_entropy")


def test_the_same_masks_on_one_thread_and_on_two(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2, 9)).astype(np.float32)
    T = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 40)]

    def run(thread_min):
        monkeypatch.setenv("SYMNET_PARALLEL_MIN", str(thread_min))
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        model = _seq_net().compile(dtype="float32", seed=1)
        out = []
        for _ in range(4):       # the first calls time one thread, the later ones take two
            out.append(model.loss_and_grad(X, T))
            model.step(X, T, lr=0.1)
        return out
    for (l1, g1), (l2, g2) in zip(run(1e300), run(1)):
        assert l1 == l2
        for k in g1:
            np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)


def test_training_equals_a_network_multiplied_by_the_same_mask():
    net = sn.Network(sn.Input(5), sn.Dense(6, "tanh"), sn.Dropout(0.3), sn.Dense(2), loss="mse")
    model = net.compile(dtype="float64", seed=4)
    I, M = sn.Input(5, name="I"), sn.Input(6, name="M")
    H = sn.Dense(6, "tanh")(I)
    O = sn.Dense(2)(sn.Multiply()([H, M]))
    twin = sn.Network([I, M], O, loss="mse").compile(dtype="float64")
    for k in ("W1", "b1"):
        twin.params[k][...] = model.params[k]
    twin.params["W3"][...], twin.params["b3"][...] = model.params["W3"], model.params["b3"]
    rng = np.random.default_rng(1)
    X, T = rng.normal(size=(7, 5)), rng.normal(size=(7, 2))
    model.dropout_seed(11, 2)
    mask = masks(11, 2, 7, 6, 0.3)
    assert 0 < (mask == 0).sum() < mask.size
    L, g = model.loss_and_grad(X, T)
    L2, g2 = twin.loss_and_grad([X, mask], T)
    assert L == pytest.approx(L2, rel=1e-13)
    for k in g2:
        np.testing.assert_allclose(g[k], g2[k], rtol=1e-12, atol=1e-15, err_msg=k)
    # the step uses the masks of step 2, then moves on to step 3
    model.step(X, T, lr=0.1)
    assert model.params["rng2"][1] == 3


def test_evaluation_is_the_identity_in_forward_evaluate_and_export(tmp_path):
    import test_export as te
    model = _seq_net().compile(dtype="float64", seed=2)
    plain = _seq_net(dropout=False).compile(dtype="float64")
    for k, v in plain.params.items():       # Dense is layer 3 there, 4 here
        v[...] = model.params[{"W3": "W4", "b3": "b4"}.get(k, k)]
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6, 2, 9))
    T = np.eye(3)[rng.integers(0, 3, 6)]
    np.testing.assert_array_equal(model.forward(X), plain.forward(X))
    assert model.evaluate(X, T)["loss"] == plain.loss(X, T)
    assert model.loss(X, T) != plain.loss(X, T)               # training: masks
    X, _ = te._data(model, rng)
    got, c, _ = te._run_forward(model, tmp_path, X)
    np.testing.assert_array_equal(got, model.forward(X).reshape(len(X), -1))
    assert "sn_dropout(" in c


def test_gradients_in_training_equal_central_differences():
    model = _seq_net().compile(dtype="float64", seed=5)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(5, 2, 9))
    T = np.eye(3)[rng.integers(0, 3, 5)]
    model.dropout_seed(9, 4)
    gradcheck.check(model, X, T)


@pytest.mark.parametrize("method", ["minibatch", "sd"])
def test_fit_with_the_same_seed_gives_the_same_parameters(method):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 2, 9))
    T = np.eye(3)[rng.integers(0, 3, 30)]

    def fitted(seed):
        model = _seq_net().compile(dtype="float64", seed=0)
        hist = model.fit(X, T, method=method, epochs=3, batch_size=8, lr=0.1, seed=seed,
                         progress=False)
        return model, hist
    a, ha = fitted(3)
    b, _ = fitted(3)
    c, _ = fitted(4)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert not np.array_equal(a.theta, c.theta)
    assert a.params["rng2"][1] == ha.steps                # one set of masks per step


def test_save_and_load_keep_the_layer_and_its_state(tmp_path):
    model = _seq_net().compile(dtype="float32", seed=6)
    model.dropout_seed(21, 7)
    model.save(tmp_path / "m.npz")
    back = sn.load(tmp_path / "m.npz")
    assert back.network.describe() == model.network.describe()
    assert isinstance(back.network.layers[1], sn.Dropout) and back.network.layers[1].p == 0.4
    np.testing.assert_array_equal(back.params["rng2"][:2], [21, 7])


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, "half", True])
def test_p_outside_zero_to_one_is_refused_naming_the_layer(p):
    with pytest.raises(ValueError, match=r"layer .*Dropout.*p \(the probability of dropping an "
                                         r"element\) must be a number in \[0, 1\), got"):
        sn.Dropout(p, name="drop")


def test_training_over_mpi_of_one_process_equals_plain_fit():
    """Process 0 keeps the seed (the others mix their rank in: tests/
    test_distributed_layers.py), so one process draws plain fit's masks."""
    MPI = pytest.importorskip("mpi4py.MPI")
    X, T = np.random.default_rng(0).normal(size=(6, 2, 9)), np.eye(3)[[0, 1, 2, 0, 1, 2]]
    args = dict(epochs=2, batch_size=3, lr=0.2, shuffle=False, seed=4, progress=False)
    a = _seq_net().compile(dtype="float64", seed=1)
    a.fit(X, T, comm=MPI.COMM_WORLD, **args)
    b = _seq_net().compile(dtype="float64", seed=1)
    b.fit(X, T, **args)
    np.testing.assert_allclose(a.theta, b.theta, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a.params["rng2"][:2], [4, 4])     # seed 4, 4 steps
    assert not np.allclose(a.theta, _seq_net().compile(dtype="float64", seed=1).theta)
