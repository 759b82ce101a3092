"""Small data sets and helpers, in plain numpy (no download, no scikit-learn).

>>> X, y = load_digits()
>>> X.shape, X.dtype, y.shape, y.dtype, float(X.max())
((1797, 64), dtype('float64'), (1797,), dtype('int64'), 1.0)
>>> T = one_hot(y)
>>> T.shape
(1797, 10)
>>> Xtr, Xte, ytr, yte = train_test_split(X, y, test_fraction=0.25, seed=0)
>>> Xtr.shape, Xte.shape
((1348, 64), (449, 64))
>>> X, T = xor()
>>> T.ravel().tolist()
[0.0, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

import functools
import gzip
import io
import os

import numpy as np

__all__ = ["load_digits", "one_hot", "train_test_split", "make_moons", "xor",
           "make_regression_1d", "standardize"]

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _open_data(name: str) -> bytes:
    """Bytes of a bundled data file: next to this module, else through
    importlib.resources (zipped installs)."""
    path = os.path.join(_DATA_DIR, name)
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    from importlib import resources
    return resources.files("symnet.data").joinpath(name).read_bytes()


@functools.lru_cache(maxsize=1)
def _digits_raw():
    raw = gzip.decompress(_open_data("digits.csv.gz"))
    a = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float64)
    a.setflags(write=False)
    return a


def load_digits():
    """The 8x8 hand-written digits (1797 images, UCI via scikit-learn).

    Returns ``X`` float64 (1797, 64), pixel counts 0..16 scaled to [0, 1] by
    /16, and ``y`` int64 (1797,) labels 0..9. Fresh arrays on every call.
    """
    a = _digits_raw()
    return a[:, :64] / 16.0, a[:, 64].astype(np.int64)


def one_hot(y, k=None):
    """Rows of a float64 identity: ``one_hot([0, 2]) -> [[1,0,0],[0,0,1]]``.

    ``k`` (number of classes) defaults to ``max(y) + 1``.
    """
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)
                       and not np.all(y == np.round(y))):
        raise ValueError(f"one_hot expects a 1-D array of integer labels, got "
                         f"shape {y.shape} dtype {y.dtype}")
    y = y.astype(np.int64)
    if k is None:
        k = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"one_hot: labels must be in [0, {k}), got range "
                         f"[{y.min()}, {y.max()}]")
    out = np.zeros((y.size, k), dtype=np.float64)
    out[np.arange(y.size), y] = 1.0
    return out


def train_test_split(X, y=None, test_fraction=0.25, seed=0):
    """Shuffle with ``seed`` and split off ``round(n * test_fraction)`` rows.

    Returns ``X_train, X_test, y_train, y_test`` (or ``X_train, X_test`` when
    ``y`` is None). Deterministic for a given seed; not stratified.
    """
    X = np.asarray(X)
    n = X.shape[0]
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if y is not None:
        y = np.asarray(y)
        if y.shape[0] != n:
            raise ValueError(f"X and y have different numbers of rows: {n} and {y.shape[0]}")
    n_test = int(round(n * test_fraction))
    perm = np.random.default_rng(seed).permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    if y is None:
        return X[tr], X[te]
    return X[tr], X[te], y[tr], y[te]


def make_moons(n=200, noise=0.1, seed=0, shuffle=True):
    """Two interleaving half circles (same geometry as scikit-learn's).

    Returns ``X`` float64 (n, 2) and ``y`` int64 (n,): 0 for the upper moon
    (centre (0, 0)), 1 for the lower one (centre (1, 0.5)); Gaussian noise
    of standard deviation ``noise`` is added to every coordinate.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    n_out = n // 2
    n_in = n - n_out
    a_out = np.linspace(0, np.pi, n_out)
    a_in = np.linspace(0, np.pi, n_in)
    X = np.vstack([np.column_stack([np.cos(a_out), np.sin(a_out)]),
                   np.column_stack([1 - np.cos(a_in), 1 - np.sin(a_in) - 0.5])])
    y = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    rng = np.random.default_rng(seed)
    if shuffle:
        p = rng.permutation(n)
        X, y = X[p], y[p]
    if noise:
        X = X + rng.normal(scale=noise, size=X.shape)
    return X, y


def xor():
    """The four XOR points ``X`` (4, 2) and targets ``T`` (4, 1), float64."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    T = np.array([[0], [1], [1], [0]], dtype=np.float64)
    return X, T


def make_regression_1d(n=200, noise=0.0, seed=0):
    """Samples of y = sin(3x) + 0.3 x^2 at n sorted uniform x in [-2, 2],
    plus Gaussian noise of standard deviation ``noise``.

    Returns ``X`` (n, 1) and ``T`` (n, 1), float64.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-2.0, 2.0, size=n))
    t = np.sin(3 * x) + 0.3 * x ** 2
    if noise:
        t = t + rng.normal(scale=noise, size=n)
    return x[:, None], t[:, None]


def standardize(X, mean=None, std=None):
    """``(X - mean) / std`` per column; returns ``(Xs, mean, std)``.

    Pass the training set's ``mean`` and ``std`` to transform test data the
    same way. Constant columns (std 0) are left centred, not divided.
    """
    X = np.asarray(X, dtype=np.float64)
    if mean is None:
        mean = X.mean(axis=0)
    if std is None:
        std = X.std(axis=0)
        std = np.where(std > 0, std, 1.0)
    return (X - mean) / std, mean, std
