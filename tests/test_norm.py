"""Softmax (activation and layer), LayerNorm and RMSNorm: forward, loss and every gradient
against PyTorch (float64, 1e-10), 50 SGD steps from copied weights, central differences,
an independent numpy back-propagation (tests/norm_reference.py), float32, save/load,
export_c, formulas, summary and bad input."""

import re

import numpy as np
import pytest
import sympy as sp

import symnet as sn
import gradcheck
import norm_reference as ref

CE = lambda o, t: -t * sp.log(o)   # noqa: E731 -- cross-entropy on probabilities


def norm_layer(kind, bias=True):
    return {"layernorm": lambda: sn.LayerNorm(bias=bias), "rmsnorm": lambda: sn.RMSNorm(bias=bias),
            "softmax": sn.Softmax}[kind]()


# (name, builder of the symnet network, the same network in torch.nn.functional)
def vector_case(kind, bias=True):
    """X(5) → Dense(6, tanh) → norm → Dense(3), mse."""
    def net():
        return sn.Network(sn.Input(5), sn.Dense(6, "tanh"), norm_layer(kind, bias),
                          sn.Dense(3), loss="mse")

    def torch_forward(P, X):
        import torch
        import torch.nn.functional as F
        h = torch.tanh(F.linear(X, P["W1"], P["b1"]))
        h = torch_norm(kind, h, P, 2)
        return F.linear(h, P["W3"], P["b3"])
    return net, torch_forward, "mse"


def sequence_case(kind, bias=True):
    """X(3, 6) → Conv1d(3, 1, tanh) → norm over the last axis → Flatten → Dense(4), softmax CE."""
    def net():
        return sn.Network(sn.Input((3, 6)), sn.Conv1d(3, 1, activation="tanh"),
                          norm_layer(kind, bias), sn.Flatten(), sn.Dense(4),
                          loss="softmax_cross_entropy")

    def torch_forward(P, X):
        import torch
        import torch.nn.functional as F
        h = torch.tanh(F.conv1d(X, P["W1"], P["b1"]))
        h = torch_norm(kind, h, P, 2)
        return F.linear(h.reshape(h.shape[0], -1), P["W4"], P["b4"])
    return net, torch_forward, "softmax_cross_entropy"


def softmax_output_case():
    """X(5) → Dense(6, tanh) → Dense(4, "softmax"), cross-entropy on the probabilities."""
    def net():
        return sn.Network(sn.Input(5), sn.Dense(6, "tanh"), sn.Dense(4, "softmax"), loss=CE)

    def torch_forward(P, X):
        import torch
        import torch.nn.functional as F
        h = torch.tanh(F.linear(X, P["W1"], P["b1"]))
        return torch.softmax(F.linear(h, P["W2"], P["b2"]), -1)
    return net, torch_forward, "ce"


def torch_norm(kind, h, P, k):
    import torch
    import torch.nn.functional as F
    D = h.shape[-1]
    if kind == "softmax":
        return torch.softmax(h, -1)
    if kind == "layernorm":
        return F.layer_norm(h, (D,), P[f"gamma{k}"], P.get(f"beta{k}"), 1e-5)
    out = F.rms_norm(h, (D,), P[f"gamma{k}"], 1e-6)
    return out + P[f"beta{k}"] if f"beta{k}" in P else out


CASES = {
    **{f"{kind}-vector": vector_case(kind) for kind in ("layernorm", "rmsnorm", "softmax")},
    **{f"{kind}-sequence": sequence_case(kind) for kind in ("layernorm", "rmsnorm", "softmax")},
    "layernorm-nobias": vector_case("layernorm", bias=False),
    "rmsnorm-nobias": sequence_case("rmsnorm", bias=False),
    "dense-softmax": softmax_output_case(),
}


def setup(name, dtype="float64", seed=0):
    """The compiled case with random parameters (γ around 1), a batch and targets."""
    net, _, loss = CASES[name]
    model = net().compile(dtype=dtype)
    rng = np.random.default_rng(seed)
    for k, v in model.params.items():
        v[...] = rng.normal(size=v.shape) * 0.5 + (1.0 if k.startswith("gamma") else 0.0)
    X = rng.normal(size=(7, *model.in_shape)) * 2
    n = model.n_out
    T = np.eye(n)[rng.integers(0, n, 7)] if loss != "mse" else rng.normal(size=(7, n))
    return model, X.astype(dtype), T.astype(dtype)


