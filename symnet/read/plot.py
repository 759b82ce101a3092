"""The network's graph, drawn: one box per input and layer application, an arrow
from each box to the layers that read it, inputs at the top and the outputs (with
their losses) at the bottom.  ``symnet.Network.plot`` calls ``draw``.

The placement is computed without matplotlib (``layout``): a node's row is the
length of the longest path from an input to it, moved down to just above its first
reader where all its readers sit further down; the nodes of a row are spread evenly,
in the order the network lists them.

>>> import symnet as sn
>>> I = sn.Input(4, name="I")
>>> H = sn.Dense(4, "tanh", name="H")(I)
>>> O = sn.Dense(1, name="O")(sn.Add(name="R")([I, H]))
>>> g = layout(sn.Network(I, O, loss="mse"))
>>> [(n.name, n.row) for n in g.nodes]
[('I', 0), ('H', 1), ('R', 2), ('O', 3)]
>>> g.edges
[(0, 1), (0, 2), (1, 2), (2, 3)]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..lang import compose
from ..lang.base import Input


@dataclass
class Node:
    """One box: an input or a layer application."""

    name: str
    kind: str          # "Input", "Dense tanh", "Conv2d 3×3 relu", "Add", ...
    shape: tuple       # one example's shape
    row: int
    column: float = 0.0
    output: str = ""   # the loss, for an output node
    shared: bool = False   # one of several applications of one layer object


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)   # (from, to) node indices


def _activation(app) -> str:
    spec = getattr(app, "activation_spec", None)    # a name, or the user's own formula
    if spec is None:
        spec = getattr(app, "activation_name", None)
    if spec is None:
        return ""
    name = spec if isinstance(spec, str) else "custom"
    return "" if name == "linear" else name


def _kind(app) -> str:
    kind = type(app).__name__
    kernel = getattr(app, "kernel", None)
    if isinstance(kernel, tuple) and kernel:
        kind += " " + "×".join(str(k) for k in kernel)
    act = _activation(app)
    return f"{kind} {act}" if act else kind


def _shape_text(shape: tuple) -> str:
    return str(shape[0]) if len(shape) == 1 else "×".join(str(s) for s in shape)


def layout(net) -> Graph:
    """Nodes (inputs first, then the layers in the network's order) with their rows
    and columns, and the edges between them."""
    graph = Graph()
    index: dict = {}
    for x, name in zip(net.inputs, net.input_names):
        index[id(x)] = len(graph.nodes)
        graph.nodes.append(Node(name, "Input", tuple(x.shape), 0))
    outputs = {id(o): k for k, o in enumerate(net.outputs)}
    for app, name, shape, shared in zip(net.layers, net.names, net.shapes, net.shared):
        srcs = [index[id(s)] for s in compose.sources(app)]
        row = 1 + max(graph.nodes[s].row for s in srcs)
        index[id(app)] = len(graph.nodes)
        node = Node(name, _kind(app), tuple(shape), row, shared=bool(shared))
        if id(app) in outputs:
            node.output = net.loss_names[outputs[id(app)]]
        graph.edges.extend((s, index[id(app)]) for s in dict.fromkeys(srcs))
        graph.nodes.append(node)
    # A layer whose readers all sit further down moves down to just above the first
    # of them (a recurrence's slices next to their steps, not all in row 1).
    readers: dict = {}
    for a, b in graph.edges:
        readers.setdefault(a, []).append(b)
    for k in range(len(graph.nodes) - 1, len(net.inputs) - 1, -1):
        if k in readers:
            graph.nodes[k].row = min(graph.nodes[r].row for r in readers[k]) - 1
    rows: dict = {}
    for node in graph.nodes:
        rows.setdefault(node.row, []).append(node)
    for members in rows.values():
        for k, node in enumerate(members):
            node.column = k - (len(members) - 1) / 2
    return graph


def draw(net, path=None, ax=None):
    """Draw ``net``'s graph; return the matplotlib figure (saved to ``path`` when
    given, through the Agg backend: no display needed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError("Network.plot needs matplotlib: `pip install matplotlib` "
                          "or `pip install symnet[plot]`") from e
    graph = layout(net)
    n_rows = 1 + max(n.row for n in graph.nodes)
    width = max(sum(1 for n in graph.nodes if n.row == r) for r in range(n_rows))
    size = (max(3.2, 2.6 * width), 0.95 * n_rows + 0.4)
    if ax is not None:
        fig = ax.figure
    elif path is not None:
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        fig = Figure(figsize=size)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
    else:
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=size)

    def xy(node):
        return node.column * 2.6, -node.row * 1.0

    for a, b in graph.edges:
        src, dst = graph.nodes[a], graph.nodes[b]
        rad, span = 0.0, dst.row - src.row
        if span > 1:           # past the rows between: bow outwards, the longer the more
            rad = 0.2 + 0.1 * span
            if dst.column > src.column:
                rad = -rad
        ax.annotate("", xy=xy(dst), xytext=xy(src),
                    arrowprops=dict(arrowstyle="-|>", color="0.35", shrinkA=17, shrinkB=17,
                                    connectionstyle=f"arc3,rad={rad}"))
    for node in graph.nodes:
        if node.kind == "Input":
            color = "#dbe9f6"
        elif node.output:
            color = "#fde2c8"
        else:
            color = "#e4f2dc" if not node.shared else "#efe0f5"
        lines = [node.name, node.kind, _shape_text(node.shape)]
        if node.output:
            lines[-1] += f", loss {node.output}"
        if node.shared:
            lines[1] += " (shared)"
        x, y = xy(node)
        ax.text(x, y, "\n".join(lines), ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.4", facecolor=color, edgecolor="0.4"))
    xs = [xy(n)[0] for n in graph.nodes]
    ax.set_xlim(min(xs) - 1.3, max(xs) + 1.3)
    ax.set_ylim(-(n_rows - 1) - 0.55, 0.55)
    ax.set_axis_off()
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig
