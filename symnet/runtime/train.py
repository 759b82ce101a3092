"""Training: batch steepest descent, online SGD and minibatch SGD.

The three update rules of the notes, with ĝ the gradient of the mean loss:

- ``sd``:        W ← W − η_t (1/N) Σ_n ∂L_n/∂W over the whole data set, one step per epoch;
- ``sgd``:       W ← W − η_t ∂L_{n(t)}/∂W, n(t) drawn uniformly with replacement,
                 N steps per epoch;
- ``minibatch``: W ← W − η_t (1/|N(t)|) Σ_{n∈N(t)} ∂L_n/∂W, each epoch a permutation
                 of the data cut into batches; a short last batch takes its own mean.

η_t is a float or a ``symnet.runtime.schedules`` object, t counting steps from 0 in each
``fit`` call.  ``optimizer`` replaces the plain update by momentum
(v ← μv + ĝ, W ← W − η v) or Adam; both run inside the compiled step.  Their state
is the model's (``symnet.runtime.optimizer``): a second ``fit`` continues it, unless
``reset_optimizer=True`` (or ``model.reset_optimizer()`` before) starts afresh.

For sgd and minibatch a whole epoch is one compiled call (``<prefix>train``): the
seeded example indices go in, the C gathers each batch and steps, no Python runs
per step.  A long epoch is cut into calls of about ``CALL_FLOPS`` floating-point
operations (~0.1 s) so that Ctrl-C is answered quickly: Ctrl-C ends ``fit`` after
the call in flight, keeping every completed step, and the History says
``stopped="interrupted"``.

>>> import symnet as sn
>>> from symnet import datasets
>>> X, T = datasets.xor()
>>> net = sn.Network(sn.Input(2), sn.Dense(8, "tanh"), sn.Dense(1, "sigmoid"), loss="bce")
>>> model = net.compile(dtype="float64", seed=0)
>>> hist = model.fit(X, T, method="sd", epochs=3000, lr=2.0, progress=False)
>>> hist.stopped, bool(hist.final_loss < 0.05)
('completed', True)
"""

from __future__ import annotations

import os
import time

import numpy as np

from .. import guards
from ..lang.base import check_flag
from .epoch import Run, accuracy, classes, outputs_metrics, user_layout
from .history import History
from .optimizer import Optimizer  # noqa: F401  (its earlier place; distributed imports it)
from .optimizer import for_model as optimizer_for
from .progress import Progress as _Progress
from .progress import SigintFlag
from .schedules import as_schedule

__all__ = ["CALL_FLOPS", "METHODS", "Optimizer", "accuracy", "fit", "sample_indices"]

METHODS = ("sd", "sgd", "minibatch")
# Work per compiled call: how soon Ctrl-C is answered (~0.05 s at 200 GFLOP/s, ~1 s at
# 10).  Each call also costs a copy of θ (the snapshot that an interruption restores):
# at 2e8 the medium and large networks made one call, and one copy of θ, per step,
# which made whole-epoch training slower per step than model.step.
CALL_FLOPS = 1e10


# ---------------------------------------------------------------- checks

def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _finite(A: np.ndarray, what: str):
    guards.finite(A, what)


def sample_indices(method: str, n: int, rng: np.random.Generator,
                   shuffle: bool = True) -> np.ndarray:
    """The example indices of one epoch, int64, in the order they are used.

    ``sgd``: n draws uniformly with replacement (in order 0..n-1 when not
    ``shuffle``); ``minibatch``: a permutation (cut into batches by the
    caller); ``sd``: all examples in order.

    >>> sample_indices("minibatch", 5, np.random.default_rng(0)).tolist()
    [2, 4, 3, 0, 1]
    """
    if method == "sd" or not shuffle:
        return np.arange(n, dtype=np.int64)
    if method == "sgd":
        return rng.integers(0, n, size=n, dtype=np.int64)
    return rng.permutation(n).astype(np.int64)


# ---------------------------------------------------------------- the loop

def evaluation_loss(model, X, T) -> float:
    """The loss in evaluation mode (as ``evaluate``): Dropout the identity, BatchNorm's
    running statistics; for validation."""
    model.evaluating = True
    try:
        return model.loss(X, T)
    finally:
        model.evaluating = False


