"""Data-parallel training over MPI: ``Model.fit(X, T, ..., comm=MPI.COMM_WORLD)``.

Each process of the communicator holds its own part (X_r, T_r) of the data set
and the same compiled network.  A step's gradient is the notes' exact mean over
the step's examples N(t), which are spread over the processes:

    ĝ = (1/|N(t)|) Σ_r Σ_{n ∈ N_r(t)} ∂L_n/∂W

Each process computes its local sum (the kernels' batch mean times the local
batch size), then one in-place ``Allreduce`` adds, in a single float64 buffer,
[gradient sums, loss sum, example count, stop flag, halt flag, failure flag]
over the processes; every process divides by the global count and applies the
same compiled update, so the parameters stay bit-identical without being sent.
Uneven parts give the one-process result on the concatenated data (to
rounding), not a mean of means.

- ``sd``: one step per epoch over the union of all parts.
- ``minibatch``: N(t) is the union of every process's batch of ``batch_size``;
  an epoch has max_r ⌈n_r / batch_size⌉ steps, a process whose part is used up
  adds nothing to the remaining steps, so each example is used once per epoch.
- ``sgd``: one example per process per step, drawn with replacement from the
  process's part (in order 0, 1, ... wrapping round when not ``shuffle``);
  ⌈N / P⌉ steps per epoch for N examples on P processes.

Process r shuffles with ``numpy.random.default_rng([seed, r])`` (one ``seed`` for
all).  At the start every process checks its arguments and data, and they compare
what they found (one ``allgather``): a network, dtype or setting (``seed`` included)
that differs from process 0's, or bad data on any process, raises the error on
every process.  Then process 0's
parameters are broadcast.  The number of steps in an epoch follows from the
part sizes gathered then, so every process makes the same collective calls.

Stopping: a non-finite loss (seen by all, as it is the global loss) rolls back
as in one process.  Ctrl-C (``mpiexec`` passes it to every process) sets the
stop flag; the step in flight completes on all processes and training ends
there with ``stopped="interrupted"`` (a second Ctrl-C makes ``mpiexec`` abort
the job).  An exception in a process's part of a
step sets the failure flag: the others raise ``DistributedError`` naming the
process and its error, instead of waiting forever.  Launch with
``mpiexec -n P python -m mpi4py script.py``, so that an error anywhere else
(outside ``fit``) aborts the whole job too.

The History is the same on every process: the loss over all data, validation
(``validation_data`` of process 0) computed by process 0 and broadcast, and
process 0's wall time (no training accuracy).  Another process's
``validation_data`` is compared by a digest: the same is fine, another warns
there that it is unused, one where process 0 has none raises ValueError on every
process.  Weight decay, clipping and early stopping act as in one process;
callbacks run on every process, and any one returning True stops all;
``validation_split`` is refused.
mpi4py is imported only when a communicator is given.

Dropout: process r draws its masks with the key seed + r·_MIX (mod 2²⁴) while fit
runs (process 0 keeps the seed), so the processes' masks differ and repeat for the
same seed and number of processes; every process holds the seed again after fit.
BatchNorm: each process normalises by its own batch's statistics (per-process, as
the gradient formula says); after each step one more Allreduce combines the
batches' counts and sums exactly, and the running statistics move toward the
global batch's mean and unbiased variance on every process alike.  ``sgd``, a
last batch of one example and a process's batch larger than one compiled call are
refused before training, naming the layer.  With ``sync=True`` (all BatchNorm
layers or none) the statistics are the step's global batch's: the C's sums over
the batch (``meta["batch_sums"]``, symnet.plan.batchsum) go through a callback
that all-reduces them (``_SyncSums``), so each step is one process's step on the
union of the batches; a process with no examples in a step takes part with zeros.

>>> import symnet as sn
>>> from mpi4py import MPI                               # doctest: +SKIP
>>> X, T = sn.datasets.xor()
>>> net = sn.Network(sn.Input(2), sn.Dense(8, "tanh"), sn.Dense(1, "sigmoid"), loss="bce")
>>> model = net.compile(dtype="float64", seed=0)
>>> r, P = MPI.COMM_WORLD.rank, MPI.COMM_WORLD.size    # doctest: +SKIP
>>> hist = model.fit(X[r::P], T[r::P], method="sd", epochs=3000, lr=2.0,
...                  progress=False, comm=MPI.COMM_WORLD)   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings

import numpy as np

from .. import guards
from ..lang.base import check_flag
from .epoch import users_stacklevel
from .history import History
from .stopping import EarlyStopping, check_callbacks
from .progress import SigintFlag
from .train import Optimizer, accuracy, checked_arguments, checked_validation, classes, \
    evaluation_loss, outputs_metrics
from .train import fit as train_fit

__all__ = ["MPI", "DistributedError", "fit", "mpiexec", "steps_per_epoch"]

# Slots after the gradient sums in the all-reduced buffer.
_LOSS, _COUNT, _STOP, _HALT, _FAIL = range(5)


class _StopFlag(SigintFlag):
    """Every Ctrl-C only sets the flag: the processes must leave the step together.
    (A second Ctrl-C to ``mpiexec`` aborts the whole job: its own rule.)"""

    def _handle(self, signum, frame):
        self.raised = True


class DistributedError(RuntimeError):
    """Another process of the communicator failed, so this one stopped too.

    The message names the process(es) and their error; the failing process
    raises its own exception.  Fix that process's cause (often its part of the
    data, or a different network) and run again."""


def steps_per_epoch(method: str, sizes, batch_size: int) -> int:
    """Steps of one epoch when the processes hold parts of ``sizes`` examples.

    >>> steps_per_epoch("minibatch", [5, 3], 2), steps_per_epoch("sgd", [5, 3], 1)
    (3, 4)
    """
    if method == "sd":
        return 1
    if method == "sgd":
        return -(-sum(sizes) // len(sizes))
    return max(-(-n // batch_size) for n in sizes)


def mpiexec(n: int) -> list:
    """The command that starts ``n`` processes here: ``mpiexec -n n``, the one beside
    this Python first (the ``mpich`` wheel puts it there), with Open MPI's
    ``--oversubscribe`` so that more processes than cores may run (and, as root,
    ``--allow-run-as-root``; MPICH needs neither).  Raises
    FileNotFoundError when there is none (``pip install 'symnet[mpi]'``).

    >>> mpiexec(2)[1:3]                                  # doctest: +SKIP
    ['-n', '2']
    """
    import os
    import shutil
    import subprocess
    import sys
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    exe = here if os.access(here, os.X_OK) else shutil.which("mpiexec")
    if exe is None:
        raise FileNotFoundError("no mpiexec found: pip install 'symnet[mpi]' (mpi4py and "
                                "the mpich wheel) or install an MPI")
    cmd = [exe, "-n", str(int(n))]
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    if "Open MPI" in version or "OpenRTE" in version:
        cmd.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
    return cmd


def _epoch_indices(method: str, n: int, steps: int, batch_size: int, rng, shuffle: bool):
    """This process's example indices for one epoch (int64, in order of use)."""
    if method == "sgd":
        if shuffle:
            return rng.integers(0, n, size=steps, dtype=np.int64)
        return np.arange(steps, dtype=np.int64) % n
    return (rng.permutation(n) if shuffle else np.arange(n)).astype(np.int64)


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _agree(comm, compute):
    """Run ``compute()`` (→ this process's value, what it shows the others) on
    every process; returns (its value, what every process showed).  When it
    raised anywhere, it raises on every process (a failing one its own error)."""
    try:
        (value, shown), err = compute(), None
    except Exception as exc:  # noqa: BLE001  (handed on to every process)
        value = shown = None
        err = exc
    got = comm.allgather((None if err is None else _text(err), shown))
    bad = [(r, e) for r, (e, _) in enumerate(got) if e is not None]
    if err is not None:
        raise err
    if bad:
        raise DistributedError("fit stopped before training: " + "; ".join(
            f"process {r} of {len(got)} failed: {e}" for r, e in bad))
    return value, [v for _, v in got]


