"""Using a trained model: predictions, classes, and evaluation on a data set.

All of it runs the compiled forward or loss kernels in chunks (any number of
examples, ``batch_size`` of them per kernel call), never a training step:
the parameters do not change.

- ``predict(X)``: probabilities for a classification head — softmax of the
  output for ``softmax_cross_entropy`` (whose output layer gives the logits),
  the output itself for ``bce`` (a sigmoid layer) — and the output otherwise.
- ``predict_proba(X)``: the same, for classification losses only.
- ``predict_classes(X)``: argmax for ``softmax_cross_entropy`` → (N,) ints;
  output > 0.5 for ``bce`` → (N,) ints for one output, (N, outputs) for several.
- ``evaluate(X, T)``: ``{"loss": ..., "accuracy": ...}`` for classification,
  ``{"loss", "mse", "mae"}`` otherwise; T in any form ``fit`` takes.

A network of several outputs gets a list from each, one entry per output in the
network's order, each by its own loss (``predict_proba`` and ``predict_classes``
where every output has a classification loss); ``evaluate`` gives each output's
metrics under its name.

>>> import numpy as np, symnet as sn
>>> net = sn.Network(sn.Input(2), sn.Dense(3), loss="softmax_cross_entropy")
>>> model = net.compile(dtype="float64")
>>> P = model.predict(np.zeros((4, 2)))
>>> P.shape, bool(np.allclose(P.sum(axis=1), 1))
((4, 3), True)
>>> sorted(model.evaluate(np.zeros((4, 2)), np.array([0, 1, 2, 0])))
['accuracy', 'loss']
"""

from __future__ import annotations

import numpy as np

CLASSIFICATION = ("softmax_cross_entropy", "bce")


def softmax(Z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax over the classes, the last axis (of each row, or of each position of an
    output (N, L, C)) or ``axis`` (1: the channels of (N, C, H, W)), stable for large
    logits."""
    Z = Z - Z.max(axis=axis, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=axis, keepdims=True)


def _class_axes(model) -> list:
    """The axis of each output's classes in forward's layout: 1 where they come first
    (channels first), else the last."""
    net = model.network
    return [1 if name in net.classes_first else -1 for name in net.output_names]


def _chunk(model, batch_size):
    if batch_size is None:
        return model.rows_per_call
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def outputs(model, X, batch_size=None):
    """The output layer's values for X, ``batch_size`` examples per kernel call (several
    outputs: a list of them, as ``forward`` gives)."""
    X = model.as_inputs(X)
    if len(model.in_shape) > 1:            # the layout forward takes
        X = X.reshape((-1, *model.in_shape))
    rows = _chunk(model, batch_size)
    if X.shape[0] <= rows:
        return model.forward(X)
    parts = [model.forward(X[s:s + rows]) for s in range(0, X.shape[0], rows)]
    if isinstance(parts[0], list):         # several outputs: each one's chunks joined
        return [np.concatenate(p) for p in zip(*parts)]
    return np.concatenate(parts)


def _probabilities(loss, O, axis=-1):
    return softmax(O, axis) if loss == "softmax_cross_entropy" else O


def predict(model, X, batch_size=None):
    O, losses = outputs(model, X, batch_size), model.network.loss_names
    axes = _class_axes(model)
    if isinstance(O, list):
        return [_probabilities(loss, o, a) for loss, o, a in zip(losses, O, axes)]
    return _probabilities(losses[0], O, axes[0])


def _classification(model, call: str):
    """Refuse ``call`` unless every output has a classification loss."""
    net = model.network
    for name, loss in zip(net.output_names, net.loss_names):
        if loss not in CLASSIFICATION:
            whose = f"output {name!r} has loss {loss}" if len(net.outputs) > 1 else \
                f"this network's loss is {loss}"
            raise ValueError(f"{call} needs a classification loss (softmax_cross_entropy or "
                             f"bce); {whose}: use predict"
                             + (", which gives each output's values in a list"
                                if len(net.outputs) > 1 else ""))


def predict_proba(model, X, batch_size=None):
    _classification(model, "predict_proba")
    return predict(model, X, batch_size)


def classes_of(loss: str, O: np.ndarray, axis: int = -1) -> np.ndarray:
    if loss == "softmax_cross_entropy":     # (N, C) → (N,); (N, L, C) → (N, L)
        return O.argmax(axis=axis)          # (N, C, H, W) with axis 1 → (N, H, W)
    if loss == "bce":
        C = (O > 0.5).astype(np.int64)
        return C[:, 0] if C.shape[1] == 1 else C
    raise ValueError(f"predict_classes needs a classification loss (softmax_cross_entropy "
                     f"or bce); this network's loss is {loss}: use predict")


def predict_classes(model, X, batch_size=None):
    _classification(model, "predict_classes")        # the loss check first
    O, losses = outputs(model, X, batch_size), model.network.loss_names
    axes = _class_axes(model)
    if isinstance(O, list):
        return [classes_of(loss, o, a) if loss == "softmax_cross_entropy"
                else classes_of(loss, o.reshape(o.shape[0], -1))
                for loss, o, a in zip(losses, O, axes)]
    return classes_of(losses[0], O, axes[0])


def evaluate(model, X, T, batch_size=None) -> dict:
    """Loss and accuracy (classification) or loss, MSE and MAE (otherwise)."""
    from .epoch import class_layout, metrics, output_metrics, side_by_side, user_layout
    X = model.as_inputs(X)
    T = model.as_targets(T, X.shape[0])
    rows_T = T
    X, T = user_layout(model, X, T)
    rows = _chunk(model, batch_size)
    n, total, parts = X.shape[0], 0.0, []
    model.evaluating = True          # Dropout is the identity here
    try:
        for s in range(0, n, rows):
            Xc, Tc = X[s:s + rows], T[s:s + rows]
            total += Xc.shape[0] * model.loss(Xc, Tc)
            parts.append(side_by_side(model.forward(Xc)))
    finally:
        model.evaluating = False
    O = np.concatenate(parts)
    out = {"loss": total / n}
    net = model.network
    if len(net.outputs) == 1:
        out.update(metrics(net.loss_name, O, rows_T, class_layout(net, net.output_names[0])))
        return out
    out.update(output_metrics(net, O, rows_T))
    return out
