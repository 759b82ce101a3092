"""The derivation written out for a small batch: explicit sympy expressions.

Runs the derived element rules of ``symnet.derive.chain`` (the same ones the
compiler emits) over explicit elements — ``I[0, 1]``, ``W2[3, 0]`` — in the
order the generated C runs them, so every array of the derivation becomes an
array of closed-form sympy expressions of the inputs, targets and parameters.
Meant for small networks: the expressions grow with width and depth.
"""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from ..ir import nodes as ir
from ..derive.chain import INV_BATCH, NodeGrad, delta_name, grad_name, upstream_name

INV_STAT = sp.Symbol("inv_stat", positive=True)   # BatchNorm's 1/B (symnet.lang.batchnorm)
from ..scalar.primitives import sigmoid, softplus


def arguments(graph: ir.Graph, batch: int) -> list[sp.IndexedBase]:
    """[input, T, W1, b1, ...] as IndexedBase objects with their shapes."""
    args = [sp.IndexedBase(graph.input_name, shape=(batch, *graph.in_shape)),
            sp.IndexedBase("T", shape=(batch, *(graph.output.out_shape if len(graph.outputs) == 1
                                                else (graph.n_out,))))]
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


def _first_max(window: list) -> list:
    """Per element of a max window: 1 where it is the first largest, else 0, as a
    product of steps (e_j > e_i before it, e_j ≥ e_i after it)."""
    out = []
    for j, e in enumerate(window):
        f = sp.S.One
        for m, other in enumerate(window):
            if m != j:
                f = f * sp.Heaviside(e - other, 0 if m < j else 1)
        out.append(f)
    return out


class _Run:
    """Explicit arrays by name, and the rule that substitutes them."""

    def __init__(self, graph: ir.Graph, batch: int):
        self.graph, self.batch = graph, batch
        self.env = {a.name: _elements(a) for a in arguments(graph, batch)}
        self.symbols: dict = {}
        self.rules: dict = {}
        self.shapes: dict = {}
        for node in graph.nodes:
            self.symbols.update(node.symbols)
            shape = (batch, *node.out_shape)
            for name in [node.name, upstream_name(node.name)] + [
                    n for r in node.reductions for n in (r.name, delta_name(node, r))]:
                self.shapes[name] = shape
        self.shapes[upstream_name(graph.input_name)] = (batch, *graph.in_shape)
        for name, width in graph.inputs:       # several inputs: each its own array
            shape = (graph.input_shapes or {}).get(name, (width,))
            self.shapes[name] = self.shapes[upstream_name(name)] = (batch, *shape)

    def at(self, expr: sp.Expr, point: dict) -> sp.Expr:
        """expr with every element symbol replaced by the explicit element at
        ``point`` (index name → value), inv_batch by 1/batch; an element
        outside its array (zero padding) is 0."""
        if expr not in self.rules:
            self.rules[expr] = step_form(expr)
        expr = self.rules[expr]
        sub = {INV_BATCH: sp.Rational(1, self.batch), INV_STAT: sp.Rational(1, self.batch)}
        for sym in expr.free_symbols:
            acc = self.symbols.get(sym)
            if acc is not None:
                arr = self.env[acc.array]
                key = tuple(ir.index_at(k, point) for k in acc.index)
                inside = all(0 <= k < n for k, n in zip(key, arr.shape))
                sub[sym] = arr[key] if inside else sp.S.Zero
            elif sym.name in point:     # a loop index in the formula (a causal mask)
                sub[sym] = sp.Integer(point[sym.name])
        return expr.xreplace(sub)

    def target(self, name: str) -> np.ndarray:
        """The (zeroed on first use) array a rule accumulates into."""
        if name not in self.env:
            params = {grad_name(p.name): p.shape for p in self.graph.params()}
            self.env[name] = _zeros(*(params.get(name) or self.shapes[name]))
        return self.env[name]

    def loop(self, node: ir.Node, extra=None):
        """Every point of a node's loop: b, the outputs and a reduction's indices."""
        ranges = node.reduction_loop(extra) if extra is not None else node.loop()
        names = [k for k, _ in ranges]
        sizes = [self.batch if n == "batch" else n for _, n in ranges]
        for values in itertools.product(*(range(n) for n in sizes)):
            yield dict(zip(names, values))

    def accumulate(self, node: ir.Node, target: str, index, expr, extra=None):
        arr = self.target(target)
        for point in self.loop(node, extra):
            key = tuple(ir.index_at(k, point) for k in index)
            if all(0 <= k < n for k, n in zip(key, arr.shape)):   # padding: no gradient
                arr[key] = _plus(arr[key], self.at(expr, point))

    def max_pool(self, node: ir.Node, red: ir.Reduction, route: list | None = None):
        """z = max over each window; with ``route`` [(target, index, delta expr)]
        the gradient goes to the first largest element."""
        out = self.target(red.name) if route is None else None
        for point in self.loop(node):
            cells = []
            acc = self.symbols[red.summand]
            shape = self.env[acc.array].shape
            for w in itertools.product(*(range(n) for _, n in red.space)):
                p = dict(point, **dict(zip((n for n, _ in red.space), w)))
                key = (ir.index_at(k, p) for k in acc.index)
                if all(0 <= k < n for k, n in zip(key, shape)):   # padding: −∞, never max
                    cells.append(p)
            window = [self.at(red.summand, p) for p in cells]
            key = tuple(point[k] for k in node.out_index)
            if route is None:
                out[key] = sp.Max(*window)
                continue
            for target, index, expr in route:
                arr = self.target(target)
                d = self.at(expr, point)
                for p, f in zip(cells, _first_max(window)):
                    k = tuple(ir.index_at(x, p) for x in index)
                    arr[k] = _plus(arr[k], d * f)


