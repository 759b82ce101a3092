"""A jet program (``symnet.derive.jets``) as plain C99, run on blocks of examples.

The program is written for one example; the C runs it on a block of ``B``
examples at once (``B`` from the per-example storage, a multiple of the
vector width), each value of the program held as ``size × B`` reals, one row
of ``B`` examples per unit.  So every operation is a loop that vectorises
across the examples:

- ``Lin`` z = W·a is a product of W (n_out × n_in) with the block's a (n_in × B),
  a register-tiled kernel with the sizes as constants (``sn_lin_*``); its
  reverse ``LinT`` is the same kernel on Wᵀ; ``Outer`` (∂L/∂W += z̄ ⊗ a) sums
  over the block's examples (``sn_outer_*``);
- ``Elem`` formulas (an activation and its derivative chain, their reverse and
  tangent) are one loop per unit over the examples, common subexpressions
  once, tanh as a branch-free vectorisable function (``sn_tanh``).

Values that do not depend on the example (W·e_c of the input's seed
directions, the first layer's input derivatives) are computed once per
thread.  The blocks are cut into at most ``CHUNKS`` chunks, which the threads
take as they come; each chunk sums its loss, gradient and H·v apart and the
sums are added in chunk order, so a result depends neither on the number of
threads nor on their timing.  Each fused elementwise loop is a function of its
own, so that the compiler's work grows with the number of layers, not faster.
Scalar formulas are printed by ``symnet.scalar.cprint``.

``SYMNET_JET_BLOCK=B`` sets the examples per block (a multiple of the vector
lanes, at most ``BLOCK_MAX``), for measuring."""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import sympy as sp

from ...derive.jets import Elem, Lin, LinT, Outer, Program


PRELUDE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
typedef {real} real;
#define SN_PRAGMA(x) _Pragma(#x)
#if defined(__GNUC__)   /* the kernels stay functions: inlined at every call they made
                           gcc 30% slower (9 layers), and a call per block is nothing
                           next to its thousands of multiply-adds */
#define SN_NOINLINE __attribute__((noinline))
#else
#define SN_NOINLINE
#endif
#ifdef SN_SIMD   /* -fopenmp-simd: vectorise the loops over a block's examples */
#undef SN_SIMD
#define SN_SIMD _Pragma("omp simd")
#define SN_SIMD_SUM(...) SN_PRAGMA(omp simd reduction(+:__VA_ARGS__))
#else
#define SN_SIMD
#define SN_SIMD_SUM(...)
#endif
#define SN_VL {vl}   /* reals in 32 bytes: lanes of the vectors below, and of the sums of ∂L/∂W */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(SN_PLAIN_LOOPS)
/* The products' register tiles as GCC/Clang vectors of 32 bytes (one AVX2 register):
 * written as plain loops over arrays, gcc kept the tiles of these small products in
 * memory rather than in registers (half the speed).  Other compilers, and
 * -DSN_PLAIN_LOOPS, take the plain loops after each #else. */
#define SN_VEC 1
typedef real sn_vec __attribute__((vector_size(32), aligned(sizeof(real)), __may_alias__));
#define SN_LOAD(p) (*(const sn_vec *)(p))
#define SN_STORE(p, v) (*(sn_vec *)(p) = (v))
/* v stays in a register: gcc otherwise reads it from memory again in each multiply-add
 * that uses it (two loads where one does: G += y·xᵀ went from 26 to 32 G multiply-adds/s) */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__AVX__)   /* one ymm register */
#define SN_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define SN_IN_REGISTER(v) (void)0
#endif
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

TANH64 = r"""
/* tanh(x) for double without a call or a branch, so that loops over it vectorise
 * (libm's tanh was most of a PINN step): sign(x)·(e^{2|x|} − 1)/(e^{2|x|} − 1 + 2), one
 * division, with e^{2|x|} − 1 = 2^k·(e^r − 1) + (2^k − 1), |r| ≤ ln2/2, e^r − 1 by its
 * Taylor polynomial (Estrin's scheme: a short chain of dependent multiply-adds), 2^k put
 * in the exponent bits: no cancellation near 0.  |x| ≥ 22 gives ±1 as tanh does in
 * double, and NaN gives NaN (the select once read |x| < 22, false for NaN: tanh(NaN)
 * was 1, and a PINN's loss at a NaN point came out finite).  Relative error ≤ 6.8e-16 against libm on 1.6 million points from 1e-12 to
 * 30 (both signs); 1.65 ns against 2.55 ns a value for the former form (x + x³·P/Q
 * below 0.625, Horner's scheme, two divisions; Zen 3, AVX2). */
static inline double sn_tanh(double x)
{
    const double a = !(fabs(x) >= 22.0) ? fabs(x) : 22.0;   /* NaN stays NaN, as libm's */
    const double y = 2.0 * a;
    const double m = y * 1.4426950408889634074 + 0x1.8p52;   /* k in the low bits */
    const double k = m - 0x1.8p52;
    const double r = (y - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
    /* e^r − 1 = r·Σ_{j ≤ 12} r^j / (j + 1)!, by Estrin's scheme */
    const double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    const double q0 = 1.0 + r * 0.5, q1 = 1.0 / 6.0 + r * (1.0 / 24.0);
    const double q2 = 1.0 / 120.0 + r * (1.0 / 720.0), q3 = 1.0 / 5040.0 + r * (1.0 / 40320.0);
    const double q4 = 1.0 / 362880.0 + r * (1.0 / 3628800.0);
    const double q5 = 1.0 / 39916800.0 + r * (1.0 / 479001600.0);
    const double q6 = 1.0 / 6227020800.0;
    const double em = r * (((q0 + q1 * r2) + (q2 + q3 * r2) * r4)
                          + ((q4 + q5 * r2) + q6 * r4) * r8);
    uint64_t bits;
    memcpy(&bits, &m, sizeof bits);
    bits = (bits + 1023) << 52;                               /* 2^k */
    double s;
    memcpy(&s, &bits, sizeof s);
    const double e1 = s * em + (s - 1.0);                     /* e^{2|x|} − 1 */
    const double t = e1 / (e1 + 2.0);
    return x < 0 ? -t : t;
}
"""

def float32_functions() -> str:
    """The network's own float exp and tanh (templates/expf.c.j2, tanhf.c.j2): the
    float printer (``symnet.scalar.cprint``) writes exp as sn_expf and tanh as sn_tanhf,
    and the jets use the same ones."""
    from .build import template_dir
    return "".join((template_dir() / f).read_text() + "\n"
                   for f in ("expf.c.j2", "tanhf.c.j2"))