class Local:
    """The exchange of one process: its gradients, loss and example counts are
    the step's own, Ctrl-C is seen between compiled calls, and a whole sgd or
    minibatch epoch runs inside the runtime (``train_epoch``).  ``symnet.runtime.
    distributed.MPI`` is the other exchange: sums over the processes of a
    communicator."""

    rank = 0
    whole_epochs = True    # sgd/minibatch epochs as runtime calls, not step by step
    accuracy = True        # the History has the training accuracy
    local_stop = True      # Ctrl-C ends fit after the epoch in flight (not exchanged)

    def prepare(self, model, X, T, method, epochs, batch_size, lr, seed, shuffle,
                validation_data, validation_split, optimizer, early_stopping, restore_best,
                callbacks, reset_optimizer=False):
        """fit's arguments checked: (X, T, epochs, batch_size, schedule, val, opt,
        stopper, callbacks, rng); ``optimizer`` the Optimizer's arguments (``shuffle``
        is checked here, before anything changes)."""
        check_flag(shuffle, "shuffle")
        return _prepare(model, X, T, method, epochs, batch_size, lr, seed, validation_data,
                        validation_split, optimizer, early_stopping, restore_best, callbacks,
                        reset_optimizer)

    @staticmethod
    def batch_rows(method, batch_size, n):
        return 1 if method == "sgd" else min(batch_size, n)

    @staticmethod
    def steps(method, n, rows):
        return 1 if method == "sd" else n if method == "sgd" else -(-n // rows)

    @staticmethod
    def indices(method, n, steps, rows, rng, shuffle):
        return None if method == "sd" else sample_indices(method, n, rng, shuffle)

    @staticmethod
    def flag():
        return SigintFlag()

    @staticmethod
    def step(run, rows, flag) -> tuple:
        """(loss, examples, stop) of a step: this process's own; gradients in model.grad."""
        count, loss = run.local(rows)
        return loss, count, None

    @staticmethod
    def validate(run):
        """(validation loss, accuracy, each output's metrics) of the parameters now: the
        accuracy for one output, the metrics (``outputs_metrics``) for several, else
        None; (None, None, None) without validation data."""
        if run.val is None:
            return None, None, None
        m, (Xv, Tv) = run.model, run.val
        if len(m.network.outputs) > 1:
            return evaluation_loss(m, Xv, Tv), None, outputs_metrics(m, Xv, Tv)
        O = m.forward(Xv)
        return evaluation_loss(m, Xv, Tv), accuracy(m.network.loss_name, O, Tv, classes(m)), \
            None

    @staticmethod
    def callbacks(callbacks, hist) -> bool:
        """Whether a callback asked to stop (every callback runs, every epoch)."""
        return any([bool(cb(hist)) for cb in callbacks])

    @staticmethod
    def after_step(model, count):
        """After each update of ``_steps``: Dropout's masks, BatchNorm's statistics."""
        model.after_steps(model.runtime.work, int(count), 1)

    @staticmethod
    def finish(model, hist):
        pass


def checked_arguments(model, X, T, method, epochs, batch_size, lr):
    """fit's arguments checked (ValueError saying which and why): X and T as the
    model's rows, epochs and batch_size as ints, lr as a schedule."""
    if method not in METHODS:
        optimizer = isinstance(method, str) and method.lower() in ("adam", "momentum",
                                                                   "adamw", "rmsprop")
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, "
                         f"got {method!r}" + (
                             "; the method says which examples make each step, the "
                             "optimizer how a step moves: fit(method='minibatch', "
                             "optimizer='adam' or 'momentum')" if optimizer else ""))
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    X = model.as_inputs(X)
    T = model.as_targets(T, X.shape[0])
    _finite(X, "X")
    _finite(T, "T")
    return X, T, epochs, batch_size, as_schedule(lr)


def checked_validation(model, validation_data):
    """(X_val as the model's rows, T_val as rows) from fit's ``validation_data``."""
    if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
        raise ValueError("validation_data must be a pair (X_val, T_val)")
    Xv = model.as_inputs(validation_data[0], "validation X")
    Tv = model.as_targets(validation_data[1], Xv.shape[0], "validation T")
    _finite(Xv, "validation X")
    _finite(Tv, "validation T")
    return Xv, Tv


