"""Run by tests/test_distributed.py under mpiexec; not a test module itself.

    mpiexec -n P python -m mpi4py tests/mpi_worker.py OUT_DIR [scenario ...]
    mpiexec -n P python -m mpi4py tests/mpi_worker.py --fail raise|exit
    mpiexec -n P python -m mpi4py tests/mpi_worker.py --sigint
    mpiexec -n P python -m mpi4py tests/mpi_worker.py --stateful OUT_DIR
    mpiexec -n P python tests/mpi_worker.py --one-sided shuffle|callback

Each process trains on its own part of one small data set (part sizes SIZES[P],
uneven) and writes, per scenario, its final parameters, its History and any
error into OUT_DIR/rank{r}.npz and OUT_DIR/rank{r}.json.  Every process starts
from its own seed, so equal results also show that process 0's parameters
were broadcast.  ``--fail`` makes process 1 fail in the middle of an epoch
without catching anything: raising an exception or ending at once; ``--sigint``
trains until Ctrl-C (SIGINT to mpiexec) stops it.
"""

import json
import os
import signal
import sys
import warnings

import numpy as np

import symnet as sn
from symnet.runtime import schedules

SIZES = {1: [23], 2: [14, 9], 3: [10, 8, 5]}

SCENARIOS = {
    "sd": dict(method="sd", epochs=25, lr=0.5),
    "sd_adam": dict(method="sd", epochs=20, lr=schedules.RobbinsMonro(0.05, tau=10),
                    optimizer="adam", validation=True),
    "minibatch": dict(method="minibatch", batch_size=4, epochs=3, lr=0.3, shuffle=False),
    "minibatch_seed": dict(method="minibatch", batch_size=3, epochs=2, lr=0.2, seed=7,
                           optimizer="momentum", momentum=0.8),
    "sgd": dict(method="sgd", epochs=2, lr=0.1, shuffle=False),
    "diverge": dict(method="sd", epochs=400, lr=40.0, net="linear"),
    "early": dict(method="sd", epochs=300, lr=2.0, weight_decay=1e-3, clip_norm=1.0,
                  early_stopping=3, validation=True),
    "conv_sd": dict(method="sd", epochs=10, lr=0.3, net="conv", validation=True),
    "tags_mb": dict(method="minibatch", batch_size=3, epochs=2, lr=0.3, shuffle=False,
                    net="tags", validation=True),
    "graph_mb": dict(method="minibatch", batch_size=3, epochs=2, lr=0.2, shuffle=False,
                     net="graph", validation=True),
    "diverge_mb": dict(method="minibatch", batch_size=2, epochs=400, lr=9.0, shuffle=False,
                       net="linear", even=8),
    "interrupt": dict(method="sgd", epochs=3, lr=0.1, shuffle=False, hook=("sigint", 1, 5)),
    "fail": dict(method="sgd", epochs=3, lr=0.1, shuffle=False, hook=("raise", 1, 3)),
    "drift": dict(method="sd", epochs=3, lr=0.5, hook=("drift", 1, 2)),
    "mismatch": dict(method="sd", epochs=2, lr=0.1, hidden={1: 6}),
    "bad_data": dict(method="sd", epochs=2, lr=0.1, nan_on=1),
    # ``on``: process r's own changes to the scenario
    "seed_differs": dict(method="minibatch", batch_size=3, epochs=1, lr=0.1, seed=7,
                         on={1: dict(seed=8)}),
    "val_elsewhere": dict(method="sd", epochs=2, lr=0.1, on={1: dict(validation=True)}),
    "val_differs": dict(method="sd", epochs=2, lr=0.1, validation=True,
                        on={1: dict(val_seed=2)}),
}


def data(n=23, seed=0, kind="tanh"):
    """The whole data set: X (n, 3) (images (n, 1, 6, 6) for ``conv``), one-hot T (n, 2)."""
    rng = np.random.default_rng(seed)
    if kind == "graph":        # two inputs, two outputs: lists of arrays
        A, B = rng.normal(size=(n, 2)), rng.normal(size=(n, 3))
        return [A, B], [A[:, :1] * B[:, 1:2], np.eye(2)[(B[:, 0] > 0).astype(int)]]
    if kind == "conv":
        X = rng.normal(size=(n, 1, 6, 6))
        return X, np.eye(2)[(X[:, 0, 1:4, 2].sum(axis=1) > 0).astype(int)]
    if kind == "tags":         # sequences (n, 4, 3), a class label per position (n, 4)
        X = rng.normal(size=(n, 4, 3))
        return X, (X[..., 0] > 0).astype(int) + (X[..., 1] > 0).astype(int)
    X = rng.normal(size=(n, 3))
    T = np.eye(2)[(X[:, 0] * X[:, 1] + 0.3 * X[:, 2] > 0).astype(int)]
    return X, T


