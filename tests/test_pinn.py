"""Loss terms with input derivatives (sn.coords, sn.d, sn.target), their compiled
gradient and H·v, and fit with sd/adam, L-BFGS and Newton-CG.

The term's value is checked against the residual assembled from model.forward,
model.jacobian and model.hessian (tested on their own in
test_input_derivatives.py), the gradient against central differences of the
compiled loss, H·v against central differences of the compiled gradient, and
against torch.autograd when torch is installed."""

import numpy as np
import pytest
import sympy

import symnet as sn
from symnet.runtime import pinn

NU = 0.01 / sympy.pi


def burgers(width=6):
    tx = sn.Input(2, name="tx")
    h = sn.Dense(width, "tanh")(tx)
    h = sn.Dense(width, "softplus")(h)
    u = sn.Dense(1, name="u")(h)
    t, x = sn.coords(tx, "t x")
    pde = sn.d(u, t) + u * sn.d(u, x) - NU * sn.d(u, x, x)
    return sn.Network(tx, u, loss={"pde": pde**2, "data": "mse"},
                      loss_weights={"pde": 1.0, "data": 2.0})


@pytest.fixture(scope="module")
def model():
    m = burgers().compile(dtype="float64", seed=0)
    rng = np.random.default_rng(1)
    for k in m.params:
        m.params[k] = rng.normal(0, 0.6, m.params[k].shape)
    return m


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return {"pde": rng.uniform(-1, 1, (7, 2)),
            "data": (rng.uniform(-1, 1, (3, 2)), rng.normal(size=(3, 1)))}


def test_terms_equal_the_residual_from_jacobian_and_hessian(model, data):
    obj = pinn.Objective(model, data)
    L, _ = obj.loss_grad()
    Xc = data["pde"]
    o = model.forward(Xc)[:, 0]
    J, H = model.jacobian(Xc)[:, 0], model.hessian(Xc)
    r = J[:, 0] + o * J[:, 1] - float(NU) * H[:, 1, 1]
    Xb, Tb = data["data"]
    want_data = np.mean((model.forward(Xb) - Tb) ** 2)
    assert obj.last_terms["pde"] == pytest.approx(np.mean(r ** 2), rel=1e-12)
    assert obj.last_terms["data"] == pytest.approx(want_data, rel=1e-12)
    assert L == pytest.approx(np.mean(r ** 2) + 2.0 * want_data, rel=1e-12)


def test_gradient_and_hessian_vector_central_differences(model, data):
    obj = pinn.Objective(model, data)
    th = model.theta.copy()
    _, g = obj.loss_grad()
    eps, num = 1e-6, np.zeros_like(th)
    for k in range(th.size):
        model.theta[:] = th
        model.theta[k] += eps
        lp, _ = obj.loss_grad()
        model.theta[:] = th
        model.theta[k] -= eps
        lm, _ = obj.loss_grad()
        num[k] = (lp - lm) / (2 * eps)
    model.theta[:] = th
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-7)
    v = np.random.default_rng(2).normal(size=th.shape)
    hv = obj.hessp(v)
    model.theta[:] = th + 1e-5 * v
    _, gp = obj.loss_grad()
    model.theta[:] = th - 1e-5 * v
    _, gm = obj.loss_grad()
    model.theta[:] = th
    np.testing.assert_allclose(hv, (gp - gm) / 2e-5, rtol=1e-6, atol=1e-7)


def test_against_torch_autograd(model, data):
    torch = pytest.importorskip("torch")
    p = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in model.params.items()}
    Xc = torch.tensor(data["pde"], requires_grad=True)
    Xb, Tb = (torch.tensor(a) for a in data["data"])

    def u(X):
        h = torch.tanh(X @ p["W1"].T + p["b1"])
        h = torch.nn.functional.softplus(h @ p["W2"].T + p["b2"])
        return h @ p["W3"].T + p["b3"]

    out = u(Xc)
    du = torch.autograd.grad(out.sum(), Xc, create_graph=True)[0]
    dxx = torch.autograd.grad(du[:, 1].sum(), Xc, create_graph=True)[0][:, 1]
    r = du[:, 0] + out[:, 0] * du[:, 1] - float(NU) * dxx
    L = (r ** 2).mean() + 2.0 * ((u(Xb) - Tb) ** 2).mean()
    grads = torch.autograd.grad(L, list(p.values()), create_graph=True)
    obj = pinn.Objective(model, data)
    got_L, g = obj.loss_grad()
    assert got_L == pytest.approx(L.item(), rel=1e-12)
    from symnet.runtime.second_order import as_dict
    gd = as_dict(model, g)
    for k, gt in zip(p, grads):
        np.testing.assert_allclose(gd[k], gt.detach().numpy(), rtol=1e-10, atol=1e-12)
    v = {k: np.random.default_rng(5).normal(size=a.shape) for k, a in model.params.items()}
    dot = sum((gt * torch.tensor(v[k])).sum() for k, gt in zip(p, grads))
    hv_t = torch.autograd.grad(dot, list(p.values()))
    from symnet.runtime.second_order import flat_vector
    hv = as_dict(model, obj.hessp(flat_vector(model, v)))
    for k, h in zip(p, hv_t):
        np.testing.assert_allclose(hv[k], h.numpy(), rtol=1e-10, atol=1e-11)


