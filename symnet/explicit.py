"""The derivation written out for a small batch: explicit sympy expressions.

Runs the derived element rules of ``symnet.derive`` (the same ones the
compiler emits) over explicit elements — ``I[0, 1]``, ``W2[3, 0]`` — in the
order the generated C runs them, so every array of the derivation becomes an
array of closed-form sympy expressions of the inputs, targets and parameters.
Meant for small networks: the expressions grow with width and depth.
"""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from . import ir
from .derive import INV_BATCH, NodeGrad, delta_name, grad_name, upstream_name
from .primitives import sigmoid, softplus


def arguments(graph: ir.Graph, batch: int) -> list[sp.IndexedBase]:
    """[input, T, W1, b1, ...] as IndexedBase objects with their shapes."""
    args = [sp.IndexedBase(graph.input_name, shape=(batch, graph.n_in)),
            sp.IndexedBase("T", shape=(batch, graph.n_out))]
    args += [sp.IndexedBase(p.name, shape=tuple(p.shape)) for p in graph.params()]
    return args


_STEP = {sp.StrictGreaterThan: lambda a, b: sp.Heaviside(a - b, 0),
         sp.GreaterThan: lambda a, b: sp.Heaviside(a - b, 1),
         sp.StrictLessThan: lambda a, b: sp.Heaviside(b - a, 0),
         sp.LessThan: lambda a, b: sp.Heaviside(b - a, 1)}


def step_form(expr: sp.Expr) -> sp.Expr:
    """Piecewise((e1, a > b), (e2, True)) → e2 + (e1 − e2)·Heaviside(a − b, 0);
    σ(x) → 1/(1 + exp(−x)) and softplus(x) → log(1 + exp(x)).

    Exact (Heaviside(0, 0) = 0 takes the same branch as the C), and it keeps
    sympy from folding Piecewise conditions into each other, which grows
    without bound once kinks are nested layer over layer."""
    def fold(pw):
        out = pw.args[-1].expr
        if pw.args[-1].cond != sp.true:
            return pw
        for e, c in reversed(pw.args[:-1]):
            if type(c) not in _STEP:
                return pw
            out = out + (e - out) * _STEP[type(c)](*c.args)
        return out
    with sp.evaluate(True):
        expr = expr.replace(lambda e: isinstance(e, sp.Piecewise), fold)
        # sympy's own functions, so that any lambdify module knows them
        return expr.replace(sigmoid, lambda x: 1 / (1 + sp.exp(-x))).replace(
            softplus, lambda x: sp.log(1 + sp.exp(x)))


def _elements(base: sp.IndexedBase) -> np.ndarray:
    out = np.empty(base.shape, dtype=object)
    for idx in itertools.product(*(range(int(n)) for n in base.shape)):
        out[idx] = base[idx]
    return out


def _zeros(*shape) -> np.ndarray:
    """An accumulator: None until the first term arrives (no "0 + ..." terms)."""
    return np.full(shape, None, dtype=object)


def _plus(a, b):
    return b if a is None else a + b


class _Run:
    """Explicit arrays by name, and the rule that substitutes them."""

    def __init__(self, graph: ir.Graph, batch: int):
        self.graph, self.batch = graph, batch
        self.env = {a.name: _elements(a) for a in arguments(graph, batch)}
        self.symbols: dict = {}
        self.rules: dict = {}
        for node in graph.nodes:
            self.symbols.update(node.symbols)

    def at(self, expr: sp.Expr, point: dict) -> sp.Expr:
        """expr with every element symbol replaced by the explicit element at
        ``point`` (index name → value), inv_batch by 1/batch."""
        if expr not in self.rules:
            self.rules[expr] = step_form(expr)
        expr = self.rules[expr]
        sub = {INV_BATCH: sp.Rational(1, self.batch)}
        for sym in expr.free_symbols:
            acc = self.symbols.get(sym)
            if acc is not None:
                sub[sym] = self.env[acc.array][tuple(point[k] for k in acc.index)]
        return expr.xreplace(sub)

    def width(self, name: str) -> int:
        if name == self.graph.input_name:
            return self.graph.n_in
        return next(n.n_out for n in self.graph.nodes if name in (
            n.name, upstream_name(n.name)) or any(name in (r.name, delta_name(n, r))
                                                  for r in n.reductions))

    def target(self, name: str) -> np.ndarray:
        """The (zeroed on first use) array a rule accumulates into."""
        if name not in self.env:
            params = {grad_name(p.name): p.shape for p in self.graph.params()}
            shape = params.get(name) or (self.batch, self.width(
                name.removeprefix("dL_d")))
            self.env[name] = _zeros(*shape)
        return self.env[name]

    def loop(self, node: ir.Node, extra=()):
        """Every point of a node's loop: b, i and the reduction indices."""
        ranges = [(ir.BATCH, self.batch), (ir.OUT, node.n_out)]
        ranges += [(k, node.n_in) for k in extra]
        names = [k for k, _ in ranges]
        for values in itertools.product(*(range(n) for _, n in ranges)):
            yield dict(zip(names, values))

    def accumulate(self, node: ir.Node, target: str, index, expr, extra=()):
        arr = self.target(target)
        for point in self.loop(node, extra):
            key = tuple(point[k] for k in index)
            arr[key] = _plus(arr[key], self.at(expr, point))


