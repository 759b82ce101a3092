"""Burgers' equation by a physics-informed network (Raissi, Perdikaris & Karniadakis,
J. Comput. Phys. 378, 2019):

    u_t + u u_x − ν u_xx = 0,  x ∈ [−1, 1], t ∈ [0, 1],  ν = 0.01/π,
    u(0, x) = −sin(πx),  u(t, ±1) = 0.

The network 2-20-…-20-1 (8 hidden tanh layers of 20, as the paper's code), the
residual as a loss term with sn.d, 100 initial/boundary points and 10,000
collocation points by Latin hypercube; Adam, then L-BFGS.  The relative L2
error is measured against the exact solution (Cole–Hopf, by Gauss–Hermite
quadrature) on the 256 × 100 grid; the paper reports 6.7e-4.

    PYTHONPATH=. python examples/burgers.py                 # the full run
    PYTHONPATH=. python examples/burgers.py --budget 4500   # 9.5e-4 (docs/derivatives.md)
    PYTHONPATH=. python examples/burgers.py --adam 200 --lbfgs 200 --quick
"""

import argparse
import time

import numpy as np
import sympy

import symnet as sn

NU = 0.01 / np.pi


def exact(t, x, nodes=100):
    """Cole–Hopf: u = −∫ sin(π(x−η)) f(x−η) e^{−η²/4νt} dη / ∫ f(x−η) e^{−η²/4νt} dη,
    f(y) = exp(−cos(πy)/(2πν)); with η = √(4νt)·s the weight is e^{−s²} (Gauss–Hermite)."""
    t, x = np.broadcast_arrays(np.asarray(t, float), np.asarray(x, float))
    s, w = np.polynomial.hermite.hermgauss(nodes)
    out = -np.sin(np.pi * x)                       # t = 0
    pos = t > 0
    eta = np.sqrt(4 * NU * t[pos])[:, None] * s[None, :]
    y = x[pos][:, None] - eta
    logf = -np.cos(np.pi * y) / (2 * np.pi * NU)
    f = np.exp(logf - logf.max(axis=1, keepdims=True))  # the common factor cancels
    out = out.astype(float)
    out[pos] = -(w * np.sin(np.pi * y) * f).sum(1) / (w * f).sum(1)
    return out


def latin_hypercube(n, rng, lo, hi):
    """n points, each dimension cut into n strata, one point per stratum."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    u = (np.stack([rng.permutation(n) for _ in lo], 1) + rng.random((n, len(lo)))) / n
    return lo + u * (hi - lo)


def grid():
    """The paper's data grid (its burgers_shock.mat): t = 0, 0.01, …, 0.99; 256 x in [−1, 1]."""
    return np.arange(100) / 100, np.linspace(-1, 1, 256)


def training_data(rng, n_u=100, n_f=10_000):
    """100 points drawn from the initial line and the two boundaries of the data grid,
    10,000 inside (Latin hypercube), the 100 among them too, as the paper's code."""
    tb, x0 = grid()
    pts = np.concatenate([np.stack([np.zeros_like(x0), x0], 1),
                          np.stack([tb, -np.ones_like(tb)], 1),
                          np.stack([tb, np.ones_like(tb)], 1)])
    vals = np.concatenate([-np.sin(np.pi * x0), np.zeros_like(tb), np.zeros_like(tb)])
    pick = rng.choice(len(pts), n_u, replace=False)
    X_u, T_u = pts[pick], vals[pick, None]
    X_f = latin_hypercube(n_f, rng, [0, -1], [1, 1])
    return X_u, T_u, np.concatenate([X_f, X_u])


LOWER, UPPER = np.array([0.0, -1.0]), np.array([1.0, 1.0])     # the domain: (t, x)


def network(hidden=8, width=20):
    tx = sn.Input(2, name="tx")
    # As the paper's code: the input mapped onto [-1, 1]² first, 2(X - lb)/(ub - lb) - 1,
    # by a fixed (not trained) layer whose parameters are set in scale_inputs.
    h = sn.Dense(2, name="scale", trainable=False)(tx)
    for _ in range(hidden):
        h = sn.Dense(width, "tanh")(h)
    u = sn.Dense(1, name="u")(h)
    t, x = sn.coords(tx, "t x")
    pde = sn.d(u, t) + u * sn.d(u, x) - (sympy.Rational(1, 100) / sympy.pi) * sn.d(u, x, x)
    return sn.Network(tx, u, loss={"pde": pde**2, "data": "mse"},
                      loss_weights={"pde": 1.0, "data": 1.0})


