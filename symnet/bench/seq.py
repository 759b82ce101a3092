"""The sequence workloads: one float32 SGD step of a transformer and of a GRU.

``transformer``: (32, 64) sequences → 2 pre-norm TransformerBlocks (4 heads,
feed-forward 256, relu) → Flatten → Dense(10), softmax cross-entropy, batch 32.
``gru``: (40, 8) sequences → GRU(64) → Dense(10) on the last state, softmax
cross-entropy, batch 100.  symnet's ``model.step`` against PyTorch eager
(``nn.TransformerEncoderLayer(norm_first=True, dropout=0)`` and ``nn.GRU``, both
batch_first) and JAX (``jax.jit`` of the whole step: loss, ``jax.grad``, the same
update) on the same parameters and data, timed in turns; one step of each from the
same parameters is compared first.  JAX and PyTorch are optional: a reference that
is not installed is skipped with a note.
"""

from __future__ import annotations

import numpy as np

from . import isa, refs

LR = 0.01
T_STEPS, T_WIDTH, T_HEADS, T_FF, T_BATCH = 32, 64, 4, 256, 32
G_STEPS, G_IN, G_HIDDEN, G_BATCH = 40, 8, 64, 100
CLASSES = 10


def transformer_network():
    import symnet as sn
    S = sn.Input((T_STEPS, T_WIDTH), name="S")
    x = sn.TransformerBlock(T_HEADS, T_FF, name="B1")(S)
    x = sn.TransformerBlock(T_HEADS, T_FF, name="B2")(x)
    return sn.Network(S, sn.Dense(CLASSES, name="O")(sn.Flatten(name="F")(x)),
                      loss="softmax_cross_entropy")


def gru_network():
    import symnet as sn
    S = sn.Input((G_STEPS, G_IN), name="S")
    return sn.Network(S, sn.GRU(G_HIDDEN), sn.Dense(CLASSES, name="O"),
                      loss="softmax_cross_entropy")


def _data(shape, batch, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, *shape)).astype(np.float32)
    T = np.zeros((batch, CLASSES), np.float32)
    T[np.arange(batch), rng.integers(0, CLASSES, batch)] = 1
    return X, T


def _init(model, seed=0) -> dict:
    """Parameters as PyTorch draws them: U(−1/√fan_in, 1/√fan_in); norms γ = 1, β = 0."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, v in model.params.items():
        if name.startswith("gamma"):
            out[name] = np.ones(v.shape, np.float32)
        elif name.startswith("beta"):
            out[name] = np.zeros(v.shape, np.float32)
        else:
            fan = v.shape[1] if v.ndim > 1 else 64
            a = 1 / np.sqrt(fan)
            out[name] = rng.uniform(-a, a, v.shape).astype(np.float32)
    return out


def _transformer_torch(params, X, T):
    import torch
    torch.manual_seed(0)
    blocks = [torch.nn.TransformerEncoderLayer(T_WIDTH, T_HEADS, T_FF, dropout=0.0,
                                               batch_first=True, norm_first=True)
              for _ in range(2)]
    head = torch.nn.Linear(T_STEPS * T_WIDTH, CLASSES)
    with torch.no_grad():
        for k, blk in zip(("B1", "B2"), blocks):
            pairs = _block_pairs(params, k, blk)
            for name, t in pairs.items():
                t.copy_(torch.from_numpy(params[name]))
        head.weight.copy_(torch.from_numpy(params[_last_dense(params)[0]]))
        head.bias.copy_(torch.from_numpy(params[_last_dense(params)[1]]))
    tensors = [p for b in blocks for p in b.parameters()] + list(head.parameters())
    Xt, yt = torch.from_numpy(X), torch.from_numpy(T.argmax(1))

    def step():
        h = Xt
        for b in blocks:
            h = b(h)
        loss = torch.nn.functional.cross_entropy(head(h.flatten(1)), yt)
        for p in tensors:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in tensors:
                p -= LR * p.grad

    def params_now():
        out = {}
        for k, blk in zip(("B1", "B2"), blocks):
            out.update({n: t.detach().numpy().copy()
                        for n, t in _block_pairs(params, k, blk).items()})
        W, b = _last_dense(params)
        out[W], out[b] = head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()
        return out
    step.params = params_now
    return step


def _last_dense(params):
    W = max((n for n in params if n.startswith("W") and params[n].shape[0] == CLASSES),
            key=lambda n: int("".join(c for c in n if c.isdigit())))
    return W, "b" + W[1:]


def block_indices(names: list, block: str) -> dict:
    """Parameter numbers of a named TransformerBlock's layers (from the network's names)."""
    parts = ("norm1", "att", "norm2", "ff1", "ff2")
    return {p: names.index(f"{block}_{p}") + 1 for p in parts}


def _block_pairs(params, block, blk):
    names = transformer_network().names
    k = block_indices(names, block)
    return {f"gamma{k['norm1']}": blk.norm1.weight, f"beta{k['norm1']}": blk.norm1.bias,
            f"W{k['att']}": blk.self_attn.in_proj_weight,
            f"c{k['att']}": blk.self_attn.in_proj_bias,
            f"Wo{k['att']}": blk.self_attn.out_proj.weight,
            f"co{k['att']}": blk.self_attn.out_proj.bias,
            f"gamma{k['norm2']}": blk.norm2.weight, f"beta{k['norm2']}": blk.norm2.bias,
            f"W{k['ff1']}": blk.linear1.weight, f"b{k['ff1']}": blk.linear1.bias,
            f"W{k['ff2']}": blk.linear2.weight, f"b{k['ff2']}": blk.linear2.bias}


def _gru_torch(params, X, T):
    import torch
    gru = torch.nn.GRU(G_IN, G_HIDDEN, batch_first=True)
    head = torch.nn.Linear(G_HIDDEN, CLASSES)
    k = next(n for n in params if n.startswith("U"))[1:]
    W, b = _last_dense(params)
    pairs = {f"W{k}": gru.weight_ih_l0, f"U{k}": gru.weight_hh_l0, f"b{k}": gru.bias_ih_l0,
             f"c{k}": gru.bias_hh_l0, W: head.weight, b: head.bias}
    with torch.no_grad():
        for name, t in pairs.items():
            t.copy_(torch.from_numpy(params[name]))
    Xt, yt = torch.from_numpy(X), torch.from_numpy(T.argmax(1))

    def step():
        out, _ = gru(Xt)
        loss = torch.nn.functional.cross_entropy(head(out[:, -1]), yt)
        for p in pairs.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in pairs.values():
                p -= LR * p.grad
    step.params = lambda: {n: t.detach().numpy().copy() for n, t in pairs.items()}
    return step


def _jax_step(loss_fn, params, X, T):
    """One jitted SGD step of ``loss_fn(P, X, T)`` on a dict of float32 parameters named
    as symnet's, started from a copy of ``params``; ``step.params()`` reads them back."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def train(P, X, T):
        g = jax.grad(loss_fn)(P, X, T)
        return {k: P[k] - LR * g[k] for k in P}
    start = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    state = {"P": start}
    Xj, Tj = jnp.asarray(X, jnp.float32), jnp.asarray(T, jnp.float32)

    def step():
        state["P"] = train(state["P"], Xj, Tj)
        jax.block_until_ready(state["P"])
    step()   # compile outside the timing
    state["P"] = start
    step.params = lambda: {k: np.asarray(v) for k, v in state["P"].items()}
    return step


