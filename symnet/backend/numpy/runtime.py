"""The NumPy backend's runtime: the calls of ``symnet.backend.c.Runtime`` with the
same arguments and results, computed by ``execute.Compiled``."""

from __future__ import annotations

import math

import numpy as np

from ..common import plan_meta, work_size
from .execute import Compiled


class Runtime:
    """One network's plan for one dtype run with NumPy, with its own parameters
    (``params``, ``grads``: flat θ and ∂L/∂θ).  See ``symnet.backend``."""

    backend = "numpy"
    tuning = None

    def __init__(self, plan, meta: dict):
        self.meta = meta
        self.dtype = np.dtype(meta["dtype"])
        self.plan = plan
        self.program = Compiled(plan, meta["dtype"])
        self.n_params, self.n_in, self.n_out = meta["n_params"], meta["n_in"], meta["n_out"]
        self.n_trainable = meta["n_trainable"]
        self.params = np.zeros(self.n_params, self.dtype)
        self.grads = np.zeros(self.n_params, self.dtype)
        self.work_rows = 0
        self.work = np.zeros(0, self.dtype)       # the scratch of the last call

    @property
    def c_source(self) -> str:
        """The C the C backend compiles for this plan (rendered when asked)."""
        if "c_source" not in self.meta:
            from ..c.runtime import render
            self.meta["c_source"] = render(self.plan, self.meta["dtype"], hooks=True)[0]
        return self.meta["c_source"]

    def work_size(self, batch: int) -> int:
        return work_size(self.meta, batch)

    def reserve(self, rows: int):
        self.work_rows = max(self.work_rows, rows)

    # ------------------------------------------------------------ the arrays
    def _env(self, params, grads, X, T, batch: int) -> dict:
        """name → array for every buffer of the plan: views of θ and ∂L/∂θ, X, T,
        fresh work arrays, aliases as reshaped views."""
        env = {}
        # the work buffers as views of one flat array laid out as the C's (each at
        # batch·offset): BatchNorm's batch sums are read from it after a step
        work = self.work = np.zeros(work_size(self.meta, batch), self.dtype)
        for name, buf in self.plan.buffers.items():
            if buf.kind in ("param", "grad"):
                flat = params if buf.kind == "param" else grads
                if flat is None:
                    continue
                size = math.prod(buf.shape)
                env[name] = flat[buf.offset:buf.offset + size].reshape(buf.shape)
            elif buf.kind == "input":
                env[name] = X.reshape(batch, *buf.shape[1:])
            elif buf.kind == "target":
                if T is not None:
                    env[name] = T.reshape(batch, *buf.shape[1:]) \
                        if T.shape[1] == self.n_out else T
            elif buf.kind == "work":
                size = batch * math.prod(buf.shape[1:])
                env[name] = work[batch * buf.offset:batch * buf.offset + size].reshape(
                    batch, *buf.shape[1:])
        for name, buf in self.plan.buffers.items():
            if buf.kind == "alias":
                env[name] = env[buf.alias].reshape(batch, *buf.shape[1:])
        return env

    def _labels(self, T) -> bool:
        return T.shape[1] != self.n_out

    def _outputs(self, env, batch, out):
        col = 0
        for name, _, width in self.meta["outputs"]:
            out[:, col:col + width] = env[name].reshape(batch, -1)
            col += width
        return out

    # --------------------------------------------------------------- calls
    def forward(self, X, out=None) -> np.ndarray:
        n = X.shape[0]
        env = self._env(self.params, None, X, None, n)
        self.program.run(self.plan.forward, env, n)
        return self._outputs(env, n, np.empty((n, self.n_out), self.dtype)
                             if out is None else out)

    def loss(self, X, T) -> float:
        n = X.shape[0]
        env = self._env(self.params, None, X, T, n)
        p = self.program
        p.run(self.plan.forward, env, n)
        loss = p.run(self.plan.loss_labels if self._labels(T) else self.plan.loss, env, n)
        return float(self.dtype.type(loss / n))

    def _loss_grad(self, params, grads, X, T):
        n = X.shape[0]
        env = self._env(params, grads, X, T, n)
        p = self.program
        p.run(self.plan.forward, env, n)
        loss = p.run(self.plan.backward_labels if self._labels(T) else self.plan.backward,
                     env, n)
        return loss / n, env

    def loss_grad(self, X, T) -> float:
        return float(self.dtype.type(self._loss_grad(self.params, self.grads, X, T)[0]))

    def step(self, X, T, lr: float) -> float:
        grads = np.zeros(self.n_params, self.dtype)
        loss = self._loss_grad(self.params, grads, X, T)[0]
        if not (math.isfinite(loss) and np.isfinite(grads[:self.n_trainable]).all()):
            return math.nan                  # as the C: the step is not taken
        _update(self.params, self.params, grads, self.dtype.type(lr), 0, None, None,
                np.zeros(6), 0, self.n_trainable)
        return float(self.dtype.type(loss))

    def update(self, lr: float, optimizer: int, s1, s2, hyper, t: int):
        _update(self.params, self.params, self.grads, self.dtype.type(lr), optimizer, s1, s2,
                hyper, t, self.n_trainable)

    @property
    def train_work(self) -> np.ndarray:
        return self.work

    def train_epoch(self, X, T, idx, batch_size: int, lrs, losses, optimizer: int, s1, s2,
                    hyper, t0: int, prev, have_prev, correct=None) -> int:
        """As the C's ``train``: gather each batch, loss and gradients, stop before
        the update at a non-finite loss (θ restored from prev), update."""
        theta, grads = self.params, np.zeros(self.n_params, self.dtype)
        kind = self.meta.get("accuracy")
        s = 0
        for start in range(0, idx.size, batch_size):
            rows = idx[start:start + batch_size]
            Ib, Tb = X[rows], T[rows]
            loss, env = self._loss_grad(theta, grads, Ib, Tb)
            if not math.isfinite(loss):
                if have_prev[0]:
                    theta[...] = prev
                return s
            prev[...] = theta
            _update(theta, theta, grads, self.dtype.type(lrs[s]), optimizer, s1, s2, hyper,
                    t0 + s + 1, self.n_trainable)
            have_prev[0] = 1
            losses[s] = loss
            if correct is not None and kind is not None:
                O = self._outputs(env, rows.size, np.empty((rows.size, self.n_out),
                                                           self.dtype))
                correct[s] = _correct(kind, O, Tb, self.n_out, self.meta.get("classes"),
                                      self.meta.get("classes_first", False))
            s += 1
        return s


