"""General layers: any differentiable element formula in index notation.

A layer says what one output element h_i is, as a sympy expression of the
input elements x[j], its own parameters (indexed by i, j, k) and sums over
input indices.  An RBF layer, h_i = exp(−β_i Σ_j (x_j − C_ij)²):

>>> import sympy as sp, symnet as sn
>>> rbf = sn.Layer(16, lambda x, C, beta, i, j: sp.exp(-beta[i] * sn.sum_j((x[j] - C[i, j])**2)),
...                params={"C": ("out", "in"), "beta": ("out",)}, init={"beta": "ones"})
>>> net = sn.Network(sn.Input(2), rbf, sn.Dense(1, "sigmoid"), loss="bce")
>>> net.param_shapes()
{'C1': (16, 2), 'beta1': (16,), 'W2': (1, 16), 'b2': (1,)}

The formula is a Python function; its arguments are passed by name: ``x``
(the input, an IndexedBase), ``i`` (output index), ``j`` and ``k`` (input
indices) and one IndexedBase per parameter.  ``sn.sigmoid`` and
``sn.softplus`` are available next to sympy's functions.  Sums are ``sn.sum_j(e)``,
``sn.sum_k(e)`` or ``sympy.Sum(e, (j, 0, n_in - 1))`` with ``sn.n_in``.

``to_node`` turns the formula into the IR's node form: each Sum becomes a
reduction r[b,i] = Σ_{j,k} g (a summand exactly W[i,j]·x[j] is a contraction
and lowers to a matrix product), the rest is the outer formula φ(r, q[i],
x[b,i]).  sympy then differentiates g and φ per element, never whole
matrices.

``linear="W"`` puts a linear map z = W·x (W of shape (units, inputs)) in
front: the formula then receives ``z`` instead of ``x`` and may sum over
z's index, which couples the outputs, e.g. a normalising layer
h_i = z_i / sqrt(Σ_j z_j² + ε).  Such a layer becomes two IR nodes.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import sympy as sp

from ..ir import nodes as ir
from .base import LayerBase, _check_size, check_flag, check_name
from ..scalar.primitives import stabilise
from ..scalar.smooth import check_smooth

i, j, k = sp.symbols("i j k", integer=True)
n_in = sp.Symbol("n_in", integer=True, positive=True)
INDEX = {"i": i, "j": j, "k": k}
INITS = ("glorot", "he", "zeros", "ones", "normal")
DIMS = ("out", "in")


def sum_j(expr):
    """Σ_j expr over the layer's input index j: ``Sum(expr, (j, 0, n_in - 1))``."""
    return sp.Sum(expr, (j, 0, n_in - 1))


def sum_k(expr):
    """Σ_k expr over the second input index k."""
    return sp.Sum(expr, (k, 0, n_in - 1))


@dataclass
class _Reduction:
    symbol: sp.Symbol            # placeholder standing for the reduction inside φ
    summand: sp.Expr             # in placeholder symbols
    over: tuple[str, ...]
    contraction: str | None      # parameter name (before its layer number)
    uppers: tuple                # numeric upper bounds the user wrote, checked in to_node