def test_fit_reduces_each_method(data):
    m = burgers(4).compile(dtype="float64", seed=3)
    h = m.fit(data, method="sd", optimizer="adam", lr=1e-2, epochs=40)
    assert h.loss[-1] < 0.5 * h.loss[0]
    assert set(h.terms) == {"pde", "data"} and len(h.terms["pde"]) == 40
    h2 = m.fit(data, method="lbfgs", epochs=30)
    assert h2.loss[-1] < 0.5 * h.loss[-1] and h2.method == "lbfgs"
    h3 = m.fit(data, method="newton_cg", epochs=10)
    assert h3.loss[-1] <= h2.loss[-1]


def test_lbfgs_and_newton_cg_on_an_ordinary_network():
    X, T = sn.datasets.xor()
    m = sn.Network(sn.Input(2), sn.Dense(4, "tanh"), sn.Dense(1, "sigmoid"),
                   loss="bce").compile(dtype="float64", seed=0)
    L0 = m.loss(X, T)
    h = m.fit(X, T, method="lbfgs", epochs=50)
    assert h.loss[-1] < 0.1 * L0 and m.loss(X, T) == pytest.approx(h.loss[-1], rel=1e-6)
    m2 = sn.Network(sn.Input(2), sn.Dense(4, "tanh"), sn.Dense(1, "sigmoid"),
                    loss="bce").compile(dtype="float64", seed=0)
    h = m2.fit(X, T, method="newton_cg", epochs=30)
    assert h.loss[-1] < 0.1 * L0


