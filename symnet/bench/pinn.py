"""The PINN workload of ``python -m symnet.bench --workloads pinn``: one Adam step of
the Burgers network of Raissi et al. (2-20×8-1 tanh; 10,000 collocation and 100
boundary points; loss (u_t + u·u_x − ν·u_xx)² + mse), float32 and float64,
against PyTorch (``autograd.grad(create_graph=True)`` twice, then backward) and
JAX (``jit`` of nested ``grad``) when installed; then the compile time of the
network with its loss terms against the derivative order (1, 2, 4) and the
depth (3, 6, 9 layers), each in a new process with an empty cache."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import isa
from .refs import time_calls

N_F, N_U, WIDTH = 10_000, 100, 20
NU = 0.01 / np.pi


def _data(seed=0, n_f=N_F, n_u=N_U):
    rng = np.random.default_rng(seed)
    X_f = np.stack([rng.random(n_f), rng.uniform(-1, 1, n_f)], 1)
    X_u = np.stack([rng.random(n_u), rng.uniform(-1, 1, n_u)], 1)
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


def _layer_names(params) -> list:
    """[(W, b), ...] in the order of the network (W1, b1, W2, ...)."""
    n = sorted(int(k[1:]) for k in params if k.startswith("W"))
    return [(f"W{i}", f"b{i}") for i in n]


def symnet_step(dtype, layers=9, data=None):
    """symnet's Adam step with ``.model`` and ``.loss_grad()``: (loss, {name: gradient})
    at the current parameters.

    One step is what each epoch of ``fit(data, method="sd", optimizer="adam")`` does
    (``symnet.runtime.pinn``): the compiled loss terms and their gradient in one call
    per term, then the model's Adam update (its moments and step count kept from step
    to step), so the timing is the step, not the set-up of a ``fit`` call (the data's
    checks, the History)."""
    from symnet.runtime.optimizer import for_model
    from symnet.runtime.pinn import Objective, sd_update
    from symnet.runtime.second_order import as_dict
    model = network(layers).compile(dtype=dtype, seed=0)
    X_f, X_u, T_u = data if data is not None else _data()
    data = {"pde": X_f, "data": (X_u, T_u)}
    obj = Objective(model, data)
    opt = for_model(model, "adam")

    def step():
        _, g = obj.loss_grad()
        sd_update(model, opt, g, 1e-3)

    def loss_grad():
        L, g = obj.loss_grad()
        return L, as_dict(model, g)
    step.model, step.loss_grad = model, loss_grad
    step.params = lambda: {k: np.array(v) for k, v in model.params.items()}
    return step


def torch_step(dtype, params, data=None):
    """PyTorch's step from a copy of ``params``: ``autograd.grad(create_graph=True)``
    for u_t, u_x and u_xx, backward, ``torch.optim.Adam``."""
    import torch
    dt = getattr(torch, dtype)
    names = _layer_names(params)
    lins = [torch.nn.Linear(params[W].shape[1], params[W].shape[0]).to(dt) for W, _ in names]
    with torch.no_grad():
        for lin, (W, b) in zip(lins, names):
            lin.weight.copy_(torch.tensor(params[W]))
            lin.bias.copy_(torch.tensor(params[b]))
    mods = []
    for lin in lins[:-1]:
        mods += [lin, torch.nn.Tanh()]
    net = torch.nn.Sequential(*mods, lins[-1])
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    X_f, X_u, T_u = (torch.tensor(a, dtype=dt) for a in (data if data is not None else _data()))

    def loss():
        X = X_f.clone().requires_grad_(True)
        u = net(X)
        g = torch.autograd.grad(u.sum(), X, create_graph=True)[0]
        u_xx = torch.autograd.grad(g[:, 1].sum(), X, create_graph=True)[0][:, 1]
        r = g[:, 0] + u[:, 0] * g[:, 1] - NU * u_xx
        return (r ** 2).mean() + ((net(X_u) - T_u) ** 2).mean()

    def step():
        L = loss()
        opt.zero_grad()
        L.backward()
        opt.step()

    def loss_grad():
        L = loss()
        opt.zero_grad()
        L.backward()
        out = {}
        for lin, (W, b) in zip(lins, names):
            out[W], out[b] = lin.weight.grad.numpy().copy(), lin.bias.grad.numpy().copy()
        opt.zero_grad()
        return float(L.detach()), out

    def params_now():
        out = {}
        for lin, (W, b) in zip(lins, names):
            out[W], out[b] = (lin.weight.detach().numpy().copy(),
                              lin.bias.detach().numpy().copy())
        return out
    step.loss_grad, step.params = loss_grad, params_now
    return step


def jax_step(dtype, params, data=None):
    """JAX's step from a copy of ``params``: ``jax.jit`` of the loss with nested
    ``jax.grad`` for u_t, u_x, u_xx, ``jax.grad`` of it, and the same Adam update.
    float64 runs inside ``jax.enable_x64(True)`` (and float32 inside
    ``enable_x64(False)``), so neither changes JAX's setting for the other or for
    the rest of the process."""
    import jax
    import jax.numpy as jnp
    x64 = dtype == "float64"
    names = _layer_names(params)
    with jax.enable_x64(x64):
        p0 = {k: jnp.asarray(params[k], dtype) for pair in names for k in pair}
        X_f, X_u, T_u = (jnp.asarray(a, dtype) for a in (data if data is not None else _data()))

        def u(p, x):
            h = x
            for W, b in names[:-1]:
                h = jnp.tanh(p[W] @ h + p[b])
            W, b = names[-1]
            return (p[W] @ h + p[b])[0]

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
        def train(p, m, v, k):
            g = jax.grad(loss)(p)
            m = {n: 0.9 * m[n] + 0.1 * g[n] for n in p}
            v = {n: 0.999 * v[n] + 0.001 * g[n] * g[n] for n in p}
            p = {n: p[n] - 1e-3 * (m[n] / (1 - 0.9 ** k))
                 / (jnp.sqrt(v[n] / (1 - 0.999 ** k)) + 1e-8) for n in p}
            return p, m, v
        value_and_grad = jax.jit(jax.value_and_grad(loss))
        zeros = {n: jnp.zeros_like(a) for n, a in p0.items()}
    state = {}

    def reset():
        state.update(p=p0, m=zeros, v=zeros, k=1)

    def step():
        with jax.enable_x64(x64):
            p, m, v = train(state["p"], state["m"], state["v"], jnp.asarray(state["k"], dtype))
            jax.block_until_ready(p)
        state.update(p=p, m=m, v=v, k=state["k"] + 1)

    def loss_grad():
        with jax.enable_x64(x64):
            L, g = value_and_grad(state["p"])
            return float(L), {k: np.asarray(a) for k, a in g.items()}
    reset()
    step()      # compile outside the timing
    reset()
    step.loss_grad, step.reset = loss_grad, reset
    step.params = lambda: {k: np.asarray(a) for k, a in state["p"].items()}
    return step


REFERENCES = {"torch": torch_step, "jax": jax_step}


def _rel(a: dict, b: dict) -> float:
    """Max over the names of max |a − b| / max |b|."""
    return max(float(np.abs(a[k] - b[k]).max() / (np.abs(b[k]).max() + 1e-300)) for k in b)


def agreement(ours, theirs) -> dict:
    """How a reference agrees with symnet from the same parameters: the loss and its
    gradient there (relative), and the parameter change of one Adam step (relative
    to the largest change: Adam's first step is ≈ lr·sign(gradient))."""
    p0 = ours.params()
    L0, g0 = ours.loss_grad()
    L1, g1 = theirs.loss_grad()
    ours()
    theirs()
    d0 = {k: v - p0[k] for k, v in ours.params().items()}
    d1 = {k: v - p0[k] for k, v in theirs.params().items()}
    ours.model.params.update(p0)
    return {"loss": abs(L1 - L0) / abs(L0), "grad": _rel(g1, g0), "step": _rel(d1, d0)}


def time_steps(dtypes=("float32", "float64"), repeats=5, ref_names=("torch", "jax")):
    """({dtype: {name: median seconds per step}}, {dtype: {ref: agreement}},
    {ref: why skipped}); the contestants timed in turns after one step of each from
    the same parameters has been compared with symnet's."""
    out, agree, skipped = {}, {}, {}
    for dtype in dtypes:
        ours = symnet_step(dtype)
        params = ours.params()
        fns, agree[dtype] = {"symnet": ours}, {}
        for name in ref_names:
            try:
                fns[name] = REFERENCES[name](dtype, params)
            except ImportError as exc:
                skipped[name] = f"not installed ({exc.name})"
                continue
            agree[dtype][name] = agreement(ours, fns[name])
        # in turns, each a run of at least 0.1 s of calls after SETTLE_S (refs.time_calls)
        us = time_calls(fns, min_time=0.1 * repeats, repeats=repeats)
        out[dtype] = {k: v * 1e-6 for k, v in us.items()}
    return out, agree, skipped


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


def compile_time(layers, order) -> tuple:
    """(wall, CPU) seconds to derive, emit and build the network with its loss terms,
    in a new process with an empty cache but for the machine's record (its one-time
    measurement, ``symnet.backend.c.tuning``, is not part of a network's compile).
    The CPU seconds (that process and its compilers) do not depend on the load of
    the machine as the wall seconds do."""
    import glob
    import resource
    import shutil
    from symnet.backend.c.build import cache_dir
    with tempfile.TemporaryDirectory() as cache:
        for f in glob.glob(os.path.join(str(cache_dir()), "machine-*")):
            if f.endswith((".json", ".so")):
                shutil.copy2(f, cache)
        env = dict(os.environ, SYMNET_CACHE_DIR=cache)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = subprocess.run([sys.executable, "-c", _COMPILE.format(layers=layers, order=order)],
                             env=env, capture_output=True, text=True, timeout=1800)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if res.returncode:
            raise RuntimeError(res.stderr[-2000:])
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return float(res.stdout.strip().splitlines()[-1]), cpu


def run(quick: bool = False, ref_names=("torch", "jax"), compile_times: bool = True,
        steps: bool = True):
    out = None
    if steps:
        out = run_steps(quick, ref_names)
    if compile_times:
        run_compile_times(quick)
    return out


def run_steps(quick: bool = False, ref_names=("torch", "jax")):
    print("\nPINN (Burgers, 2-20x8-1 tanh, 10,000 + 100 points): one Adam step, median "
          "seconds of alternating runs; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    steps, agree, skipped = time_steps(repeats=3 if quick else 7, ref_names=ref_names)
    for dtype, row in steps.items():
        best = min((v for k, v in row.items() if k != "symnet"), default=None)
        text = "  ".join(f"{k} {v * 1e3:9.1f} ms{'*' if k in isa.not_held else ''}"
                         for k, v in row.items())
        ratio = f"  speed-up over the fastest peer {best / row['symnet']:.2f}x" if best else ""
        print(f"  {dtype}: {text}{ratio}")
        for ref, a in agree[dtype].items():
            print(f"    {ref} from the same parameters: loss agrees to {a['loss']:.1e}, "
                  f"gradient to {a['grad']:.1e}, one Adam step to {a['step']:.1e} (relative)")
    for ref, why in skipped.items():
        print(f"  {ref}: skipped, {why}")
    if any(r in isa.not_held for r in ref_names):
        print("  *: not held to the instruction set (the header)")
    return steps


def run_compile_times(quick: bool = False):
    grid = [(3, 1), (3, 2)] if quick else [(d, o) for o in (1, 2, 4) for d in (3, 6, 9)]
    print("compile time with the loss terms (new process, empty cache), wall and CPU seconds; "
          "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    for layers, order in grid:
        wall, cpu = compile_time(layers, order)
        print(f"  {layers} layers, derivative order {order}: {wall:6.1f} s wall, "
              f"{cpu:6.1f} s CPU", flush=True)
