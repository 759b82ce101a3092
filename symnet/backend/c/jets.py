"""A jet program (``symnet.derive.jets``) as plain C99: one function running the
program's operations for every example of a batch, one loop per operation with
its formula in a comment; scalar formulas printed by ``symnet.scalar.cprint``."""

from __future__ import annotations

import numpy as np
import sympy as sp

from ...derive.jets import Lin, LinT, Outer, Program


PRELUDE = r"""
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
typedef {real} real;
#ifdef SN_SIMD   /* -fopenmp-simd: vectorise the loops (reductions in lanes) */
#undef SN_SIMD
#define SN_SIMD _Pragma("omp simd")
#define SN_SIMD_SUM _Pragma("omp simd reduction(+:s)")
#else
#define SN_SIMD
#define SN_SIMD_SUM
#endif
static inline real sn_sigmoid(real x)
{{
    if (x >= 0) return 1 / (1 + exp{f}(-x));
    const real e = exp{f}(x);
    return e / (1 + e);
}}
static inline real sn_softplus(real x)
{{
    return (x > 0 ? x : 0) + log1p{f}(exp{f}(-fabs{f}(x)));
}}
"""


class _Printer:
    def __init__(self, dtype):
        from ...scalar.cprint import CPrinter
        self.dtype = dtype
        self.cls = CPrinter

    def expr(self, e, mapping):
        from ...scalar.cprint import numeric
        p = self.cls("float64" if self.dtype == "float64" else "float64", mapping)
        text = p.doprint(numeric(e))
        if self.dtype == "float32":
            for fn in ("exp", "log", "tanh", "sqrt", "sin", "cos", "fabs", "pow", "log1p",
                       "cosh", "sinh"):
                text = text.replace(f"{fn}(", f"{fn}f(")
        return text


def _ref(prog: Program, name: str, ctx: dict) -> str:
    """C text of the start of a var's storage."""
    if name in ctx:
        return ctx[name]
    v = prog.vars.get(name)
    if v is not None and v.kind == "param":
        return f"(theta + {v.offset})"
    if name.startswith("bar_"):
        base = prog.vars.get(name[4:])
        if base is not None and base.kind == "param":
            return f"(grad + {base.offset})"
        if base is not None and base.kind == "X":
            return "gx_row"
    if name.startswith("t_"):
        rest = name[2:]
        base = prog.vars.get(rest)
        if base is not None and base.kind == "param":
            return f"(vec + {base.offset})"
        if rest.startswith("bar_"):
            b2 = prog.vars.get(rest[4:])
            if b2 is not None and b2.kind == "param":
                return f"(hv + {b2.offset})"
    v = prog.vars.get(name)
    if v is not None and v.kind == "X":
        return "x_row"
    if v is not None and v.kind == "T":
        return "t_row"
    if v is not None and v.kind == "loss":
        return "loss"
    if name == "bar_L":
        return "v_bar_loss"
    return name


def _cid(name: str) -> str:
    return "v_" + name


