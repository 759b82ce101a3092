"""input_grad and jacobian of networks the jets do not cover: convolutions and
pooling, tensor-shaped inputs, several inputs, softmax cross-entropy.  These come
from the network's own reverse derivation with the inputs counted as needing a
gradient (symnet.runtime.second_order.Reverse); the Jacobian seeds the loss
ℓ(o, t) = o·t with the unit vectors.

Checked against central differences of the compiled loss and forward pass
(float64), against the jets' derivation on a dense chain (two independent
derivations), and against torch.func (grad, jacrev) when torch is installed."""

import numpy as np
import pytest

import symnet as sn
from symnet.runtime import second_order


def conv_net(loss="mse", n_out=2):
    net = sn.Network(sn.Input((2, 6, 6), name="img"),
                     sn.Conv2d(3, 3, padding=1, activation="tanh"), sn.MaxPool2d(2),
                     sn.Conv2d(2, 2, activation="softplus"), sn.Flatten(),
                     sn.Dense(4, "sigmoid"), sn.Dense(n_out), loss=loss)
    return net.compile(dtype="float64", seed=1)


def randomize(model, seed=5, scale=0.6):
    rng = np.random.default_rng(seed)
    for k in model.params:
        model.params[k] = rng.normal(0, scale, model.params[k].shape)


def _central(f, x, eps=1e-5):
    x = np.array(x, dtype=float)
    base = np.asarray(f(x))
    out = np.zeros(base.shape + x.shape)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        out[(...,) + idx] = (np.asarray(f(xp)) - np.asarray(f(xm))) / (2 * eps)
    return out


@pytest.fixture(scope="module")
def conv():
    m = conv_net()
    randomize(m)
    return m


@pytest.fixture(scope="module")
def conv_data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 2, 6, 6)), rng.normal(size=(3, 2))


def test_conv_input_grad_central_differences(conv, conv_data):
    X, T = conv_data
    g = conv.input_grad(X, T)
    assert g.shape == X.shape
    num = _central(lambda x: conv.loss(x, T), X)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9)
    assert np.abs(g).max() > 1e-3        # not vacuous


def test_conv_jacobian_central_differences(conv, conv_data):
    X, _ = conv_data
    J = conv.jacobian(X)
    assert J.shape == (3, 2, 2, 6, 6)
    for b in range(X.shape[0]):
        num = _central(lambda x: conv.forward(x[None])[0], X[b])
        np.testing.assert_allclose(J[b], num, rtol=1e-6, atol=1e-9)
    # many examples: the seeded calls run in chunks, each example's rows the same
    rng = np.random.default_rng(3)
    big = rng.normal(size=(2500, 2, 6, 6))
    big[:3] = X
    np.testing.assert_allclose(conv.jacobian(big)[:3], J, rtol=1e-13, atol=1e-15)


def test_conv_input_grad_follows_training(conv_data):
    m = conv_net()
    X, T = conv_data
    g0 = m.input_grad(X, T)
    m.fit(X, T, method="sd", lr=0.3, epochs=3)
    g1 = m.input_grad(X, T)
    assert not np.allclose(g0, g1)
    np.testing.assert_allclose(g1, _central(lambda x: m.loss(x, T), X), rtol=1e-6,
                               atol=1e-9)


def test_softmax_cross_entropy_input_grad_central_differences():
    m = conv_net("softmax_cross_entropy", n_out=3)
    randomize(m, 7)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(4, 2, 6, 6))
    labels = np.array([0, 2, 1, 2])
    for T in (labels, np.eye(3)[labels]):            # class labels or one-hot rows
        g = m.input_grad(X, T)
        num = _central(lambda x: m.loss(x, T), X)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9)
    # the Jacobian is of the network's output (the logits, as model.forward gives them)
    J = m.jacobian(X[:2])
    for b in range(2):
        np.testing.assert_allclose(J[b], _central(lambda x: m.forward(x[None])[0], X[b]),
                                   rtol=1e-6, atol=1e-9)


def two_inputs():
    a = sn.Input(3, name="a")
    img = sn.Input((1, 4, 4), name="img")
    h = sn.Flatten()(sn.Conv2d(2, 3, activation="tanh")(img))
    c = sn.Concatenate()([sn.Dense(3, "tanh")(a), h])
    o = sn.Dense(2, name="o")(c)
    m = sn.Network([a, img], o, loss="mse").compile(dtype="float64", seed=4)
    randomize(m, 11)
    return m


