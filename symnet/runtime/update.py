"""The parameter update written out, with its extra terms: gradient clipping and
weight decay, as ``sn_update`` in the generated C computes them.

``net.formulas(optimizer=..., weight_decay=λ, clip_norm=c)`` appends these
lines to the derivation (``Formulas``); they are (text, LaTeX) pairs.

>>> for t, _ in update_lines(["W1", "b1"], "sgd", 0.01, 1.0): print(t)
Update, one step of size η (optimizer sgd)
  ‖g‖₂ = √(Σ_θ Σ g_θ²) over θ = W1, b1
  c = min(1, 1/‖g‖₂)   (clip_norm = 1)
  θ ← θ − η·(c·g_θ + λ·θ),  λ = 0.01   (weight decay, L2)
"""

from __future__ import annotations

OPTIMIZERS = ("sgd", "momentum", "adam")


def update_lines(params, optimizer="sgd", weight_decay=0.0, clip_norm=None) -> list:
    """[(text, latex)] for the update of ``params`` (names) by ``optimizer``."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    lam = weight_decay or 0.0
    lines = [(f"Update, one step of size η (optimizer {optimizer})",
              rf"\text{{Update, one step of size }}\eta\text{{ (optimizer {optimizer})}}")]
    g, gl = "g_θ", r"g_\theta"
    if clip_norm:
        lines.append((f"  ‖g‖₂ = √(Σ_θ Σ g_θ²) over θ = {', '.join(params)}",
                      r"\|g\|_2 = \sqrt{\textstyle\sum_\theta \sum g_\theta^2}"))
        lines.append((f"  c = min(1, {clip_norm:g}/‖g‖₂)   (clip_norm = {clip_norm:g})",
                      rf"c = \min\left(1, \frac{{{clip_norm:g}}}{{\|g\|_2}}\right)"))
        g, gl = "c·g_θ", r"c\,g_\theta"
    decay = " + λ·θ" if lam else ""
    decay_l = r" + \lambda\theta" if lam else ""
    note = f",  λ = {lam:g}   (weight decay, L2)" if lam else ""
    if optimizer == "sgd":
        lines.append((f"  θ ← θ − η·({g}{decay}){note}" if lam else f"  θ ← θ − η·{g}",
                      rf"\theta \leftarrow \theta - \eta\left({gl}{decay_l}\right)"))
    elif optimizer == "momentum":
        lines.append((f"  v ← μ·v + {g}{decay};  θ ← θ − η·v{note}",
                      rf"v \leftarrow \mu v + {gl}{decay_l};\ \theta \leftarrow \theta - \eta v"))
    else:
        note = f",  λ = {lam:g}   (decoupled weight decay, AdamW)" if lam else ""
        lines.append((f"  m ← β1·m + (1 − β1)·{g};  v ← β2·v + (1 − β2)·({g})²",
                      rf"m \leftarrow \beta_1 m + (1 - \beta_1) {gl};\ "
                      rf"v \leftarrow \beta_2 v + (1 - \beta_2) ({gl})^2"))
        lines.append((f"  θ ← θ − η·((m/(1 − β1^t)) / (√(v/(1 − β2^t)) + ε){decay}){note}",
                      rf"\theta \leftarrow \theta - \eta\left(\frac{{m/(1-\beta_1^t)}}"
                      rf"{{\sqrt{{v/(1-\beta_2^t)}} + \epsilon}}{decay_l}\right)"))
    return lines