def _digest(*arrays) -> str:
    """A digest of arrays' dtypes, shapes and values (validation_data compared)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _signature(model) -> dict:
    """What must match across processes: dtype, network and parameter shapes."""
    return {"dtype": model.dtype.name,
            "network": json.dumps(model.network.describe(), sort_keys=True, default=str),
            "params": [(p["name"], list(p["shape"])) for p in model.meta["params"]]}


def _compare(sigs, settings):
    """ValueError (the same on every process) when a process differs from process 0."""
    for r in range(1, len(sigs)):
        a, b = sigs[0], sigs[r]
        if a["dtype"] != b["dtype"]:
            raise ValueError(f"process {r}'s model has dtype {b['dtype']} but process 0's "
                             f"has {a['dtype']}: compile the same network with the same "
                             "dtype on every process")
        if a["params"] != b["params"]:
            pa = {n: tuple(shape) for n, shape in a["params"]}
            pb = {n: tuple(shape) for n, shape in b["params"]}
            diff = next((f"parameter {n} has shape {pa[n]} on process 0 but "
                         f"{pb[n] if n in pb else 'is missing'} on process {r}"
                         for n in pa if pa[n] != pb.get(n)),
                        f"process {r} has parameters {sorted(pb)}, process 0 {sorted(pa)}")
            raise ValueError(f"the processes' networks differ: {diff}")
        if a["network"] != b["network"]:
            raise ValueError(f"process {r}'s network differs from process 0's (same "
                             "parameter shapes, other layers or loss): build the same "
                             "network on every process")
        for key, v0 in settings[0].items():
            if settings[r][key] != v0:
                raise ValueError(f"fit argument {key} is {settings[r][key]!r} on process "
                                 f"{r} but {v0!r} on process 0: pass the same on every "
                                 "process")


class MPI:
    """The exchange over an MPI communicator (see ``symnet.runtime.train.fit``): each
    step's gradient sums, loss sum, example count and the stop, halt and failure
    flags in one float64 Allreduce; every step from Python (no whole-epoch runtime
    calls); no training accuracy; validation by process 0, broadcast."""

    whole_epochs = False
    accuracy = False
    local_stop = False     # Ctrl-C is exchanged with the next step, never seen alone

    def __init__(self, comm):
        from mpi4py import MPI as _mpi
        self.comm, self.rank = comm, comm.Get_rank()
        self._mpi = _mpi

    def prepare(self, model, X, T, method, epochs, batch_size, lr, seed, shuffle,
                validation_data, validation_split, optimizer, early_stopping, restore_best,
                callbacks, reset_optimizer=False):
        """Every process checks its arguments and data; they compare what they found
        (ValueError or DistributedError on every process); process 0's θ goes to all."""
        comm, rank = self.comm, self.rank
        name, momentum, betas, eps, weight_decay, clip_norm = optimizer

        def check():
            nonlocal seed
            for key, value in (("shuffle", shuffle), ("restore_best", restore_best),
                               ("reset_optimizer", reset_optimizer)):
                check_flag(value, key)    # here, so that every process is told
            if validation_split is not None:
                raise ValueError("validation_split is not available with comm: give "
                                 "validation_data on process 0")
            Xc, Tc, epochs_, batch_size_, schedule = checked_arguments(
                model, X, T, method, epochs, batch_size, lr)
            if model.stateful:
                _check_stateful(model, method, batch_size_, Xc.shape[0], _synced(model))
            val = val_digest = None
            if validation_data is not None:     # checked everywhere, compared below
                Xv, Tv = checked_validation(model, validation_data)
                val_digest = _digest(Xv, Tv)
                if rank == 0:
                    val = (validation_data[0], validation_data[1], Tv)  # as given; T as rows
            if seed is not None:
                seed = guards.seed(seed, "fit")
            opt = Optimizer(model, *optimizer)
            stopper = None if early_stopping is None else EarlyStopping(early_stopping,
                                                                        restore_best)
            rng = np.random.default_rng(None if seed is None else [seed, rank])
            settings = {"method": method, "epochs": epochs_, "batch_size": batch_size_,
                        "lr": schedule.to_dict(), "shuffle": bool(shuffle),
                        "optimizer": name, "momentum": momentum,
                        "betas": None if betas is None else list(betas), "eps": eps,
                        "weight_decay": weight_decay, "clip_norm": clip_norm,
                        "early_stopping": early_stopping, "restore_best": bool(restore_best),
                        "seed": seed}
            shown = {"sig": _signature(model), "settings": settings, "n": Xc.shape[0],
                     "val": val_digest}
            return (Xc, Tc, epochs_, batch_size_, schedule, val, opt, stopper,
                    check_callbacks(callbacks), rng), shown

        mine, infos = _agree(comm, check)
        _compare([i["sig"] for i in infos], [i["settings"] for i in infos])
        vals = [i["val"] for i in infos]
        given = [r for r, v in enumerate(vals) if v is not None]
        if given and vals[0] is None:
            raise ValueError(
                f"validation_data is given on process{'es' if len(given) > 1 else ''} "
                f"{', '.join(map(str, given))} but not on process 0, which computes the "
                "validation for all: give it on process 0 (or the same on every process)")
        if vals[rank] not in (None, vals[0]):
            warnings.warn(f"fit: process {rank}'s validation_data differs from process "
                          "0's and is not used: process 0 computes the validation for all "
                          "on its validation_data; give the whole validation set there",
                          RuntimeWarning, stacklevel=users_stacklevel())
        self.sizes = [i["n"] for i in infos]
        self.val_on_root = vals[0] is not None
        self.sync = None
        if _synced(model):
            _check_global_batches(model, method, mine[3], self.sizes)
            self.sync = _SyncSums(model, comm, self._mpi)
            model.batch_global = True       # a process's batch of one is fine: see above
        if reset_optimizer:              # the state a later fit without comm would continue
            model.reset_optimizer()
        with model.lock:
            comm.Bcast(model.theta, root=0)
            if seed is not None:
                model.dropout_seed(seed)     # the same seed: the same masks, run after run
            self._mix(model, self.rank)      # and each process its own
        self.n = model.theta.size
        self.buf = np.zeros(self.n + 5, np.float64)
        self._reduce_args = (self._mpi.IN_PLACE, [self.buf, self._mpi.DOUBLE], self._mpi.SUM)
        return mine

    @staticmethod
    def batch_rows(method, batch_size, n):
        return 1 if method == "sgd" else batch_size

    def steps(self, method, n, rows):
        return steps_per_epoch(method, self.sizes, rows)

    @staticmethod
    def indices(method, n, steps, rows, rng, shuffle):
        return None if method == "sd" else _epoch_indices(method, n, steps, rows, rng,
                                                          shuffle)

    @staticmethod
    def flag():
        return _StopFlag()

    mixed = 0   # the rank mixed into Dropout's seed while fit runs

    def _mix(self, model, rank: int):
        """Dropout's seed of process ``rank``: seed + rank·MIX (mod 2²⁴), so that the
        processes draw different masks for the same example positions; ``_mix(model,
        -rank)`` restores the seed every process shares."""
        from ..lang.dropout import SEED, SEED_RANGE
        for v in model.dropout_states:
            v[SEED] = (int(v[SEED]) + rank * _MIX) % SEED_RANGE
        self.mixed += rank

    def unmix(self, model):
        model.batch_global = False
        if self.mixed:
            with model.lock:
                self._mix(model, -self.mixed)

    def after_step(self, model, count):
        """After each update: Dropout's masks move on; BatchNorm's running statistics
        take the statistics of the global batch N(t) (one Allreduce of each process's
        example count, shifted sums and centred sums of squares per channel), so that
        they stay the same on every process."""
        model.advance_masks(1)
        if self.sync is not None:
            self.sync.running_statistics(model)
        elif model.batchnorms:
            _running_statistics(model, self.comm, self._mpi, self.b)

    def step(self, run, rows, flag) -> tuple:
        """All-reduce this step: (loss over N(t), |N(t)|, stop); model.grad ← ĝ.
        Raises when a process failed."""
        buf, n, err = self.buf, self.n, None
        self.b = 0
        sync = self.sync
        if sync is not None:     # the step's examples over all processes, then the hook
            sync.begin(run.X.shape[0] if rows is None else rows.size)
            run.model.runtime.reduce_hook(sync.reduce, sync.count)
        try:
            try:
                b, loss = run.local(rows)
            finally:
                if sync is not None:
                    run.model.runtime.reduce_hook(None)
            if sync is not None and (sync.error or run.model.runtime.reduce_error):
                raise sync.error or run.model.runtime.reduce_error
            self.b = b
            if b:
                np.multiply(run.model.grad, b, out=buf[:n])
                buf[n + _LOSS] = loss * b
            else:
                buf[:n + 1] = 0.0
            buf[n + _COUNT] = b
            buf[n + _HALT] = 0.0
            buf[n + _FAIL] = 0.0
        except KeyboardInterrupt:      # (not from our handler): every process drops the step
            buf[:] = 0.0
            buf[n + _HALT] = 1.0
        except Exception as exc:  # noqa: BLE001  (reported to every process, then raised)
            buf[:] = 0.0
            buf[n + _FAIL], err = 1.0, exc
        buf[n + _STOP] = float(flag.raised)
        if sync is not None:     # the sums this process's call did not reach (no examples,
            sync.finish()        # or an error): zeros, so that every process takes part
        self.comm.Allreduce(*self._reduce_args)
        if buf[n + _FAIL]:
            self._failed(err, run.t)
        count = buf[n + _COUNT]
        if buf[n + _HALT]:
            return math.nan, count, "halt"
        # ĝ = sums / |N(t)|, times 1/|N(t)| as the kernels take their batch means
        np.multiply(buf[:n], 1.0 / count, out=run.model.grad, casting="same_kind")
        return buf[n + _LOSS] / count, count, "stop" if buf[n + _STOP] else None

    def _failed(self, err, step: int):
        texts = self.comm.allgather(None if err is None else _text(err))
        if err is not None:
            raise err
        bad = [f"process {r} of {len(texts)} failed in step {step + 1} of this fit: {e}"
               for r, e in enumerate(texts) if e is not None]
        raise DistributedError("training stopped because " + "; ".join(bad))

    def validate(self, run):
        """Validation computed by process 0 and broadcast: (loss, accuracy, each
        output's metrics), as one process's ``Local.validate``."""
        if not self.val_on_root:
            return None, None, None
        result = None
        if self.rank == 0:
            try:
                Xv, Tv, rows = run.val               # the public calls take X as given
                m = run.model
                acc = outputs = None
                if len(m.network.outputs) == 1:      # as one process's fit
                    O = m.forward(Xv).reshape(rows.shape[0], -1)
                    acc = accuracy(m.network.loss_name, O, rows, classes(m))
                else:
                    outputs = outputs_metrics(m, Xv, rows)
                result = (evaluation_loss(m, Xv, Tv), acc, outputs)
            except Exception as exc:  # noqa: BLE001  (sent to the others, then raised)
                result = _text(exc)
        result = self.comm.bcast(result, root=0)
        if isinstance(result, str):
            raise DistributedError(f"validation on process 0 failed: {result}")
        return result

    def callbacks(self, callbacks, hist) -> bool:
        """Whether any process's callback asked to stop: every process gets the same
        answer.  A callback that raises on one process raises there, and the others
        raise DistributedError (they would otherwise wait in the next step for ever)."""
        asked, err = False, None
        try:
            asked = any([bool(cb(hist)) for cb in callbacks])
        except Exception as exc:  # noqa: BLE001  (reported to every process, then raised)
            err = exc
        got = self.comm.allgather((asked, None if err is None else _text(err)))
        if err is not None:
            raise err
        bad = [f"process {r} of {len(got)} failed in a callback after epoch "
               f"{len(hist.loss)} of this fit: {e}" for r, (_, e) in enumerate(got) if e]
        if bad:
            raise DistributedError("training stopped because " + "; ".join(bad))
        return any(a for a, _ in got)

    def finish(self, model, hist):
        self.unmix(model)
        _same_end(model, hist, self.comm)


