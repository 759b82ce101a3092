"""A GRU that remembers: read a sequence of 20 symbols, say which one came first.

Each step shows one of 4 symbols (one-hot); the answer is the first symbol, so
the state must carry it through 19 steps of distractors, which is what the
GRU's update gate z is for (h′ = (1 − z)·n + z·h keeps h when z ≈ 1).  The GRU
is PyTorch's (gate order r, z, n; weight_ih = W, weight_hh = U, bias_ih = b,
bias_hh = c), unrolled over the 20 steps; every gradient is derived by sympy
(print ``network().formulas()``).

    python examples/gru.py
"""

import time

import numpy as np

import symnet as sn

STEPS, SYMBOLS = 20, 4


def network():
    S = sn.Input((STEPS, SYMBOLS), name="S")                  # X: (batch, 20, 4)
    return sn.Network(S, sn.GRU(24), sn.Dense(SYMBOLS, name="O"),
                      loss="softmax_cross_entropy")


def sequences(n, seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, SYMBOLS, (n, STEPS))
    X = np.eye(SYMBOLS, dtype=np.float32)[s]
    return X, np.eye(SYMBOLS, dtype=np.float32)[s[:, 0]], s[:, 0]


def main(epochs=12, verbose=True):
    X, T, _ = sequences(4000, seed=0)
    Xt, _, yt = sequences(1000, seed=1)                          # held out
    model = network().compile(dtype="float32", seed=0)
    t0 = time.perf_counter()
    hist = model.fit(X, T, method="minibatch", batch_size=50, epochs=epochs, lr=0.01,
                     optimizer="adam", seed=0, progress=False)
    acc = float((model.forward(Xt).argmax(1) == yt).mean())
    if verbose:
        print(f"{hist.steps} steps in {time.perf_counter() - t0:.1f} s, training loss "
              f"{hist.loss[0]:.3f} -> {hist.final_loss:.4f}")
        print(f"held-out sequences whose first symbol is named: {acc:.1%} (always naming "
              f"the most common first symbol scores {np.bincount(yt).max() / len(yt):.1%})")
    return acc


if __name__ == "__main__":
    main()
