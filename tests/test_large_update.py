"""A network of a million parameters or more updates them in parts on the products' pool.

Its SGD update once ran on OpenMP's threads, a second set of threads beside the pool's that
waited for work by spinning: on two cores they took the cores from each other (the large
MLP's step 8.5 ms, 11 ms once PyTorch, whose OpenMP spins longer, was imported).  Now the
update runs as jobs of the pool, each on its share of the parameters, and so do the
momentum and Adam updates (which ran on one thread); these tests check that every
parameter gets exactly its own update, once.
"""

import numpy as np
import pytest

import symnet as sn

WIDTH = 1024          # 1024·1024 + 1024 + 10·1024 + 10 = 1,061,898 parameters


@pytest.fixture(scope="module")
def model():
    net = sn.Network(sn.Input(WIDTH), sn.Dense(WIDTH, "tanh"), sn.Dense(10), loss="mse")
    return net.compile(dtype="float64", seed=3)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((16, WIDTH)), rng.standard_normal((16, 10))


def test_the_network_is_over_the_size_whose_update_is_shared(model):
    assert sum(v.size for v in model.params.values()) >= 1_000_000
    # the in-process C hands the update to the pool, not to an OpenMP parallel loop
    assert "sn_update_job" in model.c_source
    assert "omp parallel" not in model.c_source


def test_a_step_moves_every_parameter_by_its_own_gradient(model):
    X, T = _data()
    before = {k: np.array(v) for k, v in model.params.items()}
    _, grads = model.loss_and_grad(X, T)
    lr = 0.05
    model.step(X, T, lr=lr)
    for name, old in before.items():
        want = old - lr * grads[name]
        # a part skipped, done twice or shifted would be off by lr·g (about 1e-3 of the
        # parameters here); the C may fuse the multiply and subtract (one rounding)
        np.testing.assert_allclose(model.params[name], want, rtol=1e-12, atol=1e-15,
                                   err_msg=f"parameter {name}")
        moved = model.params[name] != old
        assert moved.mean() > 0.99, f"{name}: only {moved.mean():.3f} of it moved"


def test_steps_on_the_pool_give_the_numbers_of_the_loop_in_numpy(model):
    X, T = _data(1)
    params = {k: np.array(v) for k, v in model.params.items()}
    for _ in range(3):
        _, grads = model.loss_and_grad(X, T)
        for k in params:
            params[k] = np.array(model.params[k]) - 0.02 * grads[k]
        model.step(X, T, lr=0.02)
        for k in params:
            np.testing.assert_allclose(model.params[k], params[k], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_momentum_and_adam_on_the_pool_follow_their_formulas(optimizer):
    """The same for momentum and Adam (their state too), three steps from zero state."""
    net = sn.Network(sn.Input(WIDTH), sn.Dense(WIDTH, "tanh"), sn.Dense(10), loss="mse")
    model = net.compile(dtype="float64", seed=4)
    X, T = _data(2)
    lr, mu, b1, b2, eps = 0.01, 0.9, 0.9, 0.999, 1e-8
    params = {k: np.array(v) for k, v in model.params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    for t in range(1, 4):
        _, grads = model.loss_and_grad(X, T)
        for k, g in grads.items():
            if optimizer == "momentum":
                m[k] = mu * m[k] + g
                params[k] = params[k] - lr * m[k]
            else:
                m[k] = b1 * m[k] + (1 - b1) * g
                v2[k] = b2 * v2[k] + (1 - b2) * g * g
                params[k] = params[k] - lr * (m[k] / (1 - b1 ** t)) / (
                    np.sqrt(v2[k] / (1 - b2 ** t)) + eps)
        if optimizer == "momentum":
            model.step(X, T, lr=lr, optimizer="momentum", momentum=mu)
        else:
            model.step(X, T, lr=lr, optimizer="adam", betas=(b1, b2), eps=eps)
        for k in params:
            np.testing.assert_allclose(model.params[k], params[k], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{optimizer} step {t}, parameter {k}")
