"""Self-attention, per-position Dense and positional embeddings over (batch, steps, features).

Checked against a numpy computation of PyTorch's documented formulas, float64 central
differences, and, when installed, PyTorch's nn.MultiheadAttention (batch_first=True,
weights copied): forward, loss, every gradient to 1e-10 and 50 SGD steps to 1e-9.
"""

import numpy as np
import pytest
from gradcheck import check

import symnet as sn

L, D, HEADS = 5, 6, 2


def mha_ref(X, W, c, Wo, co, heads, causal=False):
    """PyTorch's multi-head self-attention, in numpy."""
    B, n, width = X.shape
    d = width // heads
    Y = X @ W.T + c

    def split(part):
        return part.reshape(B, n, heads, d).transpose(0, 2, 1, 3)
    q, k, v = (split(Y[..., m * width:(m + 1) * width]) for m in range(3))
    S = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    if causal:
        S = np.where(np.tril(np.ones((n, n))) > 0, S, -np.inf)
    P = np.exp(S - S.max(-1, keepdims=True))
    P /= P.sum(-1, keepdims=True)
    A = (P @ v).transpose(0, 2, 1, 3).reshape(B, n, width)
    return A @ Wo.T + co


def network(causal=False, extra=False):
    S = sn.Input((L, D), name="S")
    x = S
    if extra:
        x = sn.PositionalEmbedding(name="E")(x)
        x = sn.Pointwise(D, "tanh", name="P")(x)
    A = sn.MultiHeadAttention(HEADS, causal=causal, name="A")(x)
    return sn.Network(S, sn.Dense(2, name="O")(sn.Flatten(name="F")(A)), loss="mse")


def randomise(model, rng, scale=0.5):
    for k, v in model.params.items():
        model.params[k] = rng.normal(scale=scale, size=v.shape)


def data(rng, n=4):
    return rng.normal(size=(n, L, D)), rng.normal(size=(n, 2))


def reference(model, X, causal, extra=False):
    p = model.params
    x = X
    if extra:
        x = np.tanh((X + p["P1"]) @ p["W2"].T + p["b2"])
    k = "3" if extra else "1"
    A = mha_ref(x, p[f"W{k}"], p[f"c{k}"], p[f"Wo{k}"], p[f"co{k}"], HEADS, causal)
    o = "5" if extra else "3"
    return A.reshape(len(X), -1) @ p[f"W{o}"].T + p[f"b{o}"]


@pytest.mark.parametrize("causal", [False, True])
def test_forward_equals_numpy(causal, rng):
    model = network(causal).compile(dtype="float64", seed=0)
    randomise(model, rng)
    X, _ = data(rng)
    np.testing.assert_allclose(model.forward(X), reference(model, X, causal), rtol=1e-12,
                               atol=1e-13)


@pytest.mark.parametrize("causal", [False, True])
def test_gradients_central_differences(causal, rng):
    model = network(causal, extra=True).compile(dtype="float64", seed=0)
    randomise(model, rng)
    X, T = data(rng)
    np.testing.assert_allclose(model.forward(X), reference(model, X, causal, True),
                               rtol=1e-12, atol=1e-13)
    check(model, X, T)


def test_causal_output_ignores_later_positions(rng):
    """Position t of a causal layer depends on positions ≤ t only."""
    S = sn.Input((L, D), name="S")
    net = sn.Network(S, sn.Flatten(name="F")(sn.MultiHeadAttention(HEADS, causal=True,
                                                                  name="A")(S)), loss="mse")
    model = net.compile(dtype="float64", seed=0)
    X, _ = data(rng)
    Y = X.copy()
    Y[:, 3:] = rng.normal(size=Y[:, 3:].shape)
    a, b = model.forward(X).reshape(-1, L, D), model.forward(Y).reshape(-1, L, D)
    np.testing.assert_allclose(a[:, :3], b[:, :3], rtol=1e-12)
    assert np.abs(a[:, 3:] - b[:, 3:]).min() > 0


def test_parameter_shapes_are_pytorchs():
    shapes = network().param_shapes()
    assert shapes["W1"] == (3 * D, D) and shapes["c1"] == (3 * D,)
    assert shapes["Wo1"] == (D, D) and shapes["co1"] == (D,)


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match=r"MultiHeadAttention 'att': 4 heads do not divide "
                                         r"the width 6 of its input"):
        sn.Network(sn.Input((L, D)), sn.MultiHeadAttention(4, name="att"), sn.Flatten(),
                   sn.Dense(1), loss="mse")
    with pytest.raises(ValueError, match=r"MultiHeadAttention 'att' reads one \(steps, "
                                         r"features\) sequence, got shape \(6,\)"):
        sn.Network(sn.Input(6), sn.MultiHeadAttention(2, name="att"), loss="mse")
    with pytest.raises(ValueError, match="heads must be a positive integer, got 0"):
        sn.MultiHeadAttention(0)
    with pytest.raises(ValueError, match="Pointwise: unknown activation 'nope'"):
        sn.Pointwise(3, "nope")