def _prepare(model, X, T, method, epochs, batch_size, lr, seed, validation_data,
             validation_split, optimizer, early_stopping, restore_best, callbacks,
             reset_optimizer=False):
    """One process's fit arguments checked (see ``Local.prepare``)."""
    from .stopping import EarlyStopping, check_callbacks, split
    X, T, epochs, batch_size, schedule = checked_arguments(model, X, T, method, epochs,
                                                           batch_size, lr)
    restore_best = check_flag(restore_best, "restore_best")
    reset_optimizer = check_flag(reset_optimizer, "reset_optimizer")
    stopper = None if early_stopping is None else EarlyStopping(early_stopping, restore_best)
    callbacks = check_callbacks(callbacks)
    val = None
    if validation_split is not None:
        if validation_data is not None:
            raise ValueError("give validation_data or validation_split, not both")
        X, T, Xv, Tv = split(X, T, validation_split)
        val = user_layout(model, Xv, Tv)
    if validation_data is not None:
        val = user_layout(model, *checked_validation(model, validation_data))
    if model.stateful:       # BatchNorm's batches, before anything changes
        model.check_fit_batches(method, X.shape[0], batch_size)
    if seed is not None:
        seed = guards.seed(seed, "fit")
    opt = optimizer_for(model, *optimizer, fresh=reset_optimizer)
    if seed is not None:
        model.dropout_seed(seed)     # the same seed: the same Dropout masks
    return X, T, epochs, batch_size, schedule, val, opt, stopper, callbacks, _rng(seed)


_FRESH = [None, None]   # (process id, generator) for fit calls without a seed


def _rng(seed) -> np.random.Generator:
    """The shuffling of a fit call: from ``seed``, or without one from a generator this
    process seeded once from the system's entropy (``default_rng()`` gathers entropy at
    each call: ~30 µs of a fit call's fixed cost); a forked process seeds its own."""
    if seed is not None:
        return np.random.default_rng(seed)
    pid = os.getpid()
    if _FRESH[0] != pid:
        _FRESH[:] = [pid, np.random.default_rng()]
    return _FRESH[1]


def fit(model, X, T, method="minibatch", epochs=10, batch_size=32, lr=0.1, shuffle=True,
        seed=None, validation_data=None, progress=None, optimizer="sgd", momentum=None,
        betas=None, eps=None, weight_decay=0.0, clip_norm=None, early_stopping=None,
        restore_best=True, validation_split=None, callbacks=None, reset_optimizer=False,
        exchange=None) -> History:
    """Train ``model`` in place on (X, T); returns a ``History``.  See ``Model.fit``.

    ``exchange``: how a step's gradients, loss and example counts, and the stop
    flags, are combined: ``Local()`` (the default, one process) or
    ``symnet.runtime.distributed.MPI(comm)``."""
    exchange = Local() if exchange is None else exchange
    X, T, epochs, batch_size, schedule, val, opt, stopper, callbacks, rng = exchange.prepare(
        model, X, T, method, epochs, batch_size, lr, seed, shuffle, validation_data,
        validation_split, (optimizer, momentum, betas, eps, weight_decay, clip_norm),
        early_stopping, restore_best, callbacks, reset_optimizer)
    hist = History(method=method)
    run = Run(model, X, T, method, batch_size, schedule, opt, val, hist, exchange,
              CALL_FLOPS)
    bar = _Progress(progress if exchange.rank == 0 else False, epochs, method)
    start = time.perf_counter()
    try:
        with exchange.flag() as flag:
            for _ in range(epochs):
                idx = exchange.indices(method, X.shape[0], run.n_steps, run.B, rng, shuffle)
                ok = run.epoch(idx, flag)
                run.record()
                bar.epoch(hist)
                if not ok:
                    break
                if flag.raised and exchange.local_stop:
                    hist.stopped = "interrupted"
                    break
                asked = exchange.callbacks(callbacks, hist)   # any process's callback
                if stopper is not None and stopper.after_epoch(model, hist, run.measured()):
                    hist.stopped = "early_stopping"           # the same History everywhere
                    break
                if asked:
                    hist.stopped = "callback"
                    break
    except KeyboardInterrupt:
        # Raised outside the graceful path (a second Ctrl-C, or not the main thread):
        # the compiled call in flight is dropped with its steps; all before it are kept.
        run.interrupted()
        run.record()
    finally:
        bar.close()
        if stopper is not None:
            hist.best_epoch = stopper.best_epoch or None
            if hist.stopped != "interrupted":
                stopper.restore(model)
        model.fit_spare = run.spare
        hist.wall_time = time.perf_counter() - start
    exchange.finish(model, hist)
    return hist