def validation(kind="tanh", seed=1):
    return data(n=11, seed=seed, kind=kind)


def network(kind="tanh", hidden=5):
    if kind == "linear":
        return sn.Network(sn.Input(3), sn.Dense(1), loss="mse")
    if kind == "graph":
        XA, XB = sn.Input(2, name="XA"), sn.Input(3, name="XB")
        H = sn.Dense(hidden, "tanh", name="H")(sn.Concatenate()([XA, XB]))
        O1, O2 = sn.Dense(1, name="O1")(H), sn.Dense(2, name="O2")(H)
        return sn.Network([XA, XB], [O1, O2],
                          loss={"O1": "mse", "O2": "softmax_cross_entropy"})
    if kind == "conv":
        return sn.Network(sn.Input((1, 6, 6)), sn.Conv2d(2, 3, activation="tanh"),
                          sn.Flatten(), sn.Dense(2), loss="softmax_cross_entropy")
    if kind == "tags":         # softmax cross-entropy with a class per position
        return sn.Network(sn.Input((4, 3)), sn.Pointwise(hidden, "tanh"), sn.Pointwise(3),
                          loss="softmax_cross_entropy")
    return sn.Network(sn.Input(3), sn.Dense(hidden, "tanh"), sn.Dense(2),
                      loss="softmax_cross_entropy")


def targets(kind, T):
    return T[:, :1] * 3.0 - 1.0 if kind == "linear" else T


def part(A, sizes, r):
    if isinstance(A, list):
        return [part(a, sizes, r) for a in A]
    start = sum(sizes[:r])
    return A[start:start + sizes[r]]


def fit_args(spec):
    keep = ("method", "epochs", "batch_size", "lr", "shuffle", "seed", "optimizer",
            "momentum", "weight_decay", "clip_norm", "early_stopping")
    return {k: v for k, v in spec.items() if k in keep}


def _hook(model, what, at):
    """Make the model's batch kernel signal or raise on its ``at``-th call, or
    (``drift``) its update move one parameter a little on that call."""
    if what == "drift":
        update, ups = model.runtime.update, [0]

        def drifting(*args):
            update(*args)
            ups[0] += 1
            if ups[0] == at:
                model.theta[0] += 1e-9
        model.runtime.update = drifting
        return
    real, calls = model.runtime.loss_grad, [0]

    def hooked(*args):
        calls[0] += 1
        if calls[0] == at:
            if what == "sigint":
                signal.raise_signal(signal.SIGINT)
            else:
                raise RuntimeError(f"boom in call {at}")
        return real(*args)
    model.runtime.loss_grad = hooked


def run(comm, name, spec):
    r, P = comm.Get_rank(), comm.Get_size()
    spec = {**spec, **spec.get("on", {}).get(r, {})}
    sizes = [spec["even"]] * P if "even" in spec else SIZES[P]
    kind = spec.get("net", "tanh")
    model = network(kind, spec.get("hidden", {}).get(r, 5)).compile(dtype="float64", seed=r)
    X, T = data(n=sum(sizes), kind=kind)
    T = targets(kind, T)
    Xr, Tr = part(X, sizes, r), part(T, sizes, r)
    if spec.get("nan_on") == r:
        Xr = Xr.copy()
        Xr[2, 1] = np.nan
    hook = spec.get("hook")
    if hook and hook[1] == r:
        _hook(model, hook[0], hook[2])
    val = validation(kind, spec.get("val_seed", 1)) if spec.get("validation") else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hist = model.fit(Xr, Tr, progress=False, comm=comm, validation_data=val,
                             **fit_args(spec))
    except Exception as exc:  # noqa: BLE001  (recorded for the test to check)
        return model.theta.copy(), None, f"{type(exc).__name__}: {exc}"
    out = hist.to_dict()
    out["warnings"] = [str(w.message) for w in caught]
    out["warned_at"] = [os.path.basename(w.filename) for w in caught]   # the line pointed at
    return model.theta.copy(), out, None


def main(argv):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if argv[0] == "--fail":
        _hook_fail(comm, argv[1])
        return
    if argv[0] == "--sigint":
        _until_sigint(comm)
        return
    if argv[0] == "--one-sided":
        _one_sided(comm, argv[1])
        return
    if argv[0] == "--stateful":
        _stateful(comm, argv[1])
        return
    if argv[0] == "--synced":
        _synced(comm, argv[1], argv[2:] or list(SYNCED))
        return
    out, names = argv[0], argv[1:] or list(SCENARIOS)
    arrays, info = {}, {}
    for name in names:
        theta, hist, error = run(comm, name, SCENARIOS[name])
        arrays[name] = theta
        info[name] = {"hist": hist, "error": error}
    r = comm.Get_rank()
    np.savez(os.path.join(out, f"rank{r}.npz"), **arrays)
    with open(os.path.join(out, f"rank{r}.json"), "w") as fh:
        json.dump(info, fh)


