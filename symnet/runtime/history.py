"""What happened during training: the loss per epoch, step sizes, time, and why
training stopped.

Training a non-convex loss is not guaranteed to converge, so the trainer
records what it saw (including divergence / NaN) in a ``History`` rather than
hiding it.

Conventions:

- ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` hold one float per
  epoch (the ``val_*`` and ``accuracy`` lists may stay empty when not measured).
- ``lr`` holds **every** step size used, one per step, as a float64 numpy
  array of length ``steps`` (a schedule's ``values(t0, n)`` per epoch,
  concatenated). ``lr_per_epoch`` is derivable only when the trainer also
  records ``steps_per_epoch``; ``record_epoch`` does both.
- ``stopped`` is ``"completed"``, ``"diverged"`` (loss became NaN/inf or blew
  up), ``"interrupted"`` (KeyboardInterrupt), ``"early_stopping"`` (no new best
  monitored loss for ``early_stopping`` epochs), ``"callback"`` (a callback
  returned True).
- ``best_epoch`` (from 1) is the epoch with the lowest monitored loss when
  ``fit`` had ``early_stopping``; None otherwise.
- ``accuracy`` is the training accuracy for losses that have one (softmax
  cross-entropy, bce): like ``loss``, the mean over the epoch's batches, each
  measured before its update (``sd``: of the parameters at the end of the epoch).
- ``per_output``: for a network of several outputs, each output's metrics per epoch
  under Keras's names, those of ``model.evaluate``: ``"<output>_accuracy"`` for a
  classification loss, ``"<output>_mse"`` and ``"<output>_mae"`` otherwise, and
  ``"val_<output>_..."`` on the validation data; each is also an attribute
  (``h.moon_accuracy``) and a key of ``to_dict()``.  Empty for one output.

>>> h = History(method="sd")
>>> h.record_epoch(1.0, lr=[0.1, 0.1])
>>> h.record_epoch(0.5, lr=[0.1, 0.05])
>>> h.epochs, h.steps, h.lr.tolist(), h.final_loss
(2, 4, [0.1, 0.1, 0.1, 0.05], 0.5)
>>> h = History(method="minibatch")
>>> h.record_epoch(0.7, lr=0.1, steps=2,
...                outputs={"moon_accuracy": 0.75, "val_moon_accuracy": 0.5})
>>> h.moon_accuracy, h.to_dict()["val_moon_accuracy"]
([0.75], [0.5])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

__all__ = ["History"]


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.float64)


@dataclass(eq=False)
class History:
    """Result of ``Model.fit``: per-epoch metrics and run information."""

    loss: List[float] = field(default_factory=list)
    accuracy: List[float] = field(default_factory=list)
    val_loss: List[float] = field(default_factory=list)
    val_accuracy: List[float] = field(default_factory=list)
    steps: int = 0                       # total parameter updates taken
    lr: np.ndarray = field(default_factory=_empty)   # one step size per step
    steps_per_epoch: List[int] = field(default_factory=list)
    wall_time: float = 0.0               # seconds
    stopped: str = "completed"
    method: str = ""
    epochs: int = 0                      # epochs completed
    best_epoch: Optional[int] = None     # with early stopping: the best epoch, from 1
    # several outputs: {"<output>_<metric>" or "val_<output>_<metric>": one per epoch}
    per_output: dict[str, list[float]] = field(default_factory=dict)

    # ---- recording -----------------------------------------------------
    def record_epoch(self, loss: float, *, lr=None, steps: Optional[int] = None,
                     accuracy: Optional[float] = None,
                     val_loss: Optional[float] = None,
                     val_accuracy: Optional[float] = None,
                     outputs: dict | None = None) -> None:
        """Append one epoch. ``lr`` is the array of step sizes used by this
        epoch's steps (or a single float with ``steps`` given); ``steps``
        defaults to ``len(lr)``; ``outputs``: the epoch's per-output metrics
        (``{"moon_accuracy": 0.9, ...}``, see ``per_output``)."""
        lr_arr = None if lr is None else np.atleast_1d(np.asarray(lr, dtype=np.float64))
        if steps is None:
            steps = 0 if lr_arr is None else lr_arr.size
        if lr_arr is not None and lr_arr.size == 1 and steps != 1:
            lr_arr = np.full(steps, lr_arr[0])
        if lr_arr is not None:
            self._append_lr(lr_arr)
        self.steps += int(steps)
        self.steps_per_epoch.append(int(steps))
        self.loss.append(float(loss))
        for name, v in (("accuracy", accuracy), ("val_loss", val_loss),
                        ("val_accuracy", val_accuracy)):
            if v is not None:
                getattr(self, name).append(float(v))
        if outputs:
            for name, v in outputs.items():
                self.per_output.setdefault(name, []).append(float(v))
        self.epochs += 1

    def _append_lr(self, values: np.ndarray) -> None:
        """``lr`` grows by ``values``: a view of a buffer that doubles when full, so an
        epoch's record costs its own steps, not every step so far (a copy of the whole
        array per epoch made long runs of online SGD quadratic)."""
        lr = np.asarray(self.lr, dtype=np.float64)
        n, need = lr.size, lr.size + values.size
        buf = self.__dict__.get("_lr_buf")
        # still the view handed out (or one cut from its front, as a dropped step does)?
        ours = (buf is not None and lr.base is buf and lr.ndim == 1
                and lr.__array_interface__["data"][0] == buf.__array_interface__["data"][0])
        if not ours or buf.size < need:
            grown = np.empty(max(need, 2 * n, 64), dtype=np.float64)
            grown[:n] = lr
            buf = grown
            self.__dict__["_lr_buf"] = buf
        buf[n:need] = values
        self.lr = buf[:need]

    def __getattr__(self, name):
        # only for names that are not attributes: a per-output metric (h.moon_accuracy)
        per = self.__dict__.get("per_output")
        if per is not None and name in per:
            return per[name]
        known = f"; its per-output metrics: {', '.join(per)}" if per else ""
        raise AttributeError(f"{type(self).__name__!r} object has no attribute "
                             f"{name!r}{known}")

    def __dir__(self):
        return [*super().__dir__(), *self.__dict__.get("per_output", {})]

    # ---- summaries -----------------------------------------------------
    @property
    def final_loss(self) -> float:
        """Training loss of the last epoch (nan when there is none)."""
        return self.loss[-1] if self.loss else math.nan

    @property
    def diverged(self) -> bool:
        return self.stopped == "diverged" or any(not math.isfinite(v) for v in self.loss)

    def to_dict(self) -> dict:
        """Plain, JSON-friendly dict of all fields (``lr`` as a list), and each
        per-output metric also under its own key (``"moon_accuracy"``, as Keras's
        ``history.history``) unless a field has that name."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["lr"] = np.asarray(self.lr, dtype=np.float64).tolist()
        d["per_output"] = {k: list(v) for k, v in self.per_output.items()}
        for k, v in self.per_output.items():
            d.setdefault(k, list(v))
        return d

    def __str__(self) -> str:
        lines = [f"History: method={self.method or '?'}, epochs={self.epochs}, "
                 f"steps={self.steps}, wall time {self.wall_time:.3g} s, "
                 f"stopped: {self.stopped}"]
        lr = np.asarray(self.lr, dtype=np.float64)
        if lr.size:
            lines.append(f"step size: first {lr[0]:.4g}, last {lr[-1]:.4g}, "
                         f"min {lr.min():.4g}, max {lr.max():.4g} ({lr.size} steps)")
        cols = [("loss", self.loss), ("accuracy", self.accuracy),
                ("val_loss", self.val_loss), ("val_accuracy", self.val_accuracy),
                *self.per_output.items()]
        cols = [(n, v) for n, v in cols if len(v)]
        n = max((len(v) for _, v in cols), default=0)
        widths = [max(14, len(name) + 2) for name, _ in cols]
        if n:
            lines.append("  epoch" + "".join(f"{name:>{w}}" for (name, _), w
                                             in zip(cols, widths)))
            rows = list(range(n)) if n <= 12 else [*range(5), None, *range(n - 5, n)]
            for i in rows:
                if i is None:
                    lines.append("    ...")
                    continue
                cells = "".join(f"{v[i]:>{w}.6g}" if i < len(v) else f"{'':>{w}}"
                                for (_, v), w in zip(cols, widths))
                lines.append(f"  {i + 1:>5}{cells}")
        return "\n".join(lines)

    # ---- plotting ------------------------------------------------------
    def plot(self, path=None, ax=None):
        """Draw the loss per epoch (training and validation), the accuracy when
        measured (with several outputs: each one's, ``per_output``), and the step
        size per step; return the figure.

        With ``path`` the figure is saved there through the Agg backend (no
        display needed).  With ``ax`` only the loss is drawn, into that
        matplotlib Axes.  The loss axis is logarithmic when the positive losses
        span more than two decades, the step-size axis when the step sizes do.
        Non-finite losses (divergence) are left out of the curves.
        """
        try:
            import matplotlib
        except ImportError as e:
            raise ImportError("History.plot needs matplotlib: `pip install matplotlib` "
                              "or `pip install symnet[plot]`") from e
        if ax is not None:
            self._plot_loss(ax)
            return ax.figure
        panels = 2 + bool(self.accuracy or self.val_accuracy or self._output_accuracies())
        size = (6, 2.6 * panels)
        if path is not None:
            from matplotlib.figure import Figure
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            fig = Figure(figsize=size)
            FigureCanvasAgg(fig)
            axes = [fig.add_subplot(panels, 1, k + 1) for k in range(panels)]
        else:
            import matplotlib.pyplot as plt
            fig, axes = plt.subplots(panels, 1, figsize=size)
        self._plot_loss(axes[0])
        if panels == 3:
            self._plot_accuracy(axes[1])
        self._plot_lr(axes[-1])
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100, bbox_inches="tight")
        return fig

    def _plot_loss(self, ax):
        finite = []
        for name, vals in (("training loss", self.loss), ("validation loss", self.val_loss)):
            y = np.asarray(vals, dtype=np.float64)
            if y.size == 0:
                continue
            x = np.arange(1, y.size + 1)
            ok = np.isfinite(y)
            ax.plot(x[ok], y[ok], marker="." if y.size < 50 else None, label=name)
            finite.append(y[ok])
        allv = np.concatenate(finite) if finite else np.zeros(0)
        if allv.size and (allv > 0).all() and allv.max() / allv.min() > 100.0:
            ax.set_yscale("log")
        if self.best_epoch:
            ax.axvline(self.best_epoch, color="gray", linestyle=":", label="best epoch")
        ax.set_xlabel("epoch")
        _whole_ticks(ax)
        ax.set_ylabel("loss")
        title = f"{self.method} " if self.method else ""
        ax.set_title(f"{title}training ({self.stopped})")
        if finite:
            ax.legend()
        ax.grid(True, alpha=0.3)

    def _output_accuracies(self) -> list:
        """(label, values) of each output's accuracy, training then validation."""
        return [(k[4:-9] + " validation accuracy" if k.startswith("val_") else
                 k[:-9] + " training accuracy", v)
                for k, v in self.per_output.items() if k.endswith("_accuracy") and v]

    def _plot_accuracy(self, ax):
        for name, vals in (("training accuracy", self.accuracy),
                           ("validation accuracy", self.val_accuracy),
                           *self._output_accuracies()):
            y = np.asarray(vals, dtype=np.float64)
            if y.size:
                ax.plot(np.arange(1, y.size + 1), y, marker="." if y.size < 50 else None,
                        label=name)
        ax.set_xlabel("epoch")
        _whole_ticks(ax)
        ax.set_ylabel("accuracy")
        ax.legend()
        ax.grid(True, alpha=0.3)

    def _plot_lr(self, ax):
        lr = np.asarray(self.lr, dtype=np.float64)
        if lr.size:
            ax.plot(np.arange(lr.size), lr)
            if (lr > 0).all() and lr.max() / lr.min() > 100.0:
                ax.set_yscale("log")
        ax.set_xlabel("step t")
        _whole_ticks(ax)
        ax.set_ylabel("step size η_t")
        ax.grid(True, alpha=0.3)


def _whole_ticks(ax):
    """Epochs and steps are counted: ticks at whole numbers only (matplotlib's default
    puts them at 1.5, 2.5, ... on a short run)."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
