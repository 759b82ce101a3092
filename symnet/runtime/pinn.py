"""Training with loss terms (PDE residuals and data) and the second-order methods.

A network declared with loss terms (``symnet.lang.pinn``) gets, per term, one
compiled function that runs the forward jets the term needs, the term, and the
reverse of all of it (∂L/∂θ) in one pass over its own data; its tangent along
v (the R-operator) gives H·v.  ``fit`` sums the terms, each the mean over its
data times its weight, and takes a step:

- ``method="sd"``: one full-batch step per epoch with ``optimizer`` "sgd",
  "momentum" or "adam", the model's optimizer (``symnet.runtime.optimizer``), whose
  state continues from fit to fit as for an ordinary network;
- ``method="lbfgs"``: SciPy's L-BFGS-B on the compiled loss and gradient
  (``epochs`` = its iterations);
- ``method="newton_cg"``: SciPy's Newton-CG with the exact compiled H·v.

L-BFGS and Newton-CG also train ordinary networks (targets (X, T)).
"""

from __future__ import annotations

import math
import time

import numpy as np

from .. import guards
from ..derive import jets
from .history import History
from .progress import Progress
from ..backend.c.jets import build_program_module, call_kernel
from .second_order import flat_vector
from .optimizer import for_model as optimizer_for

METHODS = ("sd", "lbfgs", "newton_cg")


class TermKernels:
    """The compiled functions of every loss term of a model's network."""

    def __init__(self, model):
        net, self.model = model.network, model
        params = model.meta["params"]
        active = {p["name"] for p in params if p.get("trainable", True)}
        functions, self.terms = [], net.terms
        self.programs = {}
        for term in net.terms:
            if model.stateful:
                raise NotImplementedError(f"loss term {term.name!r}: its input derivatives "
                                          "are not derived for networks with Dropout or "
                                          "BatchNorm (a training mode)")
            try:
                prog = jets.term_program(net, term, params)
            except jets.Unsupported as exc:
                raise NotImplementedError(exc.message(f"loss term {term.name!r}",
                                                      "its input derivatives are")) from None
            fwd = prog.ops
            rev = jets.reverse(prog, active)
            self.programs[term.name] = (prog, fwd, rev)
            from ..backend.c import jets as jets_c
            dtype = model.dtype.name
            functions.append((f"sn_{term.name}_grad",
                              jets_c.emit_function(prog, fwd + rev, f"sn_{term.name}_grad",
                                                   dtype)))
        self.active = active
        self.lib, self.ffi, self.c_source = build_program_module(
            functions, model.dtype.name, "terms")
        self.hv = None      # the H·v functions, built when first asked for

    def _build_hv(self):
        from ..backend.c import jets as jets_c
        functions = []
        for name, (prog, fwd, rev) in self.programs.items():
            fname = f"sn_{name}_hvp"
            functions.append((fname, jets_c.emit_function(
                prog, jets.tangent(prog, fwd + rev, self.active), fname,
                self.model.dtype.name)))
        self.hv = build_program_module(functions, self.model.dtype.name, "terms-hv")

    def term(self, name, X, T, scale, vec=None):
        if vec is None:
            return call_kernel(self.lib, self.ffi, f"sn_{name}_grad", self.model, X, T, scale)
        if self.hv is None:
            self._build_hv()
        lib, ffi, _ = self.hv
        return call_kernel(lib, ffi, f"sn_{name}_hvp", self.model, X, T, scale, vec=vec)


def term_kernels(model) -> TermKernels:
    if "_term_kernels" not in model.__dict__:
        model.__dict__["_term_kernels"] = TermKernels(model)
    return model.__dict__["_term_kernels"]


# ------------------------------------------------------------------- the data

def term_data(model, data, what: str = "fit") -> dict:
    """{term: (X, T or None)} checked against the network's terms (``what``: the
    call, for the messages)."""
    net = model.network
    names = [t.name for t in net.terms]
    if not isinstance(data, dict):
        raise ValueError(f"this network has loss terms {names}: give {what} a dict of their "
                         f"data, e.g. {what}(" + "{" + ", ".join(
                             f"{n!r}: {'(X, T)' if t.has_targets else 'X'}"
                             for n, t in zip(names, net.terms)) + "})")
    missing = [n for n in names if n not in data]
    unknown = sorted(set(data) - set(names))
    if missing or unknown:
        raise ValueError(f"{what}'s data names {sorted(data)} but the loss terms are {names}"
                         + (f"; no data for term(s) {missing}" if missing else "")
                         + (f"; unknown {unknown}" if unknown else ""))
    out = {}
    for t in net.terms:
        d = data[t.name]
        if t.has_targets:
            if not (isinstance(d, (tuple, list)) and len(d) == 2):
                raise ValueError(f"loss term {t.name!r} has targets: give its data as "
                                 f"(X, T), got {type(d).__name__}")
            X = model.as_matrix(d[0], f"X of term {t.name!r}", model.n_in, "the input")
            T = model.as_matrix(d[1], f"T of term {t.name!r}", model.n_out, "the outputs") \
                if np.ndim(d[1]) == 2 else \
                model.as_matrix(np.reshape(d[1], (-1, 1)), f"T of term {t.name!r}",
                              model.n_out, "the outputs")
            if T.shape[0] != X.shape[0]:
                raise ValueError(f"loss term {t.name!r}: T has {T.shape[0]} rows but X has "
                                 f"{X.shape[0]}")
        else:
            if isinstance(d, (tuple, list)) and len(d) == 2 and np.ndim(d[0]) == 2:
                raise ValueError(f"loss term {t.name!r} has no targets: give its inputs X "
                                 "only")
            X, T = model.as_matrix(d, f"X of term {t.name!r}", model.n_in, "the input"), None
        # refused as plain fit and loss refuse them: one NaN point made every parameter
        # NaN, and a loss of data with NaN in it means nothing
        guards.finite(X, f"X of term {t.name!r}", _after(what))
        if T is not None:
            guards.finite(T, f"T of term {t.name!r}", _after(what))
        out[t.name] = (X, T)
    return out


