"""Layers with a training mode (Dropout, BatchNorm): the part of a model that is
state between steps rather than parameters to train.

Dropout keeps (seed, step, training) in an array rng{k} of θ; its masks are those of
the seed and the step.  BatchNorm keeps running statistics mean{k}, var{k} and a mode
flag mode{k}, and takes each step's batch statistics from the work buffer after the
step.  ``TrainingModes`` is a part of ``symnet.runtime.model.Model``; training
(``symnet.runtime.train``, ``symnet.runtime.distributed``) drives it through the
public names ``set_training``, ``check_batch``, ``after_steps``, ``advance_masks``,
``dropout_states``, ``batchnorms``, ``stateful``.

>>> import symnet as sn
>>> net = sn.Network(sn.Input(3), sn.Dense(4, "relu"), sn.Dropout(0.5), sn.Dense(1),
...                  loss="mse")
>>> model = net.compile(dtype="float64")
>>> model.stateful, model.has_dropout, len(model.batchnorms)
(True, True, 0)
"""

from __future__ import annotations

import numpy as np


class TrainingModes:
    """Dropout's masks and BatchNorm's statistics of a model (a part of ``Model``:
    it reads the model's ``network``, ``meta``, ``rows_per_call`` and parameter
    views)."""

    def _find_modes(self):
        """The layers with a training mode, found once when compiling."""
        self._rngs = self._dropout_states()
        self._bns = self._batchnorms()
        self._stateful = bool(self._rngs or self._bns)

    # ---------------------------------------------------------------- dropout
    def _dropout_states(self) -> list:
        """The (seed, step, training) arrays rng{k} of the network's Dropout layers."""
        from ..lang.dropout import Dropout
        net, out = self.network, {}
        for app, k in zip(net.layers, getattr(net, "_param_index", ())):
            if isinstance(app.origin if app.origin is not None else app, Dropout):
                out[f"rng{k}"] = self._views[f"rng{k}"]
        return list(out.values())

    def dropout_seed(self, seed: int, step: int = 0):
        """Start Dropout's masks afresh: those of ``seed`` (an int), from training step
        ``step``; ``fit(seed=...)`` calls it.  No effect without Dropout layers."""
        from ..lang.dropout import SEED, SEED_RANGE, STEP
        for v in self._rngs:
            v[SEED] = int(seed) % SEED_RANGE
            v[STEP] = int(step) % SEED_RANGE

    def set_training(self, training: bool):
        """Dropout draws its masks (training) or is the identity (evaluation); BatchNorm
        uses the batch's statistics (training) or the running ones (evaluation)."""
        from ..lang.dropout import TRAINING
        for v in self._rngs:
            v[TRAINING] = 1.0 if training else 0.0
        for bn in self._bns:
            bn["mode"][0] = 1.0 if training else 0.0

    # ---------------------------------------------------------------- batchnorm
    def _batchnorms(self) -> list:
        """Per BatchNorm layer: its node name, running statistics, momentum and sizes."""
        from ..lang.batchnorm import _BatchNorm
        net, out = self.network, []
        for app, name, k, shape in zip(net.layers, getattr(net, "names", ()),
                                       getattr(net, "_param_index", ()),
                                       getattr(net, "shapes", ())):
            layer = app.origin if app.origin is not None else app
            if isinstance(layer, _BatchNorm):
                out.append({"layer": app, "name": name, "momentum": layer.momentum,
                            "sync": bool(getattr(layer, "sync", False)),
                            "C": shape[0], "S": int(np.prod(shape[1:])),
                            "mean": self._views[f"mean{k}"], "var": self._views[f"var{k}"],
                            "mode": self._views[f"mode{k}"]})
        return out

    def check_batch(self, rows: int):
        """A batch whose channels hold one value each has no variance: refused (not while
        a fit synchronises the statistics over processes, which checks the steps' batches
        over all of them instead: ``batch_global``)."""
        if getattr(self, "batch_global", False):
            return
        for bn in self._bns:
            if rows * bn["S"] < 2:
                raise ValueError(f"layer {bn['name']!r} ({type(bn['layer']).__name__}): a "
                                 f"batch of {rows} example(s) has one value per channel in "
                                 "training, and no variance; use batches of 2 or more "
                                 "(evaluation, forward and predict take any batch)")

    def check_fit_batches(self, method: str, n: int, batch_size: int):
        """Before fit's first step (nothing changed yet): every training batch of an epoch
        of ``n`` examples must hold 2 values or more per channel of each BatchNorm —
        sgd's one example, a batch_size of 1 or a short last minibatch of one example
        do not — and sd's one batch must fit one compiled call."""
        for bn in self._bns:
            if method == "sd":
                self._check_whole(n)
            if bn["S"] >= 2:         # one example has a value per position of a channel
                continue
            where = (f"layer {bn['name']!r} ({type(bn['layer']).__name__}): a batch of 1 "
                     "example has one value per channel in training, and no variance")
            if method == "sgd":
                raise ValueError(f"{where}; method='sgd' takes one example per step: use "
                                 "method='minibatch' with batch_size of 2 or more")
            if n == 1:
                raise ValueError(f"{where}; fit was given 1 example: give 2 or more")
            if method == "minibatch" and batch_size == 1:
                raise ValueError(f"{where}; batch_size=1 makes every batch one example: "
                                 "use batch_size of 2 or more")
            if method == "minibatch" and n % batch_size == 1:
                raise ValueError(f"{where}; with {n} examples and batch_size={batch_size} "
                                 f"the last minibatch of each epoch would hold 1 example: "
                                 f"use a batch_size for which {n} % batch_size != 1, e.g. "
                                 f"{_batch_size_near(n, batch_size)}, or drop one example")

    def _check_whole(self, n: int):
        """A training batch of BatchNorm must be one compiled call: the statistics of
        its parts would not be the batch's."""
        for bn in self._bns:
            if n > self.rows_per_call:
                raise ValueError(f"layer {bn['name']!r} ({type(bn['layer']).__name__}): a "
                                 f"training batch of {n} examples is more than one compiled "
                                 f"call takes ({self.rows_per_call} rows, rows_per_call), and "
                                 "its statistics would be those of its parts; use batches of "
                                 f"at most {self.rows_per_call} (fit's minibatch takes any "
                                 "batch_size; evaluation, forward and predict take any batch)")

    def after_steps(self, work: np.ndarray, rows: int, steps: int):
        """``steps`` updates were taken (the last on ``rows`` examples, whose forward pass
        is in ``work``): Dropout's masks move on; BatchNorm's running statistics take the
        last step's batch statistics (from its sums Σ_b Σ_s x and Σ_b Σ_s c² in work)."""
        self.advance_masks(steps)
        offsets = self.meta.get("work_offsets", {})
        for bn in self._bns:
            if not steps:
                continue
            n, m, C, S = rows * bn["S"], bn["momentum"], bn["C"], bn["S"]
            at = rows * offsets[f"z_{bn['name']}_c"] + np.arange(C) * S
            sq = rows * offsets[f"z_{bn['name']}"] + np.arange(C) * S
            mu = work[at].astype(np.float64) / n
            var = work[sq].astype(np.float64) / max(n - 1, 1)     # unbiased, as PyTorch's
            bn["mean"][...] = (1 - m) * bn["mean"] + m * mu
            bn["var"][...] = (1 - m) * bn["var"] + m * var

    def advance_masks(self, steps: int):
        """The next ``steps`` updates were taken: the masks move on."""
        if not self._rngs:
            return
        from ..lang.dropout import SEED_RANGE, STEP
        for v in self._rngs:
            v[STEP] = (int(v[STEP]) + steps) % SEED_RANGE

    @property
    def dropout_states(self) -> list:
        """The (seed, step, training) arrays of the Dropout layers (views into theta)."""
        return self._rngs

    @property
    def batchnorms(self) -> list:
        """Per BatchNorm layer: name, layer, momentum, C, S and views mean, var, mode."""
        return self._bns

    def mode_layers(self) -> list[str]:
        """The layers with a training mode, as ``'N' (BatchNorm1d)``, in network order."""
        from ..lang.batchnorm import _BatchNorm
        from ..lang.dropout import Dropout
        net, out = self.network, []
        for app, name in zip(net.layers, getattr(net, "names", ())):
            layer = app.origin if app.origin is not None else app
            if isinstance(layer, (_BatchNorm, Dropout)):
                out.append(f"{name!r} ({type(layer).__name__})")
        return out

    @property
    def has_dropout(self) -> bool:
        return bool(self._rngs)

    @property
    def stateful(self) -> bool:
        """A layer with a training mode (Dropout, BatchNorm)."""
        return self._stateful


def _batch_size_near(n: int, batch_size: int) -> int:
    """The batch size nearest ``batch_size`` (the smaller first) whose last minibatch of
    ``n`` examples is not one example: n itself (one batch) at the farthest.

    >>> _batch_size_near(33, 32), _batch_size_near(65, 32)
    (31, 31)
    """
    for d in range(1, n):
        for b in (batch_size - d, batch_size + d):
            if 2 <= b <= n and n % b != 1:
                return b
    return n
