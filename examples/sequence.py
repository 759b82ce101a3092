"""A recurrent network that counts: read 8 bits one at a time, say how many were 1.

The answer needs memory: no single step sees more than one bit, so the
hidden state h_t = tanh(W·x_t + U·h_{t−1} + b) must carry the running count
from step to step.  The recurrence is unrolled over the 8 steps (one W, U, b
shared by all of them) and trained by back-propagation through time, which
is the chain rule over the unrolled graph (print ``network().formulas()``).

    python examples/sequence.py
"""

import numpy as np

import symnet as sn

STEPS = 8


def network():
    S = sn.Input((STEPS, 1), name="S")                      # X: (batch, 8, 1)
    h = sn.recurrent.unroll(sn.recurrent.RNNCell(16, "tanh"), steps=STEPS)(S)
    O = sn.Dense(1, name="O")(h)                              # the count / 8
    return sn.Network(S, O, loss="mse")


def bits(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, (n, STEPS, 1)).astype(np.float32)
    return X, X.sum(axis=(1, 2))[:, None] / STEPS


def main(epochs=60, verbose=True):
    X, T = bits(2048, seed=0)
    Xt, Tt = bits(1024, seed=1)                               # held out
    model = network().compile(dtype="float32", seed=0)
    hist = model.fit(X, T, method="minibatch", batch_size=32, epochs=epochs, lr=0.003,
                     optimizer="adam", seed=0, progress=False)
    count = np.rint(model.forward(Xt)[:, 0] * STEPS)
    acc = float((count == np.rint(Tt[:, 0] * STEPS)).mean())
    if verbose:
        print(f"{hist.steps} steps, training loss {hist.loss[0]:.4f} -> {hist.final_loss:.6f}")
        print(f"held-out sequences counted exactly: {acc:.1%} "
              f"(always answering the most common count, 4, scores "
              f"{float((np.rint(Tt[:, 0] * STEPS) == 4).mean()):.1%})")
    return acc


if __name__ == "__main__":
    main()
