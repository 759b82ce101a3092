"""The one epoch runner of ``fit`` (``symnet.runtime.train``): the state of one fit call
— data, buffers, optimizer — and the bookkeeping that keeps the parameters and the
History in step.  An epoch is whole-epoch runtime calls (sgd, minibatch on one
process) or steps each of which the exchange completes (sd, and every step over MPI:
``symnet.runtime.train.Local``, ``symnet.runtime.distributed.MPI``).

>>> import numpy as np
>>> accuracy("softmax_cross_entropy", np.array([[0.1, 0.9]]), np.array([[0.0, 1.0]]))
1.0
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from .progress import SigintFlag
from .targets import label_width, positions


def has_accuracy(loss_name: str) -> bool:
    return loss_name in ("softmax_cross_entropy", "bce")


@dataclass(frozen=True)
class Classes:
    """A class per position: ``n`` classes, the output's last axis, or its first where
    ``first`` (channels first, (C, H, W): class k of position q at k·positions + q)."""

    n: int
    first: bool = False

    def rows(self, A: np.ndarray) -> np.ndarray:
        """A (batch, n·positions) array as (batch·positions, n): a row per position."""
        if self.first:
            A = A.reshape(A.shape[0], self.n, -1).transpose(0, 2, 1)
        return A.reshape(-1, self.n)


def class_layout(net, name: str) -> Classes | None:
    """How output ``name`` of ``net`` takes a class per position; None where it does
    not (one class per example, or no softmax cross-entropy)."""
    n = net.classes.get(name)
    return None if n is None else Classes(n, name in net.classes_first)


def classes(model) -> Classes | None:
    """``class_layout`` of the (one) output of the model; None with several."""
    net = model.network
    return class_layout(net, net.output_names[0]) if len(net.outputs) == 1 else None


def accuracy(loss_name: str, O: np.ndarray, T: np.ndarray, classes: Classes | None = None):
    """Share of correct predictions where it applies: argmax for softmax cross-entropy
    (against the argmax of T's rows, or against class labels), O > 0.5 against T > 0.5
    per output for bce; None for other losses.  ``classes``: a class per position
    (``Classes``; the share is over the positions with a target)."""
    if loss_name == "softmax_cross_entropy":
        O = O.reshape(O.shape[0], -1)
        if classes is not None and O.shape[1] != classes.n:
            # a class per position: the share of the positions with a target (label −1
            # or a row of zeros: none) that are right
            positions = O.shape[1] // classes.n
            O = classes.rows(O)
            T = T.reshape(T.shape[0], -1)          # labels (N, H, W) or rows, as given
            T = T.reshape(-1, 1) if T.shape[1] == positions else classes.rows(T)
            labeled = T[:, 0] >= 0 if T.shape[1] == 1 else T.sum(axis=1) != 0
            if not labeled.all():
                O, T = O[labeled], T[labeled]
            if not O.shape[0]:
                return None
        y = T[:, 0] if T.shape[1] == 1 and O.shape[1] > 1 else T.argmax(axis=1)
        return float((O.argmax(axis=1) == y).mean())
    if loss_name == "bce":
        return float(((O > 0.5) == (T > 0.5)).mean())
    return None


def metrics(loss, O, T, classes=None) -> dict:
    """What ``evaluate`` gives of outputs O against targets T: the accuracy for a
    classification loss, else MSE and MAE (``classes``: a class per position, of that
    many classes)."""
    if has_accuracy(loss):
        return {"accuracy": accuracy(loss, O, T, classes)}
    err = O.astype(np.float64) - T
    return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err)))}


def side_by_side(o) -> np.ndarray:
    """What ``forward`` gives as rows (N, outputs): several outputs (a list) side by
    side, as the targets' rows hold them."""
    if isinstance(o, list):
        return np.concatenate([a.reshape(a.shape[0], -1) for a in o], axis=1)
    return o.reshape(o.shape[0], -1)


def output_columns(net):
    """(name, loss name, columns) of each output of ``net`` in the rows that hold its
    outputs (or targets) side by side (``side_by_side``)."""
    c = 0
    for name, o, loss in zip(net.output_names, net.outputs, net.loss_names):
        w = int(np.prod(net._shapes[id(o)]))
        yield name, loss, slice(c, c + w)
        c += w


def output_metrics(net, O, T) -> dict:
    """Each output's ``metrics`` under its name (Keras's ``"<output>_accuracy"``,
    ``"<output>_mse"``, ``"<output>_mae"``) for a network ``net`` of several outputs:
    O their values side by side (``side_by_side``), T the checked target rows.  What
    ``evaluate`` gives for each output, and fit's History per epoch."""
    out = {}
    for name, loss, cols in output_columns(net):
        for k, v in metrics(loss, O[:, cols], T[:, cols], class_layout(net, name)).items():
            out[f"{name}_{k}"] = v
    return out


def outputs_metrics(model, X, T) -> dict:
    """``output_metrics`` of the model on X (as ``forward`` takes it) and T (the checked
    target rows): one forward pass, in evaluation mode, as ``evaluate``'s."""
    return output_metrics(model.network, side_by_side(model.forward(X)), T)


class Run:
    """The state of one fit call and its one epoch runner: data, buffers, optimizer,
    and the bookkeeping that keeps the parameters and the History in step.  An
    epoch is whole-epoch runtime calls (``_calls``), or steps each of which the
    exchange completes (``_steps``: sd, and every step over MPI)."""

    def __init__(self, model, X, T, method, batch_size, schedule, opt, val, hist, exchange,
                 call_flops: float):
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
        self.one = None                              # (losses, s) of a one-step call
        if method != "sd":
            per_step = 6.0 * max(model.theta.size, 1) * self.B
            self.chunk = max(1, int(call_flops // per_step))   # steps per call
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
            if s1 - s0 == 1 and self.exchange.whole_epochs:
                # one step: θ before it is what the runtime leaves in prev, so no copy
                # of θ (a θ-sized copy per fit call: ~1 ms of the large network's)
                self._begin_one(losses, s0)
            else:
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

    def measured(self) -> np.ndarray:
        """The parameters the epoch's monitored loss (``symnet.runtime.stopping``) was
        measured at: the validation loss after the epoch, θ now; sd's training loss
        before the epoch's one update, θ before it (prev); a minibatch or sgd epoch's
        training loss is a mean over its steps, of no one θ: θ now."""
        if self.method == "sd" and not self.hist.val_loss and self.have_prev[0]:
            return self.prev
        return self.model.theta

    # -- bookkeeping -------------------------------------------------------
    def _begin(self):
        """Before a call that changes θ: remember θ and how much was kept so far."""
        self.snap[...] = self.model.theta
        self.one = None
        self.parts_before = len(self.parts)

    def _begin_one(self, losses, s):
        """Before a runtime call of one step (its loss into losses[s]): θ is not copied;
        once the step is taken (the runtime wrote its loss), prev holds θ before it."""
        losses[s] = np.nan
        self.one = (losses, s)
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
            if self.one is None:
                self.model.theta[...] = self.snap
            elif not np.isnan(self.one[0][self.one[1]]):   # the step was taken
                self.model.theta[...] = self.prev
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
        if self.t == 0:         # before any update: no step size is to blame
            message = ("training stopped at step 0: the loss is NaN or inf at the parameters "
                       "fit started from, before any update, so a smaller learning rate "
                       "will not help." + _why_not_finite(m, self.X, self.T))
        else:
            message = (f"training diverged at step {self.t} (the loss became NaN or inf); "
                       "the parameters are those of the last step with a finite loss. "
                       "Try a smaller learning rate.")
        warnings.warn(message, RuntimeWarning, stacklevel=users_stacklevel())

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
        loss = float(np.dot(losses, sizes) / sizes.sum())   # np.average: ~10 µs more
        name = self.model.network.loss_name
        # training accuracy: for sgd/minibatch counted by the C on each batch before its
        # update (like the loss); for sd of the parameters at the end of the epoch
        acc = None
        if self.exchange.accuracy and has_accuracy(name) and \
                len(self.model.network.outputs) == 1:
            acc = float(correct.sum() / sizes.sum()) if not np.isnan(correct).any() else \
                accuracy(name, self.model.forward(user_layout(self.model, self.X, self.T)[0])
                         .reshape(self.X.shape[0], -1), self.T, classes(self.model))
        # several outputs: each one's metrics (as evaluate's) of the parameters at the end
        # of the epoch, one forward pass over the training data
        outputs = outputs_metrics(self.model, user_layout(self.model, self.X, self.T)[0],
                                  self.T) \
            if self.exchange.accuracy and len(self.model.network.outputs) > 1 else None
        val_loss, val_acc, val_outputs = self.exchange.validate(self)
        if val_outputs:
            outputs = {**(outputs or {}), **{"val_" + k: v for k, v in val_outputs.items()}}
        self.hist.record_epoch(loss, lr=lrs, steps=lrs.size, accuracy=acc, val_loss=val_loss,
                               val_accuracy=val_acc, outputs=outputs)


def users_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside symnet, counted from the function
    that calls this one and then ``warnings.warn``: the user's line of ``fit``, however
    many of symnet's calls lie between (one process or MPI)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _why_not_finite(model, X, T) -> str:
    """What a loss that is not finite before any update points to, read from the model's
    outputs on the first rows of the training data (the data were checked finite)."""
    if not np.isfinite(model.theta).all():
        return " The parameters hold NaN or inf (model.init_params() draws new ones)."
    net = model.network
    try:
        O = side_by_side(model.forward(user_layout(model, X[:256], T[:256])[0]))
    except Exception:  # noqa: BLE001 -- only a hint: the warning goes out without it
        return ""
    for name, loss, cols in output_columns(net):
        part = O[:, cols].astype(np.float64)
        if not np.isfinite(part).all():
            return (f" Output {name!r} is itself NaN or inf on the first rows of the data "
                    "(an activation overflowed?).")
        if loss == "bce" and (part.min() < 0 or part.max() > 1):
            return (f" Output {name!r} gives values in [{part.min():.3g}, {part.max():.3g}] "
                    "on the first rows of the data, and bce takes the logarithms of o and "
                    "1 − o: it needs an output in (0, 1), a sigmoid last (or another loss).")
    return (" An output may lie outside its loss's domain (the logarithm or square root of "
            "a custom loss).")


def user_layout(model, X, T):
    """Checked (rows) X and T back in the layout the public calls take (tensors)."""
    if len(model.in_shape) > 1:
        X = X.reshape((-1, *model.in_shape))
    if len(model.network.outputs) > 1:       # rows side by side: taken as they are
        return X, T
    if len(model.out_shape) > 1 and T.shape[1] == model.n_out:
        T = T.reshape((-1, *model.out_shape))
    elif len(model.out_shape) > 1 and T.shape[1] == label_width(model) > 1:
        T = T.reshape((-1, *positions(model)))           # class labels per position
    return X, T