def _coupled(run: _Run, rule, O: np.ndarray, T: np.ndarray) -> sp.Expr:
    """A coupled loss's derived rule (``symnet.derive.coupled``, the one the C runs)
    on explicit elements: per example its sums (Σ or Max over k), scalars, value,
    and dL_dO[b,k] into the output's gradient; returns the loss (the mean)."""
    batch, n, G = O.shape[0], rule.n, rule.groups
    rows = batch * G                   # a class per position: a row for each position
    dO = run.target(upstream_name(rule.output))
    if rule.first:                     # channels first: class k of position q at k·G + q
        O, T, dO = (A.reshape(batch, n, G) for A in (O, T, dO))

        def at_k(A, b, k):
            return A[b // G, k, b % G]
    else:
        O, T, dO = (A.reshape(rows, n) for A in (O, T, dO))

        def at_k(A, b, k):
            return A[b, k]
    total = sp.S.Zero
    for b in range(rows):
        at = {INV_BATCH: sp.Rational(1, batch)}

        def el(expr, k=None):
            sub = dict(at)
            if k is not None:
                sub.update({rule.o: at_k(O, b, k), rule.t: at_k(T, b, k)})
            return expr.xreplace(sub)
        for r in rule.sums:
            terms = [el(r.summand, k) for k in range(n)]
            at[r.symbol] = sp.Max(*terms) if r.op == "max" else sp.Add(*terms)
        for sym, e in rule.scalars:
            at[sym] = el(e)
        total += el(rule.value)
        for k in range(n):
            i = (b // G, k, b % G) if rule.first else (b, k)
            dO[i] = _plus(dO[i], el(rule.grad, k))
    return total / batch


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
    if graph.packed:       # the inputs side by side in one array, as the C takes them
        off = 0
        for name, width in graph.inputs:
            env[name] = env[graph.input_name][:, off:off + width].reshape(run.shapes[name])
            off += width
    for node in graph.nodes:
        X = env[node.input]
        if node.pieces is not None:
            env[node.name] = np.concatenate([env[src] for src, _ in node.pieces],
                                            axis=1 + node.concat_axis)
            continue
        if node.kind == "flatten":
            env[node.name] = X.reshape(batch, -1)
            continue
        for red in node.reductions:
            if red.contraction:
                W = env[red.contraction]
                x = env[node.red_input(red)]
                if red.rows:        # the same W at every position of a sequence
                    x = x.reshape(batch * red.rows, -1)
                env[red.name] = x.dot(W.T).reshape((batch,) + node.out_shape)
            elif red.op == "max":
                run.max_pool(node, red)
            else:
                run.accumulate(node, red.name, node.out_index, red.summand, red)
        run.accumulate(node, node.name, node.out_index, node.outer)

    by_node = {g.node.name: g for g in grads}
    env["L"] = sp.S.Zero
    for name in graph.outputs:
        out, w = graph.node(name), graph.weights[name]
        O, off = env[out.name], graph.target_offset(name)
        T = env["T"] if len(graph.outputs) == 1 else env["T"][:, off:off + out.n_out]
        if by_node[out.name].coupled is not None:
            env["L"] += _coupled(run, by_node[out.name].coupled, O.reshape(batch, -1), T)
        else:
            g = by_node[out.name]
            env["L"] += w * sum(run.at(g.loss, p) for p in run.loop(out)) / batch

    for k in range(len(graph.nodes) - 1, -1, -1):
        node, g = graph.nodes[k], by_node[graph.nodes[k].name]
        if node.kind == "flatten":
            if g.input_grad:
                env[upstream_name(node.input)] = run.target(upstream_name(node.name)).reshape(
                    run.shapes[upstream_name(node.input)])
            continue
        if node.pieces is not None:        # Concatenate: the same copy backwards
            for t in g.outer:              # an output's ∂ℓ/∂J first (the loss's part)
                run.accumulate(node, t.target, t.index, t.expr)
            for src, off, width, t in g.pieces:
                part = np.moveaxis(np.moveaxis(run.target(upstream_name(node.name)),
                                               1 + node.concat_axis, 1)[:, off:off + width],
                                   1, 1 + node.concat_axis)
                acc = run.target(t.target)
                acc[...] = np.vectorize(_plus, otypes=[object])(acc, part)
            continue
        for t in g.outer + g.through:
            run.accumulate(node, t.target, t.index, t.expr)
        for red in node.reductions:
            delta = env[delta_name(node, red)]
            for prod in g.products.get(red.name, []):   # δᵀ·X and δ·W, as derived
                operand, d = env[prod.operand], delta
                acc = run.target(prod.target)
                if red.rows:        # a sequence's positions are rows of the product too
                    d = delta.reshape(-1, delta.shape[-1])
                    if prod.rule == "weight":
                        operand = operand.reshape(-1, operand.shape[-1])
                value = d.T.dot(operand) if prod.rule == "weight" else d.dot(operand)
                value = value.reshape(acc.shape)
                acc[...] = np.vectorize(_plus, otypes=[object])(acc, value)
            for t in g.summands[red.name]:
                if t.route == "argmax":
                    run.max_pool(node, red, [(t.target, t.index, t.expr)])
                else:
                    run.accumulate(node, t.target, t.index, t.expr, red)
    for arr in env.values():   # elements no rule wrote into (none expected)
        if isinstance(arr, np.ndarray):
            arr[np.equal(arr, None)] = sp.S.Zero
    return env
