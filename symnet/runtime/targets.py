"""Targets in the forms users have them.

- rows ``(N, outputs)`` (one-hot rows or probabilities for a softmax
  cross-entropy, values for the other losses) — the general form;
- ``(N,)`` for a network with one output (scikit-learn's ``y``);
- integer class labels ``(N,)`` (or ``(N, 1)``) in ``0 .. outputs − 1`` for a
  softmax cross-entropy: these stay labels all the way into the compiled loss
  (``<prefix>loss_labels`` and friends read T[b] as the class of example b),
  no one-hot matrix is made.

Labels reach the kernels as an ``(N, 1)`` array of the model's dtype (class
indices are exact in float32 up to 2²⁴); a softmax cross-entropy needs at
least two outputs, so width 1 always means labels there.

A softmax cross-entropy on an output of several axes, ``(L, C)``, takes a class per
position (its last axis is the classes): rows ``(N, L, C)``, or labels ``(N, L)``
in ``0 .. C − 1``, which reach the kernels as ``(N, L)``.

>>> import numpy as np, symnet as sn
>>> net = sn.Network(sn.Input(2), sn.Dense(3), loss="softmax_cross_entropy")
>>> model = net.compile(dtype="float64")
>>> model.as_targets(np.array([2, 0]), 2).ravel().tolist()
[2.0, 0.0]
"""

from __future__ import annotations

import numpy as np

MAX_LABEL = 2**24  # class indices exact in float32


def width_classes(model) -> int:
    """The classes of each position of the (one) output that takes a class per position."""
    return model.meta["classes"]


def label_width(model) -> int:
    """Class labels per example: 1, or one per position where a softmax cross-entropy
    takes a class per position (0 where the loss takes no labels)."""
    if not model.meta.get("labels", False):
        return 0
    classes = model.meta.get("classes")
    return model.n_out // classes if classes else 1


def is_labels(model, T: np.ndarray) -> bool:
    """True when the checked targets T are class labels (softmax; a column, or one
    per position)."""
    width = label_width(model)
    return width > 0 and T.shape[1] == width and model.n_out != width


def positions(model) -> tuple:
    """The positions of the (one) output that takes a class per position: its shape
    without the classes (the last axis, or the first where they come first)."""
    shape = tuple(model.out_shape)
    return shape[1:] if model.meta.get("classes_first") else shape[:-1]


def position_labels(model, T, batch: int, what: str = "T"):
    """Class labels per position ``(batch, *positions)`` (``positions``: the output's
    shape without the classes) as the ``(batch, positions)`` array the kernels read,
    checked; None when T does not have that shape."""
    width, shape = label_width(model), tuple(model.out_shape)
    if width <= 1 or len(shape) < 2:
        return None
    try:
        arr = np.asarray(T)
    except (ValueError, TypeError):
        return None
    if arr.ndim != len(shape) or tuple(arr.shape[1:]) != positions(model):
        return None
    owner = f"output layer {model.network.output_names[0]!r}"
    _check_labels(arr.reshape(arr.shape[0], -1), width_classes(model), what, owner,
                  unlabeled=True)
    y = arr.reshape(arr.shape[0], -1)
    _rows(y, batch, what)
    return np.ascontiguousarray(y, dtype=model.dtype)


def accepted(model) -> str:
    """The target shapes this model takes, for error messages."""
    n = model.n_out
    if label_width(model) > 1:
        shape, first = tuple(model.out_shape), model.meta.get("classes_first")
        return (f"(N, {', '.join(map(str, shape))}) rows (one-hot or probabilities along "
                f"the {'first' if first else 'last'} axis) or integer class labels (N, "
                f"{', '.join(map(str, positions(model)))}) in 0..{width_classes(model) - 1}")
    if model.meta.get("labels", False):
        return (f"(N, {n}) rows (one-hot or probabilities) or integer class labels (N,) "
                f"in 0..{n - 1}")
    if n == 1:
        return "(N, 1) or (N,)"
    return f"(N, {n})"


def labels_or_rows(model, T, batch: int, what: str = "T"):
    """T as a C-contiguous (batch, outputs) array of the model's dtype, or as
    (batch, 1) class labels for a softmax cross-entropy; ValueError naming the
    output layer and the shapes that fit otherwise."""
    out = model.network.names[-1]
    owner = f"output layer {out!r}"
    if isinstance(T, np.ma.MaskedArray) and np.ma.count_masked(T):
        return model.as_matrix(T, what, model.n_out, owner)       # its message
    try:
        arr = np.asarray(T)
    except (ValueError, TypeError):
        return model.as_matrix(T, what, model.n_out, owner)       # its message
    labels_ok = model.meta.get("labels", False)
    if arr.ndim == 1 or (labels_ok and arr.ndim == 2 and arr.shape[1] == 1):
        if labels_ok:
            return _labels(model, arr.reshape(-1), batch, what, owner)
        if model.n_out == 1 and arr.dtype.kind in "biuf":
            arr = arr.reshape(-1, 1)
        elif arr.ndim == 1 and arr.dtype.kind in "biuf":
            one = f"; for one example use {what}[None, :]" if arr.shape[0] == model.n_out \
                else ""
            raise ValueError(f"{what} must be 2-D (batch, {model.n_out}) for {owner} "
                             f"(loss {model.network.loss_name}), got shape {arr.shape}: "
                             "targets of shape (N,) are taken for a network with one output "
                             f"and as class labels for a softmax cross-entropy{one}")
    elif arr.ndim == 2 and arr.shape[1] != model.n_out and arr.dtype.kind in "biuf":
        raise ValueError(f"{what} has {arr.shape[1]} columns but {owner} has {model.n_out}: "
                         f"expected shape (batch, {model.n_out}), got {arr.shape}; for this "
                         f"network (loss {model.network.loss_name}) {what} may be "
                         f"{accepted(model)}")
    elif arr.ndim not in (1, 2) and arr.dtype.kind in "biuf":
        raise ValueError(f"{what} must be 2-D (batch, {model.n_out}) for {owner} "
                         f"(loss {model.network.loss_name}), got shape {arr.shape}; "
                         f"{what} may be {accepted(model)}")
    T = model.as_matrix(arr, what, model.n_out, owner)
    _rows(T, batch, what)
    return T


