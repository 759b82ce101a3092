"""History's record of step sizes: every step's, in order, at the cost of the epoch's own
steps."""

import numpy as np

from symnet.runtime.history import History


def test_lr_holds_every_step_in_order_across_many_epochs():
    h, expected = History(method="sgd"), []
    rng = np.random.default_rng(0)
    for epoch in range(300):
        n = int(rng.integers(1, 9))
        values = rng.uniform(0.01, 1.0, n)
        h.record_epoch(1.0 / (epoch + 1), lr=values)
        expected.extend(values)
        if epoch % 50 == 7:             # a float with steps, as the trainer records a constant
            h.record_epoch(0.5, lr=0.25, steps=3)
            expected.extend([0.25] * 3)
    assert h.steps == len(expected) == h.lr.size
    np.testing.assert_array_equal(h.lr, expected)
    assert h.lr.dtype == np.float64


def test_an_epochs_record_does_not_copy_all_earlier_steps():
    """One copy of the whole array per epoch made long online-SGD runs quadratic: 1000
    epochs of 60,000 steps copied 240 GB.  The array grows in a buffer that doubles."""
    h = History(method="sgd")
    held = {}                            # the memory behind each epoch's lr, kept alive
    for _ in range(1000):
        h.record_epoch(1.0, lr=np.full(10, 0.1))
        owner = h.lr if h.lr.base is None else h.lr.base
        held[id(owner)] = owner
    # 10,000 steps from a first buffer of 64: about log2(10000/64) + 1 buffers, not 1000
    assert len(held) <= 10, len(held)
    np.testing.assert_array_equal(h.lr, np.full(10000, 0.1))


def test_a_step_dropped_or_lr_replaced_between_epochs_is_kept():
    h = History(method="minibatch")
    h.record_epoch(1.0, lr=[0.1, 0.2, 0.3])
    h.lr = h.lr[:-1]                     # what the trainer does to a step it drops
    h.steps -= 1
    h.record_epoch(0.9, lr=[0.4])
    np.testing.assert_array_equal(h.lr, [0.1, 0.2, 0.4])
    h.lr = np.array([9.0, 8.0])          # a user's own array is not written into
    mine = h.lr
    h.record_epoch(0.8, lr=[0.5])
    np.testing.assert_array_equal(h.lr, [9.0, 8.0, 0.5])
    np.testing.assert_array_equal(mine, [9.0, 8.0])
    h.lr = h.lr[1:]                      # a view that does not start at the buffer's front
    h.record_epoch(0.7, lr=[0.6])
    np.testing.assert_array_equal(h.lr, [8.0, 0.5, 0.6])
