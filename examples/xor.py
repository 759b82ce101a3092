"""XOR, the classic: the notes' network I → H1 → H2 → O learns exclusive-or, once by
each of the three training methods of the notes.

    python examples/xor.py
"""

import symnet as sn
from symnet import datasets


def network():
    I = sn.Input(2, name="I")
    H1 = sn.Dense(8, "tanh", name="H1")(I)
    H2 = sn.Dense(8, "tanh", name="H2")(H1)
    O = sn.Dense(1, "sigmoid", name="O")(H2)
    return sn.Network(I, O, loss="bce")


# method -> fit arguments: batch steepest descent, online SGD, minibatch SGD
RUNS = {
    "sd": {"epochs": 2000, "lr": 1.0},
    "sgd": {"epochs": 1000, "lr": 0.5},
    "minibatch": {"epochs": 1000, "lr": 1.0, "batch_size": 2},
}


def main(verbose=True):
    X, T = datasets.xor()
    outputs = {}
    for method, args in RUNS.items():
        model = network().compile(dtype="float32", seed=0)
        hist = model.fit(X, T, method=method, seed=0, progress=False, **args)
        outputs[method] = model.forward(X)
        if verbose:
            print(f"{method:>9}: {hist.steps:5d} steps, loss {hist.loss[0]:.3f} -> "
                  f"{hist.final_loss:.4f}, outputs {outputs[method].ravel().round(3)}")
    if verbose:
        print(f"  targets: {T.ravel()}")
    return outputs


if __name__ == "__main__":
    main()
