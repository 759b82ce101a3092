"""The Model that ``net.compile()`` returns: the compiled core (``symnet.runtime.model``)
with the calls that hand it to the later stages: ``fit`` (``symnet.runtime.train``,
``symnet.runtime.distributed``), ``predict`` and ``evaluate`` (``symnet.runtime.predict``),
``save`` (``symnet.io.files``), ``export_c`` (``symnet.backend.c.export``), ``summary``
(``symnet.read.summary``).  Each is imported when first called, so loading a cached
model imports none of them (nor sympy).

>>> import numpy as np, symnet as sn
>>> model = sn.Network(sn.Input(2), sn.Dense(1), loss="mse").compile(dtype="float64")
>>> isinstance(model, Model), model.evaluate(np.zeros((2, 2)), np.zeros((2, 1)))["loss"]
(True, 0.0)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from ..runtime import model as core


class Model(core.Model):
    """A network compiled to C for one dtype, with its parameters; see
    ``symnet.runtime.model.Model`` for the kernels' calls (``forward``, ``loss``,
    ``loss_and_grad``, ``step``) and their thread safety."""

    # ---------------------------------------------------------------- training
    def fit(self, X, T=None, method=None, epochs=10, batch_size=None, lr=0.1, shuffle=True,
            seed=None, validation_data=None, progress=None, optimizer="sgd", momentum=None,
            betas=None, eps=None, weight_decay=0.0, clip_norm=None, early_stopping=None,
            restore_best=True, validation_split=None, callbacks=None, comm=None,
            reset_optimizer=False):
        """Train in place; returns a ``symnet.History``.

        ``method``: ``"sd"`` (one full-batch step per epoch), ``"sgd"`` (N steps per
        epoch, each on one example drawn at random) or ``"minibatch"`` (each epoch a
        shuffle cut into batches of ``batch_size``, 32 unless given; the default; sd
        and sgd warn that a ``batch_size`` given is not used); ``"lbfgs"`` (SciPy's
        L-BFGS-B on the compiled loss and gradient) or ``"newton_cg"`` (SciPy's
        Newton-CG with the exact compiled H·v), ``epochs`` their iterations.  A network
        with loss terms (``sn.d``) takes one dict of each term's data, ``fit({"pde": X,
        "data": (X_b, T_b)}, method="sd", optimizer="adam", ...)``, and methods sd (its
        default), lbfgs and newton_cg; its History has ``terms`` (see ``symnet.runtime.pinn``).  ``lr``: a float or a
        ``symnet.runtime.schedules`` schedule of the step number.  ``optimizer``: ``"sgd"``,
        ``"momentum"`` (``momentum=0.9``) or ``"adam"`` (``betas=(0.9, 0.999)``,
        ``eps=1e-8``); its state (momentum, Adam's moments and step count) is kept by
        the model, so a second ``fit`` (or ``step(..., optimizer=...)``) continues
        it; ``reset_optimizer=True`` starts afresh (as ``model.reset_optimizer()``
        does; with ``comm`` every call starts afresh).  The same ``seed`` gives
        bit-identical parameters.  See
        ``symnet.runtime.train`` for the exact rules, divergence and Ctrl-C handling.
        ``comm``: an mpi4py communicator; each process passes its own part of the
        data and the step gradient is the mean over all parts (``symnet.runtime.distributed``).

        Inside the compiled step: ``weight_decay`` λ (L2: g + λθ; decoupled for Adam,
        as AdamW) and ``clip_norm`` c (g·min(1, c/‖g‖₂) before anything else).
        ``early_stopping=p`` stops after p epochs without a new lowest validation loss
        (training loss without validation data) and, with ``restore_best``, puts the
        best epoch's parameters back when fit ends (also after all epochs; not after
        Ctrl-C); ``validation_split=f`` holds out the last
        fraction f of the rows; ``callbacks``: functions of the History called after
        each epoch, True stops.  See ``symnet.runtime.stopping``.
        A network with no trainable parameters (fixed formula layers, or every layer
        ``trainable=False``) still runs its epochs, after one RuntimeWarning.

        >>> import symnet as sn
        >>> X, T = sn.datasets.xor()
        >>> net = sn.Network(sn.Input(2), sn.Dense(8, "tanh"), sn.Dense(1, "sigmoid"),
        ...                  loss="bce")
        >>> hist = net.compile(seed=0).fit(X, T, method="minibatch", batch_size=2,
        ...                                epochs=5, lr=0.5, seed=0, progress=False)
        >>> hist.epochs, hist.steps
        (5, 10)
        """
        if not self.meta["n_trainable"]:
            # every layer fixed (a formula without parameters) or trainable=False: the
            # epochs would run, losses and all, and change nothing
            warnings.warn("fit: the network has no trainable parameters (every layer has "
                          "none or is trainable=False); training changes nothing",
                          RuntimeWarning, stacklevel=2)
        if method is None:      # a network of loss terms has no minibatches to cut
            method = "sd" if getattr(self.network, "terms", None) else "minibatch"
        if getattr(self.network, "terms", None) or method in ("lbfgs", "newton_cg"):
            # loss terms (sn.d, PDE residuals), L-BFGS and Newton-CG: symnet.runtime.pinn
            from ..runtime.pinn import fit as fit_terms
            data = X if getattr(self.network, "terms", None) else (X, T)
            if T is not None and getattr(self.network, "terms", None):
                raise ValueError("this network has loss terms: give fit one dict of each "
                                 "term's data, e.g. fit({'pde': X, 'data': (X_b, T_b)})")
            return fit_terms(self, data, method=method, epochs=epochs, lr=lr,
                             optimizer=optimizer, betas=betas, eps=eps, momentum=momentum,
                             progress=progress, callbacks=callbacks, batch_size=batch_size,
                             shuffle=shuffle, seed=seed, validation_data=validation_data,
                             weight_decay=weight_decay, clip_norm=clip_norm,
                             early_stopping=early_stopping, restore_best=restore_best,
                             validation_split=validation_split, comm=comm,
                             reset_optimizer=reset_optimizer)
        if T is None:
            raise ValueError("fit(X, T): the targets T are missing")
        if batch_size is None:
            batch_size = 32
        elif method in ("sd", "sgd"):
            # a batch_size given to sd or sgd was dropped without a word
            each = "the whole training set" if method == "sd" else "one example"
            warnings.warn(f"fit(method={method!r}): batch_size={batch_size!r} is not used; "
                          f"each step takes {each} (method='minibatch' cuts batches of "
                          f"batch_size)", UserWarning, stacklevel=2)
        if comm is not None:
            from ..runtime.distributed import fit as fit_distributed
            return fit_distributed(self, X, T, comm, method=method, epochs=epochs,
                                   batch_size=batch_size, lr=lr, shuffle=shuffle, seed=seed,
                                   validation_data=validation_data, progress=progress,
                                   optimizer=optimizer, momentum=momentum, betas=betas,
                                   eps=eps, weight_decay=weight_decay, clip_norm=clip_norm,
                                   early_stopping=early_stopping, restore_best=restore_best,
                                   validation_split=validation_split, callbacks=callbacks,
                                   reset_optimizer=reset_optimizer)
        from ..runtime.train import fit
        return fit(self, X, T, method=method, epochs=epochs, batch_size=batch_size, lr=lr,
                   shuffle=shuffle, seed=seed, validation_data=validation_data,
                   progress=progress, optimizer=optimizer, momentum=momentum, betas=betas,
                   eps=eps, weight_decay=weight_decay, clip_norm=clip_norm,
                   early_stopping=early_stopping, restore_best=restore_best,
                   validation_split=validation_split, callbacks=callbacks,
                   reset_optimizer=reset_optimizer)    # after its checks: a refused call
                                                       # keeps the optimizer's state

    # ------------------------------------------------------------- using it
    def predict(self, X, batch_size=None) -> np.ndarray:
        """Probabilities for a classification head (softmax of the output for
        ``softmax_cross_entropy``, the sigmoid output for ``bce``), the output
        otherwise; any number of rows, ``batch_size`` per kernel call.  Several
        outputs: a list, one array per output, each by its own loss.  See
        ``symnet.runtime.predict``."""
        from ..runtime.predict import predict
        return predict(self, X, batch_size)

    def predict_proba(self, X, batch_size=None) -> np.ndarray:
        """Class probabilities (classification losses only), as ``predict``."""
        from ..runtime.predict import predict_proba
        return predict_proba(self, X, batch_size)

    def predict_classes(self, X, batch_size=None) -> np.ndarray:
        """Class per example: argmax for ``softmax_cross_entropy`` ((N,) ints),
        output > 0.5 for ``bce``; several outputs (each with one of these losses):
        a list, one array per output."""
        from ..runtime.predict import predict_classes
        return predict_classes(self, X, batch_size)

    def loss(self, X, T=None) -> float:
        """Mean over the batch of the per-example loss (see ``symnet.runtime.model``).
        A network with loss terms (``sn.d``): ``loss(data)``, data as in ``fit``, the
        weighted sum of the terms, each the mean over its points."""
        if getattr(self.network, "terms", None):
            if T is not None:
                raise ValueError(self._terms_data("loss"))
            from ..runtime.pinn import loss_terms
            return loss_terms(self, X, "model.loss")["loss"]
        if T is None:
            raise ValueError("loss(X, T): the targets T are missing")
        return super().loss(X, T)

    def evaluate(self, X, T=None, batch_size=None) -> dict:
        """``{"loss", "accuracy"}`` for classification, ``{"loss", "mse", "mae"}``
        otherwise, over all of (X, T) in chunks; no step is taken.  A network with loss
        terms: ``evaluate(data)``, data as in ``fit``: each term (the mean over its
        points) and the weighted ``"loss"``, as ``loss_terms``.

        >>> import numpy as np, symnet as sn
        >>> m = sn.Network(sn.Input(1), sn.Dense(1), loss="mse").compile(dtype="float64")
        >>> m.params["W1"] = [[2.0]]
        >>> m.evaluate(np.array([[1.0], [2.0]]), np.array([2.0, 3.0]))
        {'loss': 0.5, 'mse': 0.5, 'mae': 0.5}
        """
        if getattr(self.network, "terms", None):
            if T is not None:
                raise ValueError(self._terms_data("evaluate"))
            from ..runtime.pinn import loss_terms
            return loss_terms(self, X, "model.evaluate")
        if T is None:
            raise ValueError("evaluate(X, T): the targets T are missing")
        from ..runtime.predict import evaluate
        return evaluate(self, X, T, batch_size)

    # ------------------------------------------------ input derivatives, H·v
    def input_grad(self, X, T) -> np.ndarray:
        """∂L/∂X of the mean loss, shaped as X was given (compiled: the jets, or the
        network's own reverse pass for convolutions, tensor or several inputs, softmax
        cross-entropy; ``symnet.runtime.second_order``)."""
        self._no_terms("input_grad")
        if T is None:
            raise ValueError("model.input_grad(X, T): the targets T are missing (∂L/∂X is "
                             "the gradient of the loss, which needs them)")
        from ..runtime.second_order import input_grad
        return input_grad(self, X, T)

    def jacobian(self, X) -> np.ndarray:
        """∂O/∂X per example, (batch, n_out, n_in) (a tensor input keeps its shape),
        from compiled forward jets or the reverse pass seeded per output unit."""
        from ..runtime.second_order import jacobian
        return jacobian(self, X)

    def hessian(self, X) -> np.ndarray:
        """∂²O/∂X² per example of a one-output network, (batch, n_in, n_in)."""
        from ..runtime.second_order import hessian
        return hessian(self, X)

    def hessian_vector(self, X, T=None, v=None) -> dict:
        """H·v, H the exact Hessian of the mean loss in the parameters, v a dict like
        ``params`` (R-operator of the compiled gradient, never finite differences).
        For a network with loss terms: ``hessian_vector(data, v)``, data as in ``fit``."""
        if getattr(self.network, "terms", None):
            if v is not None:
                raise ValueError("model.hessian_vector(data, v): this network's loss is its "
                                 "terms, whose targets are in data ({'term': (X, T)}); got "
                                 "three arguments (X, T, v)")
            if T is None:
                raise ValueError("model.hessian_vector(data, v): the vector v is missing")
            from ..runtime.pinn import terms_hessian_vector
            return terms_hessian_vector(self, X, T)
        T, v = self._targets_and_vector("hessian_vector", T, v)
        from ..runtime.second_order import hessian_vector
        return hessian_vector(self, X, T, v)

    def gauss_newton_vector(self, X, T=None, v=None) -> dict:
        """G·v with G = Jᵀ H_L J the Gauss–Newton matrix of the mean loss."""
        self._no_terms("gauss_newton_vector")
        T, v = self._targets_and_vector("gauss_newton_vector", T, v)
        from ..runtime.second_order import hessian_vector
        return hessian_vector(self, X, T, v, gauss_newton=True)

    def _targets_and_vector(self, what, T, v):
        """(T, v) of ``model.<what>(X, T, v)``, or ValueError saying which is missing
        (a dict of parameter names given as T is v with T forgotten)."""
        call = f"model.{what}(X, T, v)"
        if T is None:
            raise ValueError(f"{call}: the targets T are missing")
        if v is None:
            if isinstance(T, Mapping) and T and set(T) <= set(self.params):
                raise ValueError(f"{call}: the targets T are missing (the dict of "
                                 f"parameters {sorted(T)} given second is read as T)")
            raise ValueError(f"{call}: the vector v (a dict like model.params) is missing")
        return T, v

    def loss_terms(self, data) -> dict:
        """For a network with loss terms: each term (mean over its points) and the
        weighted total ``"loss"``, for data as in ``fit``."""
        from ..runtime.pinn import loss_terms
        return loss_terms(self, data)

    def _terms_data(self, what) -> str:
        names = [t.name for t in self.network.terms]
        return (f"model.{what}: this network's loss is its terms {names}: give one dict of "
                f"each term's data, e.g. model.{what}(" + "{"
                + ", ".join(f"{t.name!r}: {'(X, T)' if t.has_targets else 'X'}"
                            for t in self.network.terms) + "})")

    def _no_terms(self, what):
        if getattr(self.network, "terms", None):
            raise ValueError(f"model.{what}: this network's loss is its terms "
                             f"{[t.name for t in self.network.terms]}; use "
                             "model.loss_terms(data) and model.hessian_vector(data, v)")

    def save(self, path):
        """Write parameters and network description to ``path`` (``.npz``, no pickle);
        ``symnet.load(path)`` gives the model back.  See ``symnet.io.files``."""
        from ..io.files import save
        save(self, path)

    def export_c(self, directory, name: str = "net", training: bool = True,
                 threads: bool = False, params_file=None) -> list[str]:
        """Write ``<name>.h`` and ``<name>.c`` (C99 + <math.h>, no Python) into
        ``directory``: this model's forward pass and, with ``training``, its
        loss, gradients, step, update and epoch driver, with the trained values
        as ``<name>_trained_params``.  Returns the paths.  See ``symnet.backend.c.export``.
        """
        from ..backend.c.export import export_c
        return export_c(self, directory, name=name, training=training, threads=threads,
                        params_file=params_file)

    def summary(self, batch_size: int = 32, print_fn=None):
        """Parameters, memory and flops per training step of this model for a
        batch size: a ``symnet.read.summary.Summary`` whose ``str()`` and ``repr()``
        are the table (``print(model.summary())`` prints it once); ``print_fn`` is
        also given the table."""
        from ..read.summary import summarize
        return summarize(self.network, batch_size, self.dtype.name).show(print_fn)
