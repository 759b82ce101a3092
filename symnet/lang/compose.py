"""Networks as any composition: the graph of layer applications, checked.

A layer called on earlier results (``Dense(8)(I)``, ``Add()([a, b])``) is an
*application*; the applications reachable from a network's outputs form a
directed acyclic graph.  This module walks it: topological order (inputs
before the layers that read them), the checks made when a network is
declared (cycles, inputs that reach no output, outputs that depend on no
input, widths that do not match at a merge), and the names of the nodes.

One layer object applied at several places is one set of parameters: every
application remembers the object it was made from (``origin``); parameter
names are taken from the first application (W3, b3 for the third node).

>>> import symnet as sn
>>> I = sn.Input(4, name="I")
>>> H1 = sn.Dense(4, "tanh", name="H1")(I)
>>> R = sn.Add(name="R")([I, H1])
>>> O = sn.Dense(1, name="O")(R)
>>> [a.name for a in topological([O])]
['H1', 'R', 'O']
"""

from __future__ import annotations

from .base import Input


def sources(app) -> list:
    """The Inputs and applications an application reads, in order."""
    return list(getattr(app, "inputs", None) or [])


def channels_first(app) -> str | None:
    """The kind of layer that lays ``app``'s output out channels first (a convolution,
    pooling, BatchNorm: ``layout``), found through the layers that keep a layout
    (Dropout, the merges); None where none does (an Input, a sequence layer)."""
    if isinstance(app, Input):
        return None
    layer = getattr(app, "layer", app)
    layout = getattr(layer, "layout", None)
    if layout == "channels_first":
        return type(layer).__name__
    if layout == "kept":
        for src in sources(app):
            found = channels_first(src)
            if found:
                return found
    return None


def topological(outputs: list) -> list:
    """Applications reachable from ``outputs``, each after everything it reads,
    in the order they were made (a chain comes out in its own order).
    A cycle raises ValueError naming the layers on it."""
    order, state, path = [], {}, []

    def visit(app):
        if isinstance(app, Input):
            return
        mark = state.get(id(app))
        if mark == "done":
            return
        if mark == "open":
            k = next(n for n, a in enumerate(path) if a is app)
            names = " → ".join(label(a) for a in path[k:] + [app])
            raise ValueError(f"the network has a cycle: {names}; a layer cannot depend on "
                             "its own output (unroll recurrences: sn.recurrent.unroll)")
        state[id(app)] = "open"
        path.append(app)
        for src in sources(app):
            visit(src)
        path.pop()
        state[id(app)] = "done"
        order.append(app)

    for out in outputs:
        visit(out)
    # The order the user wrote the applications in is a topological one too, and
    # the one people expect to read (x_1, h_1, x_2, h_2, ... rather than depth first).
    return sorted(order, key=lambda a: a.seq)


def label(x) -> str:
    """How errors name an Input or a layer application."""
    name = getattr(x, "name", None)
    return repr(name) if name else repr(x)


def ancestors(app) -> list:
    """The Inputs an application depends on (each once, first seen first)."""
    found, seen, stack = [], set(), [app]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, Input):
            found.append(x)
        else:
            stack.extend(reversed(sources(x)))
    return found


def check(inputs: list, outputs: list, order: list):
    """The checks made when a network is declared (ValueError naming the layers)."""
    declared = {id(i) for i in inputs}
    if len(declared) != len(inputs):
        raise ValueError("the same Input is given twice among the network's inputs")
    reached = set()
    for out in outputs:
        if isinstance(out, Input):
            raise ValueError(f"output {label(out)} is an Input; an output must be a layer")
        found = ancestors(out)
        if not found:
            raise ValueError(f"output {label(out)} does not depend on any input")
        for x in found:
            if id(x) not in declared:
                raise ValueError(f"output {label(out)} depends on input {label(x)}, which is "
                                 "not among the network's inputs; add it to the inputs list")
            reached.add(id(x))
    for x in inputs:
        if id(x) not in reached:
            raise ValueError(f"input {label(x)} does not reach any output; every input must "
                             "be used by some output (or leave it out of the inputs)")
    for app in order:
        for src in sources(app):
            if src is None:
                raise ValueError(f"layer {label(app)} is not connected to an Input")


def size(shape: tuple) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def shape(x, shapes: dict) -> tuple:
    """One example of an Input or of an application, given those already known."""
    if isinstance(x, Input):
        return x.shape
    return shapes[id(x)]


def shapes_of(order: list, names: dict) -> dict:
    """id(application) -> one example's output shape, checking shapes at each merge."""
    shapes: dict = {}
    for app in order:
        ins = [shape(s, shapes) for s in sources(app)]
        try:
            shapes[id(app)] = app.out_shape_of(ins)
        except ValueError as exc:
            if len(ins) == 1:
                raise
            srcs = ", ".join(f"{names.get(id(s), label(s))} {_text(w)}"
                             for s, w in zip(sources(app), ins))
            raise ValueError(f"layer {names.get(id(app), label(app))!r} with inputs {srcs}: "
                             f"{exc}") from None
    return shapes


def _text(shape: tuple) -> str:
    return f"({shape[0]})" if len(shape) == 1 else str(shape)