#: examples per block at most, and the bytes of per-example storage one thread's
#: block may take (B: the largest multiple of the lanes within both, at least the
#: lanes).  Measured on the Burgers PINN (9 layers, 2,900 reals per example, one
#: thread, CPU time): B = 64 took 0.7 (float32) and 0.75 (float64) of B = 32's time
#: and 0.6 of B = 8's; 128 was no faster.
BLOCK_MAX = 64
BLOCK_BYTES = 4 << 20
#: chunks of blocks with sums of their own (at most CHUNK_REALS reals of sums in all)
CHUNKS = 16
CHUNK_REALS = 1 << 22


def _lanes(dtype) -> int:
    """Examples per inner tile of the kernels: LIN_NV 256-bit vectors."""
    return LIN_NV * (4 if np.dtype(dtype) == np.float64 else 8)


def _env_block() -> int | None:
    """``SYMNET_JET_BLOCK``: examples per block (None: unset); anything but a whole
    number above 0 is refused (a word was taken as unset and 0 as one tile of lanes,
    both without a message)."""
    text = os.environ.get("SYMNET_JET_BLOCK", "")
    word = text.strip()
    if not word:
        return None
    if not (word.isascii() and word.isdigit()) or int(word) < 1:
        raise ValueError(f"SYMNET_JET_BLOCK must be a whole number of examples above 0 "
                         f"(rounded down to a multiple of the vector lanes, at most "
                         f"{BLOCK_MAX}), got {text!r}")
    return int(word)


class _Printer:
    def __init__(self, dtype):
        from ...scalar.cprint import CPrinter
        self.dtype = dtype
        self.cls = CPrinter

    def expr(self, e, mapping):
        from ...scalar.cprint import numeric
        text = self.cls(self.dtype, mapping).doprint(numeric(e))
        if self.dtype == "float64":
            text = re.sub(r"(?<![\w])tanh\(", "sn_tanh(", text)
        return text


# ------------------------------------------------------------------ storage

def _base(prog: Program, name: str):
    base = name
    while base.startswith(("bar_", "t_")):
        base = base[4:] if base.startswith("bar_") else base[2:]
    return prog.vars.get(base)


def _storage(prog: Program, name: str):
    """(class, C text of the start of its storage) of a var, classes:
    ``const`` (inputs of the call the same for every example: θ, v, seeds, ē of
    the loss), ``sum`` (outputs summed over the examples: loss, ∂L/∂θ, H·v),
    ``row`` (one value per example: X, T, ∂L/∂X) or ``local`` (decided by what it
    is computed from)."""
    v = prog.vars.get(name)
    if name == "bar_L":
        return "const", "v_bar_loss"
    if v is not None and v.kind == "param":
        return "const", f"(theta + {v.offset})"
    if v is not None and v.kind == "seed":
        return "const", f"v_{name}"
    if v is not None and v.kind == "loss":
        return "sum", "loss"
    if v is not None and v.kind in ("X", "T"):
        return "row", f"v_{name}"
    if name.startswith("bar_"):
        base = prog.vars.get(name[4:])
        if base is not None and base.kind == "param":
            return "sum", f"(grad + {base.offset})"
        if base is not None and base.kind == "X":
            return "row", f"v_{name}"
    if name.startswith("t_"):
        rest = name[2:]
        base = prog.vars.get(rest)
        if base is not None and base.kind == "param":
            return "const", f"(vec + {base.offset})"
        if rest.startswith("bar_"):
            b2 = prog.vars.get(rest[4:])
            if b2 is not None and b2.kind == "param":
                return "sum", f"(hv + {b2.offset})"
    b = _base(prog, name)
    if b is not None and b.kind == "loss":
        return "sum", f"v_{name}"            # the tangent of the loss: summed, unused
    return "local", f"v_{name}"


def _io(op):
    """(outputs, inputs) var names of an op."""
    if isinstance(op, Lin):
        return [op.out], [op.W, op.x]
    if isinstance(op, LinT):
        return [op.out], [op.W, op.y]
    if isinstance(op, Outer):
        return [op.G], [op.y, op.x]
    return [o for o, _ in op.outs], [a[1] for a in op.args]


