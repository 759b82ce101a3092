"""XOR, the classic: the notes' network I → H1 → H2 → O learns exclusive-or.

    python examples/xor.py
"""

import numpy as np

import symnet as sn


def network():
    I = sn.Input(2, name="I")
    H1 = sn.Dense(8, "tanh", name="H1")(I)
    H2 = sn.Dense(8, "tanh", name="H2")(H1)
    O = sn.Dense(1, "sigmoid", name="O")(H2)
    return sn.Network(I, O, loss="bce")


def main():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    T = np.array([[0], [1], [1], [0]], dtype=float)
    model = network().compile(dtype="float32", seed=0)
    for epoch in range(2000):
        loss = model.step(X, T, lr=0.5)
        if epoch % 500 == 0:
            print(f"step {epoch:5d}  loss {loss:.4f}")
    print("outputs:", model.forward(X).ravel().round(3), "targets:", T.ravel())


if __name__ == "__main__":
    main()