def in_range(model, T: np.ndarray, what: str = "T") -> np.ndarray:
    """The checked rows T, or ValueError where an output of loss bce has a target
    outside [0, 1] (its −t·log o − (1 − t)·log(1 − o) has no minimum there): naming
    the output layer, the value and its row (NaN and inf are the finiteness check's)."""
    for start, width, name in model._bounded:
        part = T[:, start:start + width]
        if part.min() >= 0 and part.max() <= 1:
            continue
        bad = np.isfinite(part) & ((part < 0) | (part > 1))
        if not bad.any():
            continue
        row, col = (int(i) for i in np.argwhere(bad)[0])
        shape = model.network._shapes[id(model.network.outputs[
            model.network.output_names.index(name)])]
        at = f"row {row}" + (f", index {tuple(int(i) for i in np.unravel_index(col, shape))}"
                             if len(shape) > 1 else f", column {col}" if width > 1 else "")
        if len(model.network.outputs) > 1:
            what = f"{what}[{name!r}]"
        hint = ""
        y = part[np.isfinite(part)]
        if width == 1 and (y >= 0).all() and (y == np.round(y)).all():
            k = int(y.max()) + 1
            hint = (f"; class labels 0..{k - 1} are the targets of a softmax cross-entropy: "
                    f"Dense({k}) with loss='softmax_cross_entropy' (bce takes 0/1 labels or "
                    "probabilities)")
        raise ValueError(f"{what} holds the targets of output layer {name!r} (loss bce), "
                         f"which must be in [0, 1]: got {part[row, col].item():g} at "
                         f"{at}{hint}")
    return T


def inputs_name(what: str) -> str:
    """The X that the targets ``what`` go with, for messages: "validation X" for
    "validation T"."""
    return what[:-1] + "X" if what.endswith("T") else "X"


def _rows(T, batch, what):
    if T.shape[0] != batch:
        raise ValueError(f"{what} has {T.shape[0]} rows but {inputs_name(what)} has {batch}: "
                         "one target per example is needed")


def one_hot(T, n: int, what: str, owner: str, positions: tuple = (), first=False):
    """Class labels (N,) or (N, 1) in 0..n − 1 as one-hot rows (N, n): the targets of one
    softmax cross-entropy output among several; with ``positions`` (a class per
    position: the output's shape without the classes), labels (N, *positions) as
    one-hot (N, *positions, n), or (N, n, *positions) where the classes come ``first``.
    Anything else is returned as given."""
    arr = np.asarray(T) if not isinstance(T, np.ndarray) else T
    if positions:
        if arr.ndim != len(positions) + 1 or tuple(arr.shape[1:]) != tuple(positions):
            return T
        y = arr.reshape(arr.shape[0], -1)
        _check_labels(y, n, what, owner, unlabeled=True)
        rows = np.zeros((*arr.shape, n))
        at = arr.astype(np.int64)[..., None]
        np.put_along_axis(rows, np.maximum(at, 0), 1.0, axis=-1)
        rows[arr < 0] = 0          # label −1: a position without a target, a row of zeros
        return np.moveaxis(rows, -1, 1) if first else rows
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1 and n > 1)):
        return T
    y = arr.reshape(-1)
    _check_labels(y, n, what, owner)
    rows = np.zeros((y.size, n))
    rows[np.arange(y.size), y.astype(np.int64)] = 1.0
    return rows


def _check_labels(y: np.ndarray, n: int, what: str, owner: str, unlabeled: bool = False):
    """y: labels (N,), or (N, positions) one per position of each example, where
    ``unlabeled`` −1 marks a position without a target."""
    if y.dtype.kind not in "iuf" or y.size == 0:
        raise ValueError(f"{what} of shape {y.shape} must be integer class labels in "
                         f"0..{n - 1} for {owner} (softmax cross-entropy), or (N, {n}) rows; "
                         f"got dtype {y.dtype}" + (", empty" if y.size == 0 else ""))
    low = -1 if unlabeled else 0
    bad = ~np.isfinite(y) | (y != np.round(y)) | (y < low) | (y >= n) \
        if y.dtype.kind == "f" else (y < low) | (y >= n)
    if bad.any():
        at = np.argwhere(bad)[0]
        where = f"row {at[0]}" + (f", position {at[1]}" if y.ndim > 1 else "")
        raise ValueError(f"{what} holds class labels for {owner}, which has {n} classes: "
                         f"label {y[tuple(at)].item():g} at {where} is not an integer in "
                         f"0..{n - 1}" + (" (or −1: no target there)" if unlabeled else ""))


def _labels(model, y: np.ndarray, batch: int, what: str, owner: str) -> np.ndarray:
    _check_labels(y, model.n_out, what, owner)
    _rows(y.reshape(-1, 1), batch, what)
    return np.ascontiguousarray(y.reshape(-1, 1), dtype=model.dtype)
