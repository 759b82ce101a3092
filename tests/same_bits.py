"""Two builds of one network that must compute the same numbers bit for bit (a plan
rewrite on and off): the forward pass, the loss, every gradient, and the parameters after
a few SGD steps from the same start."""

import numpy as np


def assert_same_training(a, b, X, T, lr=0.05, steps=3):
    assert np.array_equal(a.forward(X), b.forward(X))
    la, ga = a.loss_and_grad(X, T)
    lb, gb = b.loss_and_grad(X, T)
    assert la == lb
    for name in gb:
        assert np.array_equal(ga[name], gb[name]), name
    for _ in range(steps):
        a.step(X, T, lr)
        b.step(X, T, lr)
    for name in b.params:
        assert np.array_equal(a.params[name], b.params[name]), name