def test_several_inputs_central_differences():
    m = two_inputs()
    rng = np.random.default_rng(5)
    A, I, T = rng.normal(size=(3, 3)), rng.normal(size=(3, 1, 4, 4)), rng.normal(size=(3, 2))
    ga, gi = m.input_grad([A, I], T)
    assert ga.shape == A.shape and gi.shape == I.shape
    np.testing.assert_allclose(ga, _central(lambda x: m.loss([x, I], T), A), rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_allclose(gi, _central(lambda x: m.loss([A, x], T), I), rtol=1e-6,
                               atol=1e-9)
    d = m.input_grad({"img": I, "a": A}, T)
    assert set(d) == {"a", "img"}
    np.testing.assert_allclose(d["img"], gi, rtol=0, atol=0)
    J = m.jacobian([A, I])
    assert J.shape == (3, 2, 3 + 16)
    for b in range(3):
        num = _central(lambda x: m.forward([A[b:b + 1], x[None]])[0], I[b])
        np.testing.assert_allclose(J[b, :, 3:], num.reshape(2, 16), rtol=1e-6, atol=1e-9)
        num = _central(lambda x: m.forward([x[None], I[b:b + 1]])[0], A[b])
        np.testing.assert_allclose(J[b, :, :3], num, rtol=1e-6, atol=1e-9)


def test_reverse_equals_jets_on_a_dense_graph():
    """Two independent derivations of ∂L/∂X and ∂O/∂X (the network's reverse pass and
    the forward jets) agree on a residual dense graph."""
    I = sn.Input(3, name="I")
    H = sn.Dense(3, "tanh", name="H")(I)
    R = sn.Add(name="R")([I, H])
    O = sn.Dense(2, name="O")(sn.Dense(4, "softplus", name="G")(R))
    m = sn.Network(I, O, loss="mse").compile(dtype="float64", seed=2)
    randomize(m)
    rng = np.random.default_rng(1)
    X, T = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    assert second_order._jets_apply(m)
    g_rev = second_order._reverse(m, False).grad_x(m.as_inputs(X), m.as_targets(T, 5))
    np.testing.assert_allclose(g_rev, m.input_grad(X, T), rtol=1e-12, atol=1e-15)
    seed = second_order._reverse(m, True)
    for k in range(2):
        rows = seed.grad_x(m.as_inputs(X), np.tile(np.eye(2)[k], (5, 1))) * 5
        np.testing.assert_allclose(rows, m.jacobian(X)[:, k], rtol=1e-12, atol=1e-15)


def test_errors(conv, conv_data):
    X, T = conv_data
    with pytest.raises(ValueError, match="shape"):
        conv.input_grad(X[:, :1], T)
    with pytest.raises(ValueError, match="rows"):
        conv.input_grad(X, T[:2])
    with pytest.raises(ValueError, match="one output"):
        conv.hessian(X)
    one = conv_net(n_out=1)
    with pytest.raises(NotImplementedError, match=r"model.hessian: the input Hessian is not "
                       r"derived .* one vector input .* shape \(2, 6, 6\)"):
        one.hessian(X)
    with pytest.raises(NotImplementedError, match="model.hessian_vector: the parameter "
                       "Hessian-vector product is not derived"):
        conv.hessian_vector(X, T, {})
    drop = sn.Network(sn.Input((1, 4, 4)), sn.Conv2d(2, 3), sn.Flatten(), sn.Dropout(0.5),
                      sn.Dense(1), loss="mse").compile(dtype="float64")
    with pytest.raises(NotImplementedError, match="Dropout"):
        drop.input_grad(np.zeros((2, 1, 4, 4)), np.zeros((2, 1)))


# ------------------------------------------------------------------ PyTorch

def _torch_conv(torch):
    F = torch.nn.functional

    def f(p, x):                       # one example (2, 6, 6) or a batch
        batch = x.dim() == 4
        x = x if batch else x[None]
        h = torch.tanh(F.conv2d(x, p["W1"], p["b1"], padding=1))
        h = F.max_pool2d(h, 2)
        h = F.softplus(F.conv2d(h, p["W3"], p["b3"]))
        h = torch.sigmoid(h.flatten(1) @ p["W5"].T + p["b5"])
        o = h @ p["W6"].T + p["b6"]
        return o if batch else o[0]
    return f


def test_conv_against_torch_func(conv, conv_data):
    torch = pytest.importorskip("torch")
    from torch.func import grad, jacrev
    X, T = conv_data
    assert set(conv.params) == {"W1", "b1", "W3", "b3", "W5", "b5", "W6", "b6"}
    p = {k: torch.tensor(np.array(v), dtype=torch.float64) for k, v in conv.params.items()}
    f = _torch_conv(torch)
    Xt, Tt = torch.tensor(X), torch.tensor(T)

    def close(a, b):
        b = b.detach().numpy()
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())

    close(conv.forward(X), f(p, Xt))
    close(conv.jacobian(X), torch.stack([jacrev(lambda x: f(p, x))(x) for x in Xt]))
    close(conv.input_grad(X, T),
          grad(lambda x: ((f(p, x) - Tt) ** 2).mean(dim=1).mean())(Xt))


