"""Hand-written digits (8×8, bundled with symnet): a 64-128-64-10 ReLU network
trained by minibatch SGD with a Robbins–Monro step size; prints the derived
formulas and the test accuracy, and saves the loss, accuracy and step-size curves to
digits_loss.png.  The targets are the integer class labels (the compiled softmax
cross-entropy reads them directly).

    python examples/digits.py
"""

import time

import symnet as sn
from symnet import datasets
from symnet.runtime import schedules


def network():
    return sn.Network(sn.Input(64, name="I"), sn.Dense(128, "relu"), sn.Dense(64, "relu"),
                      sn.Dense(10), loss="softmax_cross_entropy")


def main(epochs=60, batch_size=32, seed=0, png="digits_loss.png", verbose=True):
    X, y = datasets.load_digits()
    Xtr, Xte, ytr, yte = datasets.train_test_split(X, y, test_fraction=0.25, seed=seed)
    net = network()

    if verbose:
        print(net.formulas())   # the chain rule sympy derived, with the C's names
        print()

    t0 = time.perf_counter()
    model = net.compile(dtype="float32", seed=seed)
    compile_s = time.perf_counter() - t0
    lr = schedules.RobbinsMonro(0.2, tau=500)
    hist = model.fit(Xtr, ytr, method="minibatch", batch_size=batch_size, epochs=epochs,
                     lr=lr, seed=seed, validation_data=(Xte, yte), progress=None if verbose else False)
    acc = model.evaluate(Xte, yte)["accuracy"]
    if verbose:
        print(f"step size: {lr}")
        print(f"compiled in {compile_s:.2f} s; trained {hist.epochs} epochs "
              f"({hist.steps} steps, minibatch {batch_size}) in {hist.wall_time:.2f} s; "
              f"stopped: {hist.stopped}")
        print(f"test accuracy {acc:.2%} on {len(yte)} held-out digits")
    if png:
        try:
            hist.plot(png)
            if verbose:
                print(f"loss, accuracy and step-size curves saved to {png}")
        except ImportError as exc:
            print(f"no plot: {exc}")
    return acc


if __name__ == "__main__":
    main()