def _after(what: str) -> str:
    """The end of the message for data holding NaN or inf, as plain fit's and loss's."""
    return ("clean the data before training (nothing was changed)" if what == "fit"
            else "no loss is computed from it")


class Objective:
    """The weighted loss, its gradient and H·v on flat parameter vectors."""

    def __init__(self, model, data, what: str = "fit", method: str | None = None):
        self.model = model
        self.terms = {}
        if getattr(model.network, "terms", None):
            self.kernels = term_kernels(model)
            for t, (X, T) in term_data(model, data, what).items():
                w = next(x.weight for x in model.network.terms if x.name == t)
                self.terms[t] = (X, T, w)
        else:
            self.kernels = None
            X, T = model._finite_data(*data, _after(what))
            self.terms["loss"] = (X, T, 1.0)
            if method == "newton_cg":       # its H·v: refused before any step if not derived
                from .second_order import _kernels, _vector_input
                what = "fit(method='newton_cg')"
                try:
                    _vector_input(model, X, what)
                    _kernels(model, "grad", what)
                except NotImplementedError as exc:
                    raise NotImplementedError(f"{exc}; fit(method='lbfgs') needs only the "
                                              "gradient") from None
        self.last_terms = {}
        self.bar = None          # fit's Progress

    def loss_grad(self) -> tuple:
        m = self.model
        if self.kernels is None:
            X, T, _ = self.terms["loss"]
            L = m.loss_grad_rows(X, T)
            g = m.grad.copy()
            self.last_terms = {"loss": float(L)}
            return float(L), g
        total, grad = 0.0, np.zeros_like(m.theta)
        for t, (X, T, w) in self.terms.items():
            n = X.shape[0]
            L, g, _, _ = self.kernels.term(t, X, T, w / n)
            self.last_terms[t] = float(L) / n
            total += w * float(L) / n
            grad += g
        return total, grad

    def hessp(self, v) -> np.ndarray:
        m = self.model
        vec = np.ascontiguousarray(v, dtype=m.dtype)
        if self.kernels is None:
            from .second_order import _kernels
            X, T, _ = self.terms["loss"]
            return _kernels(m, "grad").call("sn_hvp", X, T, 1.0 / X.shape[0], vec=vec)[3]
        out = np.zeros_like(m.theta)
        for t, (X, T, w) in self.terms.items():
            out += self.kernels.term(t, X, T, w / X.shape[0], vec=vec)[3]
        return out


def loss_terms(model, data, what: str = "model.loss_terms") -> dict:
    """{term: mean over its points, ..., "loss": the weighted sum} (compiled)."""
    if not getattr(model.network, "terms", None):
        raise ValueError("model.loss_terms is for networks with loss terms (sn.d); use "
                         "model.loss(X, T) or model.evaluate(X, T)")
    obj = Objective(model, data, what)
    total, _ = obj.loss_grad()
    return dict(obj.last_terms, loss=total)


def terms_hessian_vector(model, data, v) -> dict:
    """H·v of the weighted loss terms (exact: the R-operator of the compiled pass)."""
    from .second_order import as_dict
    obj = Objective(model, data, "model.hessian_vector")
    return as_dict(model, obj.hessp(flat_vector(model, v)))


def _lr_at(lr, step):
    if callable(getattr(lr, "values", None)):
        return float(lr.values(step, 1)[0])
    if callable(lr):
        return float(lr(step))
    return float(lr)