def torch_loss(loss, o, T):
    import torch
    import torch.nn.functional as F
    T = torch.tensor(T)
    if loss == "mse":
        return F.mse_loss(o, T)
    if loss == "ce":
        return (-T * torch.log(o)).sum(1).mean()
    return F.cross_entropy(o, T.argmax(1))


@pytest.mark.parametrize("name", list(CASES))
def test_forward_loss_and_gradients_equal_pytorch(name):
    torch = pytest.importorskip("torch")
    model, X, T = setup(name)
    _, forward, loss = CASES[name]
    P = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.params.items()}
    o = forward(P, torch.tensor(X))
    np.testing.assert_allclose(model.forward(X), o.detach().numpy(), rtol=1e-10, atol=1e-13)
    L_t = torch_loss(loss, o, T)
    L_t.backward()
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(L_t.item(), rel=1e-10)
    for k, p in P.items():
        scale = np.abs(p.grad.numpy()).max()
        np.testing.assert_allclose(g[k], p.grad.numpy(), rtol=1e-10, atol=1e-12 * scale,
                                   err_msg=k)


@pytest.mark.parametrize("name", ["layernorm-vector", "rmsnorm-sequence", "softmax-sequence",
                                  "dense-softmax"])
def test_fifty_sgd_steps_from_copied_weights_stay_with_pytorch(name):
    torch = pytest.importorskip("torch")
    model, X, T = setup(name, seed=1)
    _, forward, loss = CASES[name]
    P = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.params.items()}
    start = model.theta.copy()
    for _ in range(50):
        model.step(X, T, lr=0.1)
        for p in P.values():
            p.grad = None
        torch_loss(loss, forward(P, torch.tensor(X)), T).backward()
        with torch.no_grad():
            for p in P.values():
                p -= 0.1 * p.grad
    for k, p in P.items():
        np.testing.assert_allclose(model.params[k], p.detach().numpy(), rtol=0, atol=1e-9,
                                   err_msg=k)
    assert np.abs(model.theta - start).max() > 1e-2      # the steps did move θ


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_equal_central_differences(name):
    model, X, T = setup(name, seed=2)
    gradcheck.check(model, X, T)


@pytest.mark.parametrize("kind,bias", [("layernorm", True), ("layernorm", False),
                                       ("rmsnorm", True), ("rmsnorm", False), ("softmax", True)])
def test_loss_and_gradients_equal_the_numpy_reference(kind, bias):
    eps = {"layernorm": 1e-5, "rmsnorm": 1e-6}.get(kind)
    model = vector_case(kind, bias)[0]().compile(dtype="float64")
    rng = np.random.default_rng(3)
    for k, v in model.params.items():
        v[...] = rng.normal(size=v.shape) * 0.5 + (1.0 if k.startswith("gamma") else 0.0)
    X, T = rng.normal(size=(6, 5)), rng.normal(size=(6, 3))
    L_ref, g_ref = ref.mlp({k: v.copy() for k, v in model.params.items()}, X, T, kind, eps)
    L, g = model.loss_and_grad(X, T)
    assert L == pytest.approx(L_ref, rel=1e-12)
    assert set(g) == set(g_ref)
    for k in g:
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-10, atol=1e-14, err_msg=k)


def test_layernorm_of_rows_with_a_large_offset_keeps_its_precision():
    """The centred input is its own node: no E[x²] − μ² cancellation."""
    model = sn.Network(sn.Input(8), sn.LayerNorm(), loss="mse").compile(dtype="float64")
    X = 1e6 + np.random.default_rng(4).normal(size=(3, 8))
    want, _ = ref.layer_norm(X, np.ones(8), np.zeros(8), 1e-5)
    np.testing.assert_allclose(model.forward(X), want, rtol=1e-9, atol=1e-9)


