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

import math
import time
import warnings

import numpy as np

from .. import guards
from .history import History
from .optimizer import Optimizer  # noqa: F401  (its earlier place; distributed imports it)
from .optimizer import for_model as optimizer_for
from .progress import Progress as _Progress
from .progress import SigintFlag
from .schedules import as_schedule

__all__ = ["CALL_FLOPS", "METHODS", "Optimizer", "fit", "sample_indices"]

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

def has_accuracy(loss_name: str) -> bool:
    return loss_name in ("softmax_cross_entropy", "bce")


def accuracy(loss_name: str, O: np.ndarray, T: np.ndarray):
    """Share of correct predictions where it applies: argmax for softmax cross-entropy
    (against the argmax of T's rows, or against class labels), O > 0.5 against T > 0.5
    per output for bce; None for other losses."""
    if loss_name == "softmax_cross_entropy":
        y = T[:, 0] if T.shape[1] == 1 and O.shape[1] > 1 else T.argmax(axis=1)
        return float((O.argmax(axis=1) == y).mean())
    if loss_name == "bce":
        return float(((O > 0.5) == (T > 0.5)).mean())
    return None


def evaluation_loss(model, X, T) -> float:
    """The loss in evaluation mode (as ``evaluate``): Dropout the identity, BatchNorm's
    running statistics; for validation."""
    model._evaluating = True
    try:
        return model.loss(X, T)
    finally:
        model._evaluating = False


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
        is checked by the exchanges that compare settings)."""
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
        """(validation loss, accuracy) of the parameters now; (None, None) without
        validation data."""
        if run.val is None:
            return None, None
        m, (Xv, Tv) = run.model, run.val
        O = m.forward(Xv)
        val_acc = accuracy(m.network.loss_name, O, Tv) if len(m.network.outputs) == 1 \
            else None
        return evaluation_loss(m, Xv, Tv), val_acc

    @staticmethod
    def any(asked: bool) -> bool:
        return asked

    @staticmethod
    def after_step(model, count):
        """After each update of ``_steps``: Dropout's masks, BatchNorm's statistics."""
        model.after_steps(model.runtime.work, int(count), 1)

    @staticmethod
    def finish(model, hist):
        pass


class _Run:
    """The state of one fit call and its one epoch runner: data, buffers, optimizer,
    and the bookkeeping that keeps the parameters and the History in step.  An
    epoch is whole-epoch runtime calls (``_calls``), or steps each of which the
    exchange completes (``_steps``: sd, and every step over MPI)."""

    def __init__(self, model, X, T, method, batch_size, schedule, opt, val, hist, exchange):
        self.model, self.X, self.T = model, X, T
        self.method, self.schedule, self.opt, self.val, self.hist = \
            method, schedule, opt, val, hist
        self.exchange = exchange
        n = X.shape[0]
        self.B = exchange.batch_rows(method, batch_size, n)
        self.n_steps = exchange.steps(method, n, self.B)  # of a step-by-step epoch
        self.t = 0                                   # steps taken in this fit
        # two θ-sized buffers kept by the model between fit calls (allocating and
        # first touching them cost ~1 ms per call for the large network); neither
        # is read before it is written
        spare, model.fit_spare = model.fit_spare, None
        if spare is None or spare[0].shape != model.theta.shape:
            spare = (np.empty_like(model.theta), np.empty_like(model.theta))
        self.spare = spare
        self.prev = spare[0]                         # θ before the last update
        self.have_prev = np.zeros(1, np.intc)
        self.parts = []          # this epoch's kept steps: (losses, batch sizes, lrs,
        #                          correct examples or NaN) per call
        self.snap = spare[1]                         # θ before the call in flight
        self.parts_before = None                     # len(parts) before it; None: none
        if method != "sd":
            per_step = 6.0 * max(model.theta.size, 1) * self.B
            self.chunk = max(1, int(CALL_FLOPS // per_step))
            if not exchange.whole_epochs:            # the batch of a step, gathered
                rows = min(self.B, n)
                self.Ib = np.zeros((rows, X.shape[1]), model.dtype)
                self.Tb = np.zeros((rows, T.shape[1]), model.dtype)
            if model.stateful:   # Dropout, BatchNorm: their state is set between steps
                self.chunk = 1

    # -- one epoch ---------------------------------------------------------
    def epoch(self, idx, flag) -> bool:
        """One epoch on the example indices ``idx`` (None: all, for sd); False when
        training stops (diverged or interrupted)."""
        if self.method != "sd" and self.exchange.whole_epochs:
            return self._calls(idx, flag)
        return self._steps(idx, flag)

    def local(self, rows) -> tuple:
        """(examples, loss mean) of this process's batch ``rows`` (None: all of its
        examples); gradients into model.grad."""
        m = self.model
        if rows is None:
            with m.lock:
                return self.X.shape[0], m.loss_grad_rows(self.X, self.T)
        b = rows.size
        if b == 0:
            return 0, 0.0
        Ib, Tb = self.Ib[:b], self.Tb[:b]
        self.X.take(rows, axis=0, out=Ib)
        self.T.take(rows, axis=0, out=Tb)
        with m.lock:
            return b, m.loss_grad_rows(Ib, Tb)

    def _steps(self, idx, flag) -> bool:
        """Each step: the exchange's loss and gradients, then the update."""
        m, B = self.model, self.B
        lrs = self.schedule.values(self.t, self.n_steps)
        for s in range(self.n_steps):
            rows = None if idx is None else idx[s * B:(s + 1) * B]
            loss, count, stop = self.exchange.step(self, rows, flag)
            if stop == "halt":
                self.hist.stopped = "interrupted"
                return False
            if not math.isfinite(loss):
                self._diverged()
                return False
            lr = float(lrs[s])
            self._begin()
            self.prev[...] = m.theta
            self.have_prev[0] = 1
            self.opt.apply(m, lr)
            self.exchange.after_step(m, count)   # Dropout's masks, BatchNorm
            self._keep([loss], [count], [lr])
            self.parts_before = None
            if stop:
                self.hist.stopped = "interrupted"
                return False
        return True

    def _calls(self, idx: np.ndarray, flag: SigintFlag) -> bool:
        """The steps of one epoch in runtime calls of ``self.chunk`` steps."""
        m, B, opt = self.model, self.B, self.opt
        n_steps = -(-idx.size // B)
        lrs = self.schedule.values(self.t, n_steps)
        losses = np.zeros(n_steps)
        rt = m.runtime
        correct = np.full(n_steps, np.nan)        # counted by the runtime where it applies
        count = has_accuracy(m.network.loss_name) and len(m.network.outputs) == 1
        for s0 in range(0, n_steps, self.chunk):
            s1 = min(n_steps, s0 + self.chunk)
            part = idx[s0 * B: s1 * B]
            self._begin()
            if m.stateful:
                m.set_training(True)
                m.check_batch(min(B, part.size))
                if part.size % B:
                    m.check_batch(part.size % B)
            with m.lock:
                done = rt.train_epoch(self.X, self.T, part, B, lrs[s0:], losses[s0:],
                                      opt.code, opt.s1, opt.s2, opt.hyper, opt.t, self.prev,
                                      self.have_prev, correct[s0:] if count else None)
            opt.t += done
            m.after_steps(rt.train_work, min(B, part.size), done)
            sizes = [B] * done
            if done and s0 + done == n_steps and idx.size % B:
                sizes[-1] = idx.size % B
            self._keep(losses[s0:s0 + done], sizes, lrs[s0:s0 + done], correct[s0:s0 + done])
            self.parts_before = None
            if done < s1 - s0:
                self._diverged()
                return False
            if flag.raised:
                self.hist.stopped = "interrupted"
                return False
        return True

    # -- bookkeeping -------------------------------------------------------
    def _begin(self):
        """Before a call that changes θ: remember θ and how much was kept so far."""
        self.snap[...] = self.model.theta
        self.parts_before = len(self.parts)

    def _keep(self, losses, sizes, lrs, correct=None):
        # one append, so that an interruption keeps the whole call or none of it
        correct = np.full(len(lrs), np.nan) if correct is None else correct
        self.parts.append((np.array(losses, np.float64), np.array(sizes, np.float64),
                           np.array(lrs, np.float64), np.array(correct, np.float64)))
        self.t += len(lrs)

    def interrupted(self):
        """A KeyboardInterrupt came through: drop the call in flight unless it was kept."""
        if self.parts_before is not None and len(self.parts) == self.parts_before:
            self.model.theta[...] = self.snap
            self.opt.t = self.t
        self.parts_before = None
        self.hist.stopped = "interrupted"

    def _diverged(self):
        """The loss became non-finite: the update before it was undone (θ ← prev)."""
        m = self.model
        if self.have_prev[0]:
            m.theta[...] = self.prev
            self._drop_last_step()
        self.hist.stopped = "diverged"
        warnings.warn(f"training diverged at step {self.t} (the loss became NaN or inf); "
                      "the parameters are those of the last step with a finite loss. "
                      "Try a smaller learning rate.", RuntimeWarning, stacklevel=4)

    def _drop_last_step(self):
        self.t -= 1
        self.opt.t -= 1
        while self.parts and not self.parts[-1][2].size:
            self.parts.pop()
        if self.parts:
            losses, sizes, lrs, correct = self.parts.pop()
            self.parts.append((losses[:-1], sizes[:-1], lrs[:-1], correct[:-1]))
        elif self.hist.steps:
            h = self.hist
            h.steps -= 1
            h.lr = h.lr[:-1]
            h.steps_per_epoch[-1] -= 1

    def record(self):
        """Close the epoch (or the part of it done): History row, validation."""
        parts, self.parts = self.parts, []
        if not parts or not sum(p[2].size for p in parts):
            return
        losses, sizes, lrs, correct = (np.concatenate([p[k] for p in parts]) for k in range(4))
        loss = float(np.average(losses, weights=sizes))
        name = self.model.network.loss_name
        # training accuracy: for sgd/minibatch counted by the C on each batch before its
        # update (like the loss); for sd of the parameters at the end of the epoch
        acc = None
        if self.exchange.accuracy and has_accuracy(name) and \
                len(self.model.network.outputs) == 1:
            acc = float(correct.sum() / sizes.sum()) if not np.isnan(correct).any() else \
                accuracy(name, self.model.forward(_user_layout(self.model, self.X, self.T)[0])
                         .reshape(self.X.shape[0], -1), self.T)
        val_loss, val_acc = self.exchange.validate(self)
        self.hist.record_epoch(loss, lr=lrs, steps=lrs.size, accuracy=acc, val_loss=val_loss,
                               val_accuracy=val_acc)


def _user_layout(model, X, T):
    """Checked (rows) X and T back in the layout the public calls take (tensors)."""
    if len(model.in_shape) > 1:
        X = X.reshape((-1, *model.in_shape))
    if len(model.out_shape) > 1 and T.shape[1] == model.n_out:
        T = T.reshape((-1, *model.out_shape))
    return X, T


def checked_arguments(model, X, T, method, epochs, batch_size, lr):
    """fit's arguments checked (ValueError saying which and why): X and T as the
    model's rows, epochs and batch_size as ints, lr as a schedule."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, "
                         f"got {method!r}")
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
    Xv = model.as_inputs(validation_data[0])
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
    stopper = None if early_stopping is None else EarlyStopping(early_stopping, restore_best)
    callbacks = check_callbacks(callbacks)
    val = None
    if validation_split is not None:
        if validation_data is not None:
            raise ValueError("give validation_data or validation_split, not both")
        X, T, Xv, Tv = split(X, T, validation_split)
        val = _user_layout(model, Xv, Tv)
    if validation_data is not None:
        val = _user_layout(model, *checked_validation(model, validation_data))
    opt = optimizer_for(model, *optimizer, fresh=reset_optimizer)
    if seed is not None:
        model.dropout_seed(seed)     # the same seed: the same Dropout masks
    return X, T, epochs, batch_size, schedule, val, opt, stopper, callbacks, \
        np.random.default_rng(seed)


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
    run = _Run(model, X, T, method, batch_size, schedule, opt, val, hist, exchange)
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
                asked = [bool(cb(hist)) for cb in callbacks]     # every callback, every epoch
                if stopper is not None and stopper.after_epoch(model, hist):
                    hist.stopped = "early_stopping"           # the same History everywhere
                    break
                if exchange.any(any(asked)):                  # any process's callback
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
