"""A 2-block transformer that reverses strings of digits.

Input: 8 digits, one-hot (batch, 8, 10); output: the same digits in reverse
order, one 10-way answer per position.  Position t of the answer must look at
position 7 − t of the input, which only attention with positional embeddings
can do; a majority baseline names one digit everywhere (≈ 10 % per digit).

    one-hot digits → Pointwise(32) → PositionalEmbedding → TransformerBlock(4 heads, ff 64)
                   → TransformerBlock(4 heads, ff 64) → Pointwise(10, sigmoid)

Each position's 10 outputs are trained with binary cross-entropy against the
one-hot digit (the answer is the largest).  Every formula (the attention's
softmax over keys included) and its derivative is printed by
``network().formulas()``.

    python examples/transformer.py
"""

import time

import numpy as np

import symnet as sn

LENGTH, DIGITS, WIDTH = 8, 10, 32


def network():
    S = sn.Input((LENGTH, DIGITS), name="S")                 # X: (batch, 8, 10)
    x = sn.Pointwise(WIDTH, name="embed")(S)
    x = sn.PositionalEmbedding(name="pos")(x)
    x = sn.TransformerBlock(4, 64, name="B1")(x)
    x = sn.TransformerBlock(4, 64, name="B2")(x)
    return sn.Network(S, sn.Pointwise(DIGITS, "sigmoid", name="O")(x), loss="bce")


def strings(n, seed):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, DIGITS, (n, LENGTH))
    eye = np.eye(DIGITS, dtype=np.float32)
    return eye[d], eye[d[:, ::-1]], d[:, ::-1]


def main(epochs=12, verbose=True):
    X, T, _ = strings(4000, seed=0)
    Xt, _, yt = strings(1000, seed=1)                         # held out
    model = network().compile(dtype="float32", seed=0)
    t0 = time.perf_counter()
    hist = model.fit(X, T, method="minibatch", batch_size=50, epochs=epochs, lr=0.003,
                     optimizer="adam", seed=0, progress=False)
    guess = model.forward(Xt).reshape(-1, LENGTH, DIGITS).argmax(-1)
    digit = float((guess == yt).mean())
    whole = float((guess == yt).all(1).mean())
    if verbose:
        print(f"{hist.steps} steps in {time.perf_counter() - t0:.1f} s, training loss "
              f"{hist.loss[0]:.3f} -> {hist.final_loss:.4f}")
        print(f"held-out strings: {digit:.1%} of digits and {whole:.1%} of whole strings "
              f"reversed (naming the most common digit everywhere: "
              f"{np.bincount(yt.ravel()).max() / yt.size:.1%} of digits)")
    return digit


if __name__ == "__main__":
    main()
