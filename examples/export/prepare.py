"""Data and model for the standalone C training example (examples/export/main.c).

Writes, beside this file:

- ``digits.csv``: the bundled 8×8 digits, one row per image: 64 pixel values
  in [0, 1], then the class label 0..9;
- ``model.npz``: the network of examples/digits.py (64-128-64-10, ReLU,
  softmax cross-entropy), freshly initialised (seed 0), for
  ``python -m symnet export``.

    python examples/export/prepare.py
    python -m symnet export examples/export/model.npz --name net --out examples/export
    cc -std=c99 -O2 -o train examples/export/main.c examples/export/net.c -lm
    ./train examples/export/digits.csv
"""

from pathlib import Path

import numpy as np

import symnet as sn
from symnet import datasets

HERE = Path(__file__).resolve().parent


def network():
    return sn.Network(sn.Input(64, name="I"), sn.Dense(128, "relu"), sn.Dense(64, "relu"),
                      sn.Dense(10), loss="softmax_cross_entropy")


def main(out=HERE):
    out = Path(out)
    X, y = datasets.load_digits()
    rows = np.column_stack([X, y])
    np.savetxt(out / "digits.csv", rows, fmt=["%.4g"] * 64 + ["%d"], delimiter=",")
    network().compile(dtype="float32", seed=0).save(out / "model.npz")
    print(f"wrote {out / 'digits.csv'} ({len(rows)} rows) and {out / 'model.npz'}")


if __name__ == "__main__":
    main()