def emit_function(prog: Program, ops: list, fname: str, dtype: str, outputs=None) -> str:
    """One C function running ``ops`` on every example of a batch.

    Signature: (theta, X, T, n, scale, loss, grad, gx, vec, hv, out).  ``outputs``:
    [(var, offset, count)] copied per example into out (row after row)."""
    pr = _Printer(dtype)
    names = set()
    for op in ops:
        if isinstance(op, Lin):
            names |= {op.out, op.W, op.x}
        elif isinstance(op, LinT):
            names |= {op.out, op.W, op.y}
        elif isinstance(op, Outer):
            names |= {op.G, op.y, op.x}
        else:
            names |= {o for o, _ in op.outs} | {a[1] for a in op.args}
    ctx = {}
    decl, zero = [], []
    sizes = {}
    for nm in sorted(names):
        ref = _ref(prog, nm, {})
        if ref != nm:
            ctx[nm] = ref
            continue
        base = nm
        while base.startswith(("bar_", "t_")):
            base = base[4:] if base.startswith("bar_") else base[2:]
        v = prog.vars[base]
        sizes[nm] = v.size
        ctx[nm] = _cid(nm)
        if v.kind == "seed" and nm == base:
            decl.append(f"        real {_cid(nm)}[{v.size}];")
            decl.append(f"        memset({_cid(nm)}, 0, sizeof {_cid(nm)}); "
                        f"{_cid(nm)}[{v.seed}] = 1;")
        else:
            decl.append(f"        real {_cid(nm)}[{v.size}];")
            if nm.startswith(("bar_", "t_")) or v.kind == "loss":
                zero.append(f"        memset({_cid(nm)}, 0, sizeof {_cid(nm)});")
    body = []
    for op in ops:
        body.extend(_emit_op(prog, op, ctx, pr))
    n_in = prog.vars[next(v.name for v in prog.vars.values() if v.kind == "X")].size
    n_t = next((v.size for v in prog.vars.values() if v.kind == "T"), 0)
    copy = []
    if outputs:
        width = sum(c for _, _, c in outputs)
        pos = 0
        for var, off, cnt in outputs:
            copy.append(f"        for (long i = 0; i < {cnt}; ++i) "
                        f"out[b * {width} + {pos} + i] = {ctx[var]}[{off} + i];")
            pos += cnt
    n_params = max((v.offset + v.size for v in prog.vars.values() if v.kind == "param"),
                   default=0)
    lines = [f"void {fname}(const real *restrict theta, const real *restrict X, "
             "const real *restrict T, long n, real scale, real *restrict loss_out, "
             "real *restrict grad_out, real *restrict gx, const real *restrict vec, "
             "real *restrict hv_out, real *restrict out)", "{",
             "    (void)T; (void)scale; (void)gx; (void)vec; (void)out;",
             "    /* The examples are shared among threads (static, in order); each thread",
             "     * sums its loss, gradient and H·v apart, and the sums are added in thread",
             "     * order: the same result for the same number of threads. */",
             f"    const long np = {n_params};",
             "    int nt = 1;",
             "#ifdef _OPENMP",
             "    if (n >= 64) nt = omp_get_max_threads();",
             "#endif",
             "    real *part = 0;",
             "    if (nt > 1) {",
             "        part = calloc((size_t)nt * (size_t)(2 * np + 1), sizeof(real));",
             "        if (!part) nt = 1;",
             "    }",
             "#pragma omp parallel num_threads(nt) if (nt > 1)",
             "    {",
             "        int tid = 0;",
             "#ifdef _OPENMP",
             "        tid = omp_get_thread_num();",
             "#endif",
             "        real *mine = part ? part + (size_t)tid * (size_t)(2 * np + 1) : 0;",
             "        real *restrict loss = mine ? mine : loss_out;",
             "        real *restrict grad = mine && grad_out ? mine + 1 : grad_out;",
             "        real *restrict hv = mine && hv_out ? mine + 1 + np : hv_out;",
             "        (void)loss; (void)grad; (void)hv;",
             "#pragma omp for schedule(static)",
             "    for (long b = 0; b < n; ++b) {",
             f"        const real *x_row = X + b * {n_in};",
             f"        const real *t_row = T ? T + b * {max(n_t, 1)} : 0; (void)t_row;",
             f"        real *gx_row = gx ? gx + b * {n_in} : 0; (void)gx_row;",
             *decl, *zero,
             "        real v_bar_loss[1] = {scale};",
             *body, *copy, "    }",
             "    }",
             "    if (part) {",
             "        for (int t = 0; t < nt; ++t) {",
             "            const real *p = part + (size_t)t * (size_t)(2 * np + 1);",
             "            if (loss_out) loss_out[0] += p[0];",
             "            if (grad_out) for (long k = 0; k < np; ++k) grad_out[k] += p[1 + k];",
             "            if (hv_out) for (long k = 0; k < np; ++k) hv_out[k] += p[1 + np + k];",
             "        }",
             "        free(part);",
             "    }",
             "}", ""]
    return "\n".join(lines)


