"""Derivatives beyond ∂L/∂θ: input derivatives of any order (forward jets), their
reverse, and exact Hessian-vector products (Pearlmutter's R-operator).

A network's IR (``symnet.ir``) becomes a small straight-line *program* per
example over vectors: each layer's value and its input derivatives (the jet
h_α = ∂^|α| h / ∂x_α for the multi-indices α the caller needs) are computed
by two kinds of operation:

- ``Lin``:  z_α = W · a_α (+ nothing: the bias is in the layer's formula), the
  contraction of the forward pass, once per multi-index;
- ``Elem``: outputs[i] = e(arguments[i]) for sympy expressions e; a layer's jet
  h_α = Faà di Bruno of its formula φ(z, b) is ``sympy.diff`` of φ(Z(s), b)
  with Z an undetermined function of the seed coordinates s, its derivatives
  then renamed z_α.  The loss is an ``Elem`` that sums into one scalar.

The reverse pass (∂L/∂θ, ∂L/∂X) is derived from that program by the chain rule
op by op (``reverse``): Lin → Wᵀ·z̄ (``LinT``) and z̄ ⊗ a (``Outer``), Elem →
ā += (∂e/∂a)·ē with the partial derivatives from sympy.  The tangent of the
whole program (forward and reverse) along a parameter direction v is derived
the same way (``tangent``): that is the R-operator, R{∇L} = H·v exactly.
Every derivative taken here goes through ``symnet.scalar.smooth.clean``: at a kink
(|a|, Max, Min, Piecewise) the derivative of the step is 0, so the DiracDelta of
a second derivative is 0 and H·v is the Hessian almost everywhere, as ReLU′(0) = 0.
Dropping the tangents of the primal values inside the reverse part (keeping
the loss's own second derivative) gives the Gauss–Newton product Jᵀ H_L J v.

``symnet.backend.c.jets`` prints a program as plain C99 (one loop per operation,
its formula in a comment); ``symnet.runtime.second_order`` builds and calls it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from ..ir import nodes as ir
from ..scalar.smooth import clean

# --------------------------------------------------------------- multi-indices


def closure(alphas) -> list[tuple]:
    """Every sub-multi-index of the given ones (the jet entries they need), () first,
    by order then lexicographically."""
    out = {()}
    for a in alphas:
        a = tuple(sorted(a))
        for r in range(1, len(a) + 1):
            for sub in itertools.combinations(a, r):
                out.add(tuple(sorted(sub)))
    return sorted(out, key=lambda a: (len(a), a))


def alpha_text(alpha: tuple) -> str:
    return "".join(f"d{c}" for c in alpha)


def _like(sym: sp.Symbol, name: str) -> sp.Symbol:
    """A symbol named ``name`` with the assumptions of ``sym``."""
    return sp.Symbol(name, **sym.assumptions0)


#: jets of formulas already derived, by their form with the names taken out: the layers
#: of a network repeat one formula (tanh(b_k[i] + z_k)), so each is derived once
_JETS: dict = {}


def jet_formula(phi: sp.Expr, functions: dict, alphas, n_coords: int):
    """The jet of φ: for each α, ∂^α φ(F_1(s), F_2(s), ...) with the F's jets as
    symbols.  ``functions`` maps each symbol of φ that depends on the input to a
    callable α ↦ the symbol standing for its α-derivative (None: identically 0);
    ``alphas`` is closed downwards (``closure``).

    Returns {α: expression}; the multivariate Faà di Bruno formula, by sympy, once
    per form of φ (the names of its symbols replaced by their positions)."""
    alphas = list(alphas)
    fsyms = list(functions)
    others = sorted(phi.free_symbols - set(fsyms), key=str)
    canon, back, table = {}, {}, []
    for k, f in enumerate(fsyms):
        canon[f] = _like(f, f"f{k}")
        for a in alphas:
            actual = functions[f](a)
            table.append((k, a, actual is not None))
            if actual is not None:
                back[_like(actual, f"f{k}_{alpha_text(a)}")] = actual
    for j, o in enumerate(others):
        canon[o] = _like(o, f"p{j}")
    cphi = phi.xreplace(canon)
    key = (sp.srepr(cphi), tuple(alphas), n_coords, tuple(table),
           tuple(sorted((str(k), str(v.assumptions0)) for k, v in back.items())))
    if key not in _JETS:
        cfun = {}
        for k, f in enumerate(fsyms):
            def jet(a, k=k, f=f):
                actual = functions[f](a)
                return None if actual is None else _like(actual, f"f{k}_{alpha_text(a)}")
            cfun[canon[f]] = jet
        _JETS[key] = _jet_formula(cphi, cfun, alphas, n_coords)
    undo = dict(back)
    undo.update({v: k for k, v in canon.items()})
    return {a: e.xreplace(undo) for a, e in _JETS[key].items()}


def _jet_formula(phi: sp.Expr, functions: dict, alphas, n_coords: int):
    s = sp.symbols(f"s0:{max(n_coords, 1)}", real=True)
    # real functions, as the symbols they stand for: |F|' is then sign(F)·F' (for a
    # complex F sympy writes it with re(F) and im(F), which are not F's jets)
    funcs = {sym: sp.Function(f"F{k}", real=True)(*s) for k, sym in enumerate(functions)}
    body = phi.xreplace(funcs)
    out = {}
    for alpha in alphas:
        e = clean(sp.diff(body, *[s[c] for c in alpha])) if alpha else body
        repl = {}
        for d in e.atoms(sp.Derivative):
            sym = next(k for k, f in funcs.items() if f == d.expr)
            idx = tuple(sorted(c for v, cnt in d.variable_count for c in [s.index(v)] * cnt))
            repl[d] = functions[sym](idx) or sp.S.Zero
        e = e.xreplace(repl)
        e = e.xreplace({f: functions[k](()) for k, f in funcs.items()})
        out[alpha] = e
    return out


# --------------------------------------------------------------------- program

@dataclass
class Var:
    """A vector of one example: a local array, or a view into an argument
    (``X``/``T`` rows, parameters, their gradients and tangents)."""

    name: str
    size: int
    kind: str = "local"        # local, seed, X, T, param, loss
    offset: int = 0            # parameters: offset into θ
    trainable: bool = True
    seed: int | None = None    # kind "seed": the unit vector e_seed


@dataclass
class Lin:
    out: str
    W: str
    x: str
    n_out: int
    n_in: int
    acc: bool = False
    note: str = ""


@dataclass
class LinT:                    # out[j] += Σ_i W[i,j] y[i]
    out: str
    W: str
    y: str
    n_out: int
    n_in: int
    note: str = ""


@dataclass
class Outer:                   # G[i,j] += y[i] x[j]
    G: str
    y: str
    x: str
    n_out: int
    n_in: int
    note: str = ""


@dataclass
class Elem:
    """outs[k][o_off + i] (= or +=) exprs[k](args) for i < n; an argument is
    (symbol, var, offset, broadcast): var[offset + i], or var[offset] when broadcast.
    ``reduce``: every out is one scalar, summed over i."""

    outs: list
    exprs: list
    args: list
    n: int
    acc: bool = False
    reduce: bool = False
    note: str = ""
    loss_adjoint: bool = False     # the loss's own adjoint (kept whole by Gauss–Newton)


@dataclass
class Program:
    vars: dict = field(default_factory=dict)
    ops: list = field(default_factory=list)
    n_coords: int = 0
    known: dict = field(default_factory=dict)   # function call -> (symbol, var) computing it

    def reuse(self, e, args: list):
        """``e`` with the calls computed already read from their vectors; ``args``
        gains those vectors (same position i)."""
        hits = {c: self.known[c] for c in e.atoms(sp.Function) if c in self.known}
        if not hits:
            return e
        have = {a[0] for a in args}
        for c, (s, v) in hits.items():
            if s not in have:
                args.append((s, v, 0, False))
        return e.xreplace({c: s for c, (s, _) in hits.items()})

    def var(self, name, size, **kw) -> str:
        if name not in self.vars:
            self.vars[name] = Var(name, size, **kw)
        return name


def _sym(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


class Unsupported(NotImplementedError):
    """A network, layer or loss the jets do not derive: ``subject`` names it,
    ``reason`` says why; the caller says which call and which derivative
    (``message``), e.g. "model.hessian_vector: the parameter Hessian-vector product
    is not derived for layer 'H2_mean' (...): its sums are not contractions ..."."""

    def __init__(self, subject: str, reason: str):
        super().__init__(f"{subject}: {reason}")
        self.subject, self.reason = subject, reason

    def message(self, what: str, purpose: str) -> str:
        """``purpose`` with its verb: "the input Hessian is", "its input derivatives are"."""
        return f"{what}: {purpose} not derived for {self.subject}: {self.reason}"