def fit(model, X, T, comm, method="minibatch", epochs=10, batch_size=32, lr=0.1,
        shuffle=True, seed=None, validation_data=None, progress=None, optimizer="sgd",
        momentum=None, betas=None, eps=None, weight_decay=0.0, clip_norm=None,
        early_stopping=None, restore_best=True, validation_split=None,
        callbacks=None, reset_optimizer=False) -> History:
    """Train ``model`` in place on this process's part (X, T) of the data set,
    together with the other processes of ``comm``; returns the History (the same
    on every process).  See the module docstring and ``Model.fit``."""
    if not all(hasattr(comm, a) for a in ("Allreduce", "allgather", "Bcast", "Get_rank")):
        raise ValueError(f"comm must be an mpi4py communicator such as MPI.COMM_WORLD, "
                         f"got {type(comm).__name__}")
    if comm.Is_inter():
        raise ValueError("comm is an intercommunicator; give an intracommunicator such as "
                         "MPI.COMM_WORLD")
    exchange = MPI(comm)
    try:
        return train_fit(model, X, T, method=method, epochs=epochs, batch_size=batch_size,
                         lr=lr, shuffle=shuffle, seed=seed, validation_data=validation_data,
                         progress=progress, optimizer=optimizer, momentum=momentum,
                         betas=betas, eps=eps, weight_decay=weight_decay,
                         clip_norm=clip_norm, early_stopping=early_stopping,
                         restore_best=restore_best, validation_split=validation_split,
                         callbacks=callbacks, exchange=exchange,
                         reset_optimizer=reset_optimizer)
    finally:
        exchange.unmix(model)     # the shared Dropout seed again, also after an error