def _correct(kind: str, O, T, n_out: int, classes=None, first=False) -> float:
    """Examples classified right, as the C counts them (``classes``: a class per
    position, each example counting the share of its positions right; ``first``: the
    classes are the first axis)."""
    if kind == "argmax":
        if classes is not None and classes != n_out:       # positions of `classes`
            positions = n_out // classes

            def rows(A):
                return (A.reshape(A.shape[0], classes, positions).transpose(0, 2, 1)
                        if first else A).reshape(-1, classes)
            if T.shape[1] == positions:                    # labels; −1: no target
                want = T.reshape(-1).astype(np.int64)
                labeled = want >= 0
            else:                                          # rows; zeros: no target
                want = rows(T).argmax(axis=1)
                labeled = rows(T).sum(axis=1) != 0
            right = (rows(O).argmax(axis=1) == want) & labeled
            count = int(labeled.sum())
            return float(np.sum(right)) * O.shape[0] / count if count else math.nan
        want = T[:, 0].astype(np.int64) if T.shape[1] != n_out else T.argmax(axis=1)
        return float(np.sum(O.argmax(axis=1) == want))
    return float(np.sum(((O > 0.5) == (T > 0.5)).astype(np.float64) / n_out))


def _update(src, dst, grads, lr, optimizer, s1, s2, hyper, t, n):
    """The C's ``sn_update`` over the first ``n`` (trainable) parameters."""
    real = src.dtype.type
    g, th = grads[:n], src[:n]
    wd = real(hyper[4])
    c = real(1)
    if hyper[5] > 0:
        norm = math.sqrt(float(np.sum(g.astype(np.float64) ** 2)))
        if norm > hyper[5]:
            c = real(hyper[5] / norm)
    if optimizer == 0 and wd == 0 and c == 1:
        dst[:n] = th - lr * g
    elif optimizer == 0:
        dst[:n] = th - lr * (c * g + wd * th)
    elif optimizer == 1:
        s1[:n] = real(hyper[0]) * s1[:n] + (c * g + wd * th)
        dst[:n] = th - lr * s1[:n]
    else:
        b1, b2, eps = real(hyper[1]), real(hyper[2]), real(hyper[3])
        c1, c2 = real(1.0 - hyper[1] ** float(t)), real(1.0 - hyper[2] ** float(t))
        gc = c * g
        s1[:n] = b1 * s1[:n] + (1 - b1) * gc
        s2[:n] = b2 * s2[:n] + (1 - b2) * (gc * gc)
        dst[:n] = th - lr * ((s1[:n] / c1) / (np.sqrt(s2[:n] / c2) + eps) + wd * th)


def load(net, dtype: str, tune: str = "fast") -> Runtime:
    """The runtime of a network: derived and planned (no cache: nothing is built;
    ``tune`` is the C backend's and has no meaning here)."""
    from ...plan.lower import plan as make_plan
    plan = make_plan(net.graph())
    return Runtime(plan, plan_meta(plan, net.describe(), dtype))
