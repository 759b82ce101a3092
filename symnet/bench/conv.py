"""The ``conv`` workload: a LeNet-5-like network, one float32 SGD step.

1×28×28 → Conv2d(6, 5) relu → MaxPool2d(2) → Conv2d(16, 5) relu → MaxPool2d(2) →
Flatten → Dense(120) relu → Dense(84) relu → Dense(10), softmax cross-entropy,
batch 64, random data, plain SGD.  symnet's ``model.step`` against PyTorch eager
and JAX ``jit`` (when installed) on the same parameters and data; the references
are written here from the definitions, independent of symnet's compiler.
"""

from __future__ import annotations

import numpy as np

from . import isa, refs

BATCH, LR = 64, 0.01
SHAPE = (1, 28, 28)


def network():
    import symnet as sn
    return sn.Network(sn.Input(SHAPE, name="I"), sn.Conv2d(6, 5, activation="relu"),
                      sn.MaxPool2d(2), sn.Conv2d(16, 5, activation="relu"), sn.MaxPool2d(2),
                      sn.Flatten(), sn.Dense(120, "relu"), sn.Dense(84, "relu"), sn.Dense(10),
                      loss="softmax_cross_entropy")


SHAPES = {"W1": (6, 1, 5, 5), "b1": (6,), "W3": (16, 6, 5, 5), "b3": (16,),
          "W6": (120, 256), "b6": (120,), "W7": (84, 120), "b7": (84,),
          "W8": (10, 84), "b8": (10,)}


def init_params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in SHAPES.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        a = np.sqrt(6.0 / fan_in) if len(shape) > 1 else 0.1
        out[name] = rng.uniform(-a, a, shape).astype(np.float32)
    return out


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((BATCH, *SHAPE)).astype(np.float32)
    T = np.zeros((BATCH, 10), np.float32)
    T[np.arange(BATCH), rng.integers(0, 10, BATCH)] = 1
    return X, T


def make_torch_step(params, X, T):
    import torch
    F = torch.nn.functional
    P = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    Xt, yt = torch.tensor(X), torch.tensor(T.argmax(1))

    def step():
        h = F.max_pool2d(F.relu(F.conv2d(Xt, P["W1"], P["b1"])), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, P["W3"], P["b3"])), 2).flatten(1)
        h = F.relu(F.linear(h, P["W6"], P["b6"]))
        h = F.relu(F.linear(h, P["W7"], P["b7"]))
        loss = F.cross_entropy(F.linear(h, P["W8"], P["b8"]), yt)
        for p in P.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in P.values():
                p -= LR * p.grad
    step.params = lambda: {k: v.detach().numpy().copy() for k, v in P.items()}
    return step


def make_jax_step(params, X, T):
    import jax
    import jax.numpy as jnp

    def loss_fn(P, X, T):
        def conv(h, W, b):
            z = jax.lax.conv_general_dilated(h, W, (1, 1), "VALID",
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return jax.nn.relu(z + b[None, :, None, None])

        def pool(h):
            return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2),
                                         "VALID")
        h = pool(conv(X, P["W1"], P["b1"]))
        h = pool(conv(h, P["W3"], P["b3"])).reshape(X.shape[0], -1)
        h = jax.nn.relu(h @ P["W6"].T + P["b6"])
        h = jax.nn.relu(h @ P["W7"].T + P["b7"])
        o = h @ P["W8"].T + P["b8"]
        return -(T * jax.nn.log_softmax(o)).sum(axis=1).mean()

    @jax.jit
    def train(P, X, T):
        g = jax.grad(loss_fn)(P, X, T)
        return {k: P[k] - LR * g[k] for k in P}
    state = {"P": {k: jnp.asarray(v) for k, v in params.items()}}
    Xj, Tj = jnp.asarray(X), jnp.asarray(T)

    def step():
        state["P"] = train(state["P"], Xj, Tj)
        jax.block_until_ready(state["P"])
    step()   # compile outside the timing
    state["P"] = {k: jnp.asarray(v) for k, v in params.items()}
    step.params = lambda: {k: np.asarray(v) for k, v in state["P"].items()}
    return step


REFERENCES = {"torch": make_torch_step, "jax": make_jax_step}


def print_plan(name: str, model):
    """What the planner chose for a compiled model's products (model.tuning)."""
    t = model.tuning
    plan = "; ".join(f"{k} → {v}" for k, v in t.get("plan", {}).items()) or \
        "no product timed (machine thresholds)"
    print(f"  {name}: tune={t.get('tune')}, tile {t.get('tile')}: {plan}")


def conv_routes(net) -> str:
    """How the plan computes each convolution: "direct" (from the input's rows in place)
    or "im2col" (im2col and products), by the layer's sum."""
    from ..plan import lower
    from ..plan.ops import Conv
    p = lower.plan(net.graph())
    return ", ".join(f"{op.Z} {'direct' if op.direct else 'im2col'}"
                     for op in p.forward if isinstance(op, Conv))


def run(min_time: float, peak: float, ref_names=("torch", "jax")) -> dict:
    """Time one step of each, print a table row and a check that one step of
    each gives the same parameters; returns the figures."""
    params, (X, T) = init_params(), make_data()
    from .measure import TUNE
    net = network()
    model = net.compile(dtype="float32", tune=TUNE)
    for k, v in params.items():
        model.params[k] = v
    flops = model.summary(BATCH, print_fn=None).flops_per_step
    # correctness first: one step from the same parameters, compared with each reference
    model.step(X, T, LR)
    after = {k: np.array(v) for k, v in model.params.items()}
    times, agree, skipped = {}, {}, {}
    for name in ref_names:
        try:
            step = REFERENCES[name](params, X, T)
        except ImportError as exc:
            skipped[name] = f"not installed ({exc.name})"
            continue
        step()
        got = step.params()
        agree[name] = max(float(np.abs(got[k] - after[k]).max() / (np.abs(after[k]).max()
                                                                     + 1e-30)) for k in got)
        times[name] = refs.time_call(step, min_time=min_time)[0]
    for k, v in params.items():
        model.params[k] = v
    us = refs.time_call(lambda: model.step(X, T, LR), min_time=min_time)[0]
    gflops = flops / us / 1e3
    print(f"\nconv: LeNet-5-like 1x28x28 -> conv6@5 relu -> pool2 -> conv16@5 relu -> pool2 -> "
          f"120 relu -> 84 relu -> 10, batch {BATCH}, float32, SGD; "
          f"{flops / 1e6:.1f} MFLOP per step (convolutions and matrix products)")
    print(f"  symnet step {us:10.1f} µs  {gflops:6.1f} GFLOP/s ({100 * gflops / peak:.1f}% "
          "of the matmul peak)")
    for name, t in times.items():
        print(f"  {name:<6} step {t:10.1f} µs  {flops / t / 1e3:6.1f} GFLOP/s   symnet is "
              f"{t / us:.2f}x faster; one step's parameters agree to {agree[name]:.1e} "
              "(max relative)" + isa.held_note(name))
    for name, why in skipped.items():
        print(f"  {name}: skipped, {why}")
    print_plan("conv", model)
    print(f"  conv: convolutions {conv_routes(net)}")
    return {"symnet_us": us, "refs_us": times, "agree": agree, "gflops": gflops}
