"""Network.plot: the graph's placement (symnet.read.plot.layout) against the
declared structure, the drawing (matplotlib, optional), and the message without
matplotlib."""

import sys

import pytest

import symnet as sn
from symnet.read.plot import layout


def residual():
    I = sn.Input(16, name="I")
    H1 = sn.Dense(16, "relu", name="H1")(I)
    H2 = sn.Dense(16, name="H2")(H1)
    R = sn.Add(name="R")([I, H2])
    O = sn.Dense(1, "sigmoid", name="O")(R)
    return sn.Network(I, O, loss="bce")


def two_heads_shared():
    A, B = sn.Input(2, name="A"), sn.Input((1, 4, 4), name="B")
    d = sn.Dense(4, "tanh", name="d")
    conv = sn.Conv2d(2, 3, activation="relu", name="c")(B)
    flat = sn.Flatten(name="f")(conv)
    cat = sn.Concatenate(name="cat")([d(d(A)), flat])
    moon = sn.Dense(1, "sigmoid", name="moon")(cat)
    radius = sn.Dense(1, name="radius")(cat)
    return sn.Network([A, B], [moon, radius], loss={"moon": "bce", "radius": "mse"})


def test_layout_of_a_residual_block():
    g = layout(residual())
    assert [(n.name, n.kind, n.shape, n.row) for n in g.nodes] == [
        ("I", "Input", (16,), 0), ("H1", "Dense relu", (16,), 1), ("H2", "Dense", (16,), 2),
        ("R", "Add", (16,), 3), ("O", "Dense sigmoid", (1,), 4)]
    assert g.edges == [(0, 1), (1, 2), (0, 3), (2, 3), (3, 4)]
    assert [n.output for n in g.nodes] == ["", "", "", "", "bce"]
    assert all(n.column == 0 for n in g.nodes)       # one node per row: centred


def test_layout_of_several_inputs_outputs_and_a_shared_layer():
    g = layout(two_heads_shared())
    by = {n.name: n for n in g.nodes}
    assert set(by) == {"A", "B", "d", "d_2", "c", "f", "cat", "moon", "radius"}
    # rows: the longest path from an input
    assert {k: by[k].row for k in by} == {"A": 0, "B": 0, "d": 1, "c": 1, "d_2": 2, "f": 2,
                                          "cat": 3, "moon": 4, "radius": 4}
    assert by["c"].kind == "Conv2d 3×3 relu" and by["c"].shape == (2, 2, 2)
    assert by["f"].shape == (8,) and by["cat"].shape == (12,)
    assert by["d"].shared and by["d_2"].shared and not by["c"].shared
    assert (by["moon"].output, by["radius"].output) == ("bce", "mse")
    # the two nodes of a row sit symmetrically about the centre
    assert sorted(by[k].column for k in ("moon", "radius")) == [-0.5, 0.5]
    names = [n.name for n in g.nodes]
    edges = {(names[a], names[b]) for a, b in g.edges}
    assert edges == {("A", "d"), ("d", "d_2"), ("B", "c"), ("c", "f"), ("d_2", "cat"),
                     ("f", "cat"), ("cat", "moon"), ("cat", "radius")}


def test_plot_draws_every_node_and_edge(tmp_path):
    pytest.importorskip("matplotlib")
    net = two_heads_shared()
    fig = net.plot(tmp_path / "graph.png")
    assert (tmp_path / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    boxes = [t.get_text() for t in ax.texts if t.get_text()]
    assert len(boxes) == 9
    assert "moon\nDense sigmoid\n1, loss bce" in boxes
    assert "B\nInput\n1×4×4" in boxes
    arrows = [t for t in ax.texts if not t.get_text()]      # annotate("") draws an arrow
    assert len(arrows) == 8


def test_plot_into_given_axes():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    assert residual().plot(ax=ax) is fig
    assert len([t for t in ax.texts if t.get_text()]) == 5


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install symnet\[plot\]"):
        residual().plot()


def test_a_recurrence_is_drawn_as_a_ladder():
    """Each step's slice of the sequence sits just above the step that reads it."""
    S = sn.Input((3, 1), name="S")
    h = sn.recurrent.unroll(sn.recurrent.RNNCell(4, "tanh"), steps=3)(S)
    g = layout(sn.Network(S, sn.Dense(1, name="O")(h), loss="mse"))
    rows = {n.name: n.row for n in g.nodes}
    assert rows == {"S": 0, "x_1": 1, "h_1": 2, "x_2": 2, "h_2": 3, "x_3": 3, "h_3": 4, "O": 5}
    assert all(n.shared for n in g.nodes if n.name.startswith("h_"))


def test_a_transformer_block_shows_its_layers():
    S = sn.Input((6, 8), name="S")
    h = sn.TransformerBlock(2, 16, name="blk")(S)
    g = layout(sn.Network(S, sn.Dense(1, name="O")(sn.Flatten(name="F")(h)), loss="mse"))
    assert [(n.name, n.kind, n.shape) for n in g.nodes] == [
        ("S", "Input", (6, 8)), ("blk_norm1", "LayerNorm", (6, 8)),
        ("blk_att", "MultiHeadAttention", (6, 8)), ("blk_res1", "Add", (6, 8)),
        ("blk_norm2", "LayerNorm", (6, 8)), ("blk_ff1", "Pointwise relu", (6, 16)),
        ("blk_ff2", "Pointwise", (6, 8)), ("blk", "Add", (6, 8)), ("F", "Flatten", (48,)),
        ("O", "Dense", (1,))]
    names = [n.name for n in g.nodes]
    edges = {(names[a], names[b]) for a, b in g.edges}
    assert ("S", "blk_res1") in edges and ("blk_res1", "blk") in edges   # the two residuals