def _inputs_text(graph: ir.Graph) -> str:
    if len(graph.inputs) == 1:
        return f"input {graph.inputs[0][0]!r} of shape {graph.in_shape}"
    return "inputs " + ", ".join(f"{n!r} of width {w}" for n, w in graph.inputs)


def forward_program(graph: ir.Graph, params: list, alphas) -> tuple:
    """The forward jets of every node for the multi-indices ``alphas`` (closed
    downwards).  Returns (program, jets) with jets[buffer][α] the name of the
    var holding ∂^α buffer (missing: identically zero)."""
    prog = Program(n_coords=graph.n_in)
    alphas = closure(alphas)
    offsets = {p["name"]: p for p in params}
    for p in params:
        prog.var(p["name"], int(np.prod(p["shape"])), kind="param", offset=p["offset"],
                 trainable=p.get("trainable", True))
    if len(graph.inputs) != 1 or len(graph.in_shape) != 1:
        raise Unsupported("this network", "the jets are derived for networks of one "
                          f"vector input, and it has {_inputs_text(graph)}")
    xname = graph.input_name
    jets = {xname: {(): prog.var(xname, graph.n_in, kind="X")}}
    for c in range(graph.n_in):
        if (c,) in alphas:
            jets[xname][(c,)] = prog.var(f"e{c}", graph.n_in, kind="seed", seed=c)
    for node in graph.nodes:
        jets[node.name] = _node_jets(prog, node, jets, alphas, offsets)
    return prog, jets


