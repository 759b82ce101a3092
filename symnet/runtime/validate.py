"""The checks of the arrays a model's calls take: X and T as C-contiguous, aligned
(batch, width) rows of the model's dtype, from tensors, several inputs or outputs (a
list or a dict keyed by layer name), class labels; each refusal a ValueError that
names the array, the layer, the expected and the actual shape.

``ArrayChecks`` is a part of ``symnet.runtime.model.Model``; other modules use its
public names ``as_inputs``, ``as_targets`` and ``as_matrix``.

>>> import numpy as np, symnet as sn
>>> model = sn.Network(sn.Input(2), sn.Dense(1), loss="mse").compile(dtype="float64")
>>> model.as_inputs([[1, 2]]).dtype, model.as_targets(np.ones(1), 1).shape
(dtype('float64'), (1, 1))
"""

from __future__ import annotations

import numpy as np

from .. import guards
from .targets import (in_range, inputs_name, labels_or_rows, one_hot, position_labels,
                      positions)


class ArrayChecks:
    """X and T checked and laid out as the kernels take them (a part of ``Model``: it
    reads the model's ``network``, ``dtype``, ``n_in``, ``n_out``, ``in_shape``,
    ``out_shape`` and ``input_name``)."""

    def as_matrix(self, A, what: str, width: int, owner: str) -> np.ndarray:
        """A as a C-contiguous, aligned (batch, width) array of this model's
        dtype: bool, integer and other float dtypes (either byte order) are
        converted; anything else is refused with a ValueError."""
        if (type(A) is np.ndarray and A.dtype == self.dtype and A.ndim == 2
                and A.shape[1] == width and A.shape[0] > 0 and A.flags.carray):
            return A
        if isinstance(A, np.ma.MaskedArray) and np.ma.count_masked(A):
            raise ValueError(f"{what} is a masked array with {np.ma.count_masked(A)} masked "
                             f"entries; fill them first, e.g. {what}.filled(0)")
        try:
            arr = np.asarray(A)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{what} cannot be read as a numeric array: {exc}") from None
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{what} must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim != 2:
            hint = ""
            if arr.ndim == 1 and width == 1:      # a column of N examples
                hint = f"; for a column of N examples use {what}[:, None] (or " \
                       f"{what}.reshape(-1, 1))"
            elif arr.ndim == 1 and arr.shape[0] == width:
                hint = f"; for one example use {what}[None, :]"
            raise ValueError(f"{what} must be 2-D (batch, {width}) for {owner}, "
                             f"got shape {arr.shape}{hint}")
        if arr.shape[1] != width:
            raise ValueError(f"{what} has {arr.shape[1]} columns but {owner} has {width}: "
                             f"expected shape (batch, {width}), got {arr.shape}")
        if arr.shape[0] == 0:
            raise ValueError(f"{what} is an empty batch (shape {arr.shape}); "
                             "give at least one example")
        # An unaligned pointer is undefined behaviour in the C (vector loads).
        return np.require(arr, self.dtype, ["C", "A"])

    def as_inputs(self, X, what: str = "X"):
        """X as (batch, inputs) rows; ``what`` names it in errors ("validation X")."""
        X = self._inputs_as_rows(X, what)
        for layer, offset, width, name in self._embeddings:
            layer.check_indices(X[:, offset:offset + width], f"{what}[{name!r}]")
        return X

    def _embedding_inputs(self) -> list:
        """(Embedding, first column in X, width, input name) for each Embedding on an Input."""
        from ..lang.embedding import Embedding
        net, out = self.network, []
        starts, col = {}, 0
        for x, name in zip(net.inputs, net.input_names):
            starts[id(x)] = (col, x.n, name)
            col += x.n
        for app in net.layers:
            if isinstance(app.origin if app.origin is not None else app, Embedding) \
                    and id(app.input) in starts:
                out.append((app, *starts[id(app.input)]))
        return out

    def _bounded_targets(self) -> list:
        """(first column in T, width, output name) for each output whose loss takes
        targets in [0, 1] (bce)."""
        net, out, col = self.network, [], 0
        for name, o, loss in zip(net.output_names, net.outputs, net.loss_names):
            width = int(np.prod(net._shapes[id(o)]))
            if loss == "bce":
                out.append((col, width, name))
            col += width
        return out

    def _inputs_as_rows(self, X, what: str):
        net = self.network
        if len(net.inputs) == 1:
            if len(self.in_shape) > 1:
                X = self._tensor(X, what, self.in_shape, f"input layer {self.input_name!r}")
            return self.as_matrix(X, what, self.n_in, f"input layer {self.input_name!r}")
        if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == self.n_in:
            return self.as_matrix(X, what, self.n_in, "the inputs side by side")
        parts = self._parts(X, what, net.input_names, "inputs")
        mats = []
        for name, x, A in zip(net.input_names, net.inputs, parts):
            owner = f"input layer {name!r}"
            if len(x.shape) > 1:
                A = self._tensor(A, f"{what}[{name!r}]", x.shape, owner)
            mats.append(self.as_matrix(A, f"{what}[{name!r}]", x.n, owner))
        self._same_rows(mats, what, net.input_names)
        return np.require(np.concatenate(mats, axis=1), self.dtype, ["C", "A"])

    def _label_hint(self) -> str:
        """For messages on a softmax cross-entropy's targets with a class per position."""
        if self.network.classes and len(self.out_shape) > 1:
            return (f", or integer class labels of shape (batch, "
                    f"{', '.join(map(str, positions(self)))}), one per position")
        return ""

    def _tensor(self, A, what: str, shape: tuple, owner: str, also: str = ""):
        """A batch of tensors (batch, *shape) as a (batch, prod(shape)) view; ``also``:
        the other shapes that fit, for the message."""
        try:
            arr = A if isinstance(A, np.ndarray) else np.asarray(A)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{what} cannot be read as a numeric array: {exc}") from None
        want = "(batch, " + ", ".join(str(s) for s in shape) + ")"
        if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != tuple(shape):
            hint = f"; for one example use {what}[None]" if arr.shape == tuple(shape) else ""
            if len(shape) in (2, 3) and arr.ndim == len(shape) + 1 \
                    and tuple(arr.shape[1:]) == tuple(shape[1:]) + tuple(shape[:1]):
                if len(shape) == 3:   # (batch, H, W, C) for (batch, C, H, W): Keras's layout
                    hint = (f"; channels come first, as PyTorch's: "
                            f"np.transpose({what}, (0, 3, 1, 2))")
                else:                 # (C, L) or (steps, features): the two axes swapped
                    hint = f"; its two axes swapped? np.swapaxes({what}, 1, 2)"
            raise ValueError(f"{what} must have shape {want}{also} for {owner}, got shape "
                             f"{arr.shape}{hint}")
        return arr.reshape(arr.shape[0], -1)

    def as_targets(self, T, batch: int, what: str = "T"):
        """T as (batch, outputs) rows, or (batch, 1) class labels (``symnet.runtime.targets``);
        with several outputs a list or dict of arrays, joined side by side."""
        net = self.network
        if len(net.outputs) == 1:
            if len(self.out_shape) > 1:
                y = position_labels(self, T, batch, what)     # a class per position
                if y is not None:
                    return y
                out = net.output_names[0]
                T = self._tensor(T, what, self.out_shape, f"output layer {out!r}",
                                 self._label_hint())
            return in_range(self, labels_or_rows(self, T, batch, what), what)
        elif isinstance(T, np.ndarray) and T.ndim == 2 and T.shape[1] == self.n_out:
            T = self.as_matrix(T, what, self.n_out, "the outputs side by side")
        else:
            parts = self._parts(T, what, net.output_names, "outputs")
            mats = []
            for name, o, A, loss in zip(net.output_names, net.outputs, parts, net.loss_names):
                shape, owner = net._shapes[id(o)], f"output layer {name!r}"
                if len(shape) > 1:
                    if name in net.classes:    # labels per position: one-hot rows here
                        first = name in net.classes_first
                        A = one_hot(A, net.classes[name], f"{what}[{name!r}]", owner,
                                    shape[1:] if first else shape[:-1], first)
                    A = self._tensor(A, f"{what}[{name!r}]", shape, owner)
                elif loss == "softmax_cross_entropy" and shape[0] > 1:
                    # class labels (N,) as for one output; here made one-hot rows, which
                    # the loss reads as the same −log softmax(o)[y]
                    A = one_hot(A, shape[0], f"{what}[{name!r}]", owner)
                mats.append(self.as_matrix(A, f"{what}[{name!r}]", int(np.prod(shape)), owner))
            self._same_rows(mats, what, net.output_names)
            T = np.require(np.concatenate(mats, axis=1), self.dtype, ["C", "A"])
        if T.shape[0] != batch:
            raise ValueError(f"{what} has {T.shape[0]} rows but {inputs_name(what)} has "
                             f"{batch}: one target row per example is needed")
        return in_range(self, T, what)

    def _finite_data(self, X, T, after: str):
        """(X, T) as checked rows, with ValueError for NaN or inf in either."""
        X = self.as_inputs(X)
        guards.finite(X, "X", after)
        T = self.as_targets(T, X.shape[0])
        guards.finite(T, "T", after)
        return X, T

    @staticmethod
    def _parts(A, what: str, names: list, kind: str) -> list:
        """Arrays given as a list (declaration order) or a dict keyed by layer name."""
        if isinstance(A, dict):
            unknown = sorted(set(A) - set(names))
            missing = [n for n in names if n not in A]
            if unknown or missing:
                raise ValueError(f"{what} is keyed by {sorted(A)} but the network's {kind} are "
                                 f"{names}" + (f"; missing {missing}" if missing else "")
                                 + (f"; unknown {unknown}" if unknown else ""))
            return [A[n] for n in names]
        if isinstance(A, (list, tuple)):
            if len(A) != len(names):
                raise ValueError(f"{what} holds {len(A)} arrays but the network has "
                                 f"{len(names)} {kind} {names}")
            return list(A)
        raise ValueError(f"the network has {len(names)} {kind} {names}: give {what} as a list "
                         f"in that order or a dict keyed by those names, got {type(A).__name__}")

    @staticmethod
    def _same_rows(mats: list, what: str, names: list):
        rows = [m.shape[0] for m in mats]
        if len(set(rows)) != 1:
            raise ValueError(f"the arrays of {what} have different numbers of rows: "
                             + ", ".join(f"{n}: {r}" for n, r in zip(names, rows)))

