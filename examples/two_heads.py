"""Two heads on one residual trunk: classify the two moons and, from the same
features, say how far each point lies from the origin.

    I → H1 → R = H1 + H2(H1)  (a residual block)
    R → moon   (sigmoid, binary cross-entropy)
    R → radius (linear, mean squared error, weight 0.5)

The loss is bce(moon) + 0.5·mse(radius); ∂L/∂R sums what both heads send
back, and the derivation says so: dL_dR = dL_dR (from moon) + dL_dR (from radius).

    python examples/two_heads.py
"""

import numpy as np

import symnet as sn
from symnet import datasets


def network():
    I = sn.Input(2, name="I")
    H1 = sn.Dense(16, "tanh", name="H1")(I)
    H2 = sn.Dense(16, "tanh", name="H2")(H1)
    R = sn.Add(name="R")([H1, H2])                       # the residual connection
    moon = sn.Dense(1, "sigmoid", name="moon")(R)
    radius = sn.Dense(1, name="radius")(R)
    return sn.Network(I, [moon, radius], loss={"moon": "bce", "radius": "mse"},
                      loss_weights={"moon": 1.0, "radius": 0.5})


def main(epochs=200, verbose=True):
    X, y = datasets.make_moons(512, noise=0.1, seed=0)
    T = y.reshape(-1, 1).astype(np.float32)
    r = np.linalg.norm(X, axis=1, keepdims=True)
    model = network().compile(dtype="float32", seed=0)
    hist = model.fit(X, {"moon": T, "radius": r}, method="minibatch", batch_size=32,
                     epochs=epochs, lr=0.01, optimizer="adam", seed=0, progress=False)
    moon, radius = model.forward(X)
    acc = float(((moon > 0.5) == (T > 0.5)).mean())
    rmse = float(np.sqrt(np.mean((radius - r) ** 2)))
    if verbose:
        print(f"loss {hist.loss[0]:.3f} -> {hist.final_loss:.4f}; moon accuracy {acc:.1%}, "
              f"radius RMS error {rmse:.3f} (radii up to {float(r.max()):.2f})")
    return acc, rmse


if __name__ == "__main__":
    main()
