"""The PINN workload of ``python -m symnet.bench --workloads pinn``: one Adam step of
the Burgers network of Raissi et al. (2-20×8-1 tanh; 10,000 collocation and 100
boundary points; loss (u_t + u·u_x − ν·u_xx)² + mse), float32 and float64,
against PyTorch (``autograd.grad(create_graph=True)`` twice, then backward) and
JAX (``jit`` of nested ``grad``) when installed; then the compile time of the
network with its loss terms against the derivative order (1, 2, 4) and the
depth (3, 6, 9 layers), each in a new process with an empty cache."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

N_F, N_U, WIDTH = 10_000, 100, 20
NU = 0.01 / np.pi


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X_f = np.stack([rng.random(N_F), rng.uniform(-1, 1, N_F)], 1)
    X_u = np.stack([rng.random(N_U), rng.uniform(-1, 1, N_U)], 1)
    return X_f, X_u, -np.sin(np.pi * X_u[:, 1:2])


def network(layers=9, order=2):
    """The Burgers PINN; ``order`` 1: u_t + u·u_x, 2: the equation, 4: + u_xxxx."""
    import sympy
    import symnet as sn
    tx = sn.Input(2, name="tx")
    h = tx
    for _ in range(layers - 1):
        h = sn.Dense(WIDTH, "tanh")(h)
    u = sn.Dense(1, name="u")(h)
    t, x = sn.coords(tx, "t x")
    pde = sn.d(u, t) + u * sn.d(u, x)
    if order >= 2:
        pde = pde - (sympy.Rational(1, 100) / sympy.pi) * sn.d(u, x, x)
    if order >= 4:
        pde = pde + sympy.Rational(1, 10**4) * sn.d(u, x, x, x, x)
    return sn.Network(tx, u, loss={"pde": pde**2, "data": "mse"})


def _symnet_step(dtype):
    model = network().compile(dtype=dtype, seed=0)
    X_f, X_u, T_u = _data()
    data = {"pde": X_f, "data": (X_u, T_u)}
    model.fit(data, method="sd", optimizer="adam", lr=1e-3, epochs=1)   # builds the terms
    return lambda: model.fit(data, method="sd", optimizer="adam", lr=1e-3, epochs=1)


def _torch_step(dtype):
    import torch
    dt = getattr(torch, dtype)
    torch.manual_seed(0)
    sizes = [2] + [WIDTH] * 8
    mods = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    net = torch.nn.Sequential(*mods, torch.nn.Linear(WIDTH, 1)).to(dt)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    X_f, X_u, T_u = (torch.tensor(a, dtype=dt) for a in _data())

    def step():
        X = X_f.clone().requires_grad_(True)
        u = net(X)
        g = torch.autograd.grad(u.sum(), X, create_graph=True)[0]
        u_xx = torch.autograd.grad(g[:, 1].sum(), X, create_graph=True)[0][:, 1]
        r = g[:, 0] + u[:, 0] * g[:, 1] - NU * u_xx
        loss = (r ** 2).mean() + ((net(X_u) - T_u) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def _jax_step(dtype):
    import jax
    import jax.numpy as jnp
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    sizes = [2] + [WIDTH] * 8 + [1]
    params = [(jnp.asarray(rng.normal(0, 0.3, (b, a)), dtype), jnp.zeros(b, dtype))
              for a, b in zip(sizes[:-1], sizes[1:])]
    X_f, X_u, T_u = (jnp.asarray(a, dtype) for a in _data())

    def u(p, x):
        h = x
        for W, b in p[:-1]:
            h = jnp.tanh(W @ h + b)
        return (p[-1][0] @ h + p[-1][1])[0]

    def residual(p, x):
        ux = jax.grad(u, argnums=1)
        uxx = jax.grad(lambda p, x: ux(p, x)[1], argnums=1)(p, x)[1]
        g = ux(p, x)
        return g[0] + u(p, x) * g[1] - NU * uxx

    def loss(p):
        r = jax.vmap(lambda x: residual(p, x))(X_f)
        d = jax.vmap(lambda x: u(p, x))(X_u) - T_u[:, 0]
        return jnp.mean(r ** 2) + jnp.mean(d ** 2)

    @jax.jit
    def step(p, m, v, k):
        g = jax.grad(loss)(p)
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        p = jax.tree_util.tree_map(
            lambda p, m, v: p - 1e-3 * (m / (1 - 0.9 ** k)) / (jnp.sqrt(v / (1 - 0.999 ** k))
                                                                 + 1e-8), p, m, v)
        return p, m, v
    state = [params, jax.tree_util.tree_map(jnp.zeros_like, params),
             jax.tree_util.tree_map(jnp.zeros_like, params), 1]

    def run():
        p, m, v = step(state[0], state[1], state[2], state[3])
        jax.block_until_ready(p)
        state[:] = [p, m, v, state[3] + 1]
    run()
    return run


def time_steps(dtypes=("float32", "float64"), repeats=5):
    """{dtype: {name: median seconds per step}}, the contestants timed in turns."""
    out = {}
    for dtype in dtypes:
        fns = {"symnet": _symnet_step(dtype)}
        for name, make in (("torch", _torch_step), ("jax", _jax_step)):
            try:
                fns[name] = make(dtype)
            except ImportError:
                pass
        for f in fns.values():
            f()
        times = {k: [] for k in fns}
        for _ in range(repeats):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        out[dtype] = {k: statistics.median(v) for k, v in times.items()}
    return out


_COMPILE = """
import time, numpy as np
from symnet.bench.pinn import network
from symnet.runtime.pinn import Objective
t0 = time.perf_counter()
net = network(layers={layers}, order={order})
model = net.compile(dtype="float64")
Objective(model, {{"pde": np.zeros((4, 2)), "data": (np.zeros((4, 2)), np.zeros((4, 1)))}})
print(time.perf_counter() - t0)
"""


def compile_time(layers, order) -> float:
    """Seconds to derive, emit and build the network with its loss terms, in a new
    process with an empty cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, SYMNET_CACHE_DIR=cache)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        res = subprocess.run([sys.executable, "-c", _COMPILE.format(layers=layers, order=order)],
                             env=env, capture_output=True, text=True, timeout=1800)
        if res.returncode:
            raise RuntimeError(res.stderr[-2000:])
        return float(res.stdout.strip().splitlines()[-1])


def run(quick: bool = False):
    print("\nPINN (Burgers, 2-20x8-1 tanh, 10,000 + 100 points): one Adam step, median "
          "seconds of alternating runs")
    steps = time_steps(repeats=3 if quick else 7)
    for dtype, row in steps.items():
        best = min((v for k, v in row.items() if k != "symnet"), default=None)
        text = "  ".join(f"{k} {v * 1e3:9.1f} ms" for k, v in row.items())
        ratio = f"  speed-up over the fastest peer {best / row['symnet']:.2f}x" if best else ""
        print(f"  {dtype}: {text}{ratio}")
    grid = [(3, 1), (3, 2)] if quick else [(9, 1), (9, 2), (9, 4), (3, 2), (6, 2)]
    print("compile time with the loss terms (new process, empty cache):")
    for layers, order in grid:
        print(f"  {layers} layers, derivative order {order}: "
              f"{compile_time(layers, order):6.1f} s", flush=True)
    return steps
