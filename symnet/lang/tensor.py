"""Layers over tensors: element formulas with named indices, ranges and affine offsets.

A tensor layer says what one output element h[c, y, x] is, in index notation:
named output indices with their extents, sums over named indices with their
ranges, and array accesses whose positions are affine in the indices
(``x[c, y + u, x + v]``, ``x[k, 2*y + u - 1]``).  A user-written depthwise
convolution, h[c,y,x] = Σ_u Σ_v K[c,u,v]·x[c,y+u,x+v]:

>>> import sympy as sp, symnet as sn
>>> c, y, x, u, v = sn.indices("c y x u v")
>>> dw = sn.Layer((2, 4, 4), lambda X, K: sp.Sum(K[c, u, v] * X[c, y + u, x + v],
...                                             (u, 0, 2), (v, 0, 2)),
...               index=(c, y, x), params={"K": (2, 3, 3)})
>>> net = sn.Network(sn.Input((2, 6, 6)), dw, sn.Flatten(), sn.Dense(1), loss="mse")
>>> net.param_shapes()
{'K1': (2, 3, 3), 'W3': (1, 32), 'b3': (1,)}

``sn.Conv2d`` is this notation with the formula
h[c,y,x] = f(Σ_k Σ_u Σ_v W[c,k,u,v]·x[k, y·s + u − p, x·s + v − p] + b[c]).
An access may leave its array only where the summand is then zero (zero
padding: x = 0 there); the loops then clip their ranges instead of testing
inside the inner loop.  sympy differentiates the summand per element; the
chain rule adds each derivative into the element the access map names.
"""

from __future__ import annotations

import inspect
import math
import re

import sympy as sp

from ..ir import nodes as ir
from .base import LayerBase, check_name
from ..scalar.primitives import stabilise
from ..scalar.smooth import check_smooth

INITS = ("glorot", "he", "zeros", "ones", "normal")
_BAD_INDEX = {"b", "batch", "loss", "real", "work", "params", "grads", "inv_batch", "n",
              "m", "s", "g", "o", "p", "t", "st", "to", "lse"}


def indices(names: str):
    """Integer index symbols for tensor formulas: ``c, y, x = sn.indices("c y x")``."""
    out = sp.symbols(names, integer=True)
    return out


def _fail(where, message):
    raise ValueError(f"{where}: {message}")


def affine(expr, names: dict, where: str):
    """A sympy index expression → a plain index name or an ``ir.Affine``."""
    expr = sp.expand(sp.sympify(expr))
    if expr.is_Symbol and expr in names:
        return expr.name
    terms, const = {}, 0
    for term in sp.Add.make_args(expr):
        coef, rest = term.as_coeff_Mul()
        if rest == 1 and coef.is_Integer:
            const += int(coef)
        elif rest in names and coef.is_Integer:
            terms[rest.name] = terms.get(rest.name, 0) + int(coef)
        else:
            _fail(where, f"the index {expr} is not affine in the layer's indices "
                  f"({', '.join(str(n) for n in names) or 'none'}) with integer coefficients")
    order = [s.name for s in names]          # outputs first, then the summed indices
    return ir.Affine(tuple((n, terms[n]) for n in order if terms.get(n)), const)


def _names_of(ix) -> tuple:
    return (ix,) if isinstance(ix, str) else ix.names()


LAYOUTS = (None, "channels_first", "kept")     # a tensor layer's output (LayerBase.layout)


