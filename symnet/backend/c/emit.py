"""Kernel plan → C99 text.

Two separate jobs, as in sympy's own codegen: ``CPrinter`` (``symnet.scalar.cprint``)
turns one scalar sympy expression into a C expression (float or double
spelling), and the Jinja templates own the shape of the files:
``templates/network.h.j2`` the contract (sizes, layout, prototypes),
``templates/network.c.j2`` includes, loops and their comments.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import re
import tempfile
from functools import lru_cache

import jinja2
import sympy as sp

from ...version import __version__

from ...ir import nodes as ir
from .build import template_dir
from .cnames import PREFIX, c_name
from ...scalar.cprint import DTYPES, CPrinter, c_comment, numeric  # noqa: F401  (re-exported)
from ...plan.lower import (DIRECT_WINDOW, LOSS, Buffer, Conv, Fill, Loop, MatMul, Plan, Route,
                           Rows, SoftmaxXent, Zero)
from ...plan.ops import BatchSum
from ...plan.share import forward_buffers
from ...plan.schedule import batch_rows
from ...derive.coupled import INV_BATCH


class _TemplateCode(jinja2.BytecodeCache):
    """The templates' compiled Python code, kept for the process and in the cache
    directory (``jinja/``): Jinja otherwise parses and compiles the three templates
    again for every network, which cost more process time than deriving a small
    network (measured: ~0.3 s per render, medium network, 2-core Zen 3).  Jinja checks
    each entry against the template's source and the Python version, so a changed
    template or interpreter compiles anew; a file's bytes are checked against the
    sha256 written before them (``_seal``), since Jinja runs whatever code it
    unmarshals: a garbled entry raised "SystemError: unknown opcode" at a later
    compile, where it could as well have crashed the interpreter."""

    @staticmethod
    def _seal(data: bytes) -> bytes:
        return hashlib.sha256(data).digest() + data

    @staticmethod
    def _unseal(sealed: bytes) -> bytes | None:
        """The code in a file's bytes, or None where they fail their checksum."""
        digest, data = sealed[:32], sealed[32:]
        return data if len(digest) == 32 and hashlib.sha256(data).digest() == digest else None

    def __init__(self):
        self.code: dict[str, bytes] = {}

    def _file(self, key: str, make: bool = False):
        from . import build
        try:
            root = build.writable_cache_dir() / "jinja" if make else build.cache_dir() / "jinja"
            if make:
                root.mkdir(exist_ok=True)
            return root / f"{key}.cache"
        except (OSError, build.BuildError):
            return None

    def load_bytecode(self, bucket):
        data = self.code.get(bucket.key)
        if data is None:
            path = self._file(bucket.key)
            try:
                data = self._unseal(path.read_bytes()) if path is not None else None
            except OSError:
                data = None
        if data:
            bucket.bytecode_from_string(data)   # resets itself on a stale or broken entry

    def dump_bytecode(self, bucket):
        data = bucket.bytecode_to_string()
        self.code[bucket.key] = data
        path = self._file(bucket.key, make=True)
        if path is None:
            return
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._seal(data))
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


_TEMPLATE_CODE = _TemplateCode()