def _emit_op(prog, op, ctx, pr) -> list:
    from ...scalar.cprint import c_comment
    c = []
    if isinstance(op, Lin):
        c.append(f"        /* {c_comment(op.note or f'{op.out} = {op.W}·{op.x}')} */")
        W, x, o = ctx[op.W], ctx[op.x], ctx[op.out]
        c.append(f"        for (long i = 0; i < {op.n_out}; ++i) {{")
        c.append(f"            real s = {o + '[i]' if op.acc else '0'};")
        c.append("            SN_SIMD_SUM")
        c.append(f"            for (long j = 0; j < {op.n_in}; ++j) s += {W}[i * {op.n_in} + j]"
                 f" * {x}[j];")
        c.append(f"            {o}[i] = s;")
        c.append("        }")
    elif isinstance(op, LinT):
        c.append(f"        /* {c_comment(op.note or f'{op.out} += {op.W}ᵀ·{op.y}')} */")
        W, y, o = ctx[op.W], ctx[op.y], ctx[op.out]
        c.append(f"        for (long i = 0; i < {op.n_out}; ++i)")
        c.append(f"            for (long j = 0; j < {op.n_in}; ++j) {o}[j] += "
                 f"{W}[i * {op.n_in} + j] * {y}[i];")
    elif isinstance(op, Outer):
        c.append(f"        /* {c_comment(op.note or f'{op.G} += {op.y} ⊗ {op.x}')} */")
        G, y, x = ctx[op.G], ctx[op.y], ctx[op.x]
        c.append(f"        for (long i = 0; i < {op.n_out}; ++i)")
        c.append(f"            for (long j = 0; j < {op.n_in}; ++j) {G}[i * {op.n_in} + j] "
                 f"+= {y}[i] * {x}[j];")
    else:
        mapping = {}
        for sym, var, off, bc in op.args:
            ref = ctx.get(var, _ref(prog, var, ctx))
            mapping[sym] = f"{ref}[{off}]" if bc or op.n == 1 else \
                (f"{ref}[{off} + i]" if off else f"{ref}[i]")
        if op.note:
            c.append(f"        /* {c_comment(op.note)} */")
        repl, reduced = sp.cse(op.exprs, symbols=sp.numbered_symbols("c"))
        if op.n > 1 and not op.reduce:
            c.append("        SN_SIMD")
        c.append(f"        for (long i = 0; i < {op.n}; ++i) {{")
        local = dict(mapping)
        for s, e in repl:
            local[s] = str(s)
            c.append(f"            const real {s} = {pr.expr(e, local)};")
        for (o, off), e in zip(op.outs, reduced):
            ref = ctx[o]
            if op.reduce:
                dst = f"{ref}[{off}]"
                c.append(f"            {dst} += {pr.expr(e, local)};")
            else:
                dst = f"{ref}[{off} + i]" if off else f"{ref}[i]"
                c.append(f"            {dst} {'+=' if op.acc else '='} {pr.expr(e, local)};")
        c.append("        }")
    return c


# ------------------------------------------------- building and calling (cffi)

def _ffi_dtype(dtype) -> str:
    return "double" if np.dtype(dtype) == np.float64 else "float"


SIGNATURE = ("void {name}(const real *theta, const real *X, const real *T, long n, real scale, "
             "real *loss, real *grad, real *gx, const real *vec, real *hv, real *out);")


def build_program_module(functions: list, dtype: str, tag: str):
    """Compile [(name, C text)] into one module → (lib, ffi)."""
    from . import build
    real = _ffi_dtype(dtype)
    src = PRELUDE.format(real=real, f="f" if real == "float" else "")
    src += "\n".join(text for _, text in functions)
    cdef = "\n".join(SIGNATURE.format(name=name).replace("real", real) for name, _ in functions)
    key = build.build_key("jets", tag, src, cdef)
    hit = build.lookup(key)
    mod, meta = hit if hit else build.build(key, src, cdef, {"kind": "jets", "tag": tag})
    return mod.lib, mod.ffi, src


def call_kernel(lib, ffi, name, model, X, T=None, scale=1.0, want_gx=False, vec=None,
                out=None):
    """Run one compiled jet function on the model's parameters → (Σ loss, grad, gx, hv)."""
    def ptr(a):
        if a is None:
            return ffi.NULL
        return ffi.cast(f"{_ffi_dtype(a.dtype)} *", ffi.from_buffer(a))
    m = model
    loss = np.zeros(1, m.dtype)
    grad = np.zeros_like(m.theta)
    gx = np.zeros_like(X) if want_gx else None
    hv = np.zeros_like(m.theta) if vec is not None else None
    with m.lock:
        getattr(lib, name)(ptr(m.theta), ptr(X), ptr(T), X.shape[0], scale, ptr(loss),
                           ptr(grad), ptr(gx), ptr(vec), ptr(hv), ptr(out))
    return loss[0], grad, gx, hv
