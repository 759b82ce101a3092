"""Hand-written digits (8×8, bundled with symnet): a 64-128-64-10 network
trained by minibatch SGD; prints the derived formulas and the test accuracy.

    python examples/digits.py
"""

import time

import numpy as np

import symnet as sn
from symnet import datasets


def network():
    return sn.Network(sn.Input(64, name="I"), sn.Dense(128, "relu"), sn.Dense(64, "relu"),
                      sn.Dense(10), loss="softmax_cross_entropy")


def main(epochs=30, batch_size=32, lr=0.05, seed=0):
    X, y = datasets.load_digits()
    Xtr, Xte, ytr, yte = datasets.train_test_split(X, y, test_fraction=0.25, seed=seed)
    Ttr = datasets.one_hot(ytr, 10)
    net = network()
    model = net.compile(dtype="float32", seed=seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(Xtr))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            model.step(Xtr[idx], Ttr[idx], lr=lr)
    wall = time.perf_counter() - t0
    acc = (model.forward(Xte).argmax(axis=1) == yte).mean()
    print(f"trained {epochs} epochs in {wall:.2f} s; test accuracy {acc:.2%}")
    return acc


if __name__ == "__main__":
    main()