# Added to Dropout's seed per process rank (odd, about 0.618·2²⁴: ranks spread apart).
_MIX = 10368889


def _synced(model) -> bool:
    """Whether the model's BatchNorm layers synchronise their statistics (sync=True);
    ValueError when only some do, or a sum over the batch cannot go through the hook."""
    bns = model.batchnorms
    synced = [bn for bn in bns if bn["sync"]]
    if not synced:
        return False
    where = [f"layer {bn['name']!r} ({type(bn['layer']).__name__})" for bn in bns]
    if len(synced) != len(bns):
        plain = [w for w, bn in zip(where, bns) if not bn["sync"]]
        raise ValueError(f"{where[bns.index(synced[0])]} has sync=True but "
                         f"{', '.join(plain)} not: in fit with comm the BatchNorm layers of "
                         "a network synchronise their statistics all or none; give them the "
                         "same sync")
    if model.meta.get("unsynced"):
        raise ValueError(f"{where[0]}: sync=True, but the network sums over the batch in a "
                         "form the synchronised sums cannot take: "
                         + "; ".join(model.meta["unsynced"]))
    if not hasattr(model.runtime, "reduce_hook") or "batch_sums" not in model.meta:
        raise ValueError(f"{where[0]}: sync=True in fit with comm needs the C backend "
                         f"(this model's is {getattr(model.runtime, 'backend', '?')!r})")
    return True