def paper_init(model, rng):
    """As the paper's code: the fixed first layer 2(X - lb)/(ub - lb) - 1 on each column;
    Xavier initialisation, W ~ N(0, 2/(fan_in + fan_out)) truncated at two standard
    deviations (TensorFlow's truncated_normal), biases zero."""
    s = model.params_of("scale")
    s["W"] = np.diag(2.0 / (UPPER - LOWER))
    s["b"] = -1.0 - 2.0 * LOWER / (UPPER - LOWER)
    fixed = set(model.network.layer_params()["scale"].values())
    for name, p in model.params.items():
        if name in fixed or p.ndim == 1:
            continue                             # the fixed layer; biases stay 0
        std = np.sqrt(2.0 / sum(p.shape))
        w = rng.normal(size=p.shape)
        while np.any(np.abs(w) > 2):
            bad = np.abs(w) > 2
            w[bad] = rng.normal(size=int(bad.sum()))
        model.params[name] = std * w


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adam", type=int, default=1000, help="Adam steps first")
    ap.add_argument("--lbfgs", type=int, default=50000, help="then L-BFGS iterations")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--quick", action="store_true", help="a small network (smoke test)")
    ap.add_argument("--budget", type=float, default=None,
                    help="stop L-BFGS after this many seconds of training")
    ap.add_argument("--every", type=int, default=1000, help="print every N L-BFGS iterations")
    ap.add_argument("--picture", default="burgers.png")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    X_u, T_u, X_f = training_data(rng, n_f=500 if args.quick else 10_000)
    net = network(hidden=2 if args.quick else 8)
    t0 = time.perf_counter()
    model = net.compile(dtype=args.dtype, seed=args.seed)
    paper_init(model, rng)
    data = {"pde": X_f, "data": (X_u, T_u)}
    model.fit(data, method="sd", optimizer="adam", lr=args.lr, epochs=1)   # builds the terms
    print(f"compiled in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    h1 = model.fit(data, method="sd", optimizer="adam", lr=args.lr, epochs=max(args.adam, 1))
    def report(hist):          # a line every --every iterations; the time budget
        if args.every and hist.epochs % args.every == 0:
            print(f"L-BFGS {hist.epochs}: loss {hist.loss[-1]:.3e} (pde "
                  f"{hist.terms['pde'][-1]:.2e}, data {hist.terms['data'][-1]:.2e}), "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        return args.budget is not None and time.perf_counter() - t0 > args.budget
    h2 = model.fit(data, method="lbfgs", epochs=max(args.lbfgs, 1), callbacks=[report])
    took = time.perf_counter() - t0
    print(f"Adam: {h1.epochs} steps, loss {h1.loss[0]:.3e} -> {h1.loss[-1]:.3e}; "
          f"L-BFGS: {h2.epochs} iterations, loss {h2.loss[-1]:.3e} "
          f"(pde {h2.terms['pde'][-1]:.2e}, data {h2.terms['data'][-1]:.2e}); {took:.0f} s")
    t, x = grid()
    TT, XX = np.meshgrid(t, x, indexing="ij")
    U = exact(TT, XX)
    P = model.predict(np.stack([TT.ravel(), XX.ravel()], 1)).reshape(U.shape)
    err = np.linalg.norm(P - U) / np.linalg.norm(U)
    print(f"relative L2 error on the 256 x 100 grid: {err:.2e}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no picture")
        return err
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    for a, Z, title in ((ax[0], P, "u(t, x), network"), (ax[1], np.abs(P - U), "|error|")):
        im = a.imshow(Z.T, origin="lower", aspect="auto", extent=(0, 1, -1, 1), cmap="RdBu_r"
                      if a is ax[0] else "viridis")
        a.set_xlabel("t")
        a.set_ylabel("x")
        a.set_title(title)
        fig.colorbar(im, ax=a)
    fig.suptitle(f"Burgers, relative L2 error {err:.2e}")
    fig.tight_layout()
    fig.savefig(args.picture, dpi=120)
    print(f"saved {args.picture}")
    return err


if __name__ == "__main__":
    main()