def test_float32_trains_saves_loads_exports(rng, tmp_path):
    model = network(True, extra=True).compile(dtype="float32", seed=0)
    X, T = data(rng, 32)
    X, T = X.astype(np.float32), T.astype(np.float32)
    before = model.loss(X, T)
    for _ in range(30):
        model.step(X, T, lr=0.05)
    assert model.loss(X, T) < 0.9 * before
    model.save(tmp_path / "m.npz")
    again = sn.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.forward(X), model.forward(X))
    model.export_c(tmp_path / "c")
    code = (tmp_path / "c" / "net.c").read_text()
    assert "/* A_p[b,hd,tq,tk] = " in code and "exp(" in code


def test_formulas_show_the_softmax():
    text = str(network(True).formulas())
    assert "A_p[b,hd,tq,tk]" in text and "A_z[b,hd,tq]" in text



@pytest.mark.parametrize("causal", [False, True])
def test_long_sequences_take_every_tile_of_the_products(causal, rng):
    """19 positions of width 20, 2 heads (d = 10): each product per (example, head) runs
    over full and partial tiles of rows (6) and columns (16 floats, 8 doubles), with the
    keys read along k (copied into rows first); float64 against numpy and
    central differences, float32 against float64."""
    n, width = 19, 20
    S = sn.Input((n, width), name="S")
    net = sn.Network(S, sn.Dense(2, name="O")(sn.Flatten(name="F")(
        sn.MultiHeadAttention(2, causal=causal, name="A")(S))), loss="mse")
    from symnet.plan.lower import plan
    marked = [op for op in plan(net.graph()).forward if getattr(op, "product", None)]
    assert {op.product[0].T.array for op in marked} == {"z_A_s", "z_A_a"}
    along_k = {op.product[0].T.array: op.product[0].B.strides[op.product[0].n] != 1
               for op in marked}
    # the keys of the scores are read along k (copied into rows first); the values of
    # the weighted sum where the projection wrote them, along n
    assert along_k == {"z_A_s": True, "z_A_a": False}
    model = net.compile(dtype="float64", seed=0)
    randomise(model, rng)
    X, T = rng.normal(size=(3, n, width)), rng.normal(size=(3, 2))
    p = model.params
    want = mha_ref(X, p["W1"], p["c1"], p["Wo1"], p["co1"], 2, causal).reshape(3, -1) \
        @ p["W3"].T + p["b3"]
    np.testing.assert_allclose(model.forward(X), want, rtol=1e-12, atol=1e-13)
    check(model, X, T)
    single = net.compile(dtype="float32", seed=0)
    single.params.update({k: v.astype(np.float32) for k, v in p.items()})
    X32, T32 = X.astype(np.float32), T.astype(np.float32)
    np.testing.assert_allclose(single.forward(X32), want, rtol=2e-5, atol=2e-5)
    _, g = model.loss_and_grad(X, T)
    _, g32 = single.loss_and_grad(X32, T32)
    for name, ref in g.items():
        np.testing.assert_allclose(g32[name], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(),
                                   err_msg=name)

# ------------------------------------------------------------------ PyTorch
def _torch_pair(causal, rng):
    torch = pytest.importorskip("torch")
    torch.set_default_dtype(torch.float64)
    model = network(causal).compile(dtype="float64", seed=0)
    randomise(model, rng)
    att = torch.nn.MultiheadAttention(D, HEADS, batch_first=True)
    lin = torch.nn.Linear(L * D, 2)
    p = model.params
    pairs = {"W1": att.in_proj_weight, "c1": att.in_proj_bias, "Wo1": att.out_proj.weight,
             "co1": att.out_proj.bias, "W3": lin.weight, "b3": lin.bias}
    with torch.no_grad():
        for k, t in pairs.items():
            t.copy_(torch.from_numpy(p[k]))
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1) if causal else None

    def forward(X):
        x = torch.from_numpy(X)
        a, _ = att(x, x, x, need_weights=False, attn_mask=mask)
        return lin(a.reshape(len(X), -1))
    return torch, model, pairs, forward


