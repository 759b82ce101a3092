"""Draw the pictures of the documentation into docs/img/:

- ``digits_loss.png``: the loss, accuracy and step-size curves of the main job,
  ``examples/digits.py`` (``History.plot``);
- ``formula.png``: the backward pass of a small network, each line rendered from
  the LaTeX of ``net.formulas().latex()`` by matplotlib's mathtext;
- ``residual_graph.png``, ``two_heads_graph.png``, ``digits_conv_graph.png``: network
  graphs (``Network.plot``).

    PYTHONPATH=. python docs/make_figures.py

Needs matplotlib (``pip install '.[plot]'``).  ``tests/test_docs.py`` runs
``formula_lines`` on the same network, so a derivation mathtext cannot draw fails
there.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import symnet as sn  # noqa: E402


def small_network():
    I = sn.Input(2, name="I")
    H1 = sn.Dense(3, "tanh", name="H1")(I)
    O = sn.Dense(1, "sigmoid", name="O")(H1)
    return sn.Network(I, O, loss="bce")


def residual_network():
    I = sn.Input(16, name="I")
    H1 = sn.Dense(16, "relu", name="H1")(I)
    H2 = sn.Dense(16, name="H2")(H1)
    R = sn.Add(name="R")([I, H2])
    O = sn.Dense(1, "sigmoid", name="O")(R)
    return sn.Network(I, O, loss="bce")


def formula_lines(net, first=r"\text{Backward, from the output down}") -> list[str]:
    """The lines of the derivation's LaTeX from ``first`` on, each as one
    mathtext string (the alignment marks removed)."""
    body = net.formulas().latex().strip().splitlines()[1:-1]    # inside \begin{aligned}
    lines = [line.rstrip().removesuffix(r"\\").replace("&", "").strip() for line in body]
    start = next(k for k, line in enumerate(lines) if first in line)
    return [f"${line}$" for line in lines[start + 1:]]


def draw_formulas(lines, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    step = 0.42
    fig = Figure(figsize=(10, step * len(lines) + 0.3))
    FigureCanvasAgg(fig)
    for k, line in enumerate(lines):
        fig.text(0.01, 1 - (k + 0.8) / (len(lines) + 0.5), line, fontsize=12, va="center")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def main(out=HERE / "img"):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    digits = runpy.run_path(str(ROOT / "examples" / "digits.py"), run_name="figures")
    digits["main"](png=str(out / "digits_loss.png"), verbose=False)
    draw_formulas(formula_lines(small_network()), out / "formula.png")
    residual_network().plot(out / "residual_graph.png")
    two_heads = runpy.run_path(str(ROOT / "examples" / "two_heads.py"), run_name="figures")
    two_heads["network"]().plot(out / "two_heads_graph.png")
    conv = runpy.run_path(str(ROOT / "examples" / "digits_conv.py"), run_name="figures")
    conv["network"]().plot(out / "digits_conv_graph.png")
    for name in ("digits_loss", "formula", "residual_graph", "two_heads_graph",
                 "digits_conv_graph"):
        print(out / f"{name}.png")


if __name__ == "__main__":
    main()