class Layer(LayerBase):
    """A layer given by its element formula h_i = formula(x, params, i, j, k).

    ``params`` maps each parameter name to its dims, each "out" (length
    units) or "in" (length of the input), e.g. {"C": ("out", "in")}.  Its
    array is called C1 for the first layer, C2 for the second, ...
    ``init`` maps a parameter to "glorot", "he", "zeros", "ones", "normal"
    (N(0, 1)) or a number; matrices default to "glorot", vectors to "zeros".

    The formula is checked here: unknown symbols or arrays, indices used
    outside their sums, non-differentiable functions and derivatives without
    a C spelling raise ValueError naming the layer and the culprit.
    """

    def __new__(cls, units=None, *args, **kwargs):
        if isinstance(units, tuple) and cls is Layer:   # a formula over tensors
            from .tensor import TensorLayer
            return TensorLayer(units, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, units: int, formula, params: dict | None = None,
                 init: dict | None = None, linear: str | None = None,
                 name: str | None = None, inputs: tuple | None = None,
                 trainable: bool = True):
        self.units = _check_size(units, "Layer units")
        self.name = None if name is None else check_name(name, "layer")
        self.where = f"layer {self.name or f'Layer({units})'!r}"
        self.input_args = self._check_inputs(inputs, linear)
        self.n_inputs = len(self.input_args)
        self.params = self._check_params(params or {}, linear)
        self.init = self._check_init(init or {})
        self.linear = linear
        self.trainable = check_flag(trainable, f"{self.where}: trainable")
        self.input_arg = "z" if linear else self.input_args[0]
        expr = self._call(formula)
        self._analyse(expr)
        self.formula_text = str(expr)
        self._key = sp.srepr(expr)

    # ------------------------------------------------------------ checking
    def _fail(self, message: str):
        raise ValueError(f"{self.where}: {message}")

    def _check_inputs(self, inputs, linear) -> tuple:
        """The formula's input arguments: ("x",), or several names, e.g. ("x", "h")."""
        if inputs is None:
            return ("z",) if linear else ("x",)
        if isinstance(inputs, str) or not isinstance(inputs, (tuple, list)) or not inputs:
            self._fail(f"inputs must be a tuple of argument names, e.g. ('x', 'h'), "
                       f"got {inputs!r}")
        if linear is not None and len(inputs) > 1:
            self._fail("linear=... takes one input; give several inputs without it")
        for a in inputs:
            if not isinstance(a, str) or not a.isidentifier() or a in (*INDEX, "n_in"):
                self._fail(f"input name {a!r} must be an identifier other than i, j, k, n_in")
        if len(set(inputs)) != len(inputs):
            self._fail(f"input names {tuple(inputs)} repeat")
        return tuple(inputs)

    def _check_params(self, params: dict, linear) -> dict:
        if not isinstance(params, dict):
            self._fail(f"params must be a dict name -> dims, got {params!r}")
        names = dict(params)
        if linear is not None:
            if not isinstance(linear, str):
                self._fail(f"linear must be the weight name (e.g. 'W'), got {linear!r}")
            if linear in names:
                self._fail(f"parameter {linear!r} is declared twice (in params and linear)")
            names[linear] = ("out", "in")
        out = {}
        for p, dims in names.items():
            if not isinstance(p, str) or not p.isidentifier() or p in (
                    *INDEX, "x", "z", "n_in", *self.input_args):
                self._fail(f"parameter name {p!r} must be an identifier other than "
                           "the inputs, i, j, k, n_in")
            check_name(f"{p}1", f"{self.where}: parameter")
            if isinstance(dims, str):
                dims = (dims,)
            dims = tuple(dims)
            allowed = DIMS + (self.input_args if len(self.input_args) > 1 else ())
            if not dims or len(dims) > 3 or any(d not in allowed for d in dims):
                self._fail(f"parameter {p!r} has dims {dims!r}; expected 1 to 3 of "
                           f"{', '.join(map(repr, allowed))}, e.g. ('out', 'in')")
            out[p] = dims
        return out

    def _check_init(self, init: dict) -> dict:
        if not isinstance(init, dict):
            self._fail(f"init must be a dict name -> scheme, got {init!r}")
        chosen = {}
        for p, dims in self.params.items():
            chosen[p] = "glorot" if len(dims) > 1 else "zeros"
        for p, scheme in init.items():
            if p not in self.params:
                self._fail(f"init names {p!r}, which is not a parameter "
                           f"({', '.join(self.params) or 'none'})")
            number = isinstance(scheme, (int, float)) and not isinstance(scheme, bool)
            if not (number or scheme in INITS):
                self._fail(f"init of {p!r} must be one of {', '.join(INITS)} or a number, "
                           f"got {scheme!r}")
            chosen[p] = float(scheme) if number else scheme
        return chosen

    def _call(self, formula) -> sp.Expr:
        if isinstance(formula, sp.Expr):
            # the formula itself, in the symbols a formula function receives (how
            # symnet.load rebuilds a layer from its file)
            return formula
        if not callable(formula):
            self._fail(f"formula must be a Python function of (x, i, j, params...), "
                       f"got {formula!r}")
        available = {a: sp.IndexedBase(a, real=True) for a in self.input_args}
        available.update({self.input_arg: sp.IndexedBase(self.input_arg, real=True), **INDEX})
        for p in self.params:
            if p != self.linear:
                available[p] = sp.IndexedBase(p, real=True)
        try:
            wanted = inspect.signature(formula).parameters
        except (TypeError, ValueError):
            self._fail("the formula's arguments cannot be read; use a def or lambda")
        for arg in wanted:
            if arg not in available:
                hint = " (with linear=..., the formula's input is z = W·x)" \
                    if arg == "x" and self.linear else ""
                self._fail(f"formula argument {arg!r} is not the input, an index or a "
                           f"parameter; available: {', '.join(available)}{hint}")
        try:
            expr = formula(**{a: available[a] for a in wanted})
            expr = sp.sympify(expr)
        except ValueError:
            raise
        except Exception as exc:
            self._fail(f"the formula failed on sympy arguments: {exc!r}")
        if not isinstance(expr, sp.Expr):
            self._fail(f"the formula must return a sympy expression, got {expr!r}")
        return expr

    # ------------------------------------------------------------ analysis
    def _analyse(self, expr: sp.Expr):
        """Split the formula into reductions and an outer formula over
        placeholder scalars; check symbols, indices and derivatives."""
        self._places: dict[sp.Symbol, tuple[str, str, tuple[str, ...]]] = {}
        self._reductions: list[_Reduction] = []
        self._sums: dict = {}
        outer = self._walk(expr)
        outer = stabilise(self._scalarise(outer, {"i"}, "outside any sum"))
        self._outer = outer
        for a in self.input_args:
            if not any(kind == "input" and base == a for kind, base, _ in self._places.values()):
                self._fail(f"the formula does not use its input {a}; "
                           f"a layer must depend on {a}[j] (or {a}[i])")
        for red in self._reductions:
            check_smooth(red.summand, sorted(red.summand.free_symbols, key=str), self.where)
        check_smooth(outer, sorted(outer.free_symbols, key=str), self.where)

    def _walk(self, e):
        """Replace every Sum by the symbol of a new reduction."""
        if isinstance(e, sp.Sum):
            # one reduction per distinct sum, however often the formula uses it
            if e not in self._sums:
                self._sums[e] = self._reduction(e)
            return self._sums[e]
        if not e.args or isinstance(e, sp.Indexed):
            return e
        args = [self._walk(a) for a in e.args]
        return e.func(*args) if any(a is not b for a, b in zip(args, e.args)) else e

    def _reduction(self, s: sp.Sum) -> sp.Expr:
        body, limits = s, []
        while isinstance(body, sp.Sum):
            limits += list(body.limits)
            body = body.function
        over, uppers = [], []
        for lim in limits:
            idx, lo, hi = lim
            if idx == i:
                self._fail("a sum over the output index i is not allowed; to couple the "
                           "outputs, use linear='W' and sum over z[j]")
            if idx not in (j, k):
                self._fail(f"sums run over the input indices j or k, got {idx}")
            if idx.name in over:
                self._fail(f"two nested sums over {idx}")
            if lo != 0 or not (hi == n_in - 1 or hi.is_Integer):
                self._fail(f"the sum over {idx} must run from 0 to n_in - 1, got {lo}..{hi}; "
                           "use sn.sum_j / sn.sum_k")
            if hi.is_Integer:
                uppers.append(int(hi))
            over.append(idx.name)
        if body.has(sp.Sum):
            self._fail("a sum inside a summand must be the whole summand (Σ_j Σ_k ...); "
                       f"found {s}")
        terms = [body]
        if isinstance(body, sp.Add) and any(self._contraction(t, over) for t in body.args):
            terms = list(body.args)        # Σ(a + b) = Σa + Σb: contractions become matmuls
        symbols = []
        for term in terms:
            sym = sp.Symbol(f"r{len(self._reductions) + 1}", real=True)
            summand = stabilise(self._scalarise(term, {"i", *over}, f"in the sum over {over}"))
            self._reductions.append(_Reduction(sym, summand, tuple(over),
                                               self._contraction(term, over), tuple(uppers)))
            symbols.append(sym)
        return sp.Add(*symbols)

    def _contraction(self, term, over) -> str | None:
        """The weight's name when term is exactly W[i,j]·x[j] summed over j."""
        if len(over) != 1 or not isinstance(term, sp.Mul) or len(term.args) != 2:
            return None
        a, b = term.args
        if not (isinstance(a, sp.Indexed) and isinstance(b, sp.Indexed)):
            return None
        idx = INDEX[over[0]]
        for w, x in ((a, b), (b, a)):
            p = w.base.label.name
            xa = x.base.label.name
            dims = [("out", "in")] if xa == self.input_args[0] else []
            dims += [("out", xa)] if len(self.input_args) > 1 else []
            if (xa in self.input_args and x.indices == (idx,)
                    and self.params.get(p) in dims and w.indices == (i, idx)
                    and p != self.linear):
                return p
        return None

    def _scalarise(self, e, allowed: set, where: str):
        """Indexed elements → placeholder scalar symbols; refuse anything else."""
        mapping = {}
        for el in sorted(e.atoms(sp.Indexed), key=str):   # sorted: the C must be deterministic
            base = el.base.label.name
            if base == self.input_arg or base in self.input_args:
                kind, ndim = "input", 1
            elif base in self.params and base != self.linear:
                kind, ndim = "param", len(self.params[base])
            else:
                self._fail(f"unknown array {base!r} in {el}")
            if len(el.indices) != ndim:
                self._fail(f"{el} has {len(el.indices)} indices but {base} has {ndim}")
            names = []
            for t in el.indices:
                if t not in INDEX.values():
                    self._fail(f"{el}: indices must be i, j or k, got {t}")
                if t.name not in allowed:
                    self._fail(f"{el}: index {t} is used {where}; wrap it in sn.sum_{t}(...)")
                names.append(t.name)
            sym = sp.Symbol(f"{base}[{','.join(names)}]", real=True)
            self._places[sym] = (kind, base, tuple(names))
            mapping[el] = sym
        e = e.xreplace(mapping)
        known = set(self._places) | {r.symbol for r in self._reductions}
        for s in sorted(e.free_symbols - known, key=str):
            if isinstance(s, sp.IndexedBase) or str(s) in (self.input_arg, *self.input_args,
                                                           *self.params):
                self._fail(f"{s} must be indexed, e.g. {s}[j] or {s}[i]")
            if s in INDEX.values():
                self._fail(f"index {s} is used as a number in {e}; indices may only "
                           "subscript arrays")
            self._fail(f"unknown symbol {s} in the formula: only the input "
                       f"{self.input_arg}, the parameters ({', '.join(self.params) or 'none'}) "
                       "and the indices i, j, k may appear")
        return e

    # ------------------------------------------------------------ IR
    def describe(self) -> dict:
        d = {"kind": "layer", "units": self.units, "formula": self._key,
             "params": {p: list(d) for p, d in self.params.items()},
             "init": self.init, "linear": self.linear, "name": self.name,
             # not "inputs": a graph's description keeps a node's sources under that key
             **({"input_args": list(self.input_args)} if len(self.input_args) > 1 else {})}
        if not self.trainable:
            d["trainable"] = False
        return d

    def __repr__(self):
        frozen = ", trainable=False" if not self.trainable else ""
        return f"Layer({self.units}, {self.formula_text!r}, name={self.name!r}{frozen})"

    def to_nodes(self, index, name, inputs, shapes):
        if len(getattr(self, "input_args", ())) <= 1:   # (subclasses may skip __init__)
            return super().to_nodes(index, name, inputs, shapes)
        from .layers_multi import multi_input_node
        return multi_input_node(self, index, name, inputs, shapes)

    def to_node(self, index, name, input_name, n_inputs):
        if self.linear:
            W = f"{self.linear}{index}"
            syms: dict = {}
            zname = f"{name}_lin"          # the buffer holding z = W·x
            r = ir.element(syms, f"z_{zname}", ir.BATCH, ir.OUT)
            red = ir.Reduction(f"z_{zname}", r, ir.element(syms, W, ir.OUT, ir.IN)
                               * ir.element(syms, input_name, ir.BATCH, ir.IN),
                               (ir.IN,), contraction=W)
            spec = ir.ParamSpec(W, ("out", "in"), (self.units, n_inputs), self.init[self.linear],
                                trainable=self.trainable)
            lin = ir.Node(zname, index, input_name, n_inputs, self.units, [spec], [red], r,
                          syms, kind="linear")
            return [lin, self._node(index, name, zname, self.units)]
        return self._node(index, name, input_name, n_inputs)

    def _node(self, index, name, input_name, n):
        extent = {"i": self.units, "j": n, "k": n, "out": self.units, "in": n}
        for red in self._reductions:
            for u in red.uppers:
                if u != n - 1:
                    self._fail(f"a sum runs to {u} but the input has {n} elements "
                               f"(expected n_in - 1 = {n - 1})")
        syms: dict = {}
        sub = {}
        for sym, (kind, base, idx) in self._places.items():
            if kind == "input":
                if extent[idx[0]] != n:
                    self._fail(f"{self.input_arg}[{idx[0]}] needs as many inputs as outputs, "
                               f"got {n} inputs and {self.units} outputs")
                sub[sym] = ir.element(syms, input_name, ir.BATCH, idx[0])
            else:
                dims = self.params[base]
                for d, x in zip(dims, idx):
                    if extent[d] != extent[x]:
                        self._fail(f"{base}[{','.join(idx)}]: index {x} runs to {extent[x]} "
                                   f"but the dim {d!r} of {base} has length {extent[d]}")
                sub[sym] = ir.element(syms, f"{base}{index}", *idx)
        params = [ir.ParamSpec(f"{p}{index}", dims, tuple(extent[d] for d in dims),
                               self.init[p], role="weight" if len(dims) > 1 else "bias",
                               trainable=self.trainable)
                  for p, dims in self.params.items() if p != self.linear]
        names = [f"z_{name}"] if len(self._reductions) == 1 else \
            [f"r{m}_{name}" for m in range(1, len(self._reductions) + 1)]
        reds = []
        for red, rname in zip(self._reductions, names):
            sub[red.symbol] = ir.element(syms, rname, ir.BATCH, ir.OUT)
        for red, rname in zip(self._reductions, names):
            reds.append(ir.Reduction(rname, sub[red.symbol], red.summand.xreplace(sub),
                                     red.over,
                                     f"{red.contraction}{index}" if red.contraction else None))
        return ir.Node(name, index, input_name, n, self.units, params, reds,
                       self._outer.xreplace(sub), syms, kind="layer")