def evaluate(graph: ir.Graph, grads: list[NodeGrad], batch: int) -> dict:
    """Every array of the derivation (and "L") for ``batch`` examples.

    Built without sympy's automatic simplification (``evaluate(False)``):
    simplifying expressions that nest every layer below costs more than
    evaluating them, and ``lambdify(..., cse=True)`` shares the repeats."""
    with sp.evaluate(False):
        return _evaluate(graph, grads, batch)


def _evaluate(graph: ir.Graph, grads: list[NodeGrad], batch: int) -> dict:
    run = _Run(graph, batch)
    env = run.env
    for node in graph.nodes:
        X = env[node.input]
        for red in node.reductions:
            if red.contraction:
                W = env[red.contraction]
                env[red.name] = X.dot(W.T)
            else:
                env[red.name] = _zeros(batch, node.n_out)
                run.accumulate(node, red.name, (ir.BATCH, ir.OUT), red.summand, red.over)
        env[node.name] = _zeros(batch, node.n_out)
        run.accumulate(node, node.name, (ir.BATCH, ir.OUT), node.outer)

    out, T = graph.output, env["T"]
    O = env[out.name]
    by_node = {g.node.name: g for g in grads}
    if graph.loss.element is None:
        # The fused softmax cross-entropy of the C (templates/network.c.j2).
        total, dO = sp.S.Zero, _zeros(batch, out.n_out)
        for b in range(batch):
            s = sum(sp.exp(o) for o in O[b])
            st = sum(T[b])
            total += sp.log(s) * st - sum(t * o for t, o in zip(T[b], O[b]))
            for k in range(out.n_out):
                dO[b, k] = (sp.exp(O[b, k]) / s * st - T[b, k]) / batch
        env[upstream_name(out.name)] = dO
        env["L"] = total / batch
    else:
        g = by_node[out.name]
        env["L"] = sum(run.at(g.loss, p) for p in run.loop(out)) / batch

    for k in range(len(graph.nodes) - 1, -1, -1):
        node, g = graph.nodes[k], by_node[graph.nodes[k].name]
        first = k == 0
        for t in g.outer:
            if not (first and t.target == upstream_name(node.input)):
                run.accumulate(node, t.target, t.index, t.expr)
        for red in node.reductions:
            delta = env[delta_name(node, red)]
            if red.contraction:
                X, W = env[node.input], env[red.contraction]
                gW = run.target(grad_name(red.contraction))
                gW[...] = np.vectorize(_plus, otypes=[object])(gW, delta.T.dot(X))
                if not first:
                    up = run.target(upstream_name(node.input))
                    up[...] = np.vectorize(_plus, otypes=[object])(up, delta.dot(W))
                continue
            for t in g.summands[red.name]:
                if not (first and t.target == upstream_name(node.input)):
                    run.accumulate(node, t.target, t.index, t.expr, red.over)
    for arr in env.values():   # elements no rule wrote into (none expected)
        if isinstance(arr, np.ndarray):
            arr[np.equal(arr, None)] = sp.S.Zero
    return env
