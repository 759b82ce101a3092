"""The standalone C export (symnet.export): it compiles strictly, for a desktop and
for a Cortex-M4, and a C program built from it computes what the model computes:
the same outputs, loss, gradients, and parameters after N steps (bit for bit
under the compiler flags symnet itself uses, close under others).

The cross compiler (arm-none-eabi-gcc, Debian's gcc-arm-none-eabi; .ci/run installs
it) is required: without it the cross test fails, unless SYMNET_SKIP_CROSS=1."""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symnet as sn
from symnet import build
from symnet.emit import cdef

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["xor", "moons", "regression", "digits", "rbf", "gated"]   # every network() example
STRICT = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror"]
M4 = ["-mcpu=cortex-m4", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]


def example_network(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}",
                                                  ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.network()


def cc():
    return build.compiler()


def run(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))}\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def models():
    """One compiled model per example network and dtype, with trained-looking
    (random, seeded) parameters."""
    out = {}
    for name in EXAMPLES:
        for dtype in ("float32", "float64"):
            out[name, dtype] = example_network(name).compile(dtype=dtype, seed=3)
    return out


# ---------------------------------------------------------------- compiling

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", EXAMPLES)
def test_export_compiles_strict_c99(models, tmp_path, name, dtype):
    model = models[name, dtype]
    for training in (True, False):
        d = tmp_path / f"t{int(training)}"
        model.export_c(d, name="net", training=training)
        run([*cc(), *STRICT, "-O2", "-c", str(d / "net.c"), "-o", str(d / "net.o")])
        src = (d / "net.c").read_text() + (d / "net.h").read_text()
        assert "#include <Python.h>" not in src and "malloc" not in src
        assert "omp" not in src          # no OpenMP unless threads=True
        assert ("net_step" in src) == training


def test_threads_export_compiles_with_openmp(models, tmp_path):
    models["digits", "float32"].export_c(tmp_path, name="net", threads=True)
    assert "#pragma omp" in (tmp_path / "net.c").read_text()
    run([*cc(), *STRICT, "-fopenmp", "-O2", "-c", str(tmp_path / "net.c"),
         "-o", str(tmp_path / "net.o")])


@pytest.mark.parametrize("name", EXAMPLES)
def test_export_cross_compiles_for_cortex_m4(models, tmp_path, name):
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        if os.environ.get("SYMNET_SKIP_CROSS") == "1":
            pytest.skip("SYMNET_SKIP_CROSS=1 and no arm-none-eabi-gcc")
        pytest.fail("arm-none-eabi-gcc not found: install gcc-arm-none-eabi "
                    "(apt-get install gcc-arm-none-eabi), or set SYMNET_SKIP_CROSS=1")
    for dtype in ("float32", "float64"):
        d = tmp_path / dtype
        models[name, dtype].export_c(d, name="net")
        run([gcc, *M4, *STRICT, "-O2", "-c", str(d / "net.c"), "-o", str(d / "net.o")])
        assert (d / "net.o").stat().st_size > 0


# ---------------------------------------------------------- same numbers

HARNESS = textwrap.dedent("""
    /* Runs an exported network on data from files and writes what it computed. */
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include "net.h"
    typedef NET_REAL real;
    #define ROWS (STEPS * BATCH)
    static real params[NET_N_PARAMS], grads[NET_N_PARAMS];
    static real X[ROWS * NET_N_INPUTS], T[ROWS * NET_N_OUTPUTS], O[BATCH * NET_N_OUTPUTS];
    static real lr[STEPS], losses[STEPS], work[NET_TRAIN_WORK_SIZE(BATCH)];
    static double lr_d[STEPS], losses_d[STEPS];
    static long long idx[ROWS];
    static void get(const char *path, void *p, size_t size) {
        FILE *f = fopen(path, "rb");
        if (!f || fread(p, 1, size, f) != size) { fprintf(stderr, "%s\\n", path); exit(1); }
        fclose(f);
    }
    int main(void) {
        get("X.bin", X, sizeof X);
        get("T.bin", T, sizeof T);
        get("lr.bin", lr_d, sizeof lr_d);
        get("idx.bin", idx, sizeof idx);
        for (int s = 0; s < STEPS; s++) lr[s] = (real)lr_d[s];
        FILE *out = fopen("out.bin", "wb");
        memcpy(params, net_trained_params, sizeof params);
        fwrite(params, sizeof params, 1, out);
        net_forward(params, X, BATCH, O, work);
        fwrite(O, sizeof O, 1, out);
        real loss = net_loss(params, X, T, BATCH, work);
        fwrite(&loss, sizeof loss, 1, out);
        loss = net_loss_grad(params, X, T, BATCH, grads, work);
        fwrite(&loss, sizeof loss, 1, out);
        fwrite(grads, sizeof grads, 1, out);
        for (int s = 0; s < STEPS; s++)
            losses[s] = net_step(params, X + s * BATCH * NET_N_INPUTS,
                                 T + s * BATCH * NET_N_OUTPUTS, BATCH, lr[s], work);
        fwrite(losses, sizeof losses, 1, out);
        fwrite(params, sizeof params, 1, out);
        /* the epoch driver from the exported values: batches gathered through idx */
        memcpy(params, net_trained_params, sizeof params);
        const double hyper[4] = {0, 0, 0, 0};
        long long done = net_train(params, X, T, idx, ROWS, BATCH, lr_d, losses_d, NET_SGD,
                                   NULL, NULL, hyper, 0, NULL, NULL, work);
        fwrite(&done, sizeof done, 1, out);
        fwrite(params, sizeof params, 1, out);
        fclose(out);
        return 0;
    }
""")