def test_softmax_cross_entropy_against_torch_func():
    torch = pytest.importorskip("torch")
    from torch.func import grad
    m = conv_net("softmax_cross_entropy", n_out=3)
    randomize(m, 7)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(4, 2, 6, 6))
    labels = np.array([0, 2, 1, 2])
    p = {k: torch.tensor(np.array(v), dtype=torch.float64) for k, v in m.params.items()}
    f = _torch_conv(torch)
    want = grad(lambda x: torch.nn.functional.cross_entropy(f(p, x), torch.tensor(labels)))(
        torch.tensor(X)).numpy()
    np.testing.assert_allclose(m.input_grad(X, labels), want, rtol=1e-10,
                               atol=1e-10 * np.abs(want).max())


def test_two_heads_with_their_own_losses_central_differences():
    """Outputs with different losses and weights (mse, bce): ∂L/∂X of the weighted sum;
    the Jacobian of both outputs side by side."""
    img = sn.Input((1, 5, 5), name="img")
    h = sn.Flatten()(sn.Conv2d(2, 3, activation="tanh")(img))
    a = sn.Dense(2, name="a")(h)
    b = sn.Dense(1, "sigmoid", name="b")(h)
    m = sn.Network(img, [a, b], loss={"a": "mse", "b": "bce"},
                   loss_weights={"a": 1.0, "b": 0.5}).compile(dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 1, 5, 5))
    T = [rng.normal(size=(3, 2)), rng.uniform(size=(3, 1))]
    np.testing.assert_allclose(m.input_grad(X, T), _central(lambda x: m.loss(x, T), X),
                               rtol=1e-6, atol=1e-9)
    J = m.jacobian(X)
    assert J.shape == (3, 3, 1, 5, 5)
    for k in range(3):
        num = _central(lambda x: np.concatenate(m.forward(x[None]), 1)[0], X[k])
        np.testing.assert_allclose(J[k], num, rtol=1e-6, atol=1e-9)


def test_a_layer_the_jets_do_not_cover_central_differences():
    """An RBF layer (its sum is not a contraction): the jets refuse it, the reverse
    pass derives ∂L/∂X and ∂O/∂X."""
    import sympy as sp
    rbf = sn.Layer(4, lambda x, C, beta, i, j: sp.exp(-beta[i] * sn.sum_j((x[j] - C[i, j]) ** 2)),
                   params={"C": ("out", "in"), "beta": ("out",)}, init={"beta": "ones"})
    m = sn.Network(sn.Input(3), rbf, sn.Dense(2), loss="mse").compile(dtype="float64", seed=3)
    randomize(m, 4)
    rng = np.random.default_rng(8)
    X, T = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    assert not second_order._jets_apply(m)
    np.testing.assert_allclose(m.input_grad(X, T), _central(lambda x: m.loss(x, T), X),
                               rtol=1e-6, atol=1e-9)
    J = m.jacobian(X)
    assert J.shape == (4, 2, 3)
    for b in range(4):
        np.testing.assert_allclose(J[b], _central(lambda x: m.forward(x[None])[0], X[b]),
                                   rtol=1e-6, atol=1e-9)