@pytest.mark.parametrize("causal", [False, True])
def test_equals_pytorch(causal, rng):
    torch, model, pairs, forward = _torch_pair(causal, rng)
    X, T = data(rng)
    o = forward(X)
    np.testing.assert_allclose(model.forward(X), o.detach().numpy(), rtol=1e-10, atol=1e-14)
    loss = torch.nn.functional.mse_loss(o, torch.from_numpy(T))
    loss.backward()
    value, g = model.loss_and_grad(X, T)
    assert value == pytest.approx(loss.item(), rel=1e-10)
    for name, t in pairs.items():
        ref = t.grad.numpy()
        np.testing.assert_allclose(g[name], ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max(),
                                   err_msg=name)


@pytest.mark.parametrize("causal", [False, True])
def test_50_sgd_steps_follow_pytorch(causal, rng):
    torch, model, pairs, forward = _torch_pair(causal, rng)
    X, T = data(rng, 8)
    opt = torch.optim.SGD(list(pairs.values()), lr=0.01)
    first = model.loss(X, T)
    for _ in range(50):
        opt.zero_grad()
        torch.nn.functional.mse_loss(forward(X), torch.from_numpy(T)).backward()
        opt.step()
        model.step(X, T, lr=0.01)
    assert model.loss(X, T) < first            # trained, not diverged (NaN equals NaN)
    for name, t in pairs.items():
        assert np.isfinite(t.detach().numpy()).all(), name
        np.testing.assert_allclose(model.params[name], t.detach().numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)


# ------------------------------------------------------------------ TransformerBlock
def block_network():
    S = sn.Input((L, D), name="S")
    x = sn.TransformerBlock(HEADS, 8, name="B1")(S)
    x = sn.TransformerBlock(HEADS, 8, causal=True, name="B2")(x)
    return sn.Network(S, sn.Dense(2, name="O")(sn.Flatten(name="F")(x)), loss="mse")


def layer_norm(x, g, b, eps=1e-5):
    c = x - x.mean(-1, keepdims=True)
    return c / np.sqrt((c ** 2).mean(-1, keepdims=True) + eps) * g + b


def block_ref(x, p, names, block, causal):
    k = {part: names.index(f"{block}_{part}") + 1 for part in
         ("norm1", "att", "norm2", "ff1", "ff2")}
    a = mha_ref(layer_norm(x, p[f"gamma{k['norm1']}"], p[f"beta{k['norm1']}"]),
                p[f"W{k['att']}"], p[f"c{k['att']}"], p[f"Wo{k['att']}"], p[f"co{k['att']}"],
                HEADS, causal)
    r = x + a
    h = layer_norm(r, p[f"gamma{k['norm2']}"], p[f"beta{k['norm2']}"])
    h = np.maximum(h @ p[f"W{k['ff1']}"].T + p[f"b{k['ff1']}"], 0)
    return r + h @ p[f"W{k['ff2']}"].T + p[f"b{k['ff2']}"]


def test_transformer_blocks_equal_numpy_and_central_differences(rng, tmp_path):
    net = block_network()
    model = net.compile(dtype="float64", seed=0)
    randomise(model, rng)
    X, T = data(rng)
    p = model.params
    h = block_ref(block_ref(X, p, net.names, "B1", False), p, net.names, "B2", True)
    W = f"W{net.names.index('O') + 1}"
    np.testing.assert_allclose(model.forward(X),
                               h.reshape(len(X), -1) @ p[W].T + p["b" + W[1:]], rtol=1e-11)
    check(model, X, T)
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(sn.load(tmp_path / "m.npz").forward(X), model.forward(X))


