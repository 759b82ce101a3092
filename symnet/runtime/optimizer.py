"""The optimizer and its state (moments, step count), kept by the model.

``model.step(X, T, lr, optimizer="adam")`` and ``model.fit(..., optimizer="adam")``
update the parameters through the same ``Optimizer``, which the model keeps
between calls: a training loop written by hand continues Adam's moments from step
to step, a second ``fit`` continues the first, and ``model.save`` writes the state
(``symnet.load`` reads it back).  The state starts afresh with
``model.reset_optimizer()``, ``fit(..., reset_optimizer=True)``, ``init_params``,
or when another optimizer is asked for; new hyper-parameters for the same
optimizer keep the moments (as changing them in the middle of a run does).

>>> import numpy as np, symnet as sn
>>> model = sn.Network(sn.Input(2), sn.Dense(1), loss="mse").compile(dtype="float64")
>>> X, T = np.ones((4, 2)), np.zeros((4, 1))
>>> for _ in range(3):
...     _ = model.step(X, T, 0.01, optimizer="adam")
>>> model.optimizer.name, model.optimizer.t
('adam', 3)
>>> model.reset_optimizer(); model.optimizer is None
True
"""

from __future__ import annotations

import json
import math
from typing import ClassVar

import numpy as np

__all__ = ["Optimizer", "for_model", "from_arrays"]

NAMES = ("sgd", "momentum", "adam")


def _hyper(name, momentum=None, betas=None, eps=None, weight_decay=0.0, clip_norm=None):
    """The checked hyper-parameters as the C reads them: [μ, β1, β2, ε, λ, c]."""
    if name not in NAMES:
        raise ValueError(f"optimizer must be one of {list(NAMES)}, got {name!r}")
    given = {"momentum": momentum, "betas": betas, "eps": eps}
    allowed = {"sgd": (), "momentum": ("momentum",), "adam": ("betas", "eps")}[name]
    for key, value in given.items():
        if value is not None and key not in allowed:
            raise ValueError(f"{key}= applies to optimizer "
                             f"{'momentum' if key == 'momentum' else 'adam'}, not {name!r}")
    mu = 0.9 if momentum is None else momentum
    try:
        b1, b2 = (0.9, 0.999) if betas is None else tuple(betas)
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (β1, β2), got {betas!r}") from None
    eps = 1e-8 if eps is None else eps
    for what, v in (("momentum", mu), ("betas[0]", b1), ("betas[1]", b2)):
        if not (isinstance(v, (int, float)) and 0 <= v < 1):
            raise ValueError(f"{what} must be a number in [0, 1), got {v!r}")
    if not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    weight_decay = 0.0 if weight_decay is None else weight_decay
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
            or not (0 <= weight_decay < math.inf):
        raise ValueError(f"weight_decay must be a number ≥ 0, got {weight_decay!r}")
    if clip_norm is not None and (isinstance(clip_norm, bool) or not isinstance(
            clip_norm, (int, float)) or not (0 < clip_norm < math.inf)):
        raise ValueError(f"clip_norm must be a positive number (or None), got {clip_norm!r}")
    # hyper[4]: weight decay λ; hyper[5]: clipping norm (0: none) -- see sn_update in C
    return np.array([mu, b1, b2, eps, weight_decay, clip_norm or 0.0], dtype=np.float64)


