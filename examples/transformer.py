"""A 2-block transformer that reverses strings of digits.

Input: 8 digits, one-hot (batch, 8, 10); output: the same digits in reverse
order, one 10-way answer per position.  Position t of the answer must look at
position 7 − t of the input, which only attention with positional embeddings
can do; a majority baseline names one digit everywhere (≈ 10 % per digit).

    one-hot digits → Pointwise(32) → PositionalEmbedding → TransformerBlock(4 heads, ff 64)
                   → TransformerBlock(4 heads, ff 64) → Pointwise(10)

The loss is softmax cross-entropy with a class per position: the output (8, 10) is
8 rows of 10 classes, the targets the reversed digits as labels (batch, 8), the loss
the mean over positions.  Every formula (the attention's softmax over keys, and the
loss's per position, included) and its derivative is printed by
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
    return sn.Network(S, sn.Pointwise(DIGITS, name="O")(x), loss="softmax_cross_entropy")


def strings(n, seed):
    """(one-hot digits (n, 8, 10), the reversed digits as labels (n, 8))."""
    rng = np.random.default_rng(seed)
    d = rng.integers(0, DIGITS, (n, LENGTH))
    return np.eye(DIGITS, dtype=np.float32)[d], d[:, ::-1]


def main(epochs=12, verbose=True):
    X, y = strings(4000, seed=0)                              # y: (4000, 8) labels
    Xt, yt = strings(1000, seed=1)                            # held out
    model = network().compile(dtype="float32", seed=0)
    t0 = time.perf_counter()
    hist = model.fit(X, y, method="minibatch", batch_size=50, epochs=epochs, lr=0.003,
                     optimizer="adam", seed=0, progress=False)
    guess = model.predict_classes(Xt)                         # (1000, 8): a digit per position
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
