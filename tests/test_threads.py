"""One model used from several threads gives the numbers of a serial run.

cffi releases the GIL inside the kernels and every kernel of a model shares
its work and gradient buffers, so without the model's lock these tests see
one thread's activations in another's answer (or a freed work buffer).
"""

import threading

import numpy as np
import pytest

import symnet as sn

THREADS = 4


@pytest.fixture(scope="module")
def model():
    net = sn.Network(sn.Input(16), sn.Dense(64, "tanh"), sn.Dense(64, "relu"), sn.Dense(4),
                     loss="softmax_cross_entropy")
    return net.compile(dtype="float64", seed=1)


def _hammer(work):
    """Run work(k) in THREADS threads at once; re-raise the first failure."""
    errors = []
    start = threading.Barrier(THREADS)

    def run(k):
        try:
            start.wait()
            work(k)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _data(k):
    """Different batch sizes per thread, so work buffers also get resized."""
    rng = np.random.default_rng(k)
    n = [1, 7, 60, 300][k]
    return rng.normal(size=(n, 16)), np.eye(4)[rng.integers(0, 4, n)]


def test_forward_loss_and_gradients_from_threads_equal_serial(model):
    data = [_data(k) for k in range(THREADS)]
    serial = [(model.forward(X), model.loss(X, T), model.loss_and_grad(X, T))
              for X, T in data]

    def work(k):
        X, T = data[k]
        y, L, (Lg, g) = serial[k]
        for _ in range(40):
            np.testing.assert_array_equal(model.forward(X), y)
            assert model.loss(X, T) == L
            L2, g2 = model.loss_and_grad(X, T)
            assert L2 == Lg
            for name in g:
                np.testing.assert_array_equal(g2[name], g[name])

    _hammer(work)


def test_steps_from_threads_equal_the_same_steps_in_series(model):
    """Every thread takes the same step, so any order of whole steps ends in
    the same parameters as the serial run; a step torn by another thread's
    call does not."""
    X, T = _data(2)
    start = {k: v.copy() for k, v in model.params.items()}
    steps = 30
    for _ in range(THREADS * steps):
        model.step(X, T, lr=0.01)
    serial = {k: v.copy() for k, v in model.params.items()}
    for k, v in start.items():
        model.params[k] = v

    _hammer(lambda k: [model.step(X, T, lr=0.01) for _ in range(steps)])
    for k in serial:
        np.testing.assert_array_equal(model.params[k], serial[k])
    for k, v in start.items():
        model.params[k] = v


def test_fit_in_one_thread_while_others_call_forward(model):
    """fit's kernels take the same lock: forward calls of growing batches
    (which reallocate the work buffer) cannot pull it from under a fit call."""
    X, T = _data(3)
    start = {k: v.copy() for k, v in model.params.items()}

    def work(k):
        if k == 0:
            model.fit(X, T, method="minibatch", batch_size=16, epochs=3, lr=0.01, seed=0,
                      progress=False)
        else:
            for n in range(1, 400, 7):
                y = model.forward(np.ones((n * k, 16)))
                assert y.shape == (n * k, 4) and np.isfinite(y).all()

    try:
        _hammer(work)
        changed = any(not np.array_equal(model.params[k], v) for k, v in start.items())
        assert changed, "fit did not train"
    finally:
        for k, v in start.items():
            model.params[k] = v