def _cross_entropy(logits, T):
    import jax
    return -(T * jax.nn.log_softmax(logits)).sum(axis=1).mean()


def _transformer_jax(params, X, T):
    import jax
    import jax.numpy as jnp
    names = transformer_network().names
    blocks = [block_indices(names, b) for b in ("B1", "B2")]
    Wh, bh = _last_dense(params)
    dh = T_WIDTH // T_HEADS

    def norm(x, g, b):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / jnp.sqrt(v + 1e-5) * g + b

    def attention(x, W, c, Wo, co):
        B, L, _ = x.shape
        q, k, v = (a.reshape(B, L, T_HEADS, dh).transpose(0, 2, 1, 3)
                   for a in jnp.split(x @ W.T + c, 3, axis=-1))
        a = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh), axis=-1)
        return (a @ v).transpose(0, 2, 1, 3).reshape(B, L, T_WIDTH) @ Wo.T + co

    def loss_fn(P, X, T):
        h = X
        for k in blocks:
            a, n1, n2, f1, f2 = k["att"], k["norm1"], k["norm2"], k["ff1"], k["ff2"]
            h = h + attention(norm(h, P[f"gamma{n1}"], P[f"beta{n1}"]), P[f"W{a}"],
                              P[f"c{a}"], P[f"Wo{a}"], P[f"co{a}"])
            f = jax.nn.relu(norm(h, P[f"gamma{n2}"], P[f"beta{n2}"]) @ P[f"W{f1}"].T
                            + P[f"b{f1}"])
            h = h + f @ P[f"W{f2}"].T + P[f"b{f2}"]
        return _cross_entropy(h.reshape(h.shape[0], -1) @ P[Wh].T + P[bh], T)
    return _jax_step(loss_fn, params, X, T)


def _gru_jax(params, X, T):
    import jax
    import jax.numpy as jnp
    k = next(n for n in params if n.startswith("U"))[1:]
    Wh, bh = _last_dense(params)

    def loss_fn(P, X, T):
        W, U, b, c = P[f"W{k}"], P[f"U{k}"], P[f"b{k}"], P[f"c{k}"]

        def cell(h, x):       # PyTorch's gate order: reset, update, new
            gi, gh = x @ W.T + b, h @ U.T + c
            ir, iz, i_n = jnp.split(gi, 3, axis=-1)
            hr, hz, hn = jnp.split(gh, 3, axis=-1)
            r, z = jax.nn.sigmoid(ir + hr), jax.nn.sigmoid(iz + hz)
            return (1 - z) * jnp.tanh(i_n + r * hn) + z * h, None
        h0 = jnp.zeros((X.shape[0], G_HIDDEN), X.dtype)
        h, _ = jax.lax.scan(cell, h0, X.transpose(1, 0, 2))
        return _cross_entropy(h @ P[Wh].T + P[bh], T)
    return _jax_step(loss_fn, params, X, T)


