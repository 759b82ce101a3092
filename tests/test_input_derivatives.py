"""Input derivatives (input_grad, jacobian, hessian) and parameter-space
Hessian-vector products, from the compiled jets (symnet.runtime.second_order).

Each is checked against central differences of the lower-order compiled
quantity (float64), against an independent numpy computation for dense chains,
and against torch.func when torch is installed."""

import numpy as np
import pytest

import symnet as sn
from symnet.runtime import second_order

ACTS = ["tanh", "softplus", "sigmoid"]


def chain(act):
    net = sn.Network(sn.Input(3), sn.Dense(5, act), sn.Dense(4, act), sn.Dense(2),
                     loss="mse")
    return net.compile(dtype="float64", seed=1)


def residual(n_out=2):
    """A skip connection (R = I + H), a gate (M = G ⊙ S) and a concatenation."""
    I = sn.Input(3, name="I")
    H = sn.Dense(3, "tanh", name="H")(I)
    R = sn.Add(name="R")([I, H])
    G = sn.Dense(4, "softplus", name="G")(R)
    M = sn.Multiply(name="M")([G, sn.Dense(4, "sigmoid", name="S")(R)])
    C = sn.Concatenate(name="C")([M, I])
    O = sn.Dense(n_out, name="O")(C)
    return sn.Network(I, O, loss="mse").compile(dtype="float64", seed=2)


def one_output(act):
    net = sn.Network(sn.Input(3), sn.Dense(6, act), sn.Dense(5, act), sn.Dense(1),
                     loss="mse")
    return net.compile(dtype="float64", seed=3)


def data(n=4, n_in=3, n_out=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)), rng.normal(size=(n, n_out))


def randomize(model, seed=5):
    rng = np.random.default_rng(seed)
    for k in model.params:
        model.params[k] = rng.normal(0, 0.7, model.params[k].shape)


MODELS = {**{f"chain_{a}": (lambda a=a: chain(a)) for a in ACTS}, "residual": residual}


