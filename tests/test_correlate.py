"""The plan reads how to compute a sum from derive's terms (symnet.plan.correlate), not
from the layer that wrote it: a term whose three index maps are a correlation's runs
through im2col and products, any other term as the loop it is written as.  Changing a
term in derive changes the route, the C and what both backends compute, together."""

import dataclasses

import numpy as np
import pytest
import sympy as sp

import symnet as sn
from symnet.derive.chain import upstream_name
from symnet.ir.nodes import Access
from symnet.plan import correlate, lower
from symnet.plan.ops import Conv, Loop
from own_cache import own_cache


def _net():
    return sn.Network(sn.Input((2, 7, 7), name="I"),
                      sn.Conv2d(3, 3, padding=1, activation="tanh", name="C1"),
                      sn.MaxPool2d(2, name="P"),
                      sn.Conv2d(4, 2, activation="tanh", name="C2"),
                      sn.Flatten(), sn.Dense(2, name="O"), loss="mse")


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 2, 7, 7)), rng.normal(size=(3, 2))


def _grads(backend):
    model = _net().compile(dtype="float64", seed=1, backend=backend)
    return model, model.loss_and_grad(*_data())[1]


def _routes(net):
    p = lower.plan(net.graph())
    by_node = {g.node.name: g for g in p.grads}
    out = {}
    for node in p.graph.nodes:
        for red in node.reductions:
            fwd = correlate.forward(node, red)
            out[node.name] = [fwd.route if fwd else None] + [
                (t.target, getattr(correlate.correlation(node, red, Access(t.target, t.index),
                                                         t.expr), "route", None))
                for t in by_node[node.name].summands.get(red.name, [])]
    return out


def test_each_term_takes_the_route_its_index_maps_give():
    routes = _routes(_net())
    assert routes["C1"] == ["forward", ("g_W1", "weight")]       # the input needs no ∂L/∂I
    assert routes["C2"] == ["forward", ("dL_dP", "input"), ("g_W3", "weight")]
    assert routes["P"] == [None, ("dL_dC1", None)]                # a max: its argmax route
    assert routes["O"] == [None]                                  # a contraction: products


@pytest.mark.parametrize("kw, hw", [({}, (8, 9)), ({"stride": 2, "padding": 1}, (4, 5)),
                                    ({"dilation": (2, 1), "padding": (0, 1)}, (4, 10))])
def test_the_sizes_are_read_from_the_maps(kw, hw):
    """stride, padding, dilation and the output size come back from the index maps
    (output sizes by PyTorch's formula, here worked by hand)."""
    net = sn.Network(sn.Input((2, 8, 9)), sn.Conv2d(5, (3, 2) if kw else 1, **kw),
                     sn.Flatten(), sn.Dense(1), loss="mse")
    node = net.graph().nodes[0]
    geo = correlate.forward(node, node.reductions[0]).geo
    two = (lambda v: list(v) if isinstance(v, tuple) else [v, v])
    assert geo["out_hw"] == list(hw) and geo["in_hw"] == [8, 9]
    assert geo["stride"] == two(kw.get("stride", 1))
    assert geo["pad"] == two(kw.get("padding", 0))
    assert geo["dilation"] == two(kw.get("dilation", 1))
    assert (geo["cin"], geo["cout"], geo["weight"]) == (2, 5, "W1")


def test_a_layer_written_as_a_correlation_takes_the_same_route():
    """sn.Layer in index notation with a correlation's maps runs as im2col products,
    and computes what Conv2d computes."""
    c, y, x, k, u, v = sn.indices("c y x k u v")
    mine = sn.Layer((3, 5, 5), lambda X, W: sp.tanh(sp.Sum(W[c, k, u, v] * X[k, y + u, x + v],
                                                           (k, 0, 1), (u, 0, 2), (v, 0, 2))),
                    index=(c, y, x), params={"W": (3, 2, 3, 3)})
    nets = [sn.Network(sn.Input((2, 7, 7)), layer, sn.Flatten(), sn.Dense(1), loss="mse")
            for layer in (mine, sn.Conv2d(3, 3, activation="tanh", bias=False))]
    p = lower.plan(nets[0].graph())
    assert [op.mode for op in p.forward + p.backward if isinstance(op, Conv)] == \
        ["forward", "backward"]
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(4, 2, 7, 7)), rng.normal(size=(4, 1))
    models = [n.compile(dtype="float64", seed=0) for n in nets]
    models[1].theta[...] = models[0].theta
    (L0, g0), (L1, g1) = (m.loss_and_grad(X, T) for m in models)
    assert L0 == pytest.approx(L1, rel=1e-12)
    for a, b in zip(g0.values(), g1.values()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def _changed(monkeypatch, tmp_path, change):
    """lower reads derive's terms of C2's sum through ``change(terms)``; a fresh cache,
    so that the C backend compiles the changed plan."""
    real = lower.derive

    def derive(graph):
        grads = real(graph)
        for g in grads:
            if g.node.name == "C2":
                red = g.node.reductions[0].name
                g.summands[red] = change(g.summands[red])
        return grads

    monkeypatch.setattr(lower, "derive", derive)
    monkeypatch.setenv("SYMNET_CACHE_DIR", own_cache(tmp_path))


def test_a_term_of_another_form_runs_as_its_loop(monkeypatch, tmp_path):
    """C2's input-gradient term doubled is no longer a product of two accesses: it
    leaves the correlation and runs as a scatter loop, and ∂L/∂ of everything below C2
    doubles (back propagation is linear in the upstream gradient) in both backends."""
    base = {b: _grads(b)[1] for b in ("c", "numpy")}
    _changed(monkeypatch, tmp_path, lambda terms: [
        dataclasses.replace(t, expr=2 * t.expr) if t.target == upstream_name("P") else t
        for t in terms])
    p = lower.plan(_net().graph())
    conv = [op for op in p.backward if isinstance(op, Conv)]
    assert [(op.gW, op.dX) for op in conv] == [("g_W3", None), ("g_W1", None)]
    assert any(isinstance(op, Loop) and op.stmts[0][0] == "dL_dP" for op in p.backward)
    for backend in ("c", "numpy"):
        model, g = _grads(backend)
        if backend == "c":
            assert "dL_dP[b,k,y + u,x + v] += Σ_c 2·W3[c,k,u,v]·delta_C2[b,c,y,x]" in \
                model.c_source
        for name in g:
            scale = 2.0 if name in ("W1", "b1") else 1.0
            np.testing.assert_allclose(g[name], scale * base[backend][name], rtol=1e-11,
                                       atol=1e-14, err_msg=f"{backend} {name}")


def test_without_its_weight_term_the_correlation_computes_the_input_gradient_only(
        monkeypatch, tmp_path):
    """Derive handing over no g_W3 term (as for a frozen kernel): the im2col pass
    computes dL_dP alone, g_W3 is zero, every other gradient as before."""
    base = {b: _grads(b)[1] for b in ("c", "numpy")}
    _changed(monkeypatch, tmp_path, lambda terms: [t for t in terms if t.target != "g_W3"])
    conv = [op for op in lower.plan(_net().graph()).backward if isinstance(op, Conv)]
    assert [(op.gW, op.dX) for op in conv] == [(None, "dL_dP"), ("g_W1", None)]
    for backend in ("c", "numpy"):
        _, g = _grads(backend)
        assert not g["W3"].any()
        for name in g:
            if name != "W3":
                np.testing.assert_allclose(g[name], base[backend][name], rtol=1e-12,
                                           atol=1e-15, err_msg=f"{backend} {name}")