class Emitter:
    """Prints one plan for one dtype."""

    #: the most numbers in a direct convolution's window (the C sizes its sums by it)
    direct_window = DIRECT_WINDOW

    def __init__(self, plan: Plan, dtype: str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        self.plan, self.dtype = plan, dtype
        self.buffers = plan.buffers
        # loop indices of this network's loops (tensor layers name their own): a
        # buffer of the same name would be shadowed by the loop variable
        self.indices = {name for node in plan.graph.nodes
                        for name, _ in [*node.loop(), *(x for red in node.reductions
                                                        for x in node.reduction_loop(red))]}
        smap = {s: self.element(a) for s, a in plan.symbols.items()
                if a.array in self.buffers or a.array == "inv_batch"}
        self.printer = CPrinter(dtype, smap, plain_names=True)
        self.extra_symbols = smap

    # ------------------------------------------------------------- elements
    def element(self, acc: ir.Access) -> str:
        if acc.array == "inv_batch" and not acc.index:
            return "inv_batch"
        buf = self.buffers[acc.array]
        return f"{self.cname(buf.name)}[{self.flat_index(buf, acc.index)}]"

    def cname(self, name: str) -> str:
        """The C identifier of a buffer (``symnet.backend.c.cnames``); the targets are ``T``."""
        buf = self.buffers.get(name)
        if buf is not None and buf.kind == "target":
            return "T"
        return PREFIX + name if name in self.indices else c_name(name)

    @staticmethod
    def flat_index(buf: Buffer, index: tuple) -> str:
        if not index:
            return "0"
        parts = []
        for k, ix in enumerate(index):
            stride = 1
            for s in buf.shape[k + 1:]:
                stride *= s
            ix = ix if isinstance(ix, str) else f"({ix})"
            parts.append(ix if k == len(index) - 1 else f"{ix} * {stride}")
        return " + ".join(parts)

    def bounds(self, op: Loop) -> list:
        """(name, first, stop) per loop index.  An access whose affine position may
        leave its array (zero padding) clips the range of its innermost index, so
        the loop body never tests: u runs over [max(0, −(y − 1)), min(3, 8 − (y − 1)))."""
        extents = {n: e for n, e in op.indices if isinstance(e, int)}
        lo = {n: ["0"] for n, _ in op.indices}
        hi = {n: [str(e)] for n, e in op.indices}
        accesses = []
        for target, index, _, expr in op.stmts:
            if target != LOSS:
                accesses.append(ir.Access(target, tuple(index)))
            accesses += [self.plan.symbols[s] for s in expr.free_symbols
                         if s in self.plan.symbols]
        seen = set()
        for acc in accesses:
            shape = self.buffers[acc.array].shape if acc.array in self.buffers else ()
            for ix, n in zip(acc.index, shape):
                if isinstance(ix, str) or (ix, n) in seen or not isinstance(n, int):
                    continue
                seen.add((ix, n))
                a, b = ix.bounds(extents)
                if a >= 0 and b <= n - 1:
                    continue
                t, c = ix.terms[-1]
                if c < 1:
                    raise ValueError(f"the access {acc.array}[{ix}] may leave its array and "
                                     "its innermost index has a coefficient below 1")
                rest = ir.Affine(ix.terms[:-1], ix.const)
                if c == 1:
                    lo[t].append(f"-({rest})")
                    hi[t].append(f"{n} - ({rest})")
                else:   # rest + c·t ∈ [0, n): t ≥ ⌈−rest/c⌉, t < ⌊(n − 1 − rest)/c⌋ + 1;
                    # C's division truncates, which is the floor wherever the range is
                    # not empty (a negative numerator gives a bound ≤ 0 either way)
                    lo[t].append(f"(-({rest}) + {c - 1}) / {c}")
                    hi[t].append(f"({n - 1 + c} - ({rest})) / {c}")

        def fold(parts, fn):
            out = parts[0]
            for p in parts[1:]:
                out = f"{fn}({out}, {p})"
            return out
        return [(n, fold(lo[n], "sn_imax"), fold(hi[n], "sn_imin")) for n, _ in op.indices]

    def expr(self, e: sp.Expr) -> str:
        return self.printer.doprint(numeric(e))

    # ---------------------------------------------------------------- views
    def coupled_view(self, op: SoftmaxXent) -> dict:
        """A coupled loss's derived rule (``symnet.derive.coupled``) printed for one
        example b: O[b,k] is o[k], T[b,k] t[k], the label y, each sum and scalar a
        local of its short name (m, s, lse, ...).  The sums run in passes over k:
        a sum in the first pass after every sum it reads; one that nothing reads
        in the last pass (one loop over k for as many sums as possible)."""
        rule = op.derived
        at = f" * {op.groups}" if op.first else ""     # channels first: classes G apart
        smap = {rule.o: f"o[k{at}]", rule.k: "k", INV_BATCH: "inv_batch"}
        if rule.t is not None:
            smap[rule.t] = f"t[k{at}]"
        if rule.y is not None:
            smap.update({rule.y: "y", rule.o_y: f"o[y{at}]"})
        suffix = f"_{rule.output}"
        for sym in [r.symbol for r in rule.sums] + [s for s, _ in rule.scalars]:
            smap[sym] = sym.name.split("[")[0].removesuffix(suffix)
        printer = CPrinter(self.dtype, smap, plain_names=True)
        level = {}
        for r in rule.sums:
            level[r.symbol] = 1 + max((level[q] for q in r.summand.free_symbols
                                       if q in level), default=-1)
        read = set().union(*(r.summand.free_symbols for r in rule.sums))
        last = max(level.values(), default=0)
        passes = [[] for _ in range(last + 1)]
        for r in rule.sums:
            passes[level[r.symbol] if r.symbol in read else last].append(
                {"name": smap[r.symbol], "op": r.op,
                 "init": "-INFINITY" if r.op == "max" else "0",
                 "rhs": printer.doprint(numeric(r.summand))})
        title = f"loss of {op.O}: {rule.title}"
        if rule.y is not None:
            title += ", T[b] the class label y of example b"
        return {"title": c_comment(title),
                "lines": [c_comment(x) for x in rule.lines(grad=op.grad is not None)],
                "passes": [p for p in passes if p],
                "scalars": [(smap[s], printer.doprint(numeric(e))) for s, e in rule.scalars],
                "value": printer.doprint(numeric(rule.value)),
                "grad": printer.doprint(numeric(rule.grad))}

    def loop_view(self, op: Loop, rows: bool = False) -> dict:
        """A loop's statements, temporaries and bounds; with ``rows`` its batch
        index runs over one thread's examples sn_lo ≤ b < sn_hi (see lower.Rows)."""
        exprs = [numeric(s[3]) for s in op.stmts]
        # the temporaries are computed before the statements: a read of an array that a
        # statement of this loop writes stays in the statement that reads it (after the
        # store, where a statement reads what an earlier one wrote: symnet.plan.fuse)
        written = {self.root(t) for t, *_ in op.stmts if t != LOSS}
        exprs, invariants = self.reciprocals(op, exprs, written)
        ignore = tuple(s for e in exprs for s in e.free_symbols
                       if s in self.plan.symbols
                       and self.root(self.plan.symbols[s].array) in written)
        temps, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("t"), optimizations=None,
                                ignore=ignore)
        stmts, raw = [], []
        for (target, index, kind, _), rhs in zip(op.stmts, reduced):
            raw.append(self.printer.doprint(rhs))
            if target == LOSS:
                stmts.append(("loss", kind, f"(double)({self.printer.doprint(rhs)})"))
            elif kind == "max":
                lhs = self.element(ir.Access(target, tuple(index)))
                r = self.printer.doprint(rhs)
                stmts.append((lhs, "=", f"{r} > {lhs} ? {r} : {lhs}"))
            else:
                lhs = self.element(ir.Access(target, tuple(index)))
                stmts.append((lhs, kind, self.printer.doprint(rhs)))
        hoisted = []
        if op.hoist and len(op.indices) > 1:
            inner = op.indices[-1][0]
            keep = []
            for (target, index, kind, _), st, r in zip(op.stmts, stmts, raw):
                names = {n for ix in index for n in ((ix,) if isinstance(ix, str)
                                                     else ix.names())}
                if kind == "+=" and target != LOSS and inner not in names:
                    hoisted.append((st[0], f"acc{len(hoisted)}", st[2],
                                    "=" if target in op.fresh else "+="))
                elif kind == "max" and inner not in names:
                    # a maximum in a local too (exact in any order): kind "max"
                    hoisted.append((st[0], f"acc{len(hoisted)}", r, "max"))
                else:
                    keep.append(st)
            stmts = keep
        indices = self.bounds(op)
        if rows:
            indices[0] = (indices[0][0], "sn_lo", "sn_hi")
        return {"indices": indices, "comment": c_comment(op.comment),
                "hoisted": hoisted, "simd": not hoisted and self.independent(op),
                "invariants": invariants,
                "temps": [(str(s), self.printer.doprint(v)) for s, v in temps],
                "stmts": stmts}

    def reciprocals(self, op: Loop, exprs: list, written: set) -> tuple[list, list]:
        """``exprs`` with each 1/x, 1/x², … whose x is the same all along the innermost
        index (a softmax's Σ in p = e/Σ and its backward's dP/Σ, e·dP/Σ²) replaced by a
        name ``sn_inv<n>``, and [(name, C of 1/x…)]: computed once per row, before the
        innermost loop, so that the row multiplies where it divided (a division is 3-4
        cycles of a vector; attention's p = e/Σ, 32 keys: 22 → 6 µs per 4096 rows, one
        thread).  Only in loops of two or more indices whose innermost one runs over
        4 or more, and only an x that reads nothing the loop writes."""
        if len(op.indices) < 2 or op.product:
            return exprs, []
        inner, extent = op.indices[-1]
        if not isinstance(extent, int) or extent < 4:
            return exprs, []
        symbols = self.plan.symbols

        def invariant(x: sp.Expr) -> bool:
            for sym in x.free_symbols:
                acc = symbols.get(sym)
                if acc is None:
                    if sym.name == inner:
                        return False
                    continue
                if self.root(acc.array) in written:
                    return False
                if any(inner in ((ix,) if isinstance(ix, str) else ix.names())
                       for ix in acc.index):
                    return False
            return True

        found: dict = {}
        for e in exprs:
            for pw in sp.preorder_traversal(e):
                if (isinstance(pw, sp.Pow) and pw.exp.is_Integer and pw.exp < 0
                        and pw not in found and pw.base.free_symbols and invariant(pw.base)):
                    found[pw] = sp.Symbol(f"sn_inv{len(found)}")
        if not found:
            return exprs, []
        out = [e.xreplace(found) for e in exprs]
        return out, [(str(name), self.printer.doprint(pw)) for pw, name in found.items()]

    def root(self, name: str) -> str:
        """The buffer whose memory ``name`` is (an alias's own buffer)."""
        buf = self.buffers.get(name)
        while buf is not None and buf.kind == "alias" and buf.alias in self.buffers:
            buf = self.buffers[buf.alias]
        return buf.name if buf is not None else name

    def independent(self, op: Loop) -> bool:
        """Whether the innermost loop of ``op`` has no dependence between its
        iterations, so that ``omp simd`` may run them side by side without changing a
        result: every statement writes an element that moves with the innermost index
        (coefficient 1), no array written is read in the loop, and statements writing
        one array write rows of it that do not overlap (the gates of a GRU:
        i, i + 64, i + 128 over i < 64).  GCC vectorises such loops anyway unless they
        touch more arrays than its run-time alias checks cover (a GRU's backward: 7)."""
        if len(op.indices) < 1 or op.product:
            return False
        inner, extent = op.indices[-1]
        if not isinstance(extent, int):
            return False
        written: dict = {}
        for target, index, kind, _ in op.stmts:
            if target == LOSS or kind not in ("=", "+=") or not index:
                return False
            last = index[-1]
            if last == inner:
                off = 0
            elif isinstance(last, ir.Affine) and last.terms == ((inner, 1),):
                off = last.const
            else:
                return False
            if any(inner in ((ix,) if isinstance(ix, str) else ix.names())
                   for ix in index[:-1]):
                return False
            written.setdefault(self.root(target), []).append((tuple(index[:-1]), off))
        for spots in written.values():
            if len({rest for rest, _ in spots}) != 1:
                return False
            offs = sorted(off for _, off in spots)
            if any(b - a < extent for a, b in zip(offs, offs[1:])):
                return False
        symbols = self.plan.symbols
        for _, _, _, expr in op.stmts:
            for sym in expr.free_symbols:
                acc = symbols.get(sym)
                if acc is None or self.root(acc.array) not in written:
                    continue
                # the element the same iteration writes (a statement reading what an
                # earlier one of the loop stored, symnet.plan.fuse): no dependence
                # between iterations
                index, last = tuple(acc.index), acc.index[-1] if acc.index else None
                off = 0 if last == inner else (
                    last.const if isinstance(last, ir.Affine) and last.terms == ((inner, 1),)
                    else None)
                if off is None or (index[:-1], off) not in written[self.root(acc.array)]:
                    return False
        return True

    def product_view(self, op: Loop, rows: bool = False) -> dict:
        """A loop of small products (``symnet.plan.products``): its batch loops and one
        call of sn_small_mm per statement, the operands' offsets at the loop's point."""
        extent = dict(op.indices)
        first = op.product[0]
        loops = [(n, "sn_lo" if rows and n == ir.BATCH else "0",
                  ("sn_hi" if rows else "batch") if n == ir.BATCH else str(extent[n]))
                 for n in first.batch]

        def at(o):
            parts = [f"(size_t){n} * {o.strides[n]}" if n == ir.BATCH else f"{n} * {o.strides[n]}"
                     for n in first.batch]
            parts += [str(o.const)] if o.const else []
            return f"{self.cname(o.array)} + {' + '.join(parts)}"
        calls = []
        for q in op.product:
            alpha = self.printer.doprint(sp.Float(q.alpha)) if q.alpha != 1 else "1"
            calls.append(f"sn_small_mm({q.M}, {q.N}, {q.K}, (real){alpha}, {at(q.A)}, "
                         f"{q.A.strides[q.m]}, {q.A.strides[q.k]}, {at(q.B)}, "
                         f"{q.B.strides[q.k]}, {q.B.strides[q.n]}, {at(q.T)}, "
                         f"{q.T.strides[q.m]}, {0 if q.T.array in op.fresh else 1})")
        return {"loops": loops, "calls": calls, "comment": c_comment(op.comment)}

    def route_view(self, op: Route) -> dict:
        """Max pooling's backward as names: loops, window, and the four elements;
        ``clip``: the window's (name, first, stop), clipped where padding leaves X."""
        probe = Loop(op.loop + op.window, [(op.x.array, op.x.index, "=", sp.S.Zero)], "")
        clip = self.bounds(probe)[len(op.loop):]
        padded = any(lo != "0" or hi != str(n) for (_, lo, hi), (_, n) in zip(clip, op.window))
        return {"loop": op.loop, "window": op.window, "clip": clip, "x": self.element(op.x),
                "z": self.element(op.z), "target": self.element(op.target),
                "delta": self.element(op.delta), "comment": c_comment(op.comment),
                # rows of at least 8 outputs without overlapping windows: a vectorised
                # loop along the row (LeNet's 24→12 pool: 250 vs 325-420 µs per step);
                # shorter rows stay per element (its 8→4 pool: 19 vs 46 µs alone)
                "rows": op.overwrite and not padded and isinstance(op.loop[-1][1], int)
                and op.loop[-1][1] >= 8,
                # one long window (a softmax's row maximum, 8 or more elements): the first
                # position equal to the maximum the forward pass kept, as a vectorised
                # minimum of positions (attention, 32 keys: a scalar scan per row before)
                "scan": len(op.window) == 1 and not padded and isinstance(op.window[0][1], int)
                and op.window[0][1] >= 8,
                "fused": self.fused_view(op) if op.then is not None else None}

    def fused_view(self, op: Route) -> dict:
        """A max pooling's backward fused with the loop that reads its target (see
        symnet.plan.fuse.fuse_routes), per window element in row-major order: its input element
        (``x``, compared with the maximum) and the loop's statements at that element,
        where the target's value is ``sn_routed`` (δ at the first maximum, else 0)."""
        loop = op.then
        names = [n for n, _ in loop.indices]
        exprs = [numeric(st[3]) for st in loop.stmts]
        routed = sp.Symbol("sn_routed")
        points, sums = [], {}
        for at in itertools.product(*(range(n) for _, n in op.window)):
            fix = dict(zip((n for n, _ in op.window), at))
            place = {n: _subst(ix, fix) for n, ix in zip(names, op.target.index)}
            smap = {}
            for e in exprs:
                for sym in e.free_symbols:
                    acc = self.plan.symbols.get(sym)
                    if acc is None or acc.array == op.target.array or sym in smap:
                        continue
                    smap[sym] = self.element(ir.Access(
                        acc.array, tuple(_subst(ix, place) for ix in acc.index)))
            printer = CPrinter(self.dtype, smap, plain_names=True)
            mine = [e.xreplace({s: routed for s in e.free_symbols
                                if s in self.plan.symbols
                                and self.plan.symbols[s].array == op.target.array})
                    for e in exprs]
            temps, reduced = sp.cse(mine, symbols=sp.numbered_symbols("t"),
                                    optimizations=None)
            stmts = []
            for (target, index, kind, _), rhs in zip(loop.stmts, reduced):
                lhs = self.element(ir.Access(target, tuple(_subst(ix, place) for ix in index)))
                if kind == "+=":
                    acc = sums.setdefault(lhs, f"acc{len(sums)}")
                    stmts.append((acc, "+=", printer.doprint(rhs)))
                else:
                    stmts.append((lhs, kind, printer.doprint(rhs)))
            points.append({"x": self.element(ir.Access(
                               op.x.array, tuple(_subst(ix, fix) for ix in op.x.index))),
                           "temps": [(str(t), printer.doprint(v)) for t, v in temps],
                           "stmts": stmts})
        # the widest of 16/8/4 lanes (8/4 in float64) that divides the pooled row: no
        # remainder loop (LeNet's 12-output rows: 50 µs with 4 lanes, 70 µs left to gcc,
        # which takes 16 and runs them in its 8- and 4-lane remainders; batch 64, one thread)
        n = op.loop[-1][1]
        lanes = next((w for w in ((16, 8, 4) if self.dtype == "float32" else (8, 4))
                      if isinstance(n, int) and n % w == 0), None)
        return {"points": points, "sums": list(sums.items()), "simdlen": lanes,
                "comment": c_comment(loop.comment)}

    def conv_view(self, op: Conv) -> dict:
        g = op.geo
        (H, W), (KH, KW), (OH, OW) = g["in_hw"], g["kernel"], g["out_hw"]
        kc, ohw = g["cin"] * KH * KW, OH * OW
        return {"args": f"{g['cin']}, {H}, {W}, {KH}, {KW}, {g['stride'][0]}, "
                        f"{g['stride'][1]}, {g['pad'][0]}, {g['pad'][1]}, "
                        f"{g['dilation'][0]}, {g['dilation'][1]}, {OH}, {OW}",
                "direct": f"{g['cin']}, {H}, {W}, {KH}, {KW}, {g['stride'][0]}, "
                          f"{g['dilation'][0]}, {g['dilation'][1]}, {g['cout']}, {OH}, {OW}",
                "chw": g["cin"] * H * W, "kc": kc, "ohw": ohw, "cout": g["cout"], "ow": OW,
                "col_row": kc * ohw, "out_row": g["cout"] * ohw,
                "comment": c_comment(op.comment)}

    def zero_size(self, op: Zero | Fill) -> str:
        buf = self.buffers[op.buffer]
        if buf.shape[0] == "batch":
            size = 1
            for s in buf.shape[1:]:
                size *= s
            return f"(size_t)batch * {size}"
        size = 1
        for s in buf.shape:
            size *= s
        return str(size)

    def rows_what(self, r: Rows) -> str:
        """What a run of per-example ops computes, for its comments: "z_H1, H1, z_H2"."""
        out = []
        for op in r.ops:
            if isinstance(op, Conv):
                out += [op.Z] if op.mode == "forward" else [x for x in (op.dX, op.gW) if x]
            elif isinstance(op, Loop):
                out += [t for t, *_ in op.stmts]
            elif isinstance(op, Route) and op.then is not None:
                out += [t for t, *_ in op.then.stmts]
            elif isinstance(op, Route):
                out.append(op.target.array)
        return ", ".join(dict.fromkeys(out))

    def row_size(self, name: str) -> int:
        """Numbers per example of a batch buffer."""
        return math.prod(self.buffers[name].shape[1:])

    def needed_in(self, name: str, code: str) -> bool:
        """Template filter: declare buffer ``name`` in a function whose body is
        ``code`` (it uses it directly or through an alias): -Wall -Wextra clean."""
        code = str(code)
        if named_in(self.cname(name), code):       # the body names its C identifier
            return True
        return any(b.kind == "alias" and b.alias == name and self.needed_in(b.name, code)
                   for b in self.buffers.values())

    def render(self, prefix: str = "SN_PREFIX_", macro: str = "SN_MACRO_",
               header_file: str | None = None, title: str = "symnet kernels",
               training: bool = True, threads: bool = True, portable: bool = False,
               trained=None, params_note: str | None = None,
               hooks: bool = False, modes: str | None = None) -> tuple[str, str]:
        """(C source, header): the header is the contract (sizes, parameter
        layout, prototypes); the source includes it as ``header_file``, or
        holds its text when that is None.

        ``training``: also the loss, gradient, update and epoch functions;
        ``threads``: OpenMP pragmas; ``portable``: plain-loop matrix products
        (no packing buffers on the stack); ``trained``: the parameter values
        as C literals, written as ``<prefix>trained_params``; ``hooks``: the
        in-process build's tuning entry points ``<prefix>tune`` and ``<prefix>plan``
        (BLAS, threads), with the matrix driver left to the object every in-process
        module links (``kernels_source``); ``modes``: the layers with a training mode
        of a forward-only export, which the header says run in evaluation mode."""
        env = _environment()
        env.filters["c"] = self.cname
        env.filters["named_in"] = named_in
        env.filters["needed_in"] = self.needed_in
        env.filters["batch_rows"] = batch_rows
        env.tests["matmul"] = lambda op: isinstance(op, MatMul)
        env.tests["zero"] = lambda op: isinstance(op, Zero)
        env.tests["softmax_xent"] = lambda op: isinstance(op, SoftmaxXent)
        env.tests["conv"] = lambda op: isinstance(op, Conv)
        env.tests["route"] = lambda op: isinstance(op, Route)
        env.tests["fill"] = lambda op: isinstance(op, Fill)
        env.tests["rows"] = lambda op: isinstance(op, Rows)
        env.tests["batchsum"] = lambda op: isinstance(op, BatchSum)
        graph = self.plan.graph
        # an in-process module links the shared matrix driver (templates/kernels.c.j2)
        common = dict(version=__version__, dtype=self.dtype, real=DTYPES[self.dtype],
                      describe=describe_graph(graph), training=training,
                      hooks=hooks, part="network" if hooks else "all",
                      batch_sums=bool(self.plan.batch_sums))
        header = env.get_template("network.h.j2").render(
            **common, P=prefix, M=macro, title=title, trained=trained is not None,
            params_note=params_note, modes=modes, variants=self.variants(),
            **self.layout(training, hooks))
        source = env.get_template("network.c.j2").render(
            **common, f="f" if self.dtype == "float32" else "", prefix=prefix,
            plan=self.plan, graph=graph, em=self, header=header, header_file=header_file,
            threads=threads, portable=portable, trained=trained,
            out_offset=self.buffers[self.plan.output].offset,
            params=[b for b in self.buffers.values() if b.kind == "param"],
            grads=[b for b in self.buffers.values() if b.kind == "grad"],
            work=[b for b in self.buffers.values() if b.kind == "work"],
            aliases=[b for b in self.buffers.values() if b.kind == "alias"],
            const_alias=lambda b: self.buffers[b.alias].kind == "input",
            tensors=any(len(n.space) > 1 for n in graph.nodes) or len(graph.in_shape) > 1,
            convs=any(isinstance(op, Conv) for op in self.plan.forward),
            products=any(isinstance(op, Loop) and op.product
                         for op in self.plan.forward + self.plan.backward),
            uses=self.uses(), variants=self.variants(), accuracy=self.accuracy(),
            **self.reuse())
        return source, header

    def reuse(self) -> dict:
        """Whether the threads of a chunked pass may keep their chunks in rows of their own
        (``reuse_rows``; templates/network.c.j2, sn_chunks_run), and the buffers that keep
        their place (``reuse_keep``): the output, which the training loop reads after the
        pass for its accuracy.  Not where other rows are read after the pass: BatchNorm's
        batch sums (its running statistics), the gradients with respect to the inputs
        (``grad_inputs``), the products over a recurrence's stacked steps (``halves.late``,
        which read the steps of the whole batch)."""
        graph, keep, name = self.plan.graph, set(), self.plan.output
        while name is not None and name not in keep:
            keep.add(name)
            b = self.buffers.get(name)
            name = b.alias if b is not None and b.kind == "alias" else None
        rows = not self.plan.batch_sums and not getattr(graph, "grad_inputs", False) \
            and not getattr(self.plan.halves, "late", None)
        return dict(reuse_rows=rows, reuse_keep=keep)

    def layout(self, training: bool, hooks: bool = False) -> dict:
        """Sizes the header states: parameters, scratch per call, memory of a batch
        (with ``hooks``, the in-process build's: the weights its chunked pass packs too)."""
        plan, graph = self.plan, self.plan.graph
        itemsize = 4 if self.dtype == "float32" else 8
        fwd = forward_per_row(plan)
        extra = plan.halves.pack_size if hooks and plan.halves else 0
        if training:
            fixed = plan.n_params + extra
            work, formula = f"(batch) * {plan.work_per_row} + {fixed}", \
                f"(B*{plan.work_per_row} + {fixed})"
        else:
            work, formula = f"(batch) * {fwd}", f"B*{fwd}"

        def nbytes(per_row, extra, b=32):
            return (plan.n_params + b * (graph.n_in + graph.n_out + per_row) + extra) * itemsize
        return dict(n_in=graph.n_in, n_out=graph.n_out, n_params=plan.n_params,
                    per_row=plan.work_per_row if training else fwd, work_macro=work,
                    work_formula=formula, itemsize=itemsize,
                    example_bytes=f"{nbytes(plan.work_per_row, plan.n_params + extra) if training else nbytes(fwd, 0):,}",
                    example_fwd_bytes=f"{nbytes(fwd, 0):,}",
                    params=[{"name": b.name, "offset": b.offset, "shape": list(b.shape)}
                            for b in self.buffers.values() if b.kind == "param"])

    def accuracy(self) -> dict:
        """How the training loop counts correct examples, where the loss has an accuracy."""
        loss, out = self.plan.graph.loss.name, self.buffers[self.plan.output]
        if len(getattr(self.plan.graph, "outputs", [None])) > 1:
            loss = None             # several outputs: fit measures no training accuracy
        if loss == "softmax_cross_entropy":
            graph = self.plan.graph
            n = graph.classes.get(graph.outputs[0], graph.n_out)
            if n == graph.n_out:
                return {"kind": "argmax", "offset": out.offset, "classes": n, "groups": 1,
                        "first": False,
                        "text": "argmax of the output row = the class of the target"}
            return {"kind": "argmax", "offset": out.offset, "classes": n,
                    "groups": graph.n_out // n,
                    "first": graph.outputs[0] in graph.classes_first,
                    "text": "the share of the batch's positions with a target where the "
                            "argmax of the position's classes = the class of its target"}
        if loss == "bce":
            return {"kind": "threshold", "offset": out.offset,
                    "text": "share of the outputs with O > 0.5 exactly where T > 0.5"}
        return {"kind": None, "offset": 0, "text": "this loss has no accuracy"}

    def variants(self) -> list[dict]:
        """The loss, gradient, step and train functions to emit: for targets given as
        rows, and for a softmax cross-entropy also for integer class labels."""
        p, n_out = self.plan, self.plan.graph.n_out
        out = [{"suffix": "", "width": n_out, "loss": p.loss, "backward": p.backward,
                "split": p.split_backward, "what": "", "train_what": "", "head": None,
                "tail": None}]
        if p.loss_labels:
            groups = n_out // p.graph.classes.get(p.graph.outputs[0], n_out)
            if groups == 1:
                what = "; T[b] is the class label of example b"
                train_what = "\n * The same with integer class labels: T[n] is the class " \
                             "of example n."
            else:
                what = f"; T[b·{groups} + q] is the class label of position q of example b"
                train_what = (f"\n * The same with integer class labels: T[n·{groups} + q] "
                              "is the class of position q of example n.")
            out.append({"suffix": "_labels", "width": groups, "loss": p.loss_labels,
                        "backward": p.backward_labels, "split": p.split_backward_labels,
                        "what": what, "train_what": train_what, "head": None, "tail": None})
            # The two passes differ only in the loss: the ops after it (the whole back
            # propagation below the output) are emitted once, as sn_backprop, which
            # both call (the C compiler then optimises them once: a fifth less of its
            # time for the medium network).
            a, b = (v["split"] or v["backward"] for v in out)
            k = 0
            while k < min(len(a), len(b)) and a[len(a) - 1 - k] is b[len(b) - 1 - k]:
                k += 1
            if 0 < k < min(len(a), len(b)):
                for v, ops in zip(out, (a, b)):
                    v["head"], v["tail"] = ops[:len(ops) - k], ops[len(ops) - k:]
        return out

    def uses(self) -> set:
        """Helper functions the expressions call (only those are emitted)."""
        found = set()
        exprs = []
        for ops in (self.plan.forward, self.plan.backward, self.plan.loss):
            exprs += [s[3] for op in ops if isinstance(op, Loop) for s in op.stmts]
            exprs += [s[3] for op in ops if isinstance(op, Route) and op.then is not None
                      for s in op.then.stmts]
        for e in exprs:
            for f in e.atoms(sp.Function):
                found.add(type(f).__name__)
        if any(isinstance(op, SoftmaxXent) for ops in (self.plan.loss, self.plan.backward)
               for op in ops):
            found.add("exp")        # its derived rule (symnet.derive.coupled) takes exponentials
        return found