def test_softmax_stays_finite_for_huge_inputs():
    model = sn.Network(sn.Input(4), sn.Softmax(), loss=CE).compile(dtype="float32")
    X = np.array([[1000.0, -1000.0, 0.0, 999.0], [-800.0, -801.0, -802.0, -2000.0]], np.float32)
    want, _ = ref.softmax(X.astype(np.float64))
    got = model.forward(X)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-30)
    # the loss t·log Σ_e exp(x_e − x_d) overflows where a gap passes ~88 (float32) as
    # PyTorch's −t·log softmax does (0·∞); below that, loss and gradient are finite
    X = X / 25
    s, _ = ref.softmax(X.astype(np.float64))
    L, g = model.loss_and_grad(X, np.eye(4, dtype=np.float32)[[0, 1]])
    assert L == pytest.approx(-(np.log(s[0, 0]) + np.log(s[1, 1])) / 2, rel=1e-5)


@pytest.mark.parametrize("name", ["layernorm-sequence", "rmsnorm-nobias", "dense-softmax"])
def test_float32_trains_and_agrees_with_float64(name):
    m64, X, T = setup(name, seed=5)
    m32 = CASES[name][0]().compile(dtype="float32")
    m32.theta[...] = m64.theta
    np.testing.assert_allclose(m32.forward(X.astype(np.float32)), m64.forward(X),
                               rtol=2e-4, atol=2e-5)
    before = m32.loss(X.astype(np.float32), T.astype(np.float32))
    m32.fit(X.astype(np.float32), T.astype(np.float32), method="sd", epochs=30, lr=0.1)
    assert m32.loss(X.astype(np.float32), T.astype(np.float32)) < 0.8 * before


@pytest.mark.parametrize("name", ["layernorm-nobias", "rmsnorm-sequence", "softmax-vector",
                                  "dense-softmax"])
def test_save_and_load_give_the_same_network_and_numbers(name, tmp_path):
    model, X, _ = setup(name, seed=6)
    model.save(tmp_path / "m.npz")
    back = sn.load(tmp_path / "m.npz")
    assert back.network.describe() == model.network.describe()
    assert [type(a).__name__ for a in back.network.layers] == \
        [type(a).__name__ for a in model.network.layers]
    np.testing.assert_array_equal(back.forward(X), model.forward(X))


