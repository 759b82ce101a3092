"""The float32 exponential of the generated C (templates/expf.c.j2): vectorisable, and
within 1.5 ulp of exp in double (libm's expf: 1 ulp), with exp's limits."""

import numpy as np
import sympy

import symnet as sn


def exp_model():
    """O = exp(1·x + 0): the layer's exponential of the input itself (one input, so that
    no 0·∞ of a product spoils the special values)."""
    net = sn.Network(sn.Input(1), sn.Dense(1, lambda z: sympy.exp(z), name="E"), loss="mse")
    model = net.compile(dtype="float32")
    model.params["W1"] = np.ones((1, 1), np.float32)
    model.params["b1"] = np.zeros(1, np.float32)
    return model


def test_float_exp_is_within_1_5_ulp_of_exp():
    model = exp_model()
    assert "sn_expf(" in model.runtime.c_source
    x = np.linspace(-110, 88.72, 400_001).astype(np.float32)
    x = np.concatenate([x, np.float32(np.log(2)) * np.arange(-149, 128, dtype=np.float32),
                        [-103.97, -87.34, -0.35, 0.35, 88.72, 88.7228]]).astype(np.float32)
    got = model.forward(x[:, None])[:, 0].astype(np.float64)
    want = np.exp(x.astype(np.float64))
    # relative error, and below the smallest normal float against it (subnormal spacing)
    err = np.abs(got - want) / np.maximum(want, 2.0 ** -126)
    assert err.max() < 9e-8, (err.max(), x[err.argmax()])


def test_float_exp_limits():
    model = exp_model()
    x = np.array([0, 1, -np.inf, np.inf, np.nan, 88.73, 1000, -104.5, -1000], np.float32)
    got = model.forward(x[:, None])[:, 0]
    assert got[0] == 1 and abs(got[1] - np.e) <= 2 * np.spacing(np.float32(np.e))
    assert got[2] == 0 and got[3] == np.inf and np.isnan(got[4])
    assert got[5] == np.inf and got[6] == np.inf            # beyond float's largest
    assert got[7] == 0 and got[8] == 0                      # below the least subnormal


# In C, as the networks' C is compiled: the template's sn_expf vectorised and not, on a
# sample of the 2^32 floats and on every float near the ends, ±87, ±1 and ±ln 2/2.
_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#define CH 4096
static float xs[CH], ya[CH], yb[CH];
__attribute__((noinline)) static void now_vec(void)
{
#pragma omp simd
    for (int i = 0; i < CH; i++) ya[i] = sn_expf(xs[i]);
}
__attribute__((noinline, optimize("no-tree-vectorize"))) static void now_scalar(void)
{
    for (int i = 0; i < CH; i++) yb[i] = sn_expf(xs[i]);
}
static unsigned long long seen, unlike, wrong;
static double worst;
static void check(void)
{
    now_vec();
    now_scalar();
    for (int i = 0; i < CH; i++) {
        uint32_t a, b;
        memcpy(&a, &ya[i], 4);
        memcpy(&b, &yb[i], 4);
        if (a != b && unlike++ < 5)
            printf("x=%a vectorised %a, not %a\n", xs[i], ya[i], yb[i]);
        const double x = xs[i], want = exp(x);
        int ok;
        if (x != x)
            ok = ya[i] != ya[i];
        else if (want > 3.4028234663852886e38)
            ok = ya[i] == (float)INFINITY;
        else {
            /* relative, and below the least normal float against it */
            const double err = fabs(ya[i] - want) / fmax(want, ldexp(1.0, -126));
            worst = err > worst ? err : worst;
            ok = err < 9e-8;
        }
        if (!ok && wrong++ < 5)
            printf("x=%a exp %a, sn_expf %a\n", xs[i], want, ya[i]);
    }
    seen += CH;
}
static void run(uint32_t first, uint32_t step, uint32_t count)
{
    for (uint32_t done = 0; done < count; done += CH) {
        for (int i = 0; i < CH; i++) {
            uint32_t u = first + (done + (uint32_t)i) * step;
            memcpy(&xs[i], &u, 4);
        }
        check();
    }
}
int main(void)
{
    float lo[] = {-105.0f, 88.0f, -88.0f, 0.99f, -1.01f, 0.34f, -0.35f};
    float hi[] = {-103.0f, 89.5f, -86.0f, 1.01f, -0.99f, 0.35f, -0.34f};
    run(12345u, 97u, 4000u * CH);                 /* 16 million of the 2^32 */
    run(0u, 1048583u, 4096u);                     /* across all the bits, sign included */
    for (int r = 0; r < 7; r++) {                 /* every float near the ends, ±87, ±1, ±ln 2/2 */
        uint32_t a, b;
        memcpy(&a, &lo[r], 4);
        memcpy(&b, &hi[r], 4);
        if (a > b) { uint32_t t = a; a = b; b = t; }
        run(a, 1u, (b - a + CH) / CH * CH);
    }
    printf("checked %llu, unlike %llu, wrong %llu, worst %.3g\n", seen, unlike, wrong, worst);
    return unlike != 0 || wrong != 0;
}
"""


def test_float_exp_in_c_everywhere(tmp_path):
    """Every float near −104 and 88.7228, around ±87, ±1 and ±ln 2/2 (where the rounding
    of x/ln 2 first turns), and a sample of all the others (every 97th bit pattern
    from one start, and across the sign and exponent): within 9e-8 of exp in double, ∞
    where exp overflows float, NaN for NaN, and the same bits vectorised and not,
    compiled as the networks' C is."""
    import subprocess
    from pathlib import Path

    from symnet.backend.c import build
    template = (Path(__file__).resolve().parent.parent / "templates" / "expf.c.j2").read_text()
    src = tmp_path / "expf_bits.c"
    src.write_text("#include <math.h>\n#include <string.h>\n" + template + _DRIVER)
    exe = tmp_path / "expf_bits"
    flags = [f for f in build.flags() if f not in ("-fPIC", "-DSN_USE_BLAS")]
    out = subprocess.run([*build.compiler(), *flags, str(src), "-o", str(exe), "-lm"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "unlike 0, wrong 0" in run.stdout, run.stdout