def _check_stateful(model, method, batch_size, n, sync=False):
    """BatchNorm's statistics are those of one compiled call's batch: a process's
    batch (all of its part for sd) must fit in one call, and hold 2 values or more
    per channel (sgd's one example does not).  With ``sync`` the statistics are the
    step's over all processes: a process's batch of one is fine (the steps' batches
    over all processes are checked by ``_check_global_batches``)."""
    for bn in model.batchnorms:
        where = f"layer {bn['name']!r} ({type(bn['layer']).__name__})"
        if sync:
            pass
        elif method == "sgd" and bn["S"] < 2:
            raise ValueError(f"{where}: method 'sgd' gives each process a batch of one "
                             "example, which has no variance in training; use "
                             "'minibatch' with batch_size ≥ 2")
        last = n if method == "sd" else n % batch_size if method == "minibatch" else 0
        if last == 1 and bn["S"] < 2 and not sync:
            raise ValueError(f"{where}: this process's {n} examples leave a last batch of "
                             f"one example{'' if method == 'sd' else f' (batch_size {batch_size})'}"
                             ", which has no variance in training; change batch_size or "
                             "the size of this process's part")
        if method == "sd" and n > model.rows_per_call:
            raise ValueError(f"{where}: method 'sd' makes this process's {n} examples one "
                             f"batch, more than one compiled call takes "
                             f"({model.rows_per_call} rows), so the batch statistics would "
                             "be those of its parts; use 'minibatch' with batch_size ≤ "
                             f"{model.rows_per_call}")
        if method == "minibatch" and min(batch_size, n) > model.rows_per_call:
            raise ValueError(f"{where}: batch_size {batch_size} is more than one compiled "
                             f"call takes ({model.rows_per_call} rows), so the batch "
                             "statistics would be those of its parts; use batch_size ≤ "
                             f"{model.rows_per_call}")