def fit(model, data, method="sd", epochs=10, lr=0.1, optimizer="sgd", betas=None,
        eps=None, momentum=None, progress=None, callbacks=None, tol=None,
        reset_optimizer=False, **unused):
    """Train on loss terms, or by L-BFGS / Newton-CG; returns a History whose
    ``terms`` holds each term's loss per epoch.  ``reset_optimizer``: the model's
    optimizer state is dropped once the arguments and data are taken."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not available here: with loss terms or for "
                         f"second-order training, method is one of {', '.join(METHODS)}")
    # Model.fit's defaults of the options this fit has no use for (its batch_size is None
    # unless given: an explicit batch_size=32 is refused like any other)
    defaults = {"shuffle": True, "restore_best": True, "weight_decay": 0.0}
    given = sorted(k for k, v in unused.items()
                   if v is not None and not (k in defaults and v == defaults[k]))
    if given:
        raise ValueError(f"fit(method={method!r}) does not take {', '.join(given)} here")
    if method != "sd":
        bad = [k for k, v in (("optimizer", optimizer if optimizer != "sgd" else None),
                              ("betas", betas), ("eps", eps), ("momentum", momentum),
                              ("lr", None if lr in (None, 0.1) else lr)) if v is not None]
        if bad:
            raise ValueError(f"fit(method={method!r}) chooses its own steps (SciPy's line "
                             f"search): the options {', '.join(bad)} do not apply")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if method == "sd" and optimizer not in ("sgd", "momentum", "adam"):
        raise ValueError(f"optimizer must be 'sgd', 'momentum' or 'adam', got {optimizer!r}")
    obj = Objective(model, data, method=method)
    if reset_optimizer:
        model.reset_optimizer()
    hist = History(method=method)
    hist.terms = {t: [] for t in obj.terms}
    t0 = time.perf_counter()
    obj.bar = Progress(progress, epochs, method)     # a bar per epoch (iteration)
    try:
        if method == "sd":
            _fit_sd(model, obj, hist, epochs, lr, optimizer, betas, eps, momentum, callbacks)
        else:
            _fit_scipy(model, obj, hist, epochs, method, callbacks, tol)
    finally:
        obj.bar.close()
    hist.wall_time = time.perf_counter() - t0
    return hist


def _record(hist, obj, loss, lr=None, steps=1):
    hist.record_epoch(loss, lr=lr if lr is not None else [math.nan] * steps, steps=steps)
    for t, v in obj.last_terms.items():
        hist.terms[t].append(v)
    if obj.bar is not None:
        obj.bar.epoch(hist)


def _fit_sd(model, obj, hist, epochs, lr, optimizer, betas, eps, momentum, callbacks):
    # the model's optimizer (symnet.runtime.optimizer), as for an ordinary network: its
    # state (momentum, Adam's moments and step count) continues from fit to fit and
    # from step to step, is saved with the model, and starts afresh with
    # reset_optimizer=True, model.reset_optimizer() or another optimizer
    opt = optimizer_for(model, optimizer, momentum, betas, eps)
    try:
        for step in range(1, epochs + 1):
            loss, g = obj.loss_grad()
            if not math.isfinite(loss):
                hist.stopped = "diverged"
                break
            eta = _lr_at(lr, step - 1)
            sd_update(model, opt, g, eta)
            _record(hist, obj, loss, lr=[eta])
            if callbacks and any(cb(hist) for cb in callbacks):
                hist.stopped = "callback"
                break
    except KeyboardInterrupt:
        hist.stopped = "interrupted"


def sd_update(model, opt, g, eta):
    """θ updated from the gradient ``g`` by the model's optimizer ``opt`` with step
    size ``eta``: the compiled update of ordinary networks (``Optimizer.apply``)."""
    with model.lock:
        model.grad[...] = g
        opt.apply_locked(model, eta)


def _fit_scipy(model, obj, hist, epochs, method, callbacks, tol):
    try:
        from scipy.optimize import minimize
    except ImportError:   # pragma: no cover - scipy is a dependency
        raise ImportError(f"fit(method={method!r}) needs SciPy: pip install scipy") from None
    theta = model.theta
    x0 = theta.astype(np.float64)
    state = {"best": (math.inf, x0.copy())}

    def put(x):
        with model.lock:
            theta[...] = x.astype(theta.dtype)

    def fun(x):
        put(x)
        loss, g = obj.loss_grad()
        if loss < state["best"][0]:
            state["best"] = (loss, x.copy())
        state["last"] = (x.copy(), loss, dict(obj.last_terms))
        return loss, g.astype(np.float64)

    def hessp(x, p):
        put(x)
        return obj.hessp(p).astype(np.float64)

    class Stop(Exception):
        pass

    def callback(xk, *args):
        last = state.get("last")
        if last is not None and np.array_equal(last[0], xk):
            loss, obj.last_terms = last[1], dict(last[2])   # the line search's last point
        else:
            loss, _ = fun(xk)
        _record(hist, obj, loss)
        if callbacks and any(cb(hist) for cb in callbacks):
            hist.stopped = "callback"
            raise Stop

    opts = {"maxiter": epochs}
    try:
        if method == "lbfgs":
            res = minimize(fun, x0, jac=True, method="L-BFGS-B", callback=callback, tol=tol,
                           options=dict(opts, maxfun=epochs * 4, maxcor=50, maxls=50,
                                        ftol=1.0 * np.finfo(float).eps,
                                        gtol=1e-12))
        else:
            res = minimize(fun, x0, jac=True, hessp=hessp, method="Newton-CG",
                           callback=callback, tol=tol, options=opts)
        put(res.x)
        hist.message = str(res.message)
    except Stop:
        put(state["best"][1])
    except KeyboardInterrupt:
        hist.stopped = "interrupted"
        put(state["best"][1])