def _node_jets(prog: Program, node: ir.Node, jets: dict, alphas, offsets) -> dict:
    name, n = node.name, node.n_out
    where = f"layer {name!r} ({node.label or node.kind})"
    if len(node.space) != 1:
        raise Unsupported(where, f"it has tensor shape {node.out_shape}; the jets are "
                          "derived for vector layers (Dense, sn.Layer with one "
                          "contraction, Add, Multiply, Concatenate)")
    out = {}
    if node.kind == "concat":
        for a in alphas:
            pieces = [(src, w) for src, w in node.pieces]
            if not any(a in jets[src] for src, _ in pieces):
                continue
            v = prog.var(f"{name}{alpha_text(a)}", n)
            off = 0
            for src, w in pieces:
                if a in jets[src]:
                    s = _sym("x")
                    prog.ops.append(Elem([(v, off)], [s], [(s, jets[src][a], 0, False)], w,
                                         note=f"{v}[{off}:{off + w}] = {jets[src][a]}"))
                else:
                    prog.ops.append(Elem([(v, off)], [sp.S.Zero], [], w,
                                         note=f"{v}[{off}:{off + w}] = 0"))
                off += w
            out[a] = v
        return out
    # one contraction per reduction, then the outer formula of the reductions,
    # per-output parameters and same-position input elements
    functions, args_of = {}, {}
    for red in node.reductions:
        if red.contraction is None or red.op != "sum" or red.space:
            raise Unsupported(where, "its sums are not all contractions Σ_j W[i,j]·x[j]; "
                              "the jets are derived for layers whose sums are (Dense, "
                              "sn.Layer with one contraction, Add, Multiply, Concatenate)")
        src = node.red_input(red)
        W = red.contraction
        rj = {}
        for a in alphas:
            if a in jets[src]:
                v = prog.var(f"{red.name}{alpha_text(a)}", n)
                prog.ops.append(Lin(v, W, jets[src][a], n, node.widths.get(src, node.n_in),
                                    note=f"{v} = {W}·{jets[src][a]}"))
                rj[a] = v
        functions[red.symbol] = rj
    if node.outer is None:
        raise Unsupported(where, "it has no element formula")
    for sym in sorted(node.outer.free_symbols, key=str):
        if sym in functions:
            continue
        acc = node.symbols.get(sym)
        if acc is None:
            raise Unsupported(where, f"symbol {sym} of its formula is not known")
        if acc.array in offsets and acc.index == (ir.OUT,):
            args_of[sym] = (acc.array, 0)
        elif acc.array in jets and acc.index == (ir.BATCH, ir.OUT):
            functions[sym] = dict(jets[acc.array])
        else:
            raise Unsupported(where, f"element {sym} of its formula is neither per "
                              "output nor read position-wise")
    syms = {}
    for k, (fsym, rj) in enumerate(functions.items()):
        for a, v in rj.items():
            syms[(fsym, a)] = _sym(f"{v}")
    outs_formulas = jet_formula(node.outer, {
        f: (lambda a, f=f: syms.get((f, a))) for f in functions}, alphas, prog.n_coords)
    arg_list = [(s, functions[f][a], 0, False) for (f, a), s in syms.items()]
    arg_list += [(sym, arr, 0, False) for sym, (arr, _) in args_of.items()]
    # each function call of the formulas (tanh(b + z), σ(b + z), ...) once, into its own
    # vector; the jets, their reverse and tangent then read it (their derivatives are
    # written in it: tanh' = 1 − tanh², σ' = σ(1 − σ))
    calls = set()
    for e in outs_formulas.values():
        calls |= {c for c in e.atoms(sp.Function) if c.free_symbols
                  and not any(isinstance(q, sp.Function) for a in c.args
                              for q in sp.preorder_traversal(a))}
    for k, c in enumerate(sorted(calls, key=str)):
        v = prog.var(f"{name}_f{k}", n)
        s = _sym(v)
        used = c.free_symbols
        prog.ops.append(Elem([(v, 0)], [c], [x for x in arg_list if x[0] in used], n,
                             note=f"{v} = {c}"))
        prog.known[c] = (s, v)
        arg_list.append((s, v, 0, False))
    outs_formulas = {a: e.xreplace({c: prog.known[c][0] for c in calls})
                     for a, e in outs_formulas.items()}
    outs, exprs = [], []
    for a in alphas:
        e = outs_formulas[a]
        if e == 0:
            continue
        v = prog.var(f"{name}{alpha_text(a)}", n)
        outs.append((v, 0))
        exprs.append(e)
        out[a] = v
    used = set().union(*(e.free_symbols for e in exprs)) if exprs else set()
    arg_list = [x for x in arg_list if x[0] in used]
    prog.ops.append(Elem(outs, exprs, arg_list, n,
                         note=f"{name} and its input derivatives (jet of {node.outer})"))
    return out