def _hook_fail(comm, how):
    """Process 1 fails in its third step, uncaught; the others go on training."""
    r = comm.Get_rank()
    model = network().compile(dtype="float64", seed=0)
    X, T = data(n=4000)
    if r == 1:
        real, calls = model.runtime.loss_grad, [0]

        def failing(*args):
            calls[0] += 1
            if calls[0] == 3:
                if how == "exit":
                    os._exit(3)
                raise RuntimeError("process 1 fails on purpose")
            return real(*args)
        model.runtime.loss_grad = failing
    model.fit(X, T, method="sgd", epochs=1000, lr=0.01, progress=False, comm=comm)
    print("finished, which a failing process should have prevented", flush=True)


def _one_sided(comm, what):
    """Process 1 alone passes shuffle="yes" (``shuffle``) or a callback that raises
    after epoch 2 (``callback``); every process catches its error, and process 0
    prints them all as a JSON list: a process left waiting shows as a hung job."""
    r = comm.Get_rank()
    model = network().compile(dtype="float64", seed=0)
    X, T = data()
    kw = dict(method="minibatch", batch_size=4, epochs=5, lr=0.1, progress=False)

    def callback(hist):
        if len(hist.loss) == 2:
            raise RuntimeError("callback fails on purpose")
    if r == 1:
        kw.update(shuffle="yes") if what == "shuffle" else kw.update(callbacks=[callback])
    try:
        model.fit(X, T, comm=comm, **kw)
        error = None
    except Exception as exc:  # noqa: BLE001  (printed for the test to check)
        error = f"{type(exc).__name__}: {exc}"
    errors = comm.gather(error, root=0)
    if r == 0:
        print(json.dumps(errors), flush=True)


def _until_sigint(comm):
    """A long fit (minutes) that Ctrl-C sent to mpiexec must end on every process
    at the same step; prints each process's result as a JSON line."""
    model = network().compile(dtype="float64", seed=0)
    X, T = data(n=4000)
    r = comm.Get_rank()

    real, calls = model.runtime.loss_grad, [0]

    def announcing(*args):
        calls[0] += 1
        if calls[0] == 50:
            print(f"started {r}", flush=True)
        return real(*args)
    model.runtime.loss_grad = announcing
    hist = model.fit(X, T, method="sgd", epochs=10000, lr=0.01, progress=False, comm=comm)
    print(json.dumps({"rank": r, "stopped": hist.stopped, "steps": hist.steps,
                      "theta": model.theta.tobytes().hex()[:64]}), flush=True)


STATEFUL = {
    "dropout": dict(method="minibatch", batch_size=4, epochs=2, lr=0.3, shuffle=False,
                    seed=5),
    "bn": dict(method="minibatch", batch_size=5, epochs=2, lr=0.3, shuffle=False, seed=3),
    "bn_one_left": dict(method="minibatch", batch_size=4, epochs=1, lr=0.3),
    "bn_sd": dict(method="sd", epochs=3, lr=0.3),
    "bn_sgd": dict(method="sgd", epochs=1, lr=0.3),
}


def stateful_network(kind):
    """A network with Dropout or BatchNorm (named ``N``)."""
    layer = sn.Dropout(0.5) if kind == "dropout" else sn.BatchNorm1d(name="N")
    return sn.Network(sn.Input(3), sn.Dense(4, "tanh"), layer, sn.Dense(2),
                      loss="softmax_cross_entropy")


def _stateful(comm, out):
    """Dropout and BatchNorm over MPI.  Dropout: every process trains on the same 8
    examples (so equal local losses would mean equal masks) and records the local
    loss of its first step; BatchNorm: the uneven parts of SIZES[P]."""
    r, P = comm.Get_rank(), comm.Get_size()
    arrays, info = {}, {}
    for name, spec in STATEFUL.items():
        kind = "dropout" if name == "dropout" else "bn"
        model = stateful_network(kind).compile(dtype="float64", seed=r)
        X, T = data(n=sum(SIZES[P]))
        Xr, Tr = (X[:8], T[:8]) if kind == "dropout" else \
            (part(X, SIZES[P], r), part(T, SIZES[P], r))
        real, first = model.runtime.loss_grad, []

        def recording(*args, real=real, first=first):
            loss = real(*args)
            first.append(loss)
            return loss
        model.runtime.loss_grad = recording
        error = None
        try:
            model.fit(Xr, Tr, progress=False, comm=comm, **fit_args(spec))
        except Exception as exc:  # noqa: BLE001  (recorded for the test to check)
            error = f"{type(exc).__name__}: {exc}"
        arrays[name] = model.theta.copy()
        info[name] = {"error": error, "first_loss": first[0] if first else None,
                      "params": {k: np.asarray(v).tolist() for k, v in model.params.items()}}
    np.savez(os.path.join(out, f"rank{r}.npz"), **arrays)
    with open(os.path.join(out, f"rank{r}.json"), "w") as fh:
        json.dump(info, fh)