JAX_STEPS = {"transformer": _transformer_jax, "gru": _gru_jax}


def reference_step(name: str, ref: str, params, X, T):
    """The ``ref`` ("torch" or "jax") SGD step of workload ``name`` from ``params``
    (raises ImportError when the framework is not installed)."""
    make = WORKLOADS[name][3] if ref == "torch" else JAX_STEPS[name]
    return make(params, X, T)


WORKLOADS = {
    "transformer": (transformer_network, (T_STEPS, T_WIDTH), T_BATCH, _transformer_torch,
                    f"2 pre-norm transformer blocks, d={T_WIDTH}, {T_HEADS} heads, "
                    f"ff {T_FF}, sequence {T_STEPS}, batch {T_BATCH}"),
    "gru": (gru_network, (G_STEPS, G_IN), G_BATCH, _gru_torch,
            f"GRU hidden {G_HIDDEN} over {G_STEPS} steps of {G_IN} features, "
            f"batch {G_BATCH}"),
}


GOALS = {"transformer": {"torch": 2.0, "jax": 1.0}, "gru": {"torch": 2.0}}


def run(name: str, min_time: float, ref_names=("torch",), peak: float | None = None) -> dict:
    """Time one float32 SGD step of workload ``name`` against the references (in turns),
    after checking that one step of each from the same parameters agrees.  With
    ``peak`` (GFLOP/s of the machine's matrix product, measured now), each step's rate
    is shown against it, and so is the rate a goal not met would take."""
    make_net, shape, batch, _, what = WORKLOADS[name]
    X, T = _data(shape, batch)
    model = make_net().compile(dtype="float32")
    flops = model.summary(batch, print_fn=None).flops_per_step
    params = _init(model)
    model.params.update(params)
    model.step(X, T, LR)
    after = {k: np.array(v) for k, v in model.params.items()}
    model.params.update(params)
    fns, agree, skipped = {"symnet": lambda: model.step(X, T, LR)}, {}, {}
    for ref in ref_names:
        if ref not in ("torch", "jax"):
            skipped[ref] = "not written for this workload"
            continue
        try:
            step = reference_step(name, ref, params, X, T)
        except ImportError as exc:
            skipped[ref] = f"not installed ({exc.name})"
            continue
        step()
        got = step.params()
        agree[ref] = max(float(np.abs(got[k] - after[k]).max()
                               / (np.abs(after[k]).max() + 1e-30)) for k in got)
        fns[ref] = step
    times = refs.time_calls(fns, min_time=min_time)
    us = times.pop("symnet")

    def rate(t):      # GFLOP/s of a step of t µs, and its share of the peak
        g = flops / t / 1e3
        return f"{g:6.1f} GFLOP/s" + (f" ({100 * g / peak:.0f}% of the matmul peak)"
                                     if peak else "")
    print(f"\n{name}: {what}, float32, softmax cross-entropy, SGD; "
          f"{flops / 1e6:.1f} MFLOP per step (net.summary(): matrix products and the "
          "sums of norms and softmax)")
    print(f"  symnet step {us:10.1f} µs  {rate(us)}")
    for ref, t in times.items():
        goal = GOALS[name].get(ref)
        print(f"  {ref:<6} step {t:10.1f} µs  {rate(t)}   symnet is {t / us:.2f}x faster"
              + (f" (goal ≥ {goal:g}x)" if goal else "")
              + f"; one step's parameters agree to {agree[ref]:.1e} (max relative)"
              + isa.held_note(ref))
    for ref, t in times.items():
        goal = GOALS[name].get(ref)
        if goal and t / us < goal:
            need = t / goal
            line = f"  ≥ {goal:g}x {ref} takes a step of ≤ {need:.0f} µs: {rate(need).strip()}"
            if peak and flops / need / 1e3 > peak:
                line += ", beyond what the matrix product reaches on this machine now"
            print(line)
    for ref, why in skipped.items():
        print(f"  {ref}: skipped, {why}")
    check = model.tuning.get("blas_check") or {}
    if check.get("slow"):
        grown = f" {check['grown']:.2f}× as long as on symnet's tiles" if "grown" in check else \
            " slower than symnet's tiles"
        print(f"  (in this process OpenBLAS ran the step's pass{grown}: every product on "
              "the tiles, docs/performance.md)")
    return {"symnet_us": us, "refs_us": times, "agree": agree, "flops": flops}