# --------------------------------------------------------------------- reverse

def bar(name: str) -> str:
    return f"bar_{name}"


#: adjoints of formulas already derived, by their form (see ``jet_formula``)
_PARTIALS: dict = {}


def _partials(exprs: list, syms: list, weights: list) -> list:
    """[Σ_k ∂exprs[k]/∂syms[j] · weights[k] for each j], once per form of the
    formulas (their symbols' names replaced by positions)."""
    known = set(syms) | set(weights)
    others = sorted(set().union(*(e.free_symbols for e in exprs)) - known, key=str)
    canon = {x: _like(x, f"a{j}") for j, x in enumerate(syms)}
    canon.update({w: _like(w, f"w{j}") for j, w in enumerate(weights)})
    canon.update({o: _like(o, f"p{j}") for j, o in enumerate(others)})
    cex = [e.xreplace(canon) for e in exprs]
    key = (tuple(sp.srepr(e) for e in cex),
           tuple(sp.srepr(canon[x]) for x in list(syms) + list(weights)))
    if key not in _PARTIALS:
        cw = [canon[w] for w in weights]
        _PARTIALS[key] = [sum((clean(sp.diff(ex, canon[x])) * w for ex, w in zip(cex, cw)),
                              sp.S.Zero) for x in syms]
    undo = {v: k for k, v in canon.items()}
    return [e.xreplace(undo) for e in _PARTIALS[key]]


