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


# The form of sn_expf before it chose the ends' constants last (git 8845252): x clamped to
# [−104, 88.7228] first.  The template's must give each float the same bits.
_FORMER = r"""
static float sn_expf_former(float x)
{
    const float c = x > -104.0f ? (x < 88.7228394f ? x : 88.7228394f) : -104.0f;
    const float n = floorf(c * 1.44269504088896341f + 0.5f);
    const float r = (c - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const int k = (int)n, k1 = k / 2;
    const int e1 = (k1 + 127) << 23, e2 = (k - k1 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &e1, sizeof s1);
    memcpy(&s2, &e2, sizeof s2);
    return x != x ? x : x > 88.7228394f ? (float)INFINITY : p * s1 * s2;
}
"""

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
    for (int i = 0; i < CH; i++) ya[i] = sn_expf(xs[i]);
}
__attribute__((noinline, optimize("no-tree-vectorize"))) static void former(void)
{
    for (int i = 0; i < CH; i++) yb[i] = sn_expf_former(xs[i]);
}
static unsigned long long bad, seen;
static void compare(void)
{
    for (int i = 0; i < CH; i++) {
        uint32_t a, b;
        memcpy(&a, &ya[i], 4);
        memcpy(&b, &yb[i], 4);
        if (a != b && bad++ < 5)
            printf("x=%a now %a former %a\n", xs[i], ya[i], yb[i]);
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
        former();
        now_vec();
        compare();
        now_scalar();
        compare();
    }
}
int main(void)
{
    float lo[] = {-105.0f, 88.0f, -88.0f, 0.99f, -1.01f};
    float hi[] = {-103.0f, 89.5f, -86.0f, 1.01f, -0.99f};
    run(12345u, 97u, 4000u * CH);                 /* 16 million of the 2^32 */
    run(0u, 1048583u, 4096u);                     /* across all the bits, sign included */
    for (int r = 0; r < 5; r++) {                 /* every float near the ends, ±87, ±1 */
        uint32_t a, b;
        memcpy(&a, &lo[r], 4);
        memcpy(&b, &hi[r], 4);
        if (a > b) { uint32_t t = a; a = b; b = t; }
        run(a, 1u, (b - a + CH) / CH * CH);
    }
    printf("compared %llu, differ %llu\n", seen, bad);
    return bad != 0;
}
"""


def test_float_exp_has_the_former_forms_bits(tmp_path):
    """Every float near −104 and 88.7228, around ±87 and ±1, and a sample of all the
    others (every 97th bit pattern from one start, and across the sign and exponent):
    the template's sn_expf gives the same bits as its former form, vectorised and not,
    compiled as the networks' C is."""
    import subprocess
    from pathlib import Path

    from symnet.backend.c import build
    template = (Path(__file__).resolve().parent.parent / "templates" / "expf.c.j2").read_text()
    src = tmp_path / "expf_bits.c"
    src.write_text("#include <math.h>\n#include <string.h>\n" + template + _FORMER + _DRIVER)
    exe = tmp_path / "expf_bits"
    flags = [f for f in build.flags() if f not in ("-fPIC", "-DSN_USE_BLAS")]
    out = subprocess.run([*build.compiler(), *flags, str(src), "-o", str(exe), "-lm"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "differ 0" in run.stdout, run.stdout
