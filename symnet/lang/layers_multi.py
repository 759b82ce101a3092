"""``sn.Layer`` formulas of several inputs, e.g. a gated recurrent-style step

    h_i = tanh(Σ_j W[i,j]·x[j] + Σ_j U[i,j]·h[j] + b[i])      inputs=("x", "h")

Each input is an argument of the formula by its name; a parameter dim may
name an input (its length) besides "out" and "in" (the first input's).  An
index summed over takes its extent from the arrays it subscripts in that
sum, which must agree.

>>> import symnet as sn
>>> cell = sn.Layer(3, lambda x, h, W, U, i, j: sn.sum_j(W[i, j] * x[j]) + sn.sum_j(U[i, j] * h[j]),
...                 params={"W": ("out", "x"), "U": ("out", "h")}, inputs=("x", "h"))
>>> X, H = sn.Input(2, name="X0"), sn.Input(3, name="H0")
>>> net = sn.Network([X, H], cell([X, H]), loss="mse")
>>> net.param_shapes()
{'W1': (3, 2), 'U1': (3, 3)}
"""

from __future__ import annotations

from ..ir import nodes as ir


def multi_input_node(layer, index: int, name: str, inputs: list, shapes: list) -> ir.Node:
    """The IR node of a several-input ``Layer`` applied to the buffers ``inputs``."""
    width = {}
    for arg, buf, shape in zip(layer.input_args, inputs, shapes):
        if len(shape) != 1:
            layer._fail(f"input {arg} gets shape {shape}; several-input layers take vectors")
        width[arg] = shape[0]
    buffer = dict(zip(layer.input_args, inputs))
    length = {"out": layer.units, "in": width[layer.input_args[0]], **width}
    syms: dict = {}
    sub = {}

    def extent_of(places) -> dict:
        """Index name -> length, from the arrays it subscripts (must agree)."""
        ext = {"i": layer.units}
        for kind, base, idx in places:
            dims = (base,) if kind == "input" else layer.params[base]
            for d, x in zip(dims, idx):
                n = length[d]
                if ext.setdefault(x, n) != n:
                    layer._fail(f"index {x} subscripts arrays of lengths {ext[x]} and {n} "
                                f"(at {base}[{','.join(idx)}])")
        return ext

    extent_of([layer._places[s] for s in layer._outer.free_symbols   # the outer formula
               if s in layer._places])
    for sym, (kind, base, idx) in layer._places.items():
        if kind == "input":
            sub[sym] = ir.element(syms, buffer[base], ir.BATCH, idx[0])
        else:
            sub[sym] = ir.element(syms, f"{base}{index}", *idx)
    params = [ir.ParamSpec(f"{p}{index}", dims, tuple(length[d] for d in dims),
                           layer.init[p], role="weight" if len(dims) > 1 else "bias")
              for p, dims in layer.params.items()]
    names = [f"z_{name}"] if len(layer._reductions) == 1 else \
        [f"r{m}_{name}" for m in range(1, len(layer._reductions) + 1)]
    for red, rname in zip(layer._reductions, names):
        sub[red.symbol] = ir.element(syms, rname, ir.BATCH, ir.OUT)
    reds = []
    for red, rname in zip(layer._reductions, names):
        mine = [layer._places[s] for s in red.summand.free_symbols if s in layer._places]
        e = extent_of(mine)
        for u in red.uppers:
            for j in red.over:
                if u != e[j] - 1:
                    layer._fail(f"a sum runs to {u} but {j} subscripts {e[j]} elements")
        src = None
        if red.contraction:
            src = next(buffer[base] for kind, base, _ in mine if kind == "input")
        reds.append(ir.Reduction(rname, sub[red.symbol], red.summand.xreplace(sub), red.over,
                                 f"{red.contraction}{index}" if red.contraction else None,
                                 space=tuple((j, e[j]) for j in red.over), input=src))
    return ir.Node(name, index, inputs[0], width[layer.input_args[0]], layer.units, params,
                   reds, layer._outer.xreplace(sub), syms, kind="layer", inputs=list(inputs),
                   widths={buffer[a]: width[a] for a in layer.input_args})
