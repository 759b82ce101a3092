"""What ends training early: patience on a monitored loss, and callbacks.

``fit(..., early_stopping=p)`` stops after ``p`` epochs in a row without a new
lowest monitored loss — the validation loss when there is validation data
(``validation_data`` or ``validation_split``), else the training loss of the
epoch — and with ``restore_best=True`` (the default) puts back the parameters
of the best epoch (``History.best_epoch``, counted from 1) when fit ends, however
it ends but by Ctrl-C (all epochs done, too).  Those are the parameters its loss
was measured at: at the end of the epoch for a validation loss; for sd's training
loss, measured before the epoch's one update, those before it; a minibatch or sgd
epoch's training loss is a mean over its steps, each before its update, and the
parameters at the end of the epoch are put back.  A callback is any
callable given the History after each epoch; returning True stops training
(``History.stopped == "callback"``).

>>> from symnet.runtime.history import History
>>> h, es = History(), EarlyStopping(patience=1, restore_best=False)
>>> h.record_epoch(1.0); es.after_epoch(None, h)
False
>>> h.record_epoch(2.0); es.after_epoch(None, h)
True
>>> es.best_epoch
1
"""

from __future__ import annotations

import math
import numbers

import numpy as np


class EarlyStopping:
    """Patience on the monitored loss; keeps a copy of the best parameters."""

    def __init__(self, patience, restore_best: bool = True):
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) \
                or patience < 1:
            raise ValueError(f"early_stopping must be a positive integer number of epochs "
                             f"(the patience), got {patience!r}")
        self.patience, self.restore_best = int(patience), bool(restore_best)
        self.best, self.best_epoch, self.wait, self.theta = math.inf, 0, 0, None

    @staticmethod
    def monitored(hist) -> float:
        return hist.val_loss[-1] if hist.val_loss else hist.loss[-1]

    def after_epoch(self, model, hist, theta=None) -> bool:
        """Record the epoch just ended; True when training should stop.  ``theta``: the
        parameters its monitored loss was measured at (None: the model's now)."""
        value = self.monitored(hist)
        if math.isfinite(value) and value < self.best:
            self.best, self.best_epoch, self.wait = value, hist.epochs, 0
            if self.restore_best and model is not None:
                self.theta = (model.theta if theta is None else theta).copy()
            return False
        self.wait += 1
        return self.wait >= self.patience

    def restore(self, model):
        """Put the best epoch's parameters back (when asked and when there was one)."""
        if self.restore_best and self.theta is not None:
            with model.lock:
                model.theta[...] = self.theta


def check_callbacks(callbacks) -> list:
    if callbacks is None:
        return []
    if callable(callbacks):
        return [callbacks]
    callbacks = list(callbacks)
    for k, cb in enumerate(callbacks):
        if not callable(cb):
            raise ValueError(f"callbacks[{k}] is not callable: {cb!r}; a callback is a "
                             "function of the History returning True to stop")
    return callbacks


def split(X: np.ndarray, T: np.ndarray, fraction):
    """(X, T, X_val, T_val): the last ``fraction`` of the rows held out, as Keras does
    (before any shuffling; shuffle the data first if its order means something)."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) \
            or not 0 < fraction < 1:     # numbers.Real: numpy's floats and ints too
        raise ValueError(f"validation_split must be a fraction in (0, 1), got {fraction!r}")
    fraction = float(fraction)
    n = X.shape[0]
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"validation_split={fraction} of {n} examples leaves "
                         f"{n - n_val} for training and {n_val} for validation; "
                         "both need at least one")
    return X[:n - n_val], T[:n - n_val], X[n - n_val:], T[n - n_val:]