def reverse(prog: Program, active_in: set) -> list:
    """Adjoint ops of prog.ops (the loss op last, with ē of its scalar given):
    the chain rule, op by op, last to first.  Adjoints exist for vars in
    ``active_in`` (the trainable parameters and, for ∂L/∂X, the input)."""
    # which vars depend on an active one (only those need adjoints)
    live = set(active_in)
    for op in prog.ops:
        if isinstance(op, Lin):
            if op.x in live or (op.W in live):
                live.add(op.out)
        elif isinstance(op, Elem):
            if any(a[1] in live for a in op.args):
                live.update(o for o, _ in op.outs)
    out = []
    for op in reversed(prog.ops):
        if isinstance(op, Lin):
            if op.out not in live:
                continue
            if op.x in live:
                out.append(LinT(bar(op.x), op.W, bar(op.out), op.n_out, op.n_in,
                                note=f"{bar(op.x)} += {op.W}ᵀ·{bar(op.out)}"))
            if op.W in live:
                out.append(Outer(bar(op.W), bar(op.out), op.x, op.n_out, op.n_in,
                                 note=f"∂L/∂{op.W} += {bar(op.out)} ⊗ {op.x}"))
        elif isinstance(op, Elem):
            if not any(o in live for o, _ in op.outs):
                continue
            obar = [(_sym(f"bar_{o}__{k}"), bar(o), off, op.reduce)
                    for k, (o, off) in enumerate(op.outs)]
            mine = [a for a in op.args if a[1] in live]
            parts = _partials(op.exprs, [a[0] for a in mine], [ob[0] for ob in obar])
            for (sym, var, off, bc), e in zip(mine, parts):
                if e == 0:
                    continue
                extra = []
                if not op.reduce:
                    e = prog.reuse(e, extra)
                args = [a for a in op.args if a[0] in e.free_symbols] + \
                    [ob for ob in obar if ob[0] in e.free_symbols] + \
                    [a for a in extra if a[0] not in {b[0] for b in op.args}]
                out.append(Elem([(bar(var), off)], [e], args, op.n, acc=True,
                                reduce=bc and not op.reduce,
                                note=f"{bar(var)} += ∂({', '.join(o for o, _ in op.outs)})"
                                     f"/∂{var} · ē", loss_adjoint=op.reduce))
    return out


def tangent(prog: Program, ops: list, active: set, gauss_newton_from: int | None = None):
    """The tangent (R-operator) of ``ops`` along the directions of the vars in
    ``active`` (the trainable parameters): each op followed by the ops of its
    derivative.  Tangent of var v is ``t_v``.  With ``gauss_newton_from`` = k,
    the ops from index k on (the reverse part) take the tangents of their
    adjoint arguments only, except the loss's own adjoint (Jᵀ H_L J v)."""
    live = set(active)
    out = []
    for k, op in enumerate(ops):
        out.append(op)
        gn = gauss_newton_from is not None and k >= gauss_newton_from
        if isinstance(op, (Lin, LinT, Outer)):
            x = op.x if not isinstance(op, LinT) else op.y
            mats = op.W if not isinstance(op, Outer) else None
            if isinstance(op, Outer):
                y_live = op.y in live
                x_live = op.x in live and not gn
                if y_live:
                    out.append(Outer(f"t_{op.G}", f"t_{op.y}", op.x, op.n_out, op.n_in))
                if x_live:
                    out.append(Outer(f"t_{op.G}", op.y, f"t_{op.x}", op.n_out, op.n_in))
                if y_live or x_live:
                    live.add(op.G)
                continue
            w_live = mats in live and not gn
            x_live = x in live
            target = op.out
            if not (w_live or x_live):
                continue
            cls = type(op)
            acc = isinstance(op, LinT) or op.acc
            first = True
            if x_live:
                out.append(cls(f"t_{target}", op.W, f"t_{x}", op.n_out, op.n_in,
                               **({"acc": acc} if cls is Lin else {})))
                first = False
            if w_live:
                out.append(cls(f"t_{target}", f"t_{op.W}", x, op.n_out, op.n_in,
                               **({"acc": acc or not first} if cls is Lin else {})))
            live.add(target)
        elif isinstance(op, Elem):
            use = [a for a in op.args if a[1] in live
                   and (not gn or op.loss_adjoint or a[1].startswith("bar_"))]
            if not use:
                continue
            exprs, argsets = [], []
            tsyms = {a[0]: _sym(f"t_{a[0].name}") for a in use}
            extra = []
            for ex in op.exprs:
                e = sum((clean(sp.diff(ex, a[0])) * tsyms[a[0]] for a in use), sp.S.Zero)
                if not op.reduce and op.n > 1:
                    e = prog.reuse(e, extra)
                exprs.append(e)
            targs = [(tsyms[a[0]], f"t_{a[1]}", a[2], a[3]) for a in use]
            allargs = op.args + targs + [a for a in extra
                                         if a[0] not in {b[0] for b in op.args}]
            used = set().union(*(e.free_symbols for e in exprs))
            out.append(Elem([(f"t_{o}", off) for o, off in op.outs], exprs,
                            [a for a in allargs if a[0] in used], op.n, acc=op.acc,
                            reduce=op.reduce))
            live.update(o for o, _ in op.outs)
    return out