def test_multi_unit_output_with_index():
    I = sn.Input(2, name="I")
    O = sn.Dense(2, name="O")(sn.Dense(5, "tanh")(I))
    a, b = sn.coords(I)
    net = sn.Network(I, O, loss={"grad": (sn.d(O[1], a) - sn.target(O[1])) ** 2})
    m = net.compile(dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    obj = pinn.Objective(m, {"grad": (X, T)})
    obj.loss_grad()
    want = np.mean((m.jacobian(X)[:, 1, 0] - T[:, 1]) ** 2)
    assert obj.last_terms["grad"] == pytest.approx(want, rel=1e-12)


def test_a_term_with_a_kink_has_hessian_vector_and_newton_cg():
    """|residual| and a Huber Piecewise of it: their second derivatives hold a
    DiracDelta, which failed to print; it is 0 away from the kink.  H·v against
    central differences of the compiled gradient."""
    xy = sn.Input(2, name="xy")
    u = sn.Dense(1, name="u")(sn.Dense(5, "tanh")(xy))
    x, y = sn.coords(xy, "x y")
    res = sn.d(u, x, x) + sn.d(u, y, y) - 1
    huber = sympy.Piecewise((res ** 2 / 2, sympy.Abs(res) < 1),
                            (sympy.Abs(res) - sympy.Rational(1, 2), True))
    rng = np.random.default_rng(0)
    data = {"pde": rng.normal(size=(9, 2))}
    for term in (sympy.Abs(res), huber):
        m = sn.Network(xy, u, loss={"pde": term}).compile(dtype="float64", seed=0)
        obj = pinn.Objective(m, data)
        th = m.theta.copy()
        v = rng.normal(size=th.shape)
        hv = obj.hessp(v)
        m.theta[:] = th + 1e-6 * v
        _, gp = obj.loss_grad()
        m.theta[:] = th - 1e-6 * v
        _, gm = obj.loss_grad()
        m.theta[:] = th
        np.testing.assert_allclose(hv, (gp - gm) / 2e-6, rtol=1e-6, atol=1e-8)
        hist = m.fit(data, method="newton_cg", epochs=2)
        assert hist.loss[-1] <= hist.loss[0]


def test_errors(data):
    I = sn.Input(2, name="I")
    O = sn.Dense(2, name="O")(sn.Dense(3, "tanh")(I))
    a, b = sn.coords(I)
    with pytest.raises(ValueError, match="has 2 units"):
        sn.d(O, a)
    other = sn.coords(sn.Input(2, name="J"))
    with pytest.raises(ValueError, match="not an input of this network"):
        sn.Network(I, O, loss={"pde": sn.d(O[0], other[0]) ** 2})
    with pytest.raises(ValueError, match="not a coordinate"):
        sn.d(O[0], 3)
    m = burgers(3).compile(dtype="float64")
    with pytest.raises(ValueError, match=r"no data for term\(s\) \['data'\]"):
        m.fit({"pde": data["pde"]}, method="sd", optimizer="adam", lr=1e-3, epochs=1)
    with pytest.raises(ValueError, match="has targets"):
        m.fit({"pde": data["pde"], "data": data["pde"]}, method="sd", epochs=1)
    with pytest.raises(ValueError, match="do not apply"):
        m.fit(data, method="lbfgs", optimizer="adam", epochs=1)
    with pytest.raises(ValueError, match="do not apply"):
        m.fit(data, method="lbfgs", lr=0.01, epochs=1)
    with pytest.raises(ValueError, match="not available"):
        m.fit(data, method="minibatch", epochs=1)
    for size in (8, 32):            # 32, Model.fit's minibatch size, was taken as not given
        with pytest.raises(ValueError, match="does not take batch_size"):
            m.fit(data, method="sd", batch_size=size, epochs=1)
    xy = sn.Input(2, name="xy")
    u = sn.Dense(1, name="u")(sn.Dropout(0.5)(sn.Dense(4, "tanh")(xy)))
    x, _ = sn.coords(xy, "x y")
    drop = sn.Network(xy, u, loss={"pde": (sn.d(u, x, x) - u) ** 2}).compile(dtype="float64")
    v = {"W1": np.ones(m.params["W1"].shape)}
    with pytest.raises(ValueError, match=r"^model.hessian_vector\(data, v\): the vector v is "
                       "missing"):
        m.hessian_vector(data)
    with pytest.raises(ValueError, match=r"^model.hessian_vector\(data, v\): .* targets are "
                       r"in data .* got three arguments"):
        m.hessian_vector(data, data["data"][1], v)
    with pytest.raises(NotImplementedError, match="^loss term 'pde': its input derivatives "
                       "are not derived for networks with Dropout or BatchNorm"):
        drop.loss_terms({"pde": data["pde"]})


def test_formulas_show_the_jets_and_the_chain_rule():
    """The derivation of a two-layer net: u_xx through tanh'' (the second layer's z_xx
    is W2·H_xx), and ∂L/∂W through the jets; text and LaTeX."""
    tx = sn.Input(2, name="tx")
    u = sn.Dense(1, name="u")(sn.Dense(3, "tanh", name="H")(sn.Dense(3, "tanh", name="G")(tx)))
    t, x = sn.coords(tx, "t x")
    net = sn.Network(tx, u, loss={"pde": (sn.d(u, t) - sn.d(u, x, x)) ** 2})
    f = net.formulas()
    text = str(f)
    assert "G_xx[i] = 2·G_f0[i]·z_G_x[i]²·(G_f0[i]² - 1)" in text
    assert "z_H_xx = W2·G_xx" in text
    # tanh''(z)·z_x² + tanh'(z)·z_xx with tanh' = 1 − tanh², tanh'' = −2·tanh·tanh'
    assert "H_xx[i] = (H_f0[i]² - 1)·(2·H_f0[i]·z_H_x[i]² - z_H_xx[i])" in text
    assert "∂L/∂W2 += ∂L/∂z_H_xx ⊗ G_xx" in text
    assert "L += (u_t[0] - u_xx[0])²" in text
    tex = f.latex()
    assert tex.count(r"\begin{align*}") == 1 and r"\tanh" in tex


@pytest.mark.parametrize("method", ["sd", "lbfgs", "newton_cg"])
def test_ctrl_c_keeps_finite_parameters(method, data):
    """A KeyboardInterrupt inside training (raised here from a callback) ends fit with
    stopped == "interrupted" and parameters of a completed step (L-BFGS/Newton-CG: the
    best seen), whose loss is the one recorded."""
    m = burgers(3).compile(dtype="float64", seed=4)
    calls = []

    def interrupt(hist):
        calls.append(len(hist.loss))
        if len(hist.loss) == 3:
            raise KeyboardInterrupt
    kw = {"optimizer": "adam", "lr": 1e-2} if method == "sd" else {}
    h = m.fit(data, method=method, epochs=20, callbacks=[interrupt], **kw)
    assert h.stopped == "interrupted" and len(h.loss) == 3
    obj = pinn.Objective(m, data)
    L, _ = obj.loss_grad()
    assert np.isfinite(L) and L <= h.loss[0] * (1 + 1e-12)


def test_model_calls_for_term_networks(model, data):
    """model.loss_terms and model.hessian_vector(data, v) use the terms; the calls of
    the outputs' own loss refuse, naming the terms."""
    obj = pinn.Objective(model, data)
    L, _ = obj.loss_grad()
    got = model.loss_terms(data)
    assert got["loss"] == L and got["pde"] == obj.last_terms["pde"]
    rng = np.random.default_rng(8)
    v = {k: rng.normal(size=p.shape) for k, p in model.params.items()}
    from symnet.runtime.second_order import as_dict, flat_vector
    want = as_dict(model, obj.hessp(flat_vector(model, v)))
    Hv = model.hessian_vector(data, v)
    for k in v:
        np.testing.assert_array_equal(Hv[k], want[k])
    with pytest.raises(ValueError, match="loss is its terms"):
        model.input_grad(data["pde"], np.zeros((7, 1)))
    with pytest.raises(ValueError, match="loss is its terms"):
        model.gauss_newton_vector(data["pde"], np.zeros((7, 1)), v)


def test_loss_and_evaluate_of_term_networks(model, data):
    """model.loss(data) is the weighted sum of the terms, from the residual assembled
    independently (forward, jacobian, hessian); evaluate(data) gives each term."""
    Xc = data["pde"]
    o = model.forward(Xc)[:, 0]
    J, H = model.jacobian(Xc)[:, 0], model.hessian(Xc)
    pde = np.mean((J[:, 0] + o * J[:, 1] - float(NU) * H[:, 1, 1]) ** 2)
    Xb, Tb = data["data"]
    mse = np.mean((model.forward(Xb) - Tb) ** 2)
    assert model.loss(data) == pytest.approx(pde + 2.0 * mse, rel=1e-12)
    ev = model.evaluate(data)
    assert set(ev) == {"pde", "data", "loss"}
    assert ev["pde"] == pytest.approx(pde, rel=1e-12)
    assert ev["data"] == pytest.approx(mse, rel=1e-12)
    assert ev["loss"] == pytest.approx(pde + 2.0 * mse, rel=1e-12)
    for call in (model.loss, model.evaluate):
        with pytest.raises(ValueError, match=r"loss is its terms \['pde', 'data'\]"):
            call(Xb, Tb)
        with pytest.raises(ValueError, match="give model.(loss|evaluate) a dict"):
            call(Xb)
        with pytest.raises(ValueError, match=r"no data for term\(s\) \['data'\]"):
            call({"pde": Xc})
    plain = sn.Network(sn.Input(2), sn.Dense(1), loss="mse").compile(dtype="float64")
    with pytest.raises(ValueError, match="targets T are missing"):
        plain.loss(Xb)
    with pytest.raises(ValueError, match="targets T are missing"):
        plain.evaluate(Xb)


@pytest.mark.parametrize("method", ["sd", "lbfgs", "newton_cg"])
def test_progress_shows_each_term(method, data, capsys, monkeypatch):
    """progress=True shows the loss and each term per epoch (tqdm, or a plain line
    without it); progress=False shows nothing."""
    import builtins
    real = builtins.__import__

    def no_tqdm(name, *a, **kw):           # the plain lines, whatever is installed
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    m = burgers(3).compile(dtype="float64", seed=4)
    kw = {"optimizer": "adam", "lr": 1e-2} if method == "sd" else {}
    h = m.fit(data, method=method, epochs=3, progress=True, **kw)
    err = capsys.readouterr().err
    lines = [s for s in err.splitlines() if s.startswith("epoch ")]
    assert len(lines) == h.epochs >= 1
    assert f"pde {h.terms['pde'][-1]:.4g}" in lines[-1]
    assert f"data {h.terms['data'][-1]:.4g}" in lines[-1]
    m.fit(data, method=method, epochs=2, progress=False, **kw)
    assert capsys.readouterr().err == ""


def test_residual_graph_against_torch(data):
    """The PDE loss, its gradient and H·v on a graph with a skip connection
    (R = H1 + H2), against torch.autograd (create_graph twice, then back)."""
    torch = pytest.importorskip("torch")
    tx = sn.Input(2, name="tx")
    h1 = sn.Dense(5, "tanh", name="H1")(tx)
    h2 = sn.Dense(5, "sigmoid", name="H2")(h1)
    r = sn.Add(name="R")([h1, h2])
    u = sn.Dense(1, name="u")(sn.Dense(4, "softplus", name="H3")(r))
    t, x = sn.coords(tx, "t x")
    pde = sn.d(u, t) + u * sn.d(u, x) - NU * sn.d(u, x, x)
    m = sn.Network(tx, u, loss={"pde": pde**2, "data": "mse"},
                   loss_weights={"pde": 1.0, "data": 2.0}).compile(dtype="float64", seed=5)
    rng = np.random.default_rng(6)
    for k in m.params:
        m.params[k] = rng.normal(0, 0.6, m.params[k].shape)
    assert set(m.params) == {"W1", "b1", "W2", "b2", "W4", "b4", "W5", "b5"}
    p = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in m.params.items()}
    F = torch.nn.functional

    def net(X):
        a = torch.tanh(X @ p["W1"].T + p["b1"])
        b = torch.sigmoid(a @ p["W2"].T + p["b2"])
        c = F.softplus((a + b) @ p["W4"].T + p["b4"])
        return c @ p["W5"].T + p["b5"]

    Xc = torch.tensor(data["pde"], requires_grad=True)
    Xb, Tb = (torch.tensor(a) for a in data["data"])
    out = net(Xc)
    du = torch.autograd.grad(out.sum(), Xc, create_graph=True)[0]
    dxx = torch.autograd.grad(du[:, 1].sum(), Xc, create_graph=True)[0][:, 1]
    res = du[:, 0] + out[:, 0] * du[:, 1] - float(NU) * dxx
    L = (res ** 2).mean() + 2.0 * ((net(Xb) - Tb) ** 2).mean()
    grads = torch.autograd.grad(L, list(p.values()), create_graph=True)
    obj = pinn.Objective(m, data)
    got_L, g = obj.loss_grad()
    assert got_L == pytest.approx(L.item(), rel=1e-12)
    from symnet.runtime.second_order import as_dict
    gd = as_dict(m, g)
    scale = max(float(gt.detach().abs().max()) for gt in grads)
    for k, gt in zip(p, grads):
        np.testing.assert_allclose(gd[k], gt.detach().numpy(), rtol=1e-10, atol=1e-12 * scale)
    v = {k: rng.normal(size=a.shape) for k, a in m.params.items()}
    dot = sum((gt * torch.tensor(v[k])).sum() for k, gt in zip(p, grads))
    hv_t = torch.autograd.grad(dot, list(p.values()))
    hv = m.hessian_vector(data, v)
    scale = max(float(h.abs().max()) for h in hv_t)
    for k, h in zip(p, hv_t):
        np.testing.assert_allclose(hv[k], h.numpy(), rtol=1e-10, atol=1e-12 * scale)