class _Layout:
    """Where every var of ``ops`` lives and which ops run once per thread."""

    def __init__(self, prog: Program, ops: list, dtype, block=None):
        self.prog = prog
        names = []
        for op in ops:
            outs, ins = _io(op)
            for nm in outs + ins:
                if nm not in names:
                    names.append(nm)
        self.cls, self.ref, self.size = {}, {}, {}
        for nm in names:
            c, ref = _storage(prog, nm)
            self.cls[nm], self.ref[nm] = c, ref
            self.size[nm] = _base(prog, nm).size if _base(prog, nm) is not None else 1
        # a local holds one value per example when it is computed from one
        changed = True
        while changed:
            changed = False
            for op in ops:
                outs, ins = _io(op)
                if any(self.cls[i] == "row" for i in ins):
                    for o in outs:
                        if self.cls[o] == "local":
                            self.cls[o] = "row"
                            changed = True
        for nm in names:
            if self.cls[nm] == "local":
                self.cls[nm] = "glob"         # the same for every example: once per thread
        self.rows = [nm for nm in names if self.cls[nm] == "row"]
        per_example = sum(self.size[nm] for nm in self.rows)
        lanes = _lanes(dtype)
        itemsize = np.dtype(dtype).itemsize
        if block is None:
            block = _env_block()
        if block is None:
            block = BLOCK_BYTES // max(1, per_example * itemsize)
        self.B = max(lanes, min(BLOCK_MAX, block) // lanes * lanes)
        self.lanes = lanes
        self.per_example = per_example
        self.once = [k for k, op in enumerate(ops)
                     if all(self.cls[o] == "glob" for o in _io(op)[0])]


# ------------------------------------------------------------------ kernels

#: register tiles of the products (vector path): rows × vectors of examples for
#: o = M·x (LIN_MR × LIN_NV), rows × columns of sums for G += y·xᵀ (OUT_MR × OUT_NC).
#: Measured on a 20×20 product of 64 examples (Zen 3, AVX2, one thread, in L1):
#: o = M·x 2×4: 37.5 (float) and 18.8 (double) G multiply-adds/s, 4×2: 31.4 and 15.8;
#: G += y·xᵀ 5×2: 27 and 15.6, 4×2: 26 and 14.5 (4×4 spills: 15 and 8).  The
#: Burgers PINN's term (one thread, CPU time) went from 24.5 to 15.7 ms (float)
#: and from 36 to 28.5 ms (double) against the plain loops.
LIN_MR, LIN_NV = 2, 4
OUT_MR, OUT_NC = 5, 2


def _unroll(n) -> str:
    return f'_Pragma("GCC unroll {min(n, 32)}")'


def _ranges(n, tile):
    """[(start, end, step)]: tiles of ``tile`` then one of the rest."""
    main = n // tile * tile
    return [(a, b, t) for a, b, t in ((0, main, tile), (main, n, n - main)) if b > a]


def _lin_kernel(name, rows, cols, rs, cs, B, L) -> str:
    """o[r][b] (+)= Σ_c M(r, c)·x[c][b] over a block, M(r, c) = W[r·rs + c·cs]."""
    vec = []
    for r_lo, r_hi, mr in _ranges(rows, LIN_MR):
        nv = LIN_NV
        vec += [
            f"        for (int r = {r_lo}; r < {r_hi}; r += {mr}) {{",
            f"            sn_vec a[{mr}][{nv}];",
            f"            for (int q = 0; q < {mr}; ++q)",
            f"                for (int j = 0; j < {nv}; ++j)",
            f"                    a[q][j] = acc ? SN_LOAD(o + (r + q) * {B} + b0 + j * SN_VL)"
            " : (sn_vec){0};",
            f"            {_unroll(cols)}",
            f"            for (int c = 0; c < {cols}; ++c) {{",
            f"                sn_vec xv[{nv}];",
            f"                for (int j = 0; j < {nv}; ++j) xv[j] = SN_LOAD(x + c * {B} + b0 + j * SN_VL);",
            f"                for (int q = 0; q < {mr}; ++q) {{",
            f"                    const real w = W[(r + q) * {rs} + c * {cs}];",
            f"                    for (int j = 0; j < {nv}; ++j) a[q][j] += w * xv[j];",
            "                }",
            "            }",
            f"            for (int q = 0; q < {mr}; ++q)",
            f"                for (int j = 0; j < {nv}; ++j) SN_STORE(o + (r + q) * {B} + b0 + j * SN_VL, a[q][j]);",
            "        }"]
    vec = "\n".join(vec)
    return f"""
#ifndef SN_HAVE_{name}
#define SN_HAVE_{name}
/* o[r][b] (+)= Σ_c M[r][c]·x[c][b] for r < {rows}, c < {cols}, the block's {B} examples b;
 * M[r][c] = W[r*{rs} + c*{cs}].  Tiles of {LIN_MR} rows × {LIN_NV} vectors of examples stay in
 * registers while c runs. */
static SN_NOINLINE void {name}(const real *restrict W, const real *restrict x, real *restrict o, int acc)
{{
#ifdef SN_VEC
    for (int b0 = 0; b0 < {B}; b0 += {LIN_NV} * SN_VL) {{
{vec}
    }}
#else
    for (int b0 = 0; b0 < {B}; b0 += {L}) {{
        int r = 0;
        for (; r + 4 <= {rows}; r += 4) {{
            real a0[{L}], a1[{L}], a2[{L}], a3[{L}];
            for (int l = 0; l < {L}; ++l) {{
                a0[l] = acc ? o[(r + 0) * {B} + b0 + l] : 0;
                a1[l] = acc ? o[(r + 1) * {B} + b0 + l] : 0;
                a2[l] = acc ? o[(r + 2) * {B} + b0 + l] : 0;
                a3[l] = acc ? o[(r + 3) * {B} + b0 + l] : 0;
            }}
            for (int c = 0; c < {cols}; ++c) {{
                const real w0 = W[(r + 0) * {rs} + c * {cs}], w1 = W[(r + 1) * {rs} + c * {cs}];
                const real w2 = W[(r + 2) * {rs} + c * {cs}], w3 = W[(r + 3) * {rs} + c * {cs}];
                const real *xc = x + c * {B} + b0;
                SN_SIMD
                for (int l = 0; l < {L}; ++l) {{
                    a0[l] += w0 * xc[l];
                    a1[l] += w1 * xc[l];
                    a2[l] += w2 * xc[l];
                    a3[l] += w3 * xc[l];
                }}
            }}
            for (int l = 0; l < {L}; ++l) {{
                o[(r + 0) * {B} + b0 + l] = a0[l];
                o[(r + 1) * {B} + b0 + l] = a1[l];
                o[(r + 2) * {B} + b0 + l] = a2[l];
                o[(r + 3) * {B} + b0 + l] = a3[l];
            }}
        }}
        for (; r < {rows}; ++r) {{
            real a0[{L}];
            for (int l = 0; l < {L}; ++l) a0[l] = acc ? o[r * {B} + b0 + l] : 0;
            for (int c = 0; c < {cols}; ++c) {{
                const real w0 = W[r * {rs} + c * {cs}];
                const real *xc = x + c * {B} + b0;
                SN_SIMD
                for (int l = 0; l < {L}; ++l) a0[l] += w0 * xc[l];
            }}
            for (int l = 0; l < {L}; ++l) o[r * {B} + b0 + l] = a0[l];
        }}
    }}
#endif
}}
#endif
"""


def _outer_kernel(name, rows, cols, B, V, lanes=False) -> str:
    """G[r][c] += Σ_k Σ_{b<nb} y_k[r][b]·x_k[c][b]; ``lanes``: G holds SN_VL partial
    sums per entry (G[(r·cols + c)·SN_VL + l]), added up by the caller."""
    vec = ["    const int nv = nb / SN_VL * SN_VL;"]
    for r_lo, r_hi, mr in _ranges(rows, OUT_MR):
        for c_lo, c_hi, nc in _ranges(cols, OUT_NC):
            vec += [
                f"    for (int r = {r_lo}; r < {r_hi}; r += {mr})",
                f"        for (int c = {c_lo}; c < {c_hi}; c += {nc}) {{",
                f"            sn_vec s[{mr}][{nc}];",
                f"            for (int q = 0; q < {mr}; ++q)",
                f"                for (int p = 0; p < {nc}; ++p) s[q][p] = (sn_vec){{0}};",
                "            for (int k = 0; k < m; ++k) {",
                "                const real *restrict y = ys[k], *restrict x = xs[k];",
                "                for (int b = 0; b < nv; b += SN_VL) {",
                f"                    sn_vec xv[{nc}];",
                f"                    for (int p = 0; p < {nc}; ++p) xv[p] = SN_LOAD(x + (c + p) * {B} + b);",
                f"                    for (int q = 0; q < {mr}; ++q) {{",
                f"                        sn_vec yv = SN_LOAD(y + (r + q) * {B} + b);",
                "                        SN_IN_REGISTER(yv);",
                f"                        for (int p = 0; p < {nc}; ++p) s[q][p] += yv * xv[p];",
                "                    }",
                "                }",
                "                for (int b = nv; b < nb; ++b)   /* the last block's rest: in lane 0 */",
                f"                    for (int q = 0; q < {mr}; ++q)",
                f"                        for (int p = 0; p < {nc}; ++p)",
                f"                            s[q][p][0] += y[(r + q) * {B} + b] * x[(c + p) * {B} + b];",
                "            }"]
            vec += ([
                f"            for (int q = 0; q < {mr}; ++q)",
                f"                for (int p = 0; p < {nc}; ++p) {{",
                f"                    real *g = G + ((r + q) * {cols} + c + p) * SN_VL;",
                "                    SN_STORE(g, SN_LOAD(g) + s[q][p]);",
                "                }",
                "        }"] if lanes else [
                f"            for (int q = 0; q < {mr}; ++q)",
                f"                for (int p = 0; p < {nc}; ++p) {{",
                "                    real u = 0;",
                "                    for (int l = 0; l < SN_VL; ++l) u += s[q][p][l];",
                f"                    G[(r + q) * {cols} + c + p] += u;",
                "                }",
                "        }"])
    vec = "\n".join(vec)
    gidx = f"((r + q) * {cols} + c + p) * SN_VL" if lanes else f"(r + q) * {cols} + c + p"
    where = (f"\n * G: SN_VL partial sums of each entry, G[(r*{cols} + c)*SN_VL + l], added up "
             "by the caller\n * (once per chunk of blocks rather than once per block)."
             if lanes else "")
    return f"""
#ifndef SN_HAVE_{name}
#define SN_HAVE_{name}
/* G[r][c] += Σ_k Σ_b y_k[r][b]·x_k[c][b] for r < {rows}, c < {cols}, the m pairs k (the
 * jet components of one weight) and the block's first nb examples b (rows of {B}):
 * tiles of {OUT_MR} × {OUT_NC} sums, each kept in a vector of lanes until the last pair.{where} */
static SN_NOINLINE void {name}(int m, const real *const *ys, const real *const *xs,
                               real *restrict G, int nb)
{{
#ifdef SN_VEC
{vec}
#else
    const int nv = nb / {V} * {V};
    for (int r = 0; r < {rows}; r += 4) {{
        const int nr = {rows} - r < 4 ? {rows} - r : 4;
        for (int c = 0; c < {cols}; c += 2) {{
            const int nc = {cols} - c < 2 ? {cols} - c : 2;
            real s[4][2][{V}];
            real t[4][2];
            memset(s, 0, sizeof s);
            memset(t, 0, sizeof t);
            for (int k = 0; k < m; ++k) {{
                const real *restrict y = ys[k], *restrict x = xs[k];
                if (nr == 4 && nc == 2) {{
                    for (int b = 0; b < nv; b += {V}) {{
                        const real *x0 = x + (c + 0) * {B} + b, *x1 = x + (c + 1) * {B} + b;
                        for (int q = 0; q < 4; ++q) {{
                            const real *yq = y + (r + q) * {B} + b;
                            SN_SIMD
                            for (int l = 0; l < {V}; ++l) {{
                                s[q][0][l] += yq[l] * x0[l];
                                s[q][1][l] += yq[l] * x1[l];
                            }}
                        }}
                    }}
                }} else {{
                    for (int b = 0; b < nv; b += {V})
                        for (int q = 0; q < nr; ++q)
                            for (int p = 0; p < nc; ++p)
                                for (int l = 0; l < {V}; ++l)
                                    s[q][p][l] += y[(r + q) * {B} + b + l]
                                                  * x[(c + p) * {B} + b + l];
                }}
                for (int q = 0; q < nr; ++q)
                    for (int p = 0; p < nc; ++p)
                        for (int b = nv; b < nb; ++b)
                            t[q][p] += y[(r + q) * {B} + b] * x[(c + p) * {B} + b];
            }}
            for (int q = 0; q < nr; ++q)
                for (int p = 0; p < nc; ++p) {{
                    real u = t[q][p];
                    for (int l = 0; l < {V}; ++l) u += s[q][p][l];
                    G[{gidx}] += u;
                }}
        }}
    }}
#endif
}}
#endif
"""


# ------------------------------------------------------------------ emitter

class _Emitter:
    def __init__(self, prog, ops, dtype, outputs, block):
        self.prog, self.ops, self.dtype = prog, ops, dtype
        self.lay = _Layout(prog, ops, dtype, block)
        self.pr = _Printer(dtype)
        self.kernels = {}
        self.assign = set()       # (op index, out index): the first write of a row var
        self.zero = []            # row vars set to 0 at the start of each block
        self.lane_sums = {}       # sum var → (its partial sums per lane, entries)
        self._first_writes()

    # which accumulating writes are first (and whole): those become assignments;
    # a var first written in part and then summed into, summed over units, or read
    # before it is whole, is set to 0 at the start of each block
    def _first_writes(self):
        lay, state = self.lay, {}

        def zero(nm):
            if state.get(nm) is not True:
                state[nm] = True
                self.zero.append(nm)

        for k, op in enumerate(self.ops):
            if k in lay.once:
                continue
            outs, ins = _io(op)
            for nm in ins:
                v = self.prog.vars.get(nm)
                if lay.cls[nm] == "row" and not (v is not None and v.kind in ("X", "T")) \
                        and not (state.get(nm) is True
                                 or (nm in state and state[nm].all())):
                    zero(nm)
            if isinstance(op, Outer):
                continue
            if isinstance(op, (Lin, LinT)):
                if lay.cls[op.out] == "row" and op.out not in state:
                    state[op.out] = True
                    self.assign.add((k, 0))
                continue
            for j, (nm, off) in enumerate(op.outs):
                if lay.cls[nm] != "row" or state.get(nm) is True:
                    continue
                have = state.setdefault(nm, np.zeros(lay.size[nm], bool))
                if op.reduce:
                    if not have[off]:
                        zero(nm)
                    continue
                span = have[off:off + op.n]
                if not span.any():
                    if op.acc:
                        self.assign.add((k, j))
                    span[:] = True
                elif not span.all():
                    zero(nm)

    def _kernel(self, text_fn, name, *args):
        if name not in self.kernels:
            self.kernels[name] = text_fn(name, *args)
        return name

    # --------------------------------------------------------------- ops
    def op(self, k, op, in_block=True) -> list:
        if isinstance(op, (Lin, LinT)):
            return self._lin(k, op, in_block)
        if isinstance(op, Outer):
            return self._outer(op)
        return self._elem(k, op, in_block)

    def _lin(self, k, op, in_block):
        from ...scalar.cprint import c_comment
        lay, B = self.lay, self.lay.B
        if isinstance(op, Lin):
            x, rows, cols, rs, cs = op.x, op.n_out, op.n_in, op.n_in, 1
            acc = op.acc
            note = op.note or f"{op.out} = {op.W}·{op.x}"
        else:
            x, rows, cols, rs, cs = op.y, op.n_in, op.n_out, 1, op.n_in
            acc = True
            note = op.note or f"{op.out} += {op.W}ᵀ·{op.y}"
        W, xr, o = lay.ref[op.W], lay.ref[x], lay.ref[op.out]
        if (k, 0) in self.assign:
            acc = False
        c = [f"        /* {c_comment(note)} */"]
        if lay.cls[x] == "row":
            name = self._kernel(_lin_kernel, f"sn_lin_{rows}x{cols}_{rs}_{cs}_b{B}",
                                rows, cols, rs, cs, B, lay.lanes)
            c.append(f"        {name}({W}, {xr}, {o}, {int(acc)});")
            return c
        # x is the same for every example: one product, then (in a block) a copy per example
        c.append("        {")
        c.append(f"            real s[{rows}];")
        c.append(f"            for (int r = 0; r < {rows}; ++r) {{")
        c.append("                real t = 0;")
        c.append(f"                for (int q = 0; q < {cols}; ++q) t += {W}[r * {rs} + q * {cs}]"
                 f" * {xr}[q];")
        c.append("                s[r] = t;")
        c.append("            }")
        if lay.cls[op.out] == "row":
            c.append(f"            for (int r = 0; r < {rows}; ++r) {{")
            c.append("                SN_SIMD")
            c.append(f"                for (int b = 0; b < {B}; ++b) {o}[r * {B} + b] "
                     f"{'+=' if acc else '='} s[r];")
            c.append("            }")
        else:
            c.append(f"            for (int r = 0; r < {rows}; ++r) {o}[r] "
                     f"{'+=' if acc else '='} s[r];")
        c.append("        }")
        return c

    def outer_rows(self, op) -> bool:
        """An Outer of two per-example values: summed by the kernel, with the other
        Outers into the same weight (its jet components) in one call."""
        return isinstance(op, Outer) and self.lay.cls[op.y] == "row" \
            and self.lay.cls[op.x] == "row"

    def outers(self, group: list) -> list:
        from ...scalar.cprint import c_comment
        lay, B = self.lay, self.lay.B
        op = group[0]
        rows, cols = op.n_out, op.n_in
        c = [f"        /* {c_comment(o.note or f'{o.G} += {o.y} ⊗ {o.x}')} */" for o in group]
        # a sum over the examples (∂L/∂W, H·v): kept as SN_VL partial sums per entry
        # through the chunk's blocks and added up once at its end (the sums across a
        # vector's lanes at the end of every tile were 15 % of the kernel, float)
        lanes = lay.cls[op.G] == "sum"
        name = self._kernel(_outer_kernel, f"sn_outer_{rows}x{cols}_b{B}"
                            + ("_lanes" if lanes else ""), rows, cols, B, lay.lanes // 2, lanes)
        target = lay.ref[op.G]
        if lanes:
            target = f"v_lanes_{op.G}"
            self.lane_sums[op.G] = (target, rows * cols)
        c.append("        {")
        c.append("            const real *ys[] = {" + ", ".join(lay.ref[o.y] for o in group)
                 + "};")
        c.append("            const real *xs[] = {" + ", ".join(lay.ref[o.x] for o in group)
                 + "};")
        c.append(f"            {name}({len(group)}, ys, xs, {target}, nb);")
        c.append("        }")
        return c

    def _outer(self, op):
        from ...scalar.cprint import c_comment
        lay, B = self.lay, self.lay.B
        G, y, x = lay.ref[op.G], lay.ref[op.y], lay.ref[op.x]
        rows, cols = op.n_out, op.n_in
        c = [f"        /* {c_comment(op.note or f'{op.G} += {op.y} ⊗ {op.x}')} */"]
        yr, xrow = lay.cls[op.y] == "row", lay.cls[op.x] == "row"
        if yr and xrow:
            return self.outers([op])
        ysum = (f"t = 0; for (int b = 0; b < nb; ++b) t += {y}[r * {B} + b];" if yr
                else f"t = {y}[r]{'' if xrow else ' * nb'};")
        c.append(f"        for (int r = 0; r < {rows}; ++r) {{")
        if xrow:
            c.append(f"            real t = {y}[r];")
            c.append(f"            for (int q = 0; q < {cols}; ++q) {{")
            c.append("                real u = 0;")
            c.append(f"                for (int b = 0; b < nb; ++b) u += {x}[q * {B} + b];")
            c.append(f"                {G}[r * {cols} + q] += t * u;")
            c.append("            }")
        else:
            c.append(f"            real {ysum}")
            c.append(f"            for (int q = 0; q < {cols}; ++q) {G}[r * {cols} + q] += "
                     f"t * {x}[q];")
        c.append("        }")
        return c

    def _index(self, nm, off, bc, in_block):
        lay, B = self.lay, self.lay.B
        ref = lay.ref[nm]
        if lay.cls[nm] == "row" and in_block:
            if bc:
                return f"{ref}[{off * B} + b]"
            return f"{ref}[({off} + i) * {B} + b]" if off else f"{ref}[i * {B} + b]"
        if bc:
            return f"{ref}[{off}]"
        return f"{ref}[{off} + i]" if off else f"{ref}[i]"

    def fusible(self, op) -> bool:
        """An elementwise op writing whole rows of per-example values (not sums)."""
        return isinstance(op, Elem) and not op.reduce \
            and all(self.lay.cls[o] == "row" for o, _ in op.outs)

    def joins(self, group: list, op) -> bool:
        """Whether ``op`` may run in the loop of ``group``: every var that one of them
        writes is read and written at the same position (unit i, example b) by all."""
        if op.n != group[0].n:
            return False

        def acc(o):
            out = [(v, off, False, True) for v, off in o.outs]
            return out + [(a[1], a[2], a[3], False) for a in o.args
                          if self.lay.cls[a[1]] == "row"]
        mine = acc(op)
        theirs = [a for g in group for a in acc(g)]
        written = {a[0] for a in mine + theirs if a[3]}
        for var in written:
            uses = [a for a in mine + theirs if a[0] == var]
            if not any(a[0] == var for a in mine) or not any(a[0] == var for a in theirs):
                continue
            if any(a[2] for a in uses) or len({a[1] for a in uses}) > 1:
                return False
        return True

    def fused(self, items: list) -> list:
        """One loop over units and examples for several elementwise ops [(k, op)]."""
        from ...scalar.cprint import c_comment
        B, n = self.lay.B, items[0][1].n
        c = [f"        /* {c_comment(op.note)} */" for _, op in items if op.note]
        c.append(f"        for (long i = 0; i < {n}; ++i) {{")
        c.append("            SN_SIMD")
        c.append(f"            for (long b = 0; b < {B}; ++b) {{")
        for k, op in items:
            body = self._row_body(k, op)
            if len(items) > 1:
                c.append("                {")
                c += [f"                    {x}" for x in body]
                c.append("                }")
            else:
                c += [f"                {x}" for x in body]
        c.append("            }")
        c.append("        }")
        return c

    def _row_body(self, k, op) -> list:
        lay, B = self.lay, self.lay.B
        local = {sym: self._index(var, off, bc, True) for sym, var, off, bc in op.args}
        repl, reduced = sp.cse(op.exprs, symbols=sp.numbered_symbols("c"))
        body = []
        for s, e in repl:
            local[s] = str(s)
            body.append(f"const real {s} = {self.pr.expr(e, local)};")
        for j, ((o, off), e) in enumerate(zip(op.outs, reduced)):
            dst = f"{lay.ref[o]}[({off} + i) * {B} + b]" if off else \
                f"{lay.ref[o]}[i * {B} + b]"
            acc = op.acc and (k, j) not in self.assign
            body.append(f"{dst} {'+=' if acc else '='} {self.pr.expr(e, local)};")
        return body

    def _elem(self, k, op, in_block):
        from ...scalar.cprint import c_comment
        lay, B = self.lay, self.lay.B
        mapping = {sym: self._index(var, off, bc, in_block) for sym, var, off, bc in op.args}
        c = []
        if op.note:
            c.append(f"        /* {c_comment(op.note)} */")
        repl, reduced = sp.cse(op.exprs, symbols=sp.numbered_symbols("c"))
        local = dict(mapping)
        body = []
        for s, e in repl:
            local[s] = str(s)
            body.append(f"const real {s} = {self.pr.expr(e, local)};")
        classes = {lay.cls[o] for o, _ in op.outs}
        if not in_block:
            # once per thread: every input is the same for every example
            lines = []
            for (o, off), e in zip(op.outs, reduced):
                dst = f"{lay.ref[o]}[{off}]" if op.reduce else \
                    (f"{lay.ref[o]}[{off} + i]" if off else f"{lay.ref[o]}[i]")
                lines.append(f"{dst} {'+=' if op.acc or op.reduce else '='} "
                             f"{self.pr.expr(e, local)};")
            c.append(f"        for (long i = 0; i < {op.n}; ++i) {{")
            c += [f"            {x}" for x in body + lines]
            c.append("        }")
            return c
        sums = "sum" in classes or "glob" in classes
        if sums and classes != {"sum"}:
            raise AssertionError(f"mixed outputs {op.outs}")
        bound = "nb" if sums else str(B)
        red, lines, after = [], [], []
        for j, ((o, off), e) in enumerate(zip(op.outs, reduced)):
            text = self.pr.expr(e, local)
            if sums:
                r = f"r{j}"
                red.append(r)
                lines.append(f"{r} += {text};")
                dst = f"{lay.ref[o]}[{off}]" if op.reduce else \
                    (f"{lay.ref[o]}[{off} + i]" if off else f"{lay.ref[o]}[i]")
                after.append(f"{dst} += {r};")
            elif op.reduce:
                lines.append(f"{lay.ref[o]}[{off * B} + b] += {text};")
            else:
                dst = f"{lay.ref[o]}[({off} + i) * {B} + b]" if off else \
                    f"{lay.ref[o]}[i * {B} + b]"
                acc = op.acc and (k, j) not in self.assign
                lines.append(f"{dst} {'+=' if acc else '='} {text};")
        c.append(f"        for (long i = 0; i < {op.n}; ++i) {{")
        if red:
            c.append("            real " + ", ".join(f"{r} = 0" for r in red) + ";")
            c.append(f"            SN_SIMD_SUM({', '.join(red)})")
        else:
            c.append("            SN_SIMD")
        c.append(f"            for (long b = 0; b < {bound}; ++b) {{")
        c += [f"                {x}" for x in body + lines]
        c.append("            }")
        c += [f"            {x}" for x in after]
        c.append("        }")
        return c


def _rename(op, names: dict):
    """``op`` with the vars in ``names`` read and written as their replacements."""
    r = lambda nm: names.get(nm, nm)
    if isinstance(op, Lin):
        return dataclasses.replace(op, out=r(op.out), W=r(op.W), x=r(op.x))
    if isinstance(op, LinT):
        return dataclasses.replace(op, out=r(op.out), W=r(op.W), y=r(op.y))
    if isinstance(op, Outer):
        return dataclasses.replace(op, G=r(op.G), y=r(op.y), x=r(op.x))
    return dataclasses.replace(op, outs=[(r(o), off) for o, off in op.outs],
                               args=[(s, r(v), off, bc) for s, v, off, bc in op.args])


def _without_copies(prog: Program, ops: list, outputs):
    """(ops, outputs) with the copies ``o = v`` of whole per-example vectors gone, ``o``
    read from ``v`` instead (a layer's output H = H_f0, its activation: a copy of
    20 × B reals per layer and block, and their storage).  Only where each of the two
    is written once, ``v`` before ``o``, both local vectors of the same size."""
    writes = {}
    for k, op in enumerate(ops):
        for nm in _io(op)[0]:
            writes.setdefault(nm, []).append(k)
    names = {}
    for k, op in enumerate(ops):
        if not isinstance(op, Elem) or op.reduce or op.acc:
            continue
        args = {s: (v, off, bc) for s, v, off, bc in op.args}
        for (o, off), e in zip(op.outs, op.exprs):
            if off or not isinstance(e, sp.Symbol) or e not in args:
                continue
            v, aoff, bc = args[e]
            v = names.get(v, v)
            if aoff or bc or v == o or writes.get(o) != [k] or len(writes.get(v, [])) != 1 \
                    or writes[v][0] >= k:
                continue
            if _storage(prog, o) != ("local", f"v_{o}") or _storage(prog, v)[0] != "local":
                continue
            size = lambda nm: _base(prog, nm).size if _base(prog, nm) is not None else None
            if size(o) != op.n or size(v) != op.n:
                continue
            names[o] = v
    if not names:
        return ops, outputs
    out = []
    for op in ops:
        if isinstance(op, Elem):
            keep = [j for j, (o, _) in enumerate(op.outs) if o not in names]
            if not keep:
                continue
            if len(keep) < len(op.outs):
                op = dataclasses.replace(op, outs=[op.outs[j] for j in keep],
                                         exprs=[op.exprs[j] for j in keep])
        out.append(_rename(op, names))
    if outputs:
        outputs = [(names.get(v, v), off, cnt) for v, off, cnt in outputs]
    return out, outputs


def emit_function(prog: Program, ops: list, fname: str, dtype: str, outputs=None,
                  block=None) -> str:
    """One C function running ``ops`` on every example of a batch, in blocks of
    examples (see the module text), with the helper kernels it calls before it.

    Signature: int (theta, X, T, n, scale, loss, grad, gx, vec, hv, out), 0 when
    done, 1 when its work memory could not be had.  ``outputs``:
    [(var, offset, count)] copied per example into out (row after row).
    ``block``: examples per block (default: from the storage per example)."""
    ops, outputs = _without_copies(prog, ops, outputs)
    em = _Emitter(prog, ops, dtype, outputs, block)
    lay, B = em.lay, em.lay.B
    xvar = next(v for v in prog.vars.values() if v.kind == "X")
    n_in = xvar.size
    n_t = next((v.size for v in prog.vars.values() if v.kind == "T"), 0)
    n_params = max((v.offset + v.size for v in prog.vars.values() if v.kind == "param"),
                   default=0)
    once = set(lay.once)
    # storage: the block's rows, then the per-thread values
    decl, offset, where = [], 0, {}
    for nm in lay.rows:
        decl.append(f"        real *restrict {lay.ref[nm]} = ws + {offset};"
                    f"   /* {nm}: {lay.size[nm]} × {B} */")
        where[nm] = offset
        offset += lay.size[nm] * B
    seeds = [nm for nm in lay.cls if lay.ref[nm].startswith("v_")
             and prog.vars.get(nm) is not None and prog.vars[nm].kind == "seed"]
    glob = [nm for nm in lay.cls if lay.cls[nm] == "glob"
            or (lay.cls[nm] == "sum" and lay.ref[nm].startswith("v_"))] + seeds
    for nm in glob:
        decl.append(f"        real *restrict {lay.ref[nm]} = ws + {offset};   /* {nm} */")
        where[nm] = offset
        offset += lay.size[nm]
    ws_size = max(offset, 1)
    pro = []
    for nm in glob:
        pro.append(f"        memset({lay.ref[nm]}, 0, {lay.size[nm]} * sizeof(real));")
    for nm in seeds:
        pro.append(f"        {lay.ref[nm]}[{prog.vars[nm].seed}] = 1;")
    helpers = []

    def fused(group):
        """A fused loop as a function of its own (the compiler's register allocation
        grows faster than the function; one function per loop keeps it small)."""
        k = group[0][0]
        used = []
        for _, op in group:
            for nm in [o for o, _ in op.outs] + [a[1] for a in op.args]:
                if nm in where and nm not in used:
                    used.append(nm)
        name = f"{fname}_loop{k}"
        helpers.append("\n".join(
            [f"static SN_NOINLINE void {name}(real *restrict ws, const real *restrict theta, "
             "const real *restrict vec, const real *restrict v_bar_loss)", "{",
             "    (void)ws; (void)theta; (void)vec; (void)v_bar_loss;",
             *[f"    real *restrict {lay.ref[nm]} = ws + {where[nm]};" for nm in used],
             *[x[4:] for x in em.fused(group)], "}", ""]))
        return [f"        {name}(ws, theta, vec, v_bar_loss);"]
    body_once, body, group = [], [], []
    # the Outers of per-example values into one weight run together, where the last
    # of them was (nothing else in the block reads the weight's gradient)
    last_outer, outer_groups = {}, {}
    for k, op in enumerate(ops):
        if k not in once and em.outer_rows(op):
            key = (op.G, op.n_out, op.n_in)
            last_outer[key] = k
            outer_groups.setdefault(key, []).append(op)
    for k, op in enumerate(ops):
        if k in once:
            body_once += em.op(k, op, in_block=False)
            continue
        if em.outer_rows(op):
            key = (op.G, op.n_out, op.n_in)
            if last_outer[key] == k:
                if group:
                    body += fused(group)
                    group = []
                body += em.outers(outer_groups[key])
            continue
        if group and em.fusible(op) and em.joins([g for _, g in group], op):
            group.append((k, op))
            continue
        if group:
            body += fused(group)
            group = []
        if em.fusible(op):
            group = [(k, op)]
        else:
            body += em.op(k, op)
    if group:
        body += fused(group)
    # the partial sums per lane of the Outers (∂L/∂W), one set per thread: set to 0 when
    # a chunk starts, added into the chunk's sums when it ends
    vl = 8 if _ffi_dtype(dtype) == "float" else 4
    lane_zero, lane_add = [], []
    for var, (ref, count) in em.lane_sums.items():
        decl.append(f"        real *restrict {ref} = ws + {offset};   /* {var}: {count} × "
                    f"{vl} partial sums */")
        offset += count * vl
        lane_zero.append(f"        memset({ref}, 0, {count * vl} * sizeof(real));")
        lane_add += [f"        for (int j = 0; j < {count}; ++j) {{   /* {var} += the lanes' sums */",
                     "            real u = 0;",
                     f"            for (int l = 0; l < {vl}; ++l) u += {ref}[j * {vl} + l];",
                     f"            {lay.ref[var]}[j] += u;",
                     "        }"]
    ws_size = max(offset, 1)
    fill = []
    for nm in lay.rows:
        v = prog.vars.get(nm)
        if v is not None and v.kind in ("X", "T"):
            src, w = ("X", n_in) if v.kind == "X" else ("T", max(n_t, 1))
            fill.append(f"            {'if (T) ' if src == 'T' else ''}for (int j = 0; j < {w}; ++j) "
                        f"{lay.ref[nm]}[j * {B} + b] = {src}[r * {w} + j];")
    zero = [f"            memset({lay.ref[nm]}, 0, {lay.size[nm] * B} * sizeof(real));"
            for nm in em.zero]
    copy = []
    gx_name = f"bar_{xvar.name}"
    if gx_name in lay.cls:
        copy.append(f"            if (gx) for (int j = 0; j < {n_in}; ++j) "
                    f"gx[(b0 + b) * {n_in} + j] += {lay.ref[gx_name]}[j * {B} + b];")
    if outputs:
        width = sum(cnt for _, _, cnt in outputs)
        pos = 0
        for var, off, cnt in outputs:
            src = f"{lay.ref[var]}[({off} + j) * {B} + b]" if lay.cls[var] == "row" \
                else f"{lay.ref[var]}[{off} + j]"
            copy.append(f"            for (int j = 0; j < {cnt}; ++j) "
                        f"out[(b0 + b) * {width} + {pos} + j] = {src};")
            pos += cnt
    sig = (f"int {fname}(const real *restrict theta, const real *restrict X, "
           "const real *restrict T, long n, real scale, real *restrict loss_out, "
           "real *restrict grad_out, real *restrict gx, const real *restrict vec, "
           "real *restrict hv_out, real *restrict out)")
    chunks = max(1, min(CHUNKS, CHUNK_REALS // (2 * n_params + 1)))
    lines = [f"/* {fname}: the program on blocks of {B} examples, {lay.per_example} reals "
             "per example */", sig, "{",
             "    (void)T; (void)scale; (void)gx; (void)vec; (void)out;",
             f"    /* The blocks are cut into up to {chunks} chunks, in order, which threads take",
             "     * as they come; each chunk sums its loss, gradient and H·v apart, and the",
             "     * sums are added in chunk order: the result does not depend on the number",
             "     * of threads nor on their timing. */",
             f"    const long np = {n_params};",
             f"    const long nblocks = (n + {B - 1}) / {B};",
             f"    const long nchunks = nblocks < {chunks} ? (nblocks > 0 ? nblocks : 1) : "
             f"{chunks};",
             "    int nt = 1;",
             "#ifdef _OPENMP",
             "    if (nblocks >= 4) nt = omp_get_max_threads();",
             "    if (nt > nchunks) nt = (int)nchunks;",
             "#endif",
             "    if (nt < 1) nt = 1;",
             "    const size_t sums = (size_t)(2 * np + 1);",
             f"    const size_t work = (size_t){ws_size};",
             "    /* the chunks' sums, set to 0, then each thread's work memory, which the",
             "     * program writes before it reads (not cleared: 1.5 MB a call in double) */",
             "    real *part = malloc(((size_t)nchunks * sums + (size_t)nt * work + 16) "
             "* sizeof(real));",
             "    if (!part) return 1;",
             "    memset(part, 0, (size_t)nchunks * sums * sizeof(real));",
             "#pragma omp parallel num_threads(nt) if (nt > 1)",
             "    {",
             "        int tid = 0;",
             "#ifdef _OPENMP",
             "        tid = omp_get_thread_num();",
             "#endif",
             "        real *restrict ws = part + (size_t)nchunks * sums + (size_t)tid * work;",
             "        (void)ws;",
             "        const real v_bar_loss[1] = {scale}; (void)v_bar_loss;",
             *decl, *pro,
             "        /* once per thread: the values that are the same for every example */",
             *body_once,
             "#pragma omp for schedule(dynamic, 1)",
             "        for (long ch = 0; ch < nchunks; ++ch) {",
             "        real *restrict loss = part + (size_t)ch * sums;",
             "        real *restrict grad = loss + 1;",
             "        real *restrict hv = loss + 1 + np;",
             "        (void)loss; (void)grad; (void)hv;",
             *lane_zero,
             "        for (long blk = ch * nblocks / nchunks; blk < (ch + 1) * nblocks / nchunks; "
             "++blk) {",
             f"        const long b0 = blk * {B};",
             f"        const int nb = n - b0 < {B} ? (int)(n - b0) : {B};",
             "        /* the block's inputs, one row per unit (the last example again in the",
             "         * padding, which is computed but never summed) */",
             f"        for (int b = 0; b < {B}; ++b) {{",
             "            const long r = b0 + (b < nb ? b : nb - 1); (void)r;",
             *fill,
             "        }",
             *zero,
             *body,
             "        for (int b = 0; b < nb; ++b) {",
             *copy,
             "        }",
             "        }",
             *lane_add,
             "        }",
             "    }",
             "    for (long t = 0; t < nchunks; ++t) {",
             "        const real *p = part + (size_t)t * sums;",
             "        if (loss_out) loss_out[0] += p[0];",
             "        if (grad_out) for (long k = 0; k < np; ++k) grad_out[k] += p[1 + k];",
             "        if (hv_out) for (long k = 0; k < np; ++k) hv_out[k] += p[1 + np + k];",
             "    }",
             "    free(part);",
             "    return 0;",
             "}", ""]
    return "".join(em.kernels.values()) + "\n".join(helpers) + "\n".join(lines)


# ------------------------------------------------- building and calling (cffi)

def _ffi_dtype(dtype) -> str:
    return "double" if np.dtype(dtype) == np.float64 else "float"


SIGNATURE = ("int {name}(const real *theta, const real *X, const real *T, long n, real scale, "
             "real *loss, real *grad, real *gx, const real *vec, real *hv, real *out);")


def build_program_module(functions: list, dtype: str, tag: str):
    """Compile [(name, C text)] into one module → (lib, ffi, C source)."""
    from . import build
    real = _ffi_dtype(dtype)
    src = PRELUDE.format(real=real, f="f" if real == "float" else "",
                         vl=8 if real == "float" else 4)
    src += float32_functions() if real == "float" else TANH64
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
        rc = getattr(lib, name)(ptr(m.theta), ptr(X), ptr(T), X.shape[0], scale, ptr(loss),
                                ptr(grad), ptr(gx), ptr(vec), ptr(hv), ptr(out))
    if rc:
        raise MemoryError(f"{name}: its work memory for {X.shape[0]} examples could not be "
                          "allocated")
    return loss[0], grad, gx, hv