def _check_global_batches(model, method, batch_size, sizes):
    """With sync=True: every step of an epoch must hold 2 values or more per channel over
    all processes (the same ValueError on every process, before training)."""
    P = len(sizes)
    if method == "sd":
        counts = [sum(sizes)]
    elif method == "sgd":
        counts = [P]
    else:
        counts = [sum(min(max(n - s * batch_size, 0), batch_size) for n in sizes)
                  for s in range(steps_per_epoch(method, sizes, batch_size))]
    for bn in model.batchnorms:
        for s, N in enumerate(counts):
            if N * bn["S"] < 2:
                raise ValueError(
                    f"layer {bn['name']!r} ({type(bn['layer']).__name__}): sync=True, and "
                    f"step {s + 1} of each epoch has {N} example over all {P} process"
                    f"{'es' if P > 1 else ''} (parts of {sizes} examples"
                    f"{'' if method != 'minibatch' else f', batch_size {batch_size}'}), "
                    "one value per channel, which has no variance in training; change "
                    "batch_size or the parts")


class _SyncSums:
    """BatchNorm(sync=True) in fit with comm: the C's sums over the batch
    (``meta["batch_sums"]``: two in the forward pass and two in the backward pass per
    BatchNorm) each summed over the processes by one in-place Allreduce, called back from
    the C.  Forward sums (kind 0) are added as they are; backward sums (kind 1) are
    derivatives of this process's loss, a mean over its b examples, so each process gives
    b·values and takes the sum back divided by its b: every process then holds the
    derivative of the global mean loss times |N(t)|/b, the scale its gradients are in, and
    the step's Allreduce of b·gradients gives the gradient of one process running the
    union of the batches.  ``begin`` (one Allreduce of the step's example counts) gives
    BatchNorm's 1/|N(t)|; ``finish`` takes part in the sums a process's call did not
    reach (no examples in this step, or an error), with zeros, so no process waits."""

    def __init__(self, model, comm, mpi):
        self.entries = model.meta["batch_sums"]
        self.comm, self.mpi = comm, mpi
        self.first = {e["target"]: k for k, e in enumerate(self.entries) if e["kind"] == 0}
        self.results = [None] * len(self.entries)
        self.b, self.count, self.done, self.error = 0, 0.0, 0, None

    def begin(self, b: int):
        self.b, self.done, self.error = int(b), 0, None
        buf = np.array([float(b)])
        self.comm.Allreduce(self.mpi.IN_PLACE, [buf, self.mpi.DOUBLE], self.mpi.SUM)
        self.count = float(buf[0])

    def reduce(self, values, kind: int):
        """The hook: values ← their sum over the processes (see the class)."""
        k = self.done
        self.done += 1
        size = self.entries[k]["size"] if k < len(self.entries) else len(values)
        try:
            buf = np.array(values, dtype=np.float64)
            if kind == 1:
                buf *= self.b
        except BaseException as exc:  # noqa: BLE001  (raised after the call, on this process)
            self.error = self.error or exc
            buf = np.zeros(size)
        self.comm.Allreduce(self.mpi.IN_PLACE, [buf, self.mpi.DOUBLE], self.mpi.SUM)
        if k < len(self.results):
            self.results[k] = buf.copy()
        if kind == 1 and self.b:
            buf /= self.b
        try:
            values[...] = buf
        except BaseException as exc:  # noqa: BLE001
            self.error = self.error or exc

    def finish(self):
        while self.done < len(self.entries):
            e = self.entries[self.done]
            self.reduce(np.zeros(e["size"]), e["kind"])

    def running_statistics(self, model):
        """mean ← (1 − m)·mean + m·μ, var ← (1 − m)·var + m·σ²·n/(n − 1) with μ, σ² of the
        step's batch over all processes (n = |N(t)|·S values per channel): the forward
        sums Σ x and Σ (x − μ)², as every process took them back from the Allreduce."""
        for bn in model.batchnorms:
            s1 = self.results[self.first[f"z_{bn['name']}_c"]]
            s2 = self.results[self.first[f"z_{bn['name']}"]]
            n, m = self.count * bn["S"], bn["momentum"]
            bn["mean"][...] = (1 - m) * bn["mean"] + m * (s1 / n)
            bn["var"][...] = (1 - m) * bn["var"] + m * (s2 / max(n - 1, 1))