def _adam_numpy(model, data, start, steps, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Adam written out in numpy on the compiled loss terms' gradient (checked against
    central differences above), from the flat parameters ``start``."""
    obj = pinn.Objective(model, data)
    theta = start.copy()
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t in range(1, steps + 1):
        model.theta[...] = theta
        _, g = obj.loss_grad()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return theta


def test_fit_continues_the_optimizer_state(data, tmp_path):
    """As for ordinary networks: Adam's moments and step count live in the model, so
    two fits of 3 epochs are one fit of 6 (and Adam by hand in numpy), model.save /
    symnet.load carry the state, reset_optimizer=True starts afresh."""
    kw = dict(method="sd", optimizer="adam", lr=1e-2, progress=False)
    one = burgers(4).compile(dtype="float64", seed=3)
    start = one.theta.copy()
    one.fit(data, epochs=6, **kw)
    two = burgers(4).compile(dtype="float64", seed=3)
    two.fit(data, epochs=3, **kw)
    two.fit(data, epochs=3, **kw)
    assert two.optimizer.name == "adam" and two.optimizer.t == 6
    np.testing.assert_allclose(two.theta, one.theta, rtol=1e-12, atol=1e-14)
    ref = burgers(4).compile(dtype="float64", seed=3)
    np.testing.assert_allclose(one.theta, _adam_numpy(ref, data, start, 6, 1e-2),
                               rtol=1e-12, atol=1e-14)
    # saved after 3 epochs, loaded, 3 more: the same 6
    part = burgers(4).compile(dtype="float64", seed=3)
    part.fit(data, epochs=3, **kw)
    part.save(tmp_path / "pinn.npz")
    again = sn.load(tmp_path / "pinn.npz", network=burgers(4))
    assert again.optimizer.t == 3
    again.fit(data, epochs=3, **kw)
    np.testing.assert_allclose(again.theta, one.theta, rtol=1e-12, atol=1e-14)
    # afresh: 3 epochs from where two stands, moments from zero
    mid = two.theta.copy()
    two.fit(data, epochs=3, reset_optimizer=True, **kw)
    assert two.optimizer.t == 3
    # a refused call keeps it (the reset came before the checks)
    for bad in (dict(epochs=0), dict(optimizer="rmsprop"), dict(batch_size=8)):
        with pytest.raises(ValueError):
            two.fit(data, **{**kw, "epochs": 3, "reset_optimizer": True, **bad})
        assert two.optimizer.name == "adam" and two.optimizer.t == 3
    np.testing.assert_allclose(two.theta, _adam_numpy(ref, data, mid, 3, 1e-2),
                               rtol=1e-12, atol=1e-14)


def test_data_with_nan_or_inf_is_refused_and_nothing_changes(data):
    """As plain fit and loss refuse them: one NaN collocation point made every parameter
    NaN after one step of fit (and 'stopped: completed'), and the loss of data holding
    NaN came out finite (the jets' tanh read NaN as 1)."""
    m = burgers(3).compile(dtype="float64", seed=0)
    before = {k: v.copy() for k, v in m.params.items()}
    bad_x = data["pde"].copy()
    bad_x[2, 1] = np.nan
    X_b, T_b = data["data"]
    for method in ("sd", "lbfgs"):
        with pytest.raises(ValueError, match=r"X of term 'pde' holds NaN or inf in 1 row\(s\), "
                                             r"first at row 2: clean the data .*nothing was"):
            m.fit({"pde": bad_x, "data": (X_b, T_b)}, method=method, epochs=1)
    with pytest.raises(ValueError, match="T of term 'data' holds NaN or inf"):
        m.fit({"pde": data["pde"], "data": (X_b, T_b * np.inf)}, epochs=1)
    for k, v in before.items():
        np.testing.assert_array_equal(m.params[k], v)
    bad = {"pde": bad_x, "data": (X_b, T_b)}
    for call in (lambda: m.loss(bad), lambda: m.evaluate(bad), lambda: m.loss_terms(bad),
                 lambda: m.hessian_vector(bad, {k: np.ones_like(v) for k, v in before.items()})):
        with pytest.raises(ValueError, match="holds NaN or inf .*no loss is computed"):
            call()
    plain = sn.Network(sn.Input(2), sn.Dense(1), loss="mse").compile(dtype="float64")
    with pytest.raises(ValueError, match=r"^X holds NaN or inf in 1 row"):
        plain.fit(bad_x, np.zeros((7, 1)), method="lbfgs", epochs=1)


def test_fit_of_a_term_network_needs_no_method(data):
    """fit's default method is minibatch, which a network of loss terms does not have:
    `fit(data)` said "method 'minibatch' is not available here" to a user who gave none.
    Its default is now sd."""
    m = burgers(3).compile(dtype="float64", seed=0)
    hist = m.fit(data, epochs=3, lr=1e-3, optimizer="adam")
    assert hist.method == "sd" and len(hist.terms["pde"]) == 3
    with pytest.raises(ValueError, match="not available"):
        m.fit(data, method="minibatch", epochs=1)      # asked for: still refused


def test_d_of_an_unnamed_layer_of_several_units_names_it_as_written():
    I = sn.Input(2)
    h = sn.Dense(8, "tanh")(I)
    t, _ = sn.coords(I)
    with pytest.raises(ValueError, match=r"^layer Dense\(8, 'tanh'.*\) has 8 units: pick one "
                                         r"with the layer\[k\]"):
        sn.d(h, t)