STEPS, BATCH = 3, 37   # 37 rows: the matrix driver's edge tiles, and its tiled path


def _data(model, rng):
    rows = STEPS * BATCH
    X = rng.normal(size=(rows, model.n_in)).astype(model.dtype)
    if model.network.loss_name == "softmax_cross_entropy":
        T = np.eye(model.n_out)[rng.integers(0, model.n_out, rows)]
    elif model.network.loss_name == "bce":
        T = (rng.random((rows, model.n_out)) > 0.5) * 1.0
    else:
        T = rng.normal(size=(rows, model.n_out))
    return X, T.astype(model.dtype)


def _run_harness(model, tmp_path, flags, X, T, lr, idx):
    d = tmp_path
    model.export_c(d, name="net")
    (d / "harness.c").write_text(HARNESS)
    exe = d / "harness"
    run([*cc(), *flags, f"-DSTEPS={STEPS}", f"-DBATCH={BATCH}", "-I", str(d),
         str(d / "harness.c"), str(d / "net.c"), "-o", str(exe), "-lm"])
    X.tofile(d / "X.bin")
    T.tofile(d / "T.bin")
    lr.tofile(d / "lr.bin")
    idx.tofile(d / "idx.bin")
    run([str(exe)], cwd=d)
    raw = (d / "out.bin").read_bytes()
    dt, n, o = model.dtype, model._theta.size, BATCH * model.n_out
    parts = {}
    pos = 0
    for key, count, kind in (("params0", n, dt), ("O", o, dt), ("loss", 1, dt),
                             ("loss_g", 1, dt), ("grads", n, dt), ("losses", STEPS, dt),
                             ("params", n, dt), ("done", 1, np.int64),
                             ("params_train", n, dt)):
        size = count * np.dtype(kind).itemsize
        parts[key] = np.frombuffer(raw[pos:pos + size], kind)
        pos += size
    assert pos == len(raw)
    return parts


def _reference(model, X, T, lr, idx):
    """What the model computes in process, from the same starting parameters."""
    theta0 = model._theta.copy()
    ref = {"params0": theta0.copy()}
    Xb, Tb = X[:BATCH], T[:BATCH]
    ref["O"] = model.forward(Xb).ravel()
    ref["loss"] = model.loss(Xb, Tb)
    ref["loss_g"], grads = model.loss_and_grad(Xb, Tb)
    ref["grads"] = np.concatenate([grads[p].ravel() for p in model.params])
    losses = []
    for s in range(STEPS):
        rows = slice(s * BATCH, (s + 1) * BATCH)
        losses.append(model.step(X[rows], T[rows], lr=float(model.dtype.type(lr[s]))))
    ref["losses"] = np.array(losses)
    ref["params"] = model._theta.copy()
    model._theta[...] = theta0
    for s in range(STEPS):
        rows = idx[s * BATCH:(s + 1) * BATCH]
        model.step(X[rows], T[rows], lr=float(model.dtype.type(lr[s])))
    ref["params_train"] = model._theta.copy()
    model._theta[...] = theta0
    return ref


def _native_flags():
    """symnet's own build flags, for an executable (no -fPIC, no -fopenmp needed)."""
    return [f for f in build.flags() if f not in ("-fPIC",)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", EXAMPLES)
def test_exported_c_computes_what_the_model_computes(models, tmp_path, name, dtype):
    model = models[name, dtype]
    rng = np.random.default_rng(7)
    X, T = _data(model, rng)
    lr = np.array([0.05, 0.02, 0.01])
    idx = rng.permutation(STEPS * BATCH).astype(np.int64)
    ref = _reference(model, X, T, lr, idx)
    got = _run_harness(model, tmp_path, _native_flags(), X, T, lr, idx)
    # the initializer holds exactly the model's values
    np.testing.assert_array_equal(got["params0"], ref["params0"])
    # same flags as symnet's own build: the same bits
    np.testing.assert_array_equal(got["O"], ref["O"])
    assert got["loss"][0] == model.dtype.type(ref["loss"])
    assert got["loss_g"][0] == model.dtype.type(ref["loss_g"])
    np.testing.assert_array_equal(got["grads"], ref["grads"])
    np.testing.assert_array_equal(got["losses"], ref["losses"].astype(model.dtype))
    np.testing.assert_array_equal(got["params"], ref["params"])
    assert got["done"][0] == STEPS
    np.testing.assert_array_equal(got["params_train"], ref["params_train"])
    assert not np.array_equal(ref["params"], ref["params0"])   # the steps did move θ


@pytest.mark.parametrize("name", ["digits", "gated", "rbf"])
def test_exported_c_under_other_flags_stays_close(models, tmp_path, name):
    """Plain -std=c99 -O2 (no FMA contraction, no -march): not the same bits as
    symnet's -O3 -march=native build, but the same numbers to a few ulp in the
    forward pass and to rounding in the gradients."""
    model = models[name, "float64"]
    rng = np.random.default_rng(8)
    X, T = _data(model, rng)
    lr = np.array([0.05, 0.02, 0.01])
    idx = rng.permutation(STEPS * BATCH).astype(np.int64)
    ref = _reference(model, X, T, lr, idx)
    got = _run_harness(model, tmp_path, ["-std=c99", "-O2"], X, T, lr, idx)
    ulp = np.abs(got["O"] - ref["O"]) / np.spacing(np.abs(ref["O"]))
    assert ulp.max() <= ULP_FORWARD, f"forward differs by {ulp.max():.1f} ulp"
    np.testing.assert_allclose(got["grads"], ref["grads"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["params"], ref["params"], rtol=1e-9, atol=1e-12)


ULP_FORWARD = 2 ** 12
