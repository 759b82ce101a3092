"""Step-size schedules eta_t for gradient descent.

A schedule is called with the step number t = 0, 1, 2, ... and returns the step
size as a float; ``values(t0, n)`` returns n consecutive values as a float64
array (what a compiled training loop wants for a whole epoch at once).

The Robbins–Monro conditions, sum_t eta_t = inf and sum_t eta_t^2 < inf, are
the classical sufficient conditions on the step sizes for stochastic gradient
descent to converge (to a stationary point); each schedule says whether it
meets them in its ``robbins_monro`` property and in its printed form.

>>> s = RobbinsMonro(0.1, tau=100)
>>> s(0), s(100)
(0.1, 0.05)
>>> s.values(0, 3).round(6).tolist()
[0.1, 0.09901, 0.098039]
>>> s.robbins_monro
True
>>> print(s)
RobbinsMonro(eta0=0.1, tau=100): eta_t = 0.1/(1 + t/100)  [Robbins–Monro: sum eta = inf, sum eta^2 < inf]
>>> as_schedule(0.01)
Constant(lr=0.01): eta_t = 0.01  [not Robbins–Monro: sum eta^2 = inf]
>>> from_dict(s.to_dict()) == s
True
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "Schedule", "Constant", "RobbinsMonro", "PowerDecay", "StepDecay",
    "Exponential", "Cosine", "as_schedule", "from_dict",
]


def _fmt(x) -> str:
    """Short, exact text for a number: 100 -> '100', 0.1 -> '0.1'."""
    x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _check(cls: str, name: str, value, lo=None, hi=None, lo_open=True,
           hi_open=False, integer=False):
    """Validate a real argument against an interval; return it as float/int."""
    rng = (("(" if lo_open else "[") + ("-inf" if lo is None else _fmt(lo)) + ", "
           + ("inf" if hi is None else _fmt(hi)) + (")" if hi_open or hi is None else "]"))
    what = "an integer" if integer else "a real number"
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or (integer and not isinstance(value, numbers.Integral))):
        raise ValueError(f"{cls}: {name} must be {what} in {rng}, got {value!r}")
    v = float(value)
    ok = math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        raise ValueError(f"{cls}: {name} must be {what} in {rng}, got {value!r}")
    return int(value) if integer else v


def _check_t(t, name="t"):
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not t >= 0 \
            or not math.isfinite(float(t)):
        raise ValueError(f"step {name} must be a real number >= 0, got {t!r}")
    return t


class Schedule:
    """Base class. Subclasses define ``_eval(t)`` on a float64 array of steps,
    ``_params`` (constructor arguments, in order), ``formula`` and
    ``_rm_reason``."""

    _params: tuple = ()

    def _eval(self, t: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, t) -> float:
        """Step size at step ``t`` (t >= 0)."""
        _check_t(t)
        return float(self._eval(np.asarray([t], dtype=np.float64))[0])

    def values(self, t0: int, n: int) -> np.ndarray:
        """Step sizes at steps t0, t0+1, ..., t0+n-1 as a float64 array."""
        _check_t(t0, "t0")
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        t = np.arange(int(n), dtype=np.float64) + float(t0)
        return np.ascontiguousarray(self._eval(t), dtype=np.float64)

    @property
    def robbins_monro(self) -> bool:
        """True when sum eta_t = inf and sum eta_t^2 < inf."""
        return self._rm_reason() is None

    def _rm_reason(self):
        """None when Robbins–Monro holds, else the condition that fails."""
        raise NotImplementedError  # pragma: no cover

    @property
    def formula(self) -> str:  # pragma: no cover
        raise NotImplementedError

    def to_dict(self) -> dict:
        """Plain dict (JSON-friendly) that ``from_dict`` turns back into this."""
        return {"type": type(self).__name__,
                **{k: getattr(self, k) for k in self._params}}

    def __eq__(self, other):
        return isinstance(other, Schedule) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(tuple(sorted(self.to_dict().items())))

    def __repr__(self):
        args = ", ".join(f"{k}={_fmt(getattr(self, k))}" for k in self._params)
        reason = self._rm_reason()
        rm = ("Robbins–Monro: sum eta = inf, sum eta^2 < inf" if reason is None
              else f"not Robbins–Monro: {reason}")
        return f"{type(self).__name__}({args}): eta_t = {self.formula}  [{rm}]"

    __str__ = __repr__


class Constant(Schedule):
    """eta_t = lr.  ``Constant(0.1)(1000) == 0.1``"""

    _params = ("lr",)

    def __init__(self, lr: float):
        self.lr = _check("Constant", "lr", lr, lo=0)

    def _eval(self, t):
        return np.full(t.shape, self.lr)

    @property
    def formula(self):
        return _fmt(self.lr)

    def _rm_reason(self):
        return "sum eta^2 = inf"


class PowerDecay(Schedule):
    """eta_t = eta0 / (1 + t/tau)^p with 0 < p <= 1.

    Robbins–Monro exactly when 1/2 < p <= 1 (p = 1 is ``RobbinsMonro``).

    >>> PowerDecay(1.0, tau=1, p=0.5)(3)
    0.5
    """

    _params = ("eta0", "tau", "p")

    def __init__(self, eta0: float, tau: float, p: float):
        name = type(self).__name__
        self.eta0 = _check(name, "eta0", eta0, lo=0)
        self.tau = _check(name, "tau", tau, lo=0)
        self.p = _check(name, "p", p, lo=0, hi=1)

    def _eval(self, t):
        base = 1.0 + t / self.tau
        return self.eta0 / (base if self.p == 1.0 else base ** self.p)

    @property
    def formula(self):
        return f"{_fmt(self.eta0)}/(1 + t/{_fmt(self.tau)})^{_fmt(self.p)}"

    def _rm_reason(self):
        return None if self.p > 0.5 else "sum eta^2 = inf (needs p > 1/2)"


class RobbinsMonro(PowerDecay):
    """eta_t = eta0 / (1 + t/tau): the textbook Robbins–Monro schedule.

    >>> RobbinsMonro(0.1, 100)(100)
    0.05
    """

    _params = ("eta0", "tau")

    def __init__(self, eta0: float, tau: float):
        super().__init__(eta0, tau, 1.0)

    @property
    def formula(self):
        return f"{_fmt(self.eta0)}/(1 + t/{_fmt(self.tau)})"


class StepDecay(Schedule):
    """eta_t = eta0 * drop^floor(t/every), 0 < drop <= 1, every >= 1 steps.

    >>> StepDecay(1.0, drop=0.5, every=10)(25)
    0.25
    """

    _params = ("eta0", "drop", "every")

    def __init__(self, eta0: float, drop: float, every: int):
        self.eta0 = _check("StepDecay", "eta0", eta0, lo=0)
        self.drop = _check("StepDecay", "drop", drop, lo=0, hi=1)
        self.every = _check("StepDecay", "every", every, lo=1, lo_open=False,
                            integer=True)

    def _eval(self, t):
        return self.eta0 * self.drop ** np.floor(t / self.every)

    @property
    def formula(self):
        return f"{_fmt(self.eta0)} * {_fmt(self.drop)}^floor(t/{self.every})"

    def _rm_reason(self):
        return "sum eta^2 = inf" if self.drop == 1.0 else "sum eta < inf"


class Exponential(Schedule):
    """eta_t = eta0 * gamma^t, 0 < gamma <= 1.

    >>> Exponential(1.0, gamma=0.5)(3)
    0.125
    """

    _params = ("eta0", "gamma")

    def __init__(self, eta0: float, gamma: float):
        self.eta0 = _check("Exponential", "eta0", eta0, lo=0)
        self.gamma = _check("Exponential", "gamma", gamma, lo=0, hi=1)

    def _eval(self, t):
        return self.eta0 * self.gamma ** t

    @property
    def formula(self):
        return f"{_fmt(self.eta0)} * {_fmt(self.gamma)}^t"

    def _rm_reason(self):
        return "sum eta^2 = inf" if self.gamma == 1.0 else "sum eta < inf"


class Cosine(Schedule):
    """Cosine annealing from eta0 down to eta_min over total_steps steps:
    eta_t = eta_min + (eta0 - eta_min)(1 + cos(pi t/T))/2 for t <= T,
    and eta_min after that.

    >>> Cosine(1.0, total_steps=10)(5)
    0.5
    """

    _params = ("eta0", "total_steps", "eta_min")

    def __init__(self, eta0: float, total_steps: int, eta_min: float = 0.0):
        self.eta0 = _check("Cosine", "eta0", eta0, lo=0)
        self.total_steps = _check("Cosine", "total_steps", total_steps, lo=1,
                                  lo_open=False, integer=True)
        self.eta_min = _check("Cosine", "eta_min", eta_min, lo=0,
                              lo_open=False, hi=self.eta0)

    def _eval(self, t):
        frac = np.minimum(t, self.total_steps) / self.total_steps
        return self.eta_min + 0.5 * (self.eta0 - self.eta_min) * (1.0 + np.cos(np.pi * frac))

    @property
    def formula(self):
        T = self.total_steps
        a, m = _fmt(self.eta0), _fmt(self.eta_min)
        return (f"{m} + ({a} - {m})(1 + cos(pi t/{T}))/2 for t <= {T}, "
                f"{m} after")

    def _rm_reason(self):
        return "sum eta^2 = inf" if self.eta_min > 0 else "sum eta < inf"


_REGISTRY = {c.__name__: c for c in
             (Constant, RobbinsMonro, PowerDecay, StepDecay, Exponential, Cosine)}


def from_dict(d: dict) -> Schedule:
    """Rebuild a schedule from ``Schedule.to_dict()`` output."""
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError(f"from_dict expects a dict with a 'type' key, got {d!r}")
    kind = d["type"]
    if kind not in _REGISTRY:
        raise ValueError(f"unknown schedule type {kind!r}; expected one of "
                         f"{sorted(_REGISTRY)}")
    return _REGISTRY[kind](**{k: v for k, v in d.items() if k != "type"})


def as_schedule(x) -> Schedule:
    """A schedule from ``x``: a ``Schedule`` is returned as is, a positive
    number becomes ``Constant(x)``.

    >>> as_schedule(0.5)(7)
    0.5
    """
    if isinstance(x, Schedule):
        return x
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return Constant(x)
    raise TypeError(
        f"a step size must be a positive number or a symnet.runtime.schedules.Schedule "
        f"(Constant, RobbinsMonro, PowerDecay, StepDecay, Exponential, Cosine), "
        f"got {type(x).__name__}: {x!r}")