class Optimizer:
    """The update rule applied to each step's gradient g, with its state.

    ``"sgd"``: θ ← θ − η g.  ``"momentum"`` (μ = ``momentum``, default 0.9):
    v ← μ v + g, θ ← θ − η v.  ``"adam"`` (``betas`` = (β1, β2), default
    (0.9, 0.999), ``eps`` default 1e-8): m ← β1 m + (1−β1) g,
    v ← β2 v + (1−β2) g², θ ← θ − η (m/(1−β1^t)) / (√(v/(1−β2^t)) + ε), t = 1, 2, ...
    The state (v; m and v; the step count t) starts at zero and is kept by the model
    (``model.optimizer``) from call to call.

    ``clip_norm`` c: the gradient is first scaled to ĝ = g·min(1, c/‖g‖₂), ‖g‖₂ over all
    parameters.  ``weight_decay`` λ: L2, g ← ĝ + λθ for sgd and momentum; decoupled
    for Adam (AdamW): θ ← θ − η(Adam's step + λθ).
    """

    CODES: ClassVar[dict] = {"sgd": 0, "momentum": 1, "adam": 2}

    def __init__(self, model, name="sgd", momentum=None, betas=None, eps=None,
                 weight_decay=0.0, clip_norm=None):
        self.hyper = _hyper(name, momentum, betas, eps, weight_decay, clip_norm)
        self.name, self.code = name, self.CODES[name]
        self.settings = (name, momentum, betas, eps, weight_decay, clip_norm)
        n = model.theta.size
        self.s1 = np.zeros(n if name != "sgd" else 1, model.dtype)
        self.s2 = np.zeros(n if name == "adam" else 1, model.dtype)
        self.t = 0                                   # steps taken, for Adam's corrections

    def configure(self, name, momentum=None, betas=None, eps=None, weight_decay=0.0,
                  clip_norm=None):
        """New hyper-parameters for the same optimizer (the state is kept)."""
        self.hyper[...] = _hyper(name, momentum, betas, eps, weight_decay, clip_norm)
        self.settings = (name, momentum, betas, eps, weight_decay, clip_norm)

    def apply(self, model, lr: float):
        """One update of model's parameters from the gradients in ``model.grad``."""
        with model.lock:  # the model's runtime is one call at a time (see Model)
            self.apply_locked(model, lr)

    def apply_locked(self, model, lr: float):
        """``apply`` for a caller that holds the model's lock."""
        self.t += 1
        model.runtime.update(float(lr), self.code, self.s1, self.s2, self.hyper, self.t)

    # ---------------------------------------------------------------- files
    def arrays(self) -> dict:
        """The state as arrays for a model file (``symnet.io.files``)."""
        config = {"name": self.name, "hyper": self.hyper.tolist(), "t": self.t}
        return {"optimizer/config": np.array(json.dumps(config, sort_keys=True)),
                "optimizer/s1": self.s1.copy(), "optimizer/s2": self.s2.copy()}

    def __repr__(self):
        return f"<symnet.Optimizer {self.name} t={self.t}>"


def for_model(model, name="sgd", momentum=None, betas=None, eps=None, weight_decay=0.0,
              clip_norm=None, fresh=False) -> Optimizer:
    """The model's optimizer for these settings: the one it keeps when it is the same
    optimizer (hyper-parameters updated), else a new one (state at zero), which the
    model then keeps."""
    opt = model.optimizer
    settings = (name, momentum, betas, eps, weight_decay, clip_norm)
    if opt is not None and not fresh and opt.name == name:
        if opt.settings != settings:
            opt.configure(*settings)
        return opt
    opt = Optimizer(model, *settings)
    model.optimizer = opt
    return opt


def from_arrays(model, arrays: dict, where: str) -> Optimizer:
    """The state written by ``Optimizer.arrays``, checked against ``model`` (ValueError
    naming ``where`` when it does not fit)."""
    try:
        config = json.loads(str(arrays["optimizer/config"][()]))
        name, hyper, t = config["name"], [float(h) for h in config["hyper"]], int(config["t"])
        s1, s2 = arrays["optimizer/s1"], arrays["optimizer/s2"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: the optimizer state is malformed ({exc})") from None
    if name not in NAMES or len(hyper) != 6 or t < 0:
        raise ValueError(f"{where}: the optimizer state is malformed (optimizer {name!r}, "
                         f"{len(hyper)} hyper-parameters, step {t})")
    mu, b1, b2, eps, wd, clip = hyper
    opt = Optimizer(model, name, **({"momentum": mu} if name == "momentum" else {}),
                    **({"betas": (b1, b2), "eps": eps} if name == "adam" else {}),
                    weight_decay=wd, clip_norm=clip or None)
    for mine, saved, what in ((opt.s1, s1, "s1"), (opt.s2, s2, "s2")):
        if saved.shape != mine.shape or saved.dtype.kind != "f":
            raise ValueError(f"{where}: optimizer state {what} has shape {saved.shape} "
                             f"({saved.dtype}), the model needs {mine.shape}")
        mine[...] = saved
    opt.t = t
    return opt
