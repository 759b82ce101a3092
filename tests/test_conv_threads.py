"""A tensor network runs the per-example part of its passes (convolution, activation,
pooling and their backward) on the batch in chunks of examples, which threads take in
turn; the sums over the batch are kept per chunk and added in the order of the chunks.
So the numbers are the same, bit for bit, whichever number of threads ran a call, and
they agree with an independent numpy reference."""

import numpy as np
import pytest

import symnet as sn
from conv_reference import loss_and_grad as reference

SHAPE = (2, 10, 10)


def _net():
    return sn.Network(sn.Input(SHAPE), sn.Conv2d(4, 3, activation="relu"), sn.MaxPool2d(2),
                      sn.Conv2d(3, 2, padding=1, activation="tanh"), sn.Flatten(),
                      sn.Dense(5, "relu"), sn.Dense(3), loss="softmax_cross_entropy")


def _compiled(monkeypatch, thread_min):
    """The model, its kernels told that ``thread_min`` multiply-adds pay for a thread
    (1: threads for every run; 1e300: never), on two threads at most."""
    monkeypatch.setenv("SYMNET_PARALLEL_MIN", str(thread_min))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    model = _net().compile(dtype="float32", seed=1)
    rng = np.random.default_rng(2)
    for k in model.params:
        model.params[k] = rng.normal(0, 0.4, model.params[k].shape).astype(np.float32)
    return model


def _data(batch):
    rng = np.random.default_rng(batch)
    X = rng.normal(size=(batch, *SHAPE)).astype(np.float32)
    T = np.eye(3, dtype=np.float32)[rng.integers(0, 3, batch)]
    return X, T


@pytest.mark.parametrize("batch", [1, 13, 64])
def test_same_bits_on_one_thread_and_on_threads(monkeypatch, batch):
    X, T = _data(batch)
    one = _compiled(monkeypatch, 1e300)
    want = [one.loss_and_grad(X, T) for _ in range(2)]
    assert want[0][0] == want[1][0]
    many = _compiled(monkeypatch, 1)
    # the first runs of each chunked run measure one thread, the third its threads, the
    # later ones take the faster: every call must give the same numbers
    for _ in range(6):
        loss, grads = many.loss_and_grad(X, T)
        assert loss == want[0][0]
        for k, g in grads.items():
            np.testing.assert_array_equal(g, want[0][1][k], err_msg=k)
        np.testing.assert_array_equal(many.forward(X), one.forward(X))


def test_chunked_gradients_agree_with_numpy(monkeypatch):
    X, T = _data(21)
    model = _compiled(monkeypatch, 1)
    p = {k: v.astype(np.float64) for k, v in model.params.items()}
    layers = [("conv", p["W1"], p["b1"], (1, 1), (0, 0), "relu"), ("maxpool", (2, 2), (2, 2)),
              ("conv", p["W3"], p["b3"], (1, 1), (1, 1), "tanh"), ("flatten",),
              ("dense", p["W5"], p["b5"], "relu"), ("dense", p["W6"], p["b6"], "linear")]
    for _ in range(4):
        loss, grads = model.loss_and_grad(X, T)
        ref_loss, ref = reference(layers, X.astype(np.float64), T.astype(np.float64),
                                  "softmax_cross_entropy")
        ref_grads = {f"{w}{n + 1}": g for n, pair in enumerate(ref) if pair is not None
                     for w, g in zip("Wb", pair)}
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        assert sorted(ref_grads) == sorted(grads)
        for k in grads:
            scale = np.abs(ref_grads[k]).max() + 1e-12
            assert np.abs(grads[k] - ref_grads[k]).max() <= 1e-4 * scale, k