def test_transformer_block_equals_pytorch():
    torch = pytest.importorskip("torch")
    torch.set_default_dtype(torch.float64)
    from symnet.bench.seq import block_indices
    rng = np.random.default_rng(3)
    net = block_network()
    model = net.compile(dtype="float64", seed=0)
    randomise(model, rng)
    p = model.params
    layers = []
    for block in ("B1", "B2"):
        k = block_indices(net.names, block)
        blk = torch.nn.TransformerEncoderLayer(D, HEADS, 8, dropout=0.0, batch_first=True,
                                               norm_first=True)
        pairs = {f"gamma{k['norm1']}": blk.norm1.weight, f"beta{k['norm1']}": blk.norm1.bias,
                 f"W{k['att']}": blk.self_attn.in_proj_weight,
                 f"c{k['att']}": blk.self_attn.in_proj_bias,
                 f"Wo{k['att']}": blk.self_attn.out_proj.weight,
                 f"co{k['att']}": blk.self_attn.out_proj.bias,
                 f"gamma{k['norm2']}": blk.norm2.weight, f"beta{k['norm2']}": blk.norm2.bias,
                 f"W{k['ff1']}": blk.linear1.weight, f"b{k['ff1']}": blk.linear1.bias,
                 f"W{k['ff2']}": blk.linear2.weight, f"b{k['ff2']}": blk.linear2.bias}
        layers.append((blk, pairs))
    lin = torch.nn.Linear(L * D, 2)
    W = f"W{net.names.index('O') + 1}"
    head = {W: lin.weight, "b" + W[1:]: lin.bias}
    every = {**layers[0][1], **layers[1][1], **head}
    with torch.no_grad():
        for k, t in every.items():
            t.copy_(torch.from_numpy(p[k]))
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)

    def forward(X):
        h = layers[0][0](torch.from_numpy(X))
        h = layers[1][0](h, src_mask=mask)
        return lin(h.reshape(len(X), -1))
    X, T = data(rng)
    o = forward(X)
    np.testing.assert_allclose(model.forward(X), o.detach().numpy(), rtol=1e-10, atol=1e-14)
    loss = torch.nn.functional.mse_loss(o, torch.from_numpy(T))
    loss.backward()
    value, g = model.loss_and_grad(X, T)
    assert value == pytest.approx(loss.item(), rel=1e-10)
    for name, t in every.items():
        ref = t.grad.numpy()
        np.testing.assert_allclose(g[name], ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max(),
                                   err_msg=name)
    opt = torch.optim.SGD(list(every.values()), lr=0.002)
    first = model.loss(X, T)
    for _ in range(50):
        opt.zero_grad()
        torch.nn.functional.mse_loss(forward(X), torch.from_numpy(T)).backward()
        opt.step()
        model.step(X, T, lr=0.002)
    assert model.loss(X, T) < first            # trained, not diverged (NaN equals NaN)
    for name, t in every.items():
        assert np.isfinite(t.detach().numpy()).all(), name
        np.testing.assert_allclose(model.params[name], t.detach().numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)


def test_large_scores_do_not_overflow(rng):
    """Scores far beyond exp's float32 range (≈ 88): the row maximum is subtracted first."""
    model = network(True).compile(dtype="float32", seed=0)
    randomise(model, rng)
    model.params["W1"] = model.params["W1"] * 40
    X, T = data(rng)
    out = model.forward(X.astype(np.float32))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference(model, X, True), rtol=2e-3, atol=2e-3)
    value, g = model.loss_and_grad(X.astype(np.float32), T.astype(np.float32))
    assert np.isfinite(value) and all(np.isfinite(v).all() for v in g.values())


def test_summary_counts_the_products():
    """Projections: 2·B·steps·out·in; scores and weighted sum: 2·B·heads·steps²·d each."""
    S = sn.Input((L, D), name="S")
    net = sn.Network(S, sn.Flatten(name="F")(sn.MultiHeadAttention(HEADS, name="A")(S)),
                     loss="mse")
    B, d = 4, D // HEADS
    rows = {r.name: r for r in net.compile(dtype="float32").summary(B).layers}
    assert rows["A_qkv"].flops_forward == 2 * B * L * 3 * D * D
    assert rows["A"].flops_forward == 2 * B * L * D * D
    assert rows["A_s"].flops_forward == rows["A_a"].flops_forward == 2 * B * HEADS * L * L * d
    assert rows["A_s"].flops_backward == 2 * rows["A_s"].flops_forward
    assert rows["A_qkv"].params == 3 * D * D + 3 * D


def test_a_block_after_an_embedding_or_dropout_knows_its_width():
    """Embedding(num, dim) gives dim features, Dropout passes them on: a TransformerBlock
    after them needs no width=D (it did: 'the width of its input ... is not known')."""
    tok = sn.Input(6, dtype="int", name="tok")
    x = sn.PositionalEmbedding(name="P")(sn.Embedding(11, 8, name="E")(tok))
    x = sn.TransformerBlock(2, 16, causal=True, name="B")(sn.Dropout(0.1)(x))
    net = sn.Network(tok, sn.Dense(3, name="O")(sn.Flatten()(x)), loss="softmax_cross_entropy")
    shapes = net.param_shapes()
    # the block's feed-forward goes back to the embedding's 8 features: ff2 is 8×16
    assert (8, 16) in shapes.values() and (16, 8) in shapes.values()
    model = net.compile(dtype="float64", seed=0)
    X = np.random.default_rng(0).integers(0, 11, size=(4, 6))
    assert model.forward(X).shape == (4, 3)


@pytest.mark.parametrize("given,hint", [("cross_entropy", "'softmax_cross_entropy' on a linear"),
                                        ("categorical_crossentropy", "the loss applies the softmax"),
                                        ("binary_crossentropy", "is 'bce'")])
def test_a_loss_named_as_pytorch_or_keras_names_it_is_pointed_to_ours(given, hint):
    with pytest.raises(ValueError, match=f"unknown loss '{given}'.*{hint}"):
        sn.Network(sn.Input(3), sn.Dense(2), loss=given)