def named_in(name: str, code: str) -> bool:
    """Whether C ``code`` uses the identifier ``name`` (so a function declares
    only the buffers it uses: no unused variables under -Wall -Wextra).

    >>> named_in("W1", "z[j] += W1[i * 2 + j];"), named_in("W1", "W10[0] = 1; /* W1 */")
    (True, False)
    """
    if not _WORD.fullmatch(name):
        code = _COMMENT.sub(" ", str(code))  # a name in a formula comment is no use
        return re.search(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])",
                         code) is not None
    return name in _words_in(str(code))


_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_WORD = re.compile(r"[A-Za-z0-9_]+")


@lru_cache(maxsize=64)
def _words_in(code: str) -> frozenset:
    """The words (runs of letters, digits and _) of C ``code`` outside its comments: one
    reading of a function's body for all the buffers asked about (a GRU of 40 steps asked
    2630 times, 1.2 s as a search each)."""
    return frozenset(_WORD.findall(_COMMENT.sub(" ", code)))


def describe_graph(graph: ir.Graph) -> list[str]:
    """One line per layer, for the file header."""
    if graph.packed:
        lines = [f"inputs side by side in {graph.input_name} ({graph.n_in} features): "
                 + ", ".join(f"{n} ({w})" for n, w in graph.inputs)]
    elif len(graph.in_shape) > 1:
        lines = [f"input {graph.input_name}: {graph.in_shape} per example"]
    else:
        lines = [f"input {graph.input_name}: {graph.n_in} features"]
    for node in graph.nodes:
        if node.pieces is not None:
            lines.append(f"{node.name} ({node.n_out}) = [{', '.join(node.inputs)}] side by side")
        elif len(node.space) > 1 or node.kind == "flatten":
            lines.append(f"{node.name} {node.out_shape} = {node.label or node.outer}")
        else:
            lines.append(f"{node.name} ({node.n_out}) = {node.outer}")
    if len(graph.outputs) == 1:
        lines.append(f"loss: {graph.loss.name}, averaged over the batch")
    else:
        lines.append("loss: " + " + ".join(
            f"{graph.weights[o]:g}·{graph.losses[o].name}({o})" for o in graph.outputs)
            + ", each averaged over the batch; targets side by side in T")
    return lines