SYNCED = {
    # process 1 of 2 (9 examples) has a last batch of one and no batch in step 4; of 3
    # processes ([10, 8, 5]) process 1 has none in step 3, process 2 one then none
    "bn": dict(method="minibatch", batch_size=4, epochs=2, lr=0.3, shuffle=False, net="bn"),
    "bn_sd": dict(method="sd", epochs=3, lr=0.3, net="bn"),
    "bn_sgd": dict(method="sgd", epochs=1, lr=0.2, shuffle=False, net="bn"),
    "bn2d": dict(method="minibatch", batch_size=4, epochs=2, lr=0.3, shuffle=False,
                 net="bn2d"),
    "mixed": dict(method="sd", epochs=1, lr=0.3, net="mixed"),
    # step 2 holds one example over all processes: process 0's 14th (or 10th)
    # process 1's callback raises after its 3rd sum of the 2nd step (a bug in a hook)
    "hook_fails": dict(method="minibatch", batch_size=4, epochs=1, lr=0.3, shuffle=False,
                       net="bn", fail=(1, 7)),
    "one_in_step": dict(method="minibatch", batch_size={2: 13, 3: 9}, epochs=1, lr=0.3,
                        net="bn"),
}


def synced_network(kind):
    """A network with BatchNorm(sync=True) (named ``N``): after a Dense (``bn``), after a
    convolution (``bn2d``), or beside a BatchNorm without sync (``mixed``)."""
    if kind == "bn2d":
        return sn.Network(sn.Input((1, 6, 6)), sn.Conv2d(3, 3, activation="tanh"),
                          sn.BatchNorm2d(name="N", sync=True), sn.Flatten(), sn.Dense(2),
                          loss="softmax_cross_entropy")
    extra = [sn.Dense(3, "tanh"), sn.BatchNorm1d(name="M")] if kind == "mixed" else []
    return sn.Network(sn.Input(3), sn.Dense(4, "tanh"), sn.BatchNorm1d(name="N", sync=True),
                      *extra, sn.Dense(2), loss="softmax_cross_entropy")


def _failing_hook(rank, at):
    """This process's hook of the synchronised sums raises in its ``at``-th call (after
    taking part in the Allreduce, as a late bug would); returns the undo."""
    from symnet.runtime import distributed
    real, calls = distributed._SyncSums.reduce, [0]

    def reduce(self, values, kind):
        real(self, values, kind)
        calls[0] += 1
        if calls[0] == at:
            raise RuntimeError(f"hook fails in call {at}")
    distributed._SyncSums.reduce = reduce
    return lambda: setattr(distributed._SyncSums, "reduce", real)


def _synced(comm, out, names):
    """BatchNorm(sync=True) over MPI on the uneven parts of SIZES[P]: each process's
    parameters, History and error per scenario."""
    r, P = comm.Get_rank(), comm.Get_size()
    arrays, info = {}, {}
    for name in names:
        spec = SYNCED[name]
        if isinstance(spec.get("batch_size"), dict):
            spec = dict(spec, batch_size=spec["batch_size"][P])
        kind = spec["net"]
        model = synced_network(kind).compile(dtype="float64", seed=r)
        X, T = data(n=sum(SIZES[P]), kind="conv" if kind == "bn2d" else "tanh")
        error, hist = None, None
        restore = _failing_hook(*spec["fail"]) if spec.get("fail", (None,))[0] == r else None
        try:
            hist = model.fit(part(X, SIZES[P], r), part(T, SIZES[P], r), progress=False,
                             comm=comm, **fit_args(spec)).to_dict()
        except Exception as exc:  # noqa: BLE001  (recorded for the test to check)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if restore:
                restore()
        arrays[name] = model.theta.copy()
        info[name] = {"error": error, "hist": hist,
                      "params": {k: np.asarray(v).tolist() for k, v in model.params.items()}}
    np.savez(os.path.join(out, f"rank{r}.npz"), **arrays)
    with open(os.path.join(out, f"rank{r}.json"), "w") as fh:
        json.dump(info, fh)


if __name__ == "__main__":
    main(sys.argv[1:])