# ------------------------------------------------------------------ the loss

def data_loss_ops(prog: Program, graph: ir.Graph, jets: dict, record=None) -> list:
    """Σ over outputs of w_o · Σ_k ℓ_o(O[k], T[k]) for one example, as one summing op
    per output (``record``: one loss for every output, weight 1)."""
    tname = prog.var("T", graph.n_out, kind="T")
    prog.var("L", 1, kind="loss")
    o_sym, t_sym = _sym("o"), _sym("t")
    ops = []
    for out in graph.outputs:
        rec, w = (graph.losses[out], graph.weights[out]) if record is None else (record, 1)
        node = graph.node(out)
        if rec.element is None:
            raise Unsupported(f"loss {rec.name!r} of output {out!r}", "it couples the "
                              "outputs; the jets are derived for element-wise losses "
                              "(mse, bce, custom)")
        e = sp.Float(w) * rec.element(o_sym, t_sym, node.n_out) if w != 1 else \
            rec.element(o_sym, t_sym, node.n_out)
        ops.append(Elem([("L", 0)], [e],
                        [(o_sym, jets[out][()], 0, False),
                         (t_sym, tname, graph.target_offset(out), False)],
                        node.n_out, acc=True, reduce=True,
                        note=f"loss += {e} summed over the units of {out}"))
    return ops


def term_ops(prog: Program, graph: ir.Graph, jets: dict, expr, symbols: dict) -> list:
    """One loss term per example, ``expr`` of symbols standing for output units,
    their input derivatives, targets and input columns: ``symbols`` maps each to
    (buffer, α, unit) for a jet entry, ("X", None, column) or ("T", None, column)."""
    tname = prog.var("T", graph.n_out, kind="T")
    prog.var("L", 1, kind="loss")
    args, zero = [], {}
    for sym, (buf, alpha, unit) in symbols.items():
        if buf == "X":
            args.append((sym, graph.input_name, unit, True))
        elif buf == "T":
            args.append((sym, tname, unit, True))
        elif alpha in jets[buf]:
            args.append((sym, jets[buf][alpha], unit, True))
        else:
            zero[sym] = sp.S.Zero          # that derivative is identically zero
    e = sp.sympify(expr).xreplace(zero)
    return [Elem([("L", 0)], [e], [a for a in args if a[0] in e.free_symbols], 1, acc=True,
                 reduce=True, note=f"loss term: {e}")]


# ------------------------------------------------------------ loss terms

def _symbols(net, term) -> tuple:
    """(multi-indices the term needs, {symbol: (buffer, α, unit)})."""
    from ..lang.symbols import Coordinate, Deriv, Target, Value
    graph = net.graph()
    name_of = {id(a): n for a, n in zip(net.layers, net.names)}
    alphas, table = set(), {}
    for s in term.expr.atoms(Coordinate, Deriv, Target, Value):
        if isinstance(s, Coordinate):
            table[s] = ("X", None, s.unit)
        elif isinstance(s, Target):
            out = name_of[id(s.owner)]
            if out not in graph.outputs:
                raise ValueError(f"loss term {term.name!r}: sn.target of {out!r}, which is "
                                 f"not an output of the network ({graph.outputs})")
            table[s] = ("T", None, graph.target_offset(out) + s.unit)
        else:
            alpha = tuple(sorted(c.unit for c in s.alpha)) if isinstance(s, Deriv) else ()
            alphas.add(alpha)
            table[s] = (name_of[id(s.owner)], alpha, s.unit)
    return sorted(alphas), table


def term_program(net, term, params) -> Program:
    """The program of one loss term (``symnet.lang.pinn.Term``) of a network: the
    forward jets it needs, then the term summed into L."""
    from ..scalar.primitives import loss as loss_record
    graph = net.graph()
    if term.expr is None:
        prog, jet = forward_program(graph, params, [()])
        ops = data_loss_ops(prog, graph, jet, loss_record(term.loss))
    else:
        alphas, table = _symbols(net, term)
        prog, jet = forward_program(graph, params, alphas)
        ops = term_ops(prog, graph, jet, term.expr, table)
    prog.ops = prog.ops + ops
    prog.jets = jet
    return prog
