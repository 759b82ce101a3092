"""Which route computes a bilinear term, read from its index maps.

A reduction and each of its derived gradient terms have one form,
``target[τ] (+)= Σ A[α]·B[β]`` summed over the loop indices that τ does not carry
(``symnet.derive.chain.Term``; a reduction is the term of its own buffer).  Its
three access maps say whether it is a *correlation*, computed through im2col and
matrix products, or a loop, computed as it is written:

- the **output map** is (b, c, y₁, …, yₙ): the batch, an output channel and n
  positions, the node's own index space;
- the **kernel map** is (c, k, u₁, …, uₙ): no batch, the output channel, an input
  channel k and n window indices, the reduction's space (k, u₁, …, uₙ) in order;
- the **image map** is (b, k, y₁·s₁ + u₁·d₁ − p₁, …): each position one output
  index with a stride s ≥ 1 and one window index with a dilation d ≥ 1, plus a
  constant (−padding), reading the node's input (or, as a target, its gradient).

The three terms of a correlation differ only in which map is the target, and that
names the route (TENSOR-IR.md):

==========  =========  ========================================================
target      route      computed as
==========  =========  ========================================================
output      "forward"  col[b] = im2col(X[b]); Z[b] = K·col[b]
kernel      "weight"   g_K (+)= Σ_b δ[b]·col[b]ᵀ (the forward's col)
image       "input"    dcol = Kᵀ·δ[b]; dX[b] += col2im(dcol)
==========  =========  ========================================================

Anything else (a factor besides the two accesses, a map of another form, a max)
is not a correlation: lower computes it as the loop it is written as.  Nothing
here knows which layer wrote the formula; a user's own index-notation layer with
the same maps takes the same route as ``Conv2d``.

>>> from symnet.ir.nodes import Access, Affine
>>> out = Access("delta_H1", ("b", "c", "y", "x"))
>>> image = Access("I", ("b", "k", Affine((("y", 2), ("u", 1)), -1),
...                      Affine((("x", 2), ("v", 1)), -1)))
>>> roles(Access("g_W1", ("c", "k", "u", "v")), [image, out])
('kernel', {'out': 'delta_H1', 'kernel': 'g_W1', 'image': 'I'})
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..derive.chain import grad_name, upstream_name
from ..ir import nodes as ir

ROUTES = {"out": "forward", "kernel": "weight", "image": "input"}


@dataclass(frozen=True)
class Correlation:
    """A term read as a correlation: its ``route`` ("forward", "weight", "input"),
    the arrays in each role, and the sizes (``geo``: what the im2col and product
    code takes; a 1-D correlation is a 2-D one of height 1)."""

    route: str
    out: str
    kernel: str
    image: str
    geo: dict


def roles(target: ir.Access, factors: list) -> tuple[str, dict] | None:
    """(the target's role, role → array) of a term whose factors are two accesses,
    by their index maps alone: the image map has an affine position, the kernel map
    no batch index, the output map is the third; None when that does not give one
    of each."""
    found = {}
    for acc in [target, *factors]:
        if any(isinstance(ix, ir.Affine) for ix in acc.index):
            role = "image"
        elif not acc.index or acc.index[0] != ir.BATCH:
            role = "kernel"
        else:
            role = "out"
        if role in found:
            return None
        found[role] = acc
    if len(found) != 3:
        return None
    own = next(r for r, acc in found.items() if acc is target)
    return own, {r: found[r].array for r in ("out", "kernel", "image")}


def _factors(expr, symbols: dict) -> list | None:
    """The two accesses whose product ``expr`` is, nothing else; None otherwise."""
    if not isinstance(expr, sp.Mul) or len(expr.args) != 2:
        return None
    accs = [symbols.get(a) for a in expr.args]
    return accs if all(a is not None for a in accs) else None


def _geometry(node: ir.Node, red: ir.Reduction, maps: dict) -> dict | None:
    """The sizes of a correlation from its three maps (see the module docstring),
    or None when a map is not of its form."""
    outs, sums = [n for n, _ in node.space], [n for n, _ in red.space]
    extent = dict(node.space) | dict(red.space)
    if red.op != "sum" or len(outs) not in (2, 3) or len(sums) != len(outs):
        return None
    if tuple(maps["out"]) != (ir.BATCH, *outs) or tuple(maps["kernel"]) != (outs[0], *sums):
        return None
    image = tuple(maps["image"])
    if len(image) != len(outs) + 1 or image[:2] != (ir.BATCH, sums[0]) \
            or len(node.in_shape) != len(outs):
        return None
    stride, pad, dilation = [], [], []
    for ix, y, u in zip(image[2:], outs[1:], sums[1:]):
        coef = dict(ix.terms) if isinstance(ix, ir.Affine) else {}
        if set(coef) != {y, u} or len(ix.terms) != 2 or coef[y] < 1 or coef[u] < 1:
            return None
        stride.append(coef[y])
        dilation.append(coef[u])
        pad.append(-ix.const)
    in_hw = list(node.in_shape[1:])
    kernel = [extent[u] for u in sums[1:]]
    out_hw = [extent[y] for y in outs[1:]]
    if not all(isinstance(e, int) for e in kernel + out_hw):
        return None
    if len(in_hw) == 1:        # one spatial axis: a 2-D correlation of height 1
        in_hw, kernel, out_hw = [1] + in_hw, [1] + kernel, [1] + out_hw
        stride, pad, dilation = [1] + stride, [0] + pad, [1] + dilation
    return {"cin": node.in_shape[0], "cout": extent[outs[0]], "in_hw": in_hw,
            "kernel": kernel, "out_hw": out_hw, "stride": stride, "pad": pad,
            "dilation": dilation}


def correlation(node: ir.Node, red: ir.Reduction, target: ir.Access,
                expr) -> Correlation | None:
    """``target (+)= Σ expr`` (a term of ``red``, or the reduction itself) as a
    correlation over the node's input, or None: then it is computed as a loop.

    The image must be the node's input (read, or its gradient as the target) with
    the input's shape; the kernel an array of shape (c, k, u, …) in that order."""
    factors = _factors(expr, node.symbols)
    if factors is None:
        return None
    found = roles(target, factors)
    if found is None:
        return None
    own, arrays = found
    maps = {r: next(a for a in [target, *factors] if a.array == arrays[r]).index
            for r in arrays}
    x = node.red_input(red)
    if arrays["image"] != (x if own != "image" else upstream_name(x)):
        return None
    geo = _geometry(node, red, maps)
    if geo is None:
        return None
    kernel = (geo["cout"], geo["cin"], *[e for _, e in red.space[1:]])
    named = {grad_name(p.name) if own == "kernel" else p.name: p for p in node.params}
    spec = named.get(arrays["kernel"])
    if spec is None or tuple(spec.shape) != kernel:
        return None
    return Correlation(ROUTES[own], arrays["out"], arrays["kernel"], arrays["image"],
                       {"weight": spec.name, **geo})


def forward(node: ir.Node, red: ir.Reduction) -> Correlation | None:
    """The reduction itself, z[b,c,y,x] = Σ summand, as a correlation (route
    "forward") or None."""
    if red.contraction or red.rows:
        return None
    found = correlation(node, red, ir.Access(red.name, node.out_index), red.summand)
    return found if found is not None and found.route == "forward" else None