@pytest.mark.parametrize("name", ["layernorm-sequence", "rmsnorm-nobias", "dense-softmax"])
def test_exported_c_computes_what_the_model_computes(name, tmp_path):
    import test_export as te
    model, _, _ = setup(name, seed=7)
    rng = np.random.default_rng(7)
    X, T = te._data(model, rng)
    if CASES[name][2] == "ce":
        T = np.eye(model.n_out)[rng.integers(0, model.n_out, len(X))]
    lr = np.array([0.05, 0.02, 0.01])
    idx = rng.permutation(len(X)).astype(np.int64)
    want = te._reference(model, X, T, lr, idx)
    got = te._run_harness(model, tmp_path, te._native_flags(), X, T, lr, idx)
    for k in ("O", "grads", "params", "params_train"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    text = (tmp_path / "net.c").read_text()
    assert "Σ_e" in text or "Σ_j O_exp" in text   # a comment per loop, with its sum


def test_formulas_show_the_normalisation_and_its_derivatives():
    net = CASES["layernorm-sequence"][0]()
    text = str(net.formulas())
    for line in ("z_H2_mean[b,a] = Σ_e H1[b,a,e]",                    # once per row
                 "H2_c[b,a,d] = H1[b,a,d] - H2_mean[b,a]",            # centre
                 "z_H2_rstd[b,a] = Σ_e H2_c[b,a,e]²",
                 "H2_rstd[b,a] = 1/sqrt(z_H2_rstd[b,a]/6 + 1.0e-5)",
                 "H2[b,a,d] = H2_c[b,a,d]·H2_rstd[b,a]·gamma2[d] + beta2[d]",
                 "dL_dH2_rstd[b,a] = Σ_d H2_c[b,a,d]·dL_dH2[b,a,d]·gamma2[d]",
                 "dL_dH2_c[b,a,e] += 2·H2_c[b,a,e]·delta_H2_rstd[b,a]",  # through the variance
                 "dL_dH2_mean[b,a] = Σ_d -dL_dH2_c[b,a,d]",
                 "g_beta2[d] = Σ_b Σ_a dL_dH2[b,a,d]"):
        assert line in text, line
    latex = net.formulas().latex()
    assert r"\sqrt{\frac{z_{\mathrm{H2\_rstd}}[b,a]}{6} + 1.0 \cdot 10^{-5}}" in latex
    soft = str(CASES["dense-softmax"][0]().formulas())
    for line in ("z_O_max[b,a] = max_k O_z[b,k]",                  # softmax, per row
                 "O_exp[b,i] = exp(-O_max[b,0] + O_z[b,i])",
                 "z_O_sum[b,a] = Σ_j O_exp[b,j]",
                 "O[b,i] = O_exp[b,i]/O_sum[b,0]",
                 "dL_dO_sum[b,0] = Σ_i T[b,i]·inv_batch/O_sum[b,0]"):
        assert line in soft, line


def test_summary_counts_the_sums_of_the_norm_layers():
    net = sn.Network(sn.Input((3, 6)), sn.Conv1d(3, 1), sn.LayerNorm(name="N"), sn.Flatten(),
                     sn.Dense(2), loss="mse")
    rows = {r.name: r for r in net.compile().summary(batch_size=4).layers}
    # each Σ_e over D = 6 once for each of the 3 rows of 4 examples: 2 flops a term
    for part in ("N_mean", "N_rstd"):
        assert rows[part].flops_forward == 2 * 4 * 3 * 6
        assert rows[part].flops_backward == 2 * 4 * 3 * 6  # one term: ∂/∂x[e] of the Σ_e
        assert rows[part].params == 0
    assert rows["N"].params == 12 and rows["N_c"].params == 0


@pytest.mark.parametrize("make,match", [
    (lambda: sn.LayerNorm(eps=0), "LayerNorm.*eps must be a finite number > 0, got 0"),
    (lambda: sn.RMSNorm(eps=-1e-6), "RMSNorm.*eps must be a finite number > 0"),
    (lambda: sn.LayerNorm(eps="small"), "eps must be a finite number"),
    (lambda: sn.Dense(3, "softmaks"), "unknown activation 'softmaks'; known: .*softmax"),
])
def test_bad_arguments_are_refused_naming_the_layer(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make,shown", [
    (lambda: sn.LayerNorm(eps=-1), "layer 'LayerNorm': eps"),
    (lambda: sn.Dropout(1.0), "layer 'Dropout': p"),
    (lambda: sn.Embedding(0, 3), "layer 'Embedding': num"),
    (lambda: sn.Network(sn.Input(5), sn.GRU(4), loss="mse"), "GRU reads a (steps, features)"),
    (lambda: sn.Network(sn.Input(5), sn.LSTM(4, name="R"), loss="mse"),
     "LSTM 'R' reads a (steps, features)"),
])
def test_an_argument_refused_in_the_constructor_is_not_shown_as_another_value(make, shown):
    """The message names the layer by what was given: not the default eps in place of the
    eps refused, not a '?' for the p refused, not 'None' for a layer given no name."""
    with pytest.raises(ValueError) as err:
        make()
    text = str(err.value)
    assert shown in text and "?" not in text and "None" not in text and "1e-05" not in text


@pytest.mark.parametrize("make, torch", [(lambda: sn.LayerNorm(64), "nn.LayerNorm(64)"),
                                         (lambda: sn.RMSNorm(8), "nn.RMSNorm(8)"),
                                         (lambda: sn.BatchNorm1d(8), "nn.BatchNorm1d(8)"),
                                         (lambda: sn.BatchNorm2d(np.int64(16)),
                                          "nn.BatchNorm2d(16)")])
def test_an_integer_eps_is_taken_for_pytorch_s_width_and_refused(make, torch):
    """PyTorch's norms take the width first; here the first argument is eps, and
    LayerNorm(64) normalised with eps = 64 without a word."""
    with pytest.raises(ValueError, match=r"eps is the small number added under the square "
                                         r"root, got the integer \d+; .*PyTorch's "
                                         + re.escape(torch)):
        make()
    assert sn.LayerNorm(1e-3).eps == 1e-3 and sn.BatchNorm1d(eps=2.0).eps == 2.0