def forward_per_row(plan: Plan) -> int:
    """Work numbers per example the forward pass alone uses: every buffer its ops touch
    (the layers and their sums, im2col's columns) lies in that many first numbers of a
    row (symnet.plan.share keeps the forward's buffers first)."""
    names = forward_buffers(plan)
    if names is None:
        return plan.work_per_row
    ends = [b.offset + math.prod(b.shape[1:]) for b in plan.buffers.values()
            if b.kind == "work" and b.name in names]
    return max(ends, default=0)


def cdef(header: str) -> str:
    r"""The header as cffi's cdef: the same prototypes, without preprocessor
    lines and the C++ guard (cffi parses declarations, not directives).

    >>> cdef('#define N 2\n#ifdef __cplusplus\nextern "C" {\n#endif\nvoid f(int n);\n')
    'void f(int n);\n'
    """
    out, skip = [], 0
    for line in header.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("#ifdef __cplusplus"):
            skip = 1
        elif skip and stripped.startswith("#endif"):
            skip = 0
        elif not skip and not stripped.startswith("#"):
            out.append(line)
    return "".join(out).strip() + "\n"


@lru_cache(maxsize=2)
def universal_cdef(dtype: str) -> str | None:
    """cffi's declarations (``cdef``) of every function an in-process network module of
    ``dtype`` may define (training, targets as rows and as class labels, the tuning
    hooks), named with the prefix ``symnet_net_``: the declarations of the one cffi
    wrapper that the networks of a number type share (``symnet.backend.c.build``).
    network.h.j2 rendered for no network in particular: the sizes it states are
    comments and macros, which a cdef leaves out.  None where the template asks for
    more than this gives it (each module then has the wrapper of its own declarations;
    tests/test_shared_kernels.py fails)."""
    one = {"suffix": "", "what": "", "train_what": ""}
    try:
        header = _render_universal(dtype, one)
    except jinja2.TemplateError:
        return None
    return cdef(header)