class TensorLayer(LayerBase):
    """A layer given by its element formula over tensors (see the module docstring).

    ``shape``: the output of one example, e.g. (channels, height, width);
    ``index``: the output's index symbols in the same order (``sn.indices``);
    ``formula``: a Python function whose arguments are named ``x`` or ``X`` (the
    input; ``X`` where ``x`` is an index) and the parameter names, returning a
    sympy expression of one output element; sums are
    ``sympy.Sum(e, (u, 0, n - 1), ...)`` with integer ranges.
    ``params`` maps each parameter name to its shape (ints); ``init`` as for
    ``sn.Layer``.  ``layout``: ``"channels_first"`` where the first axis of ``shape``
    is channels (a convolution's kind of output: a softmax cross-entropy on it has a
    class per pixel over the channels, ``Concatenate`` joins along the channels),
    ``"kept"`` where the output is laid out as the input (an element-wise map of a
    convolution's output), None (the default) where the last axis is the features.
    Bad formulas raise ValueError naming the layer.
    """

    tensor = True

    def __init__(self, shape, formula, index, params: dict | None = None,
                 init: dict | None = None, name: str | None = None, kind: str = "tensor",
                 label: str = "", activation=None, layout: str | None = None):
        self.name = None if name is None else check_name(name, "layer")
        self.where = f"layer {self.name or f'Layer({shape})'!r}"
        if isinstance(shape, int):
            shape = (shape,)
        if not (isinstance(shape, tuple) and shape and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
            _fail(self.where, f"shape must be a tuple of positive integers, got {shape!r}")
        self.shape = shape
        self.units = math.prod(shape)
        if layout not in LAYOUTS:
            _fail(self.where, f"layout must be one of {', '.join(map(repr, LAYOUTS))}, "
                  f"got {layout!r}")
        if layout == "channels_first" and len(shape) < 2:
            _fail(self.where, f"layout 'channels_first' needs an output of channels and "
                  f"positions, (C, L) or (C, H, W); the shape is {shape!r}")
        self.layout = layout
        if isinstance(index, str):
            index = indices(index)
        index = tuple(index) if isinstance(index, (tuple, list)) else (index,)
        if len(index) != len(shape) or not all(isinstance(s, sp.Symbol) for s in index):
            _fail(self.where, f"index must name one index symbol per output dimension "
                  f"({len(shape)}), e.g. sn.indices('c y x'); got {index!r}")
        for s in index:
            self._check_index(s)
        self.index = index
        self.params = {}
        for p, pshape in (params or {}).items():
            if not isinstance(p, str) or not p.isidentifier() or p in ("x", "X"):
                _fail(self.where, f"parameter name {p!r} must be an identifier other than "
                      "x and X")
            check_name(f"{p}1", f"{self.where}: parameter")
            pshape = (pshape,) if isinstance(pshape, int) else tuple(pshape)
            if not pshape or not all(isinstance(n, int) and n >= 1 for n in pshape):
                _fail(self.where, f"parameter {p!r} must have a shape of positive integers, "
                      f"got {pshape!r}")
            self.params[p] = pshape
        self.init = {p: ("glorot" if len(s) > 1 else "zeros") for p, s in self.params.items()}
        for p, scheme in (init or {}).items():
            number = isinstance(scheme, (int, float)) and not isinstance(scheme, bool)
            if p not in self.params or not (number or scheme in INITS):
                _fail(self.where, f"init {p!r}: {scheme!r} must name a parameter and one "
                      f"of {', '.join(INITS)} or a number")
            self.init[p] = float(scheme) if number else scheme
        self.kind, self.label, self.activation = kind, label, activation
        self.expr = self._call(formula)
        self.formula_text = str(self.expr)

    def _check_index(self, s):
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,7}", s.name) or s.name in _BAD_INDEX \
                or s.name.startswith("sn_") or re.fullmatch(r"t\d+", s.name):
            _fail(self.where, f"index name {s.name!r} is not allowed: use up to 8 lowercase "
                  "letters, digits or _ (not b, n, t0, ..., which the generated code uses)")

    def _call(self, formula):
        if not callable(formula):
            _fail(self.where, f"formula must be a Python function, got {formula!r}")
        available = {"x": sp.IndexedBase("x", real=True)}
        available["X"] = available["x"]     # when x names an index, call the input X
        available.update({p: sp.IndexedBase(p, real=True) for p in self.params})
        wanted = inspect.signature(formula).parameters
        for arg in wanted:
            if arg not in available:
                _fail(self.where, f"formula argument {arg!r} is not the input x or a "
                      f"parameter ({', '.join(self.params) or 'none'})")
        try:
            expr = sp.sympify(formula(**{a: available[a] for a in wanted}))
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 -- sympy refused the user's formula
            _fail(self.where, f"the formula failed on sympy arguments: {exc!r}")
        if not isinstance(expr, sp.Expr):
            _fail(self.where, f"the formula must return a sympy expression, got {expr!r}")
        return expr

    # ------------------------------------------------------------ shapes
    def output_shape(self, in_shape: tuple) -> tuple:
        return self.shape

    def describe(self) -> dict:
        d = {"kind": "tensor", "shape": list(self.shape), "formula": sp.srepr(self.expr),
             "index": [s.name for s in self.index],
             "params": {p: list(s) for p, s in self.params.items()},
             "init": self.init, "name": self.name}
        if self.layout is not None:
            d["layout"] = self.layout
        return d

    def __repr__(self):
        return f"Layer({self.shape}, {self.formula_text!r}, name={self.name!r})"

    # ------------------------------------------------------------ IR
    def to_node(self, index, name, input_name, in_shape):
        return _Analysis(self, index, name, input_name, tuple(in_shape)).node()