def _central(f, x, eps=1e-5):
    """∂f/∂x by central differences; f returns an array."""
    x = np.array(x, dtype=float)
    base = np.asarray(f(x))
    out = np.zeros(base.shape + x.shape)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        out[(...,) + idx] = (np.asarray(f(xp)) - np.asarray(f(xm))) / (2 * eps)
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_input_grad_central_differences(name):
    model = MODELS[name]()
    randomize(model)
    X, T = data()
    g = model.input_grad(X, T)
    assert g.shape == X.shape
    num = _central(lambda x: model.loss(x, T), X)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_jacobian_central_differences(name):
    model = MODELS[name]()
    randomize(model)
    X, _ = data()
    J = model.jacobian(X)
    assert J.shape == (4, 2, 3)
    for b in range(X.shape[0]):
        num = _central(lambda x: model.forward(x[None])[0], X[b])
        np.testing.assert_allclose(J[b], num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("act", ACTS)
def test_hessian_central_differences_of_jacobian(act):
    model = one_output(act)
    randomize(model)
    X, _ = data()
    H = model.hessian(X)
    assert H.shape == (4, 3, 3)
    for b in range(X.shape[0]):
        num = _central(lambda x: model.jacobian(x[None])[0, 0], X[b])
        np.testing.assert_allclose(H[b], num, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(H[b], H[b].T, rtol=0, atol=0)


def _numpy_jacobian_hessian(params, X, act):
    """By hand: z1 = W1 x + b1, h1 = f(z1), z2 = W2 h1 + b2, h2 = f(z2), o = W3 h2 + b3;
    J = W3 D2 W2 D1 W1, and for one output the Hessian by the product rule."""
    f = {"tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2,
                  lambda z: -2 * np.tanh(z) * (1 - np.tanh(z) ** 2)),
         "sigmoid": (lambda z: 1 / (1 + np.exp(-z)),
                     lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2,
                     lambda z: (lambda s: s * (1 - s) * (1 - 2 * s))(1 / (1 + np.exp(-z)))),
         "softplus": (lambda z: np.log1p(np.exp(z)), lambda z: 1 / (1 + np.exp(-z)),
                      lambda z: (lambda s: s * (1 - s))(1 / (1 + np.exp(-z))))}[act]
    W1, b1, W2, b2, W3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3"))
    Js, Hs = [], []
    for x in X:
        z1 = W1 @ x + b1
        z2 = W2 @ f[0](z1) + b2
        A1 = f[1](z1)[:, None] * W1                    # ∂h1/∂x
        A2 = f[1](z2)[:, None] * (W2 @ A1)             # ∂h2/∂x
        Js.append(W3 @ A2)
        if W3.shape[0] == 1:
            # ∂²h2_k/∂x∂x = f''(z2_k) g_k g_kᵀ + f'(z2_k) Σ_m W2_km f''(z1_m) W1_m W1_mᵀ
            g = W2 @ A1
            inner = np.einsum("km,m,mc,md->kcd", W2, f[2](z1), W1, W1)
            H2 = f[2](z2)[:, None, None] * np.einsum("kc,kd->kcd", g, g) \
                + f[1](z2)[:, None, None] * inner
            Hs.append(np.einsum("k,kcd->cd", W3[0], H2))
    return np.array(Js), (np.array(Hs) if Hs else None)


@pytest.mark.parametrize("act", ACTS)
def test_against_numpy(act):
    for model in (chain(act), one_output(act)):
        randomize(model)
        X, _ = data()
        params = {k: np.array(v) for k, v in model.params.items()}
        J, H = _numpy_jacobian_hessian(params, X, act)
        np.testing.assert_allclose(model.jacobian(X), J, rtol=1e-12, atol=1e-13)
        if H is not None:
            np.testing.assert_allclose(model.hessian(X), H, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hessian_vector_central_differences_of_gradient(name):
    model = MODELS[name]()
    randomize(model)
    X, T = data()
    rng = np.random.default_rng(9)
    v = {k: rng.normal(size=p.shape) for k, p in model.params.items()}
    Hv = model.hessian_vector(X, T, v)
    theta = {k: np.array(p) for k, p in model.params.items()}
    eps = 1e-5
    grads = []
    for s in (+1, -1):
        for k in theta:
            model.params[k] = theta[k] + s * eps * v[k]
        grads.append(model.loss_and_grad(X, T)[1])
    for k in theta:
        model.params[k] = theta[k]
    for k in theta:
        num = (grads[0][k] - grads[1][k]) / (2 * eps)
        np.testing.assert_allclose(Hv[k], num, rtol=1e-6, atol=1e-8)


def test_gauss_newton_against_numpy():
    """G v = Jᵀ (2/(n_out·N)) J v for mse, J = ∂O/∂θ from central differences of forward."""
    model = chain("tanh")
    randomize(model)
    X, T = data()
    names = list(model.params)
    shapes = {k: model.params[k].shape for k in names}
    theta = np.concatenate([np.ravel(model.params[k]) for k in names])

    def outputs(flat):
        pos = 0
        for k in names:
            size = int(np.prod(shapes[k]))
            model.params[k] = flat[pos:pos + size].reshape(shapes[k])
            pos += size
        return model.forward(X).ravel()

    J = _central(outputs, theta)
    outputs(theta)
    rng = np.random.default_rng(4)
    v = rng.normal(size=theta.shape)
    G = J.T @ J * (2.0 / (2 * X.shape[0]))
    want = G @ v
    vd, pos = {}, 0
    for k in names:
        size = int(np.prod(shapes[k]))
        vd[k] = v[pos:pos + size].reshape(shapes[k])
        pos += size
    got = model.gauss_newton_vector(X, T, vd)
    np.testing.assert_allclose(np.concatenate([np.ravel(got[k]) for k in names]), want,
                               rtol=1e-6, atol=1e-8)


def test_jet_gradient_equals_compiled_gradient():
    model = residual()
    randomize(model)
    X, T = data()
    L, g = model.loss_and_grad(X, T)
    L2, flat = second_order.loss_and_grad(model, X, T)
    assert abs(L - L2) <= 1e-14 * abs(L)
    g2 = second_order.as_dict(model, flat)
    for k in g:
        np.testing.assert_allclose(g2[k], g[k], rtol=1e-12, atol=1e-14)


def test_float32_close_to_float64():
    m64 = chain("tanh")
    m32 = sn.Network(sn.Input(3), sn.Dense(5, "tanh"), sn.Dense(4, "tanh"), sn.Dense(2),
                     loss="mse").compile(dtype="float32")
    randomize(m64)
    for k in m64.params:
        m32.params[k] = m64.params[k]
    X, T = data()
    np.testing.assert_allclose(m32.jacobian(X), m64.jacobian(X), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m32.input_grad(X, T), m64.input_grad(X, T), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("act", ["elu", "gauss"])
def test_float32_with_exp_in_the_activation(act):
    """The float printer writes exp as sn_expf (templates/expf.c.j2): the jets' module
    once lacked it ("undefined symbol: sn_expf").  Checked against central differences
    of the float64 network's forward pass, loss and gradient."""
    import sympy
    a = "elu" if act == "elu" else (lambda z: sympy.exp(-z ** 2))
    make = lambda dtype: sn.Network(sn.Input(3), sn.Dense(5, a), sn.Dense(1),   # noqa: E731
                                    loss="mse").compile(dtype=dtype, seed=1)
    m32, m64 = make("float32"), make("float64")
    randomize(m64)
    for k in m64.params:
        m32.params[k] = m64.params[k]
    X, T = data(n_out=1)
    X[X == 0] = 0.1                                   # elu's kink at 0 stays away

    def u(x):                                         # the output at one point
        return m64.forward(x[None])[0, 0]

    J = np.stack([_central(u, x) for x in X])
    np.testing.assert_allclose(m32.jacobian(X)[:, 0], J, rtol=1e-4, atol=1e-5)
    H = np.stack([_central(lambda y: _central(u, y, 1e-4), x, 1e-4) for x in X])
    np.testing.assert_allclose(m32.hessian(X), H, rtol=1e-3, atol=1e-4)
    gx = _central(lambda x: m64.loss(x, T), X)
    np.testing.assert_allclose(m32.input_grad(X, T), gx, rtol=1e-4, atol=1e-5)
    v = {k: np.ones(p.shape) for k, p in m64.params.items()}
    theta = {k: np.array(p) for k, p in m64.params.items()}
    grads = []
    for s in (+1, -1):
        for k in theta:
            m64.params[k] = theta[k] + s * 1e-5 * v[k]
        grads.append(m64.loss_and_grad(X, T)[1])
    got = m32.hessian_vector(X, T, v)
    for k in theta:
        np.testing.assert_allclose(got[k], (grads[0][k] - grads[1][k]) / 2e-5,
                                   rtol=1e-3, atol=1e-4)


def _kinks():
    import sympy
    o, t = sympy.symbols("o t")
    huber = sympy.Piecewise(((o - t) ** 2 / 2, sympy.Abs(o - t) < 1),
                            (sympy.Abs(o - t) - sympy.Rational(1, 2), True))
    return {"abs_loss": ("tanh", sympy.Abs(o - t)), "huber_loss": ("tanh", huber),
            "logcosh_loss": ("tanh", sympy.log(sympy.cosh(o - t))),
            "softsign": (lambda z: z / (1 + sympy.Abs(z)), "mse"),
            "max_squared": (lambda z: sympy.Max(z, 0) ** 2, "mse")}


@pytest.mark.parametrize("name", sorted(_kinks()))
def test_kinks_second_derivatives_away_from_the_kink(name):
    """|a|, Max and Piecewise have a DiracDelta in their second derivative (sympy's
    form, which no C spells: H·v and the Hessian failed to print) and the jet of
    |F(s)| was written with re(F) (model.hessian raised StopIteration).  The delta is
    0 away from the kink: H·v against central differences of the network's own
    gradient, the input Hessian against central differences of forward."""
    act, loss = _kinks()[name]
    m = sn.Network(sn.Input(3), sn.Dense(4, act), sn.Dense(1), loss=loss).compile(
        dtype="float64", seed=0)
    randomize(m)
    X, T = data(n=5, n_out=1)
    rng = np.random.default_rng(3)
    v = {k: rng.normal(size=p.shape) for k, p in m.params.items()}
    theta = {k: np.array(p) for k, p in m.params.items()}
    grads = []
    for s in (+1, -1):
        for k in theta:
            m.params[k] = theta[k] + s * 1e-6 * v[k]
        grads.append(m.loss_and_grad(X, T)[1])
    for k in theta:
        m.params[k] = theta[k]
    got = m.hessian_vector(X, T, v)
    for k in theta:
        np.testing.assert_allclose(got[k], (grads[0][k] - grads[1][k]) / 2e-6,
                                   rtol=1e-6, atol=1e-8)
    if "loss" not in name:
        def u(x):
            return m.forward(x[None])[0, 0]
        H = np.stack([_central(lambda y: _central(u, y, 1e-4), x, 1e-4) for x in X])
        np.testing.assert_allclose(m.hessian(X), H, rtol=1e-6, atol=1e-7)


def test_errors():
    model = chain("tanh")
    X, T = data()
    with pytest.raises(ValueError, match="one output"):
        model.hessian(X)
    with pytest.raises(ValueError, match="not parameters"):
        model.hessian_vector(X, T, {"W9": np.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        model.hessian_vector(X, T, {"W1": np.zeros(3)})
    with pytest.raises(ValueError, match="columns"):
        model.jacobian(np.zeros((2, 4)))


def test_refusals_name_the_call_and_the_product():
    """hessian_vector, gauss_newton_vector and fit(method='newton_cg') on networks the
    jets do not cover said "model.input_grad: input derivatives need ..." (input_grad
    works there), "symbol b of its formula is not known" for Dropout, or rejected the
    class labels of a softmax cross-entropy as targets of the wrong shape."""
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(6, 4)), rng.normal(size=(6, 1))
    ln = sn.Network(sn.Input(4), sn.Dense(4, "tanh"), sn.LayerNorm(), sn.Dense(1),
                    loss="mse").compile(dtype="float64", seed=0)
    v = {"W1": np.ones((4, 4))}
    layer = r"not derived for layer 'H2_mean' .*: its sums are not all contractions"
    with pytest.raises(NotImplementedError, match=r"^model.hessian_vector: the parameter "
                       r"Hessian-vector product is " + layer):
        ln.hessian_vector(X, T, v)
    with pytest.raises(NotImplementedError, match=r"^model.gauss_newton_vector: the "
                       r"Gauss–Newton product is " + layer):
        ln.gauss_newton_vector(X, T, v)
    before = ln.theta.copy()
    with pytest.raises(NotImplementedError, match=r"^fit\(method='newton_cg'\): the "
                       r"parameter Hessian-vector product .*" + layer + r".*'lbfgs'"):
        ln.fit(X, T, method="newton_cg", epochs=2)
    assert np.array_equal(ln.theta, before)
    conv = sn.Network(sn.Input((1, 4, 4)), sn.Conv2d(2, 3, activation="tanh"), sn.Flatten(),
                      sn.Dense(1), loss="mse").compile(dtype="float64", seed=0)
    with pytest.raises(NotImplementedError, match=r"^fit\(method='newton_cg'\): .* not "
                       r"derived for this network: .* one vector input .*, and it has input "
                       r"'I' of shape \(1, 4, 4\)"):
        conv.fit(rng.normal(size=(6, 1, 4, 4)), T, method="newton_cg", epochs=2)
    soft = sn.Network(sn.Input(4), sn.Dense(4, "tanh"), sn.Dense(3),
                      loss="softmax_cross_entropy").compile(dtype="float64", seed=0)
    labels = np.array([0, 1, 2, 1, 0, 2])
    with pytest.raises(NotImplementedError, match=r"^model.hessian_vector: .* not derived "
                       r"for loss 'softmax_cross_entropy' of output 'O': it couples"):
        soft.hessian_vector(X, labels, {"W1": np.ones((4, 4))})
    drop = sn.Network(sn.Input(4), sn.Dense(4, "tanh"), sn.Dropout(0.5), sn.Dense(1),
                      loss="mse").compile(dtype="float64", seed=0)
    with pytest.raises(NotImplementedError, match=r"^model.hessian: the input Hessian is not "
                       r"derived for networks with Dropout or BatchNorm"):
        drop.hessian(X)
    with pytest.raises(NotImplementedError, match=r"^model.hessian_vector: .* Dropout or "
                       r"BatchNorm"):
        drop.hessian_vector(X, T, v)
    A, B = sn.Input(2, name="A"), sn.Input(3, name="B")
    two = sn.Network([A, B], sn.Dense(1)(sn.Concatenate()([A, B])), loss="mse").compile(
        dtype="float64", seed=0)
    with pytest.raises(NotImplementedError, match=r"^model.hessian_vector: .* it has inputs "
                       r"'A' of shape \(2,\), 'B' of shape \(3,\)$"):
        two.hessian_vector([X[:, :2], X[:, 1:]], T, {})


def test_missing_targets_or_vector_are_named():
    """input_grad(X, None) said "T must hold real numbers, got dtype object", and
    hessian_vector(X, v) read the dict v as T with the same message."""
    model = chain("tanh")
    X, T = data()
    v = {k: np.ones(p.shape) for k, p in model.params.items()}
    with pytest.raises(ValueError, match=r"^model.input_grad\(X, T\): the targets T are "
                       "missing"):
        model.input_grad(X, None)
    for what in ("hessian_vector", "gauss_newton_vector"):
        call = getattr(model, what)
        with pytest.raises(ValueError, match=rf"^model.{what}\(X, T, v\): the targets T are "
                           r"missing \(the dict of parameters .* is read as T\)"):
            call(X, v)
        with pytest.raises(ValueError, match=rf"^model.{what}\(X, T, v\): the vector v .* "
                           "is missing"):
            call(X, T)


@pytest.mark.parametrize("bad", ["X", "T"])
def test_hessian_vector_refuses_nan_or_inf_data(bad):
    """H·v sums over every row: one NaN in X made all of it NaN, silently; refused as
    model.loss refuses it, naming the row (input_grad and jacobian keep NaN in that
    row, test_a_nan_input_gives_nan_derivatives_in_its_row_only)."""
    model = chain("tanh")
    X, T = data()
    (X if bad == "X" else T)[2, 1] = np.nan if bad == "X" else np.inf
    v = {k: np.ones(p.shape) for k, p in model.params.items()}
    for what in ("hessian_vector", "gauss_newton_vector"):
        with pytest.raises(ValueError, match=rf"^{bad} holds NaN or inf in 1 row\(s\), first "
                           rf"at row 2: model.{what} sums over every row"):
            getattr(model, what)(X, T, v)


# ------------------------------------------------------------------ PyTorch

def _torch_forward(model, torch):
    """A torch function of (params, x) for the dense chains and the residual graph."""
    names = model.network.names

    def act(name, z):
        return {"tanh": torch.tanh, "softplus": torch.nn.functional.softplus,
                "sigmoid": torch.sigmoid, "linear": lambda z: z}[name](z)

    graph = model.network.graph()

    def f(p, x):
        buf = {graph.input_name: x}
        for node in graph.nodes:
            if node.kind == "dense":
                W = node.reductions[0].contraction
                b = "b" + W[1:]
                z = buf[node.input] @ p[W].T + p[b]
                buf[node.name] = act(node.activation.name, z)
            elif node.kind == "add":
                buf[node.name] = sum(buf[s] for s in node.inputs)
            elif node.kind == "multiply":
                buf[node.name] = buf[node.inputs[0]] * buf[node.inputs[1]]
            elif node.kind == "concat":
                buf[node.name] = torch.cat([buf[s] for s in node.inputs], dim=-1)
        return buf[graph.outputs[0]]
    del names
    return f


@pytest.mark.parametrize("name", sorted(MODELS) + [f"one_{a}" for a in ACTS]
                         + ["one_residual"])
def test_against_torch_func(name):
    torch = pytest.importorskip("torch")
    from torch.func import grad, hessian, jacrev, jvp, vjp
    model = MODELS[name]() if name in MODELS else residual(1) if name == "one_residual" \
        else one_output(name[4:])
    randomize(model)
    X, T = data(n_out=model.n_out)
    f = _torch_forward(model, torch)
    p = {k: torch.tensor(np.array(v), dtype=torch.float64) for k, v in model.params.items()}
    Xt, Tt = torch.tensor(X), torch.tensor(T)

    def close(a, b):
        b = b.detach().numpy()
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())

    J = torch.stack([jacrev(lambda x: f(p, x))(x) for x in Xt])
    close(model.jacobian(X), J)
    if model.n_out == 1:
        H = torch.stack([hessian(lambda x: f(p, x)[0])(x) for x in Xt])
        close(model.hessian(X), H)

    def loss(p, x):
        return ((f(p, x) - Tt) ** 2).mean(dim=1).mean()
    close(model.input_grad(X, T), grad(lambda x: loss(p, x))(Xt))
    rng = np.random.default_rng(3)
    v = {k: rng.normal(size=a.shape) for k, a in model.params.items()}
    vt = {k: torch.tensor(a) for k, a in v.items()}
    _, hv = jvp(lambda q: grad(lambda r: loss(r, Xt))(q), (p,), (vt,))
    got = model.hessian_vector(X, T, v)
    for k in v:
        close(got[k], hv[k])
    # Gauss–Newton: Jᵀ H_L J v with J = ∂O/∂θ (jvp), H_L the loss's Hessian in the
    # outputs (jvp of its gradient), Jᵀ by vjp
    O, Jv = jvp(lambda q: f(q, Xt), (p,), (vt,))
    _, HJv = jvp(lambda o: grad(lambda o2: ((o2 - Tt) ** 2).mean(dim=1).mean())(o), (O,),
                 (Jv,))
    _, pull = vjp(lambda q: f(q, Xt), p)
    gv = pull(HJv)[0]
    got = model.gauss_newton_vector(X, T, v)
    for k in v:
        close(got[k], gv[k])


def test_gauss_newton_of_bce_on_a_sigmoid_is_in_output_space():
    """docs/derivatives.md: J includes the output activation, H_L = ∂²bce/∂o²; the
    logit-space form J_zᵀ·σ(1 − σ)·J_z is another matrix.  Against torch.autograd."""
    torch = pytest.importorskip("torch")
    from torch.autograd.functional import hvp, jvp, vjp
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(5, 3)), rng.integers(0, 2, size=(5, 1)).astype(float)
    m = sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.Dense(1, "sigmoid"),
                   loss="bce").compile(dtype="float64", seed=2)
    names = list(m.params)
    P = tuple(torch.tensor(m.params[k], dtype=torch.float64) for k in names)
    v = {k: rng.normal(size=p.shape) for k, p in m.params.items()}
    vt = tuple(torch.tensor(v[k]) for k in names)
    Xt, Tt = torch.tensor(X), torch.tensor(T)

    def logits(*ps):
        d = dict(zip(names, ps))
        return torch.tanh(Xt @ d["W1"].T + d["b1"]) @ d["W2"].T + d["b2"]

    def gn(f, loss):
        out, Jv = jvp(f, P, vt)
        return vjp(f, P, hvp(loss, out, Jv)[1])[1]

    want = gn(lambda *ps: torch.sigmoid(logits(*ps)),
              lambda o: (-(Tt * torch.log(o) + (1 - Tt) * torch.log(1 - o))).mean())
    other = gn(logits, lambda z: torch.nn.functional.binary_cross_entropy_with_logits(z, Tt))
    got = m.gauss_newton_vector(X, T, v)
    for k, w, o in zip(names, want, other):
        np.testing.assert_allclose(got[k], w.numpy(), rtol=1e-10, atol=1e-13)
    assert max(np.abs(w.numpy() - o.numpy()).max() for w, o in zip(want, other)) > 1e-3


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_nan_input_gives_nan_derivatives_in_its_row_only(dtype):
    """The jets' tanh in double read NaN as 1 (its select was |x| < 22): the Jacobian at
    a NaN input came out 0 and the Hessian finite, where libm's tanh, and the float one,
    give NaN."""
    m = sn.Network(sn.Input(3), sn.Dense(8, "tanh"), sn.Dense(1), loss="mse").compile(
        dtype=dtype, seed=0)
    X = np.random.default_rng(0).normal(size=(4, 3))
    X[1, 2] = np.nan
    J, H = m.jacobian(X), m.hessian(X)
    assert np.isnan(J[1]).all() and np.isnan(H[1]).all()
    assert np.isfinite(np.delete(J, 1, axis=0)).all()
    assert np.isfinite(np.delete(H, 1, axis=0)).all()
