"""Two interleaving half moons: a 2-16-16-1 tanh network learns the curved boundary
by minibatch SGD with momentum; prints the test accuracy.

    python examples/moons.py
"""

import symnet as sn
from symnet import datasets


def network():
    return sn.Network(sn.Input(2), sn.Dense(16, "tanh"), sn.Dense(16, "tanh"),
                      sn.Dense(1, "sigmoid"), loss="bce")


def main(epochs=200, seed=0, verbose=True):
    X, y = datasets.make_moons(n=600, noise=0.15, seed=seed)
    Xtr, Xte, ytr, yte = datasets.train_test_split(X, y[:, None].astype(float),
                                                   test_fraction=0.25, seed=seed)
    model = network().compile(dtype="float32", seed=seed)
    hist = model.fit(Xtr, ytr, method="minibatch", batch_size=16, epochs=epochs, lr=0.1,
                     optimizer="momentum", momentum=0.9, seed=seed,
                     validation_data=(Xte, yte), progress=False)
    acc = hist.val_accuracy[-1]
    if verbose:
        print(f"{hist.epochs} epochs, {hist.steps} steps in {hist.wall_time:.2f} s; "
              f"loss {hist.final_loss:.4f}; test accuracy {acc:.2%}")
    return acc


if __name__ == "__main__":
    main()