class _Analysis:
    """Splits one tensor formula into reductions and an outer formula (IR form)."""

    def __init__(self, layer: TensorLayer, index, name, input_name, in_shape):
        self.layer, self.where = layer, layer.where
        self.index, self.name, self.input_name, self.in_shape = index, name, input_name, in_shape
        self.out = {s: n for s, n in zip(layer.index, layer.shape)}
        self.syms: dict = {}
        self.reds: list[ir.Reduction] = []
        self.sums: dict = {}

    def node(self) -> ir.Node:
        lay = self.layer
        outer = stabilise(self._scalar(self._walk(lay.expr), dict(self.out), None))
        if not any(a.array == self.input_name for a in self.syms.values()):
            _fail(self.where, "the formula does not use its input x")
        for red in self.reds:
            check_smooth(red.summand, sorted(red.summand.free_symbols, key=str), self.where)
        check_smooth(outer, sorted(outer.free_symbols, key=str), self.where)
        params = [ir.ParamSpec(f"{p}{self.index}", tuple(f"d{k}" for k in range(len(s))), s,
                               lay.init[p], role="weight" if len(s) > 1 else "bias")
                  for p, s in lay.params.items()]
        n_in = math.prod(self.in_shape)
        space = tuple((s.name, n) for s, n in self.out.items())
        return ir.Node(self.name, self.index, self.input_name, n_in, lay.units, params,
                       self.reds, outer, self.syms, kind=lay.kind, activation=lay.activation,
                       space=space, in_shape=self.in_shape, label=lay.label)

    def _walk(self, e):
        if isinstance(e, sp.Sum):
            if e not in self.sums:
                self.sums[e] = self._reduction(e)
            return self.sums[e]
        if not e.args or isinstance(e, sp.Indexed):
            return e
        args = [self._walk(a) for a in e.args]
        return e.func(*args) if any(a is not b for a, b in zip(args, e.args)) else e

    def _reduction(self, s: sp.Sum):
        body, limits = s, []
        while isinstance(body, sp.Sum):
            limits += list(body.limits)
            body = body.function
        space = {}
        for idx, lo, hi in limits:
            if idx in self.out or idx in space:
                _fail(self.where, f"the sum index {idx} is already an index of the output "
                      "or of an enclosing sum")
            self.layer._check_index(idx)
            if not (lo == 0 and hi.is_Integer and int(hi) >= 0):
                _fail(self.where, f"the sum over {idx} must run from 0 to an integer, "
                      f"got {lo}..{hi}")
            if int(hi) >= 2 ** 31 - 1:
                _fail(self.where, f"the sum over {idx} runs to {hi}, beyond a C int")
            used = {a for el in body.atoms(sp.Indexed) for ix in el.indices
                    for a in ix.free_symbols}
            if idx not in used:
                _fail(self.where, f"the sum index {idx} subscripts no array in {body}; "
                      f"a sum must run over an index of x or of a parameter")
            space[idx] = int(hi) + 1
        if body.has(sp.Sum):
            _fail(self.where, f"a sum inside a summand must be the whole summand; found {s}")
        k = len(self.reds) + 1
        rname = f"z_{self.name}" if k == 1 else f"r{k}_{self.name}"
        sym = ir.element(self.syms, rname, ir.BATCH, *(n.name for n in self.out))
        ranges = {**self.out, **space}
        summand = stabilise(self._scalar(body, ranges, space))
        red = ir.Reduction(rname, sym, summand, tuple(n.name for n in space),
                           space=tuple((n.name, e) for n, e in space.items()))
        self.reds.append(red)
        return sym

    def _scalar(self, e, ranges: dict, summed):
        """Indexed elements → IR element symbols with affine maps; range checks."""
        mapping = {}
        extents = {s.name: n for s, n in ranges.items()}
        for el in sorted(e.atoms(sp.Indexed), key=str):
            base = el.base.label.name
            if base == "x":
                shape, array = self.in_shape, self.input_name
            elif base in self.layer.params:
                shape, array = self.layer.params[base], f"{base}{self.index}"
            else:
                _fail(self.where, f"unknown array {base!r} in {el}")
            if len(el.indices) != len(shape):
                _fail(self.where, f"{el} has {len(el.indices)} indices but {base} has shape "
                      f"{shape} ({len(shape)} dimensions): expected {len(shape)}, "
                      f"got {len(el.indices)}")
            pos = []
            for ix, n in zip(el.indices, shape):
                a = affine(ix, ranges, f"{self.where}: {el}")
                lo, hi = (0, extents[a] - 1) if isinstance(a, str) else a.bounds(extents)
                if lo < 0 or hi > n - 1:
                    self._outside(el, e, base, a, lo, hi, n, summed)
                pos.append(a)
            batch = (ir.BATCH,) if base == "x" else ()
            mapping[el] = ir.element(self.syms, array, *batch, *pos)
        out = e.xreplace(mapping)
        known = set(self.syms)
        for s in sorted(out.free_symbols - known, key=str):
            if s in ranges or s in self.out:
                _fail(self.where, f"index {s} is used as a number in {e}; indices may only "
                      "subscript arrays")
            _fail(self.where, f"unknown symbol {s} in the formula: only x, the parameters "
                  f"({', '.join(self.layer.params) or 'none'}) and the indices may appear")
        return out

    def _outside(self, el, e, base, a, lo, hi, n, summed):
        where = f"{el} reaches positions {lo}..{hi} of a dimension of length {n}"
        if base != "x" or summed is None:
            _fail(self.where, f"{where}; an index offset must stay inside the array")
        if sp.expand(e.subs(el, 0)) != 0:
            _fail(self.where, f"{where}; it may leave the input only where the summand is "
                  "then zero (zero padding), which this summand is not")
        if isinstance(a, str) or a.terms[-1][1] < 1 or a.terms[-1][0] not in \
                {s.name for s in summed}:   # terms run in loop order: the last is innermost
            _fail(self.where, f"{where}; padding needs a summed index with a positive "
                  "coefficient last in the position, e.g. y*2 + u - 1 or y + 2*u - 2")
