"""A smooth 1-D function, y = sin(3x) + 0.3x², fitted by a 1-32-32-1 tanh network
with Adam on minibatches; prints the test mean squared error.

    python examples/regression.py
"""

import symnet as sn
from symnet import datasets


def network():
    return sn.Network(sn.Input(1, name="x"), sn.Dense(32, "tanh"), sn.Dense(32, "tanh"),
                      sn.Dense(1), loss="mse")


def main(epochs=300, seed=0, verbose=True):
    X, T = datasets.make_regression_1d(n=400, noise=0.0, seed=seed)
    Xtr, Xte, Ttr, Tte = datasets.train_test_split(X, T, test_fraction=0.25, seed=seed)
    model = network().compile(dtype="float64", seed=seed)
    hist = model.fit(Xtr, Ttr, method="minibatch", batch_size=16, epochs=epochs, lr=0.003,
                     optimizer="adam", seed=seed, progress=False)
    mse = model.loss(Xte, Tte)
    if verbose:
        print(f"{hist.epochs} epochs, {hist.steps} steps in {hist.wall_time:.2f} s; "
              f"training loss {hist.final_loss:.2e}; test MSE {mse:.2e} "
              f"(targets have variance {Tte.var():.2f})")
    return mse


if __name__ == "__main__":
    main()