def _running_statistics(model, comm, mpi, b: int):
    """mean ← (1 − m)·mean + m·μ, var ← (1 − m)·var + m·σ²·N/(N − 1) with μ, σ² of
    the union of the processes' batches (N values per channel in all); process r
    gives n_r, Σ(x − mean) and Σ(x − μ_r)² + n_r·(μ_r − mean)², from which
    Σ_r gives the global sums about the current running mean."""
    offsets = model.meta.get("work_offsets", {})
    work = model.runtime.work
    bns = model.batchnorms
    parts = []
    for bn in bns:
        C, S = bn["C"], bn["S"]
        n = b * S
        part = np.zeros(1 + 2 * C)
        if n:
            at = b * offsets[f"z_{bn['name']}_c"] + np.arange(C) * S
            sq = b * offsets[f"z_{bn['name']}"] + np.arange(C) * S
            d = work[at].astype(np.float64) / n - bn["mean"]     # μ_r − mean
            part[0] = n
            part[1:1 + C] = n * d
            part[1 + C:] = work[sq].astype(np.float64) + n * d * d
        parts.append(part)
    buf = np.concatenate(parts)
    comm.Allreduce(mpi.IN_PLACE, [buf, mpi.DOUBLE], mpi.SUM)
    at = 0
    for bn in bns:
        C, m = bn["C"], bn["momentum"]
        N, sd, sq = buf[at], buf[at + 1:at + 1 + C], buf[at + 1 + C:at + 1 + 2 * C]
        at += 1 + 2 * C
        d = sd / N
        mu = bn["mean"] + d
        var = (sq - N * d * d) / max(N - 1, 1)                   # unbiased, as PyTorch's
        bn["mean"][...] = (1 - m) * bn["mean"] + m * mu
        bn["var"][...] = (1 - m) * bn["var"] + m * var


def _same_end(model, hist, comm):
    """Every process ends with process 0's parameters and wall time.  They are equal
    already (same reduced gradients, same update); a difference, e.g. from
    processes whose compilers round differently, is repaired with a warning."""
    digest = hashlib.sha256(model.theta.tobytes()).hexdigest()
    got = comm.allgather((digest, hist.wall_time))
    hist.wall_time = got[0][1]
    if any(d != got[0][0] for d, _ in got):
        with model.lock:
            comm.Bcast(model.theta, root=0)
        warnings.warn("the processes' parameters differed after fit (compiled kernels "
                      "that round differently?); all now hold process 0's",
                      RuntimeWarning, stacklevel=users_stacklevel())
