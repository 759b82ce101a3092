"""Hand-written digits (8×8, bundled with symnet) as 1×8×8 images: a small
convolutional network, conv → pool → conv → dense, trained by minibatch SGD with
momentum; prints the test accuracy and saves the loss curves to
digits_conv_loss.png.

    python examples/digits_conv.py
"""

import time

import symnet as sn
from symnet import datasets
from symnet.runtime import schedules


def network():
    return sn.Network(sn.Input((1, 8, 8), name="I"),
                      sn.Conv2d(16, 3, padding="same", activation="relu"),
                      sn.MaxPool2d(2),
                      sn.Conv2d(32, 3, padding="same", activation="relu"),
                      sn.Flatten(),
                      sn.Dense(10), loss="softmax_cross_entropy")


def main(epochs=40, batch_size=32, seed=0, png="digits_conv_loss.png", verbose=True):
    X, y = datasets.load_digits()
    X = X.reshape(-1, 1, 8, 8)            # (batch, channels, height, width)
    Xtr, Xte, ytr, yte = datasets.train_test_split(X, y, test_fraction=0.25, seed=seed)
    Ttr, Tte = datasets.one_hot(ytr, 10), datasets.one_hot(yte, 10)
    net = network()
    t0 = time.perf_counter()
    model = net.compile(dtype="float32", seed=seed)
    compile_s = time.perf_counter() - t0
    if verbose:
        model.summary(batch_size)
    lr = schedules.RobbinsMonro(0.05, tau=2000)
    hist = model.fit(Xtr, Ttr, method="minibatch", batch_size=batch_size, epochs=epochs,
                     lr=lr, seed=seed, optimizer="momentum", momentum=0.9,
                     validation_data=(Xte, Tte), progress=None if verbose else False)
    acc = (model.forward(Xte).argmax(axis=1) == yte).mean()
    if verbose:
        print(f"compiled in {compile_s:.2f} s; trained {hist.epochs} epochs "
              f"({hist.steps} steps, minibatch {batch_size}) in {hist.wall_time:.2f} s; "
              f"stopped: {hist.stopped}")
        print(f"test accuracy {acc:.2%} on {len(yte)} held-out digits")
    if png:
        try:
            hist.plot(png)
            if verbose:
                print(f"loss curves saved to {png}")
        except ImportError as exc:
            print(f"no plot: {exc}")
    return acc


if __name__ == "__main__":
    main()