def _render_universal(dtype: str, one: dict) -> str:
    return _environment().get_template("network.h.j2").render(
        version=__version__, dtype=dtype, real=DTYPES[dtype], describe=[], training=True,
        hooks=True, batch_sums=True, part="network", P="symnet_net_", M="SYMNET_NET_", title="",
        trained=False, params_note=None, modes=None,
        variants=[one, dict(one, suffix="_labels")], n_in=1, n_out=1, n_params=1,
        per_row=1, work_macro="1", work_formula="1", itemsize=4, example_bytes="0",
        example_fwd_bytes="0", params=[])


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template_dir()),
                             trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             bytecode_cache=_TEMPLATE_CODE)
    env.filters["comment"] = c_comment
    return env


def kernels_source(dtype: str) -> str:
    """The C of the matrix driver that every in-process module of this dtype links
    (``templates/kernels.c.j2``; ``symnet.backend.c.build.kernels_source``)."""
    from .build import kernels_source as source
    return source(dtype)


def emit(plan: Plan, dtype: str, hooks: bool = False) -> tuple[str, str, str]:
    """Render the plan for symnet's own use; returns (C source, symbol prefix,
    header) (``symnet.backend.c.render`` is the route callers take).  The header text is also inside the source.

    ``hooks``: also render ``<prefix>tune`` (the in-process build's BLAS pointer
    and thread thresholds, active only under ``SN_USE_BLAS``); standalone C
    leaves it out.

    The prefix ``symnet_<hash>_`` of every exported function is a hash of the
    text itself, so two networks never share a symbol, and no symbol can
    resolve to a libc function of the same name (see DESIGN.md, traps).
    """
    text, header = Emitter(plan, dtype).render(hooks=hooks)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    prefix = f"symnet_{digest}_"

    def named(t):
        return t.replace("SN_PREFIX_", prefix).replace("SN_MACRO_", prefix.upper())
    return named(text), prefix, named(header)


def _subst(ix, values: dict):
    """Index position ``ix`` with names replaced: by a number, a name or an affine
    position (``_subst("y", {"y": Affine((("y", 2),), 1)})`` is y*2 + 1)."""
    terms = ((ix, 1),) if isinstance(ix, str) else ix.terms
    const = 0 if isinstance(ix, str) else ix.const
    out: dict = {}
    for name, c in terms:
        v = values.get(name, name)
        if isinstance(v, int):
            const += c * v
            continue
        for n2, c2 in (((v, 1),) if isinstance(v, str) else v.terms):
            out[n2] = out.get(n2, 0) + c * c2
        const += 0 if isinstance(v, str) else c * v.const
    kept = tuple((n, c) for n, c in out.items() if c)
    if not const and len(kept) == 1 and kept[0][1] == 1:
        return kept[0][0]
    return ir.Affine(kept, const)
