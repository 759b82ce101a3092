"""The standalone C export (symnet.backend.c.export): it compiles strictly, for a desktop and
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
from unittest import mock

import numpy as np
import pytest

from symnet.backend.c import build
from symnet.backend.c.emit import cdef

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["xor", "moons", "regression", "digits", "rbf", "gated", "digits_conv",
            "two_heads", "sequence", "transformer"]
# (every example that defines network())
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


class _Models(dict):
    """One compiled model per example network and dtype, with trained-looking (random,
    seeded) parameters, compiled when a test first asks for it: under pytest-xdist each
    worker compiles only the models of the tests it runs (all twenty at once took 33 s
    of a worker's time before its first test)."""

    def __missing__(self, key):
        name, dtype = key
        # symnet's own kernels for every product (no BLAS above a measured size, which
        # the export, free of any library but libm, does not have)
        with mock.patch.dict(os.environ, {"SYMNET_BLAS": "0"}):
            model = self[key] = example_network(name).compile(dtype=dtype, seed=3)
        return model


@pytest.fixture(scope="module")
def models():
    return _Models()


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
        assert "#pragma omp parallel" not in src  # no threads unless threads=True
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
        const double hyper[6] = {0, 0, 0, 0, 0, 0};
        long long done = net_train(params, X, T, idx, ROWS, BATCH, lr_d, losses_d, NET_SGD,
                                   NULL, NULL, hyper, 0, NULL, NULL, NULL, work);
        fwrite(&done, sizeof done, 1, out);
        fwrite(params, sizeof params, 1, out);
        fclose(out);
        return 0;
    }
""")

STEPS, BATCH = 3, 37   # 37 rows: the matrix driver's edge tiles, and its tiled path


def _data(model, rng):
    rows = STEPS * BATCH
    X = rng.normal(size=(rows, *model.in_shape)).astype(model.dtype)
    classes = model.meta.get("classes")
    if model.network.loss_name == "softmax_cross_entropy" and classes:   # one per position
        T = np.eye(classes)[rng.integers(0, classes, (rows, model.n_out // classes))]
        T = T.reshape(rows, -1)
    elif model.network.loss_name == "softmax_cross_entropy":
        T = np.eye(model.n_out)[rng.integers(0, model.n_out, rows)]
    else:   # in [0, 1]: targets for bce and mse alike
        T = rng.random((rows, model.n_out))
    if len(model.out_shape) > 1:     # a tensor output (the transformer's (8, 10))
        T = T.reshape(rows, *model.out_shape)
    return X, T.astype(model.dtype)


def _targets(model, T):
    """T as the model takes it: one array, or a dict by output for several outputs
    (the C takes them side by side in one array)."""
    outs = model.meta.get("outputs") or []
    if len(outs) <= 1:
        return T
    parts, col = {}, 0
    for name, _, width in outs:
        parts[name] = T[:, col:col + width]
        col += width
    return parts


def _flat(out):
    """model.forward's result as the C's O: outputs side by side in each row."""
    outs = out if isinstance(out, list) else [out]
    return np.concatenate([o.reshape(o.shape[0], -1) for o in outs], axis=1).ravel()


def _run_harness(model, tmp_path, flags, X, T, lr, idx, threads=False):
    d = tmp_path
    model.export_c(d, name="net", threads=threads)
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
    dt, n, o = model.dtype, model.theta.size, BATCH * model.n_out
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
    theta0 = model.theta.copy()
    ref = {"params0": theta0.copy()}
    Xb, Tb = X[:BATCH], _targets(model, T[:BATCH])
    ref["O"] = _flat(model.forward(Xb))
    ref["loss"] = model.loss(Xb, Tb)
    ref["loss_g"], grads = model.loss_and_grad(Xb, Tb)
    ref["grads"] = np.concatenate([grads[p].ravel() for p in model.params])
    losses = []
    for s in range(STEPS):
        rows = slice(s * BATCH, (s + 1) * BATCH)
        losses.append(model.step(X[rows], _targets(model, T[rows]),
                                  lr=float(model.dtype.type(lr[s]))))
    ref["losses"] = np.array(losses)
    ref["params"] = model.theta.copy()
    model.theta[...] = theta0
    for s in range(STEPS):
        rows = idx[s * BATCH:(s + 1) * BATCH]
        model.step(X[rows], _targets(model, T[rows]), lr=float(model.dtype.type(lr[s])))
    ref["params_train"] = model.theta.copy()
    model.theta[...] = theta0
    return ref


def _native_flags():
    """symnet's own build flags, for an executable, with the `omp simd` reductions on
    as symnet's own file has them."""
    flags = [f for f in build.flags() if f != "-fPIC"]
    return flags + ["-DSN_SIMD"] * ("-fopenmp-simd" in flags)   # as the in-process file


def _run_forward(model, tmp_path, X):
    """The forward pass of ``model.export_c(training=False)`` compiled and run on X (the
    numbers written with 17 digits), and the C text."""
    model.export_c(tmp_path, name="net", training=False)
    real = "double" if model.dtype == np.float64 else "float"
    (tmp_path / "x.txt").write_text(" ".join(repr(float(v)) for v in X.ravel()))
    (tmp_path / "main.c").write_text(textwrap.dedent(f"""
        #include <stdio.h>
        #include <stdlib.h>
        #include "net.h"
        int main(void) {{
            const int B = {len(X)};
            {real} *X = malloc(sizeof({real}) * B * NET_N_INPUTS);
            {real} *O = malloc(sizeof({real}) * B * NET_N_OUTPUTS);
            {real} *work = malloc(sizeof({real}) * NET_WORK_SIZE(B));
            FILE *f = fopen("{tmp_path / 'x.txt'}", "r");
            for (int i = 0; i < B * NET_N_INPUTS; i++) {{
                double v;
                if (fscanf(f, "%lf", &v) != 1) return 1;
                X[i] = ({real})v;
            }}
            fclose(f);
            net_forward(net_trained_params, X, B, O, work);
            for (int i = 0; i < B * NET_N_OUTPUTS; i++) printf("%.17g\\n", (double)O[i]);
            return 0;
        }}"""))
    run([*cc(), *_native_flags(), "-I", str(tmp_path), str(tmp_path / "main.c"),
         str(tmp_path / "net.c"), "-o", str(tmp_path / "fwd"), "-lm"])
    out = run([str(tmp_path / "fwd")])
    got = np.array(out.stdout.split(), dtype=np.float64).reshape(len(X), -1)
    return got, (tmp_path / "net.c").read_text(), (tmp_path / "net.h").read_text()


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


@pytest.mark.parametrize("name", ["digits", "transformer"])
def test_threads_export_computes_what_the_model_computes(models, tmp_path, name):
    """threads=True renders the in-process matrix driver (tiles, OpenMP): the same bits
    (the transformer: its pass in chunks on OpenMP's threads)."""
    model = models[name, "float32"]
    rng = np.random.default_rng(9)
    X, T = _data(model, rng)
    lr = np.array([0.05, 0.02, 0.01])
    idx = rng.permutation(STEPS * BATCH).astype(np.int64)
    ref = _reference(model, X, T, lr, idx)
    got = _run_harness(model, tmp_path, _native_flags(), X, T, lr, idx, threads=True)
    for key in ("O", "grads", "params", "params_train"):
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["moons", "digits", "gated", "rbf"])
def test_exported_c_under_other_flags_stays_close(models, tmp_path, name, dtype):
    """Plain -std=c99 -O2 (no fused multiply-adds, no -march): not the bits of
    symnet's own build, but the same numbers to a few ulp of the output's scale
    (measured: at most 3.2) and to rounding in gradients and steps.  Elementwise
    ulp are not bounded: an output near 0 that is a sum of larger terms differs
    by the rounding of the terms (measured up to 1588 ulp for such outputs)."""
    model = models[name, dtype]
    rng = np.random.default_rng(8)
    X, T = _data(model, rng)
    lr = np.array([0.05, 0.02, 0.01])
    idx = rng.permutation(STEPS * BATCH).astype(np.int64)
    ref = _reference(model, X, T, lr, idx)
    got = _run_harness(model, tmp_path, ["-std=c99", "-O2"], X, T, lr, idx)
    scale = np.spacing(model.dtype.type(np.abs(ref["O"]).max()))
    assert np.abs(got["O"] - ref["O"]).max() <= 8 * scale
    eps = np.finfo(model.dtype).eps
    for key in ("grads", "params", "params_train"):
        err = np.abs(got[key] - ref[key]).max() / np.abs(ref[key]).max()
        assert err <= 64 * eps, f"{key}: relative difference {err:.2e}"
    assert abs(got["loss_g"][0] - ref["loss_g"]) <= 64 * eps * abs(ref["loss_g"])


def test_same_numbers_states_the_folded_batchnorm_exception():
    """docs/export.md promised the bits of model.forward; a folded BatchNorm
    (training=False) rounds differently (tests/test_batchnorm.py bounds it)."""
    page = (ROOT / "docs" / "export.md").read_text()
    para = " ".join(page.split("**Same numbers.**")[1].split("\n\n")[0].split())
    assert "`training=False` folds a BatchNorm" in para
    assert "at most 11.25 ulp of the largest output" in para and "the test allows 16" in para


# ------------------------------------------------------------ the contract

def _prototypes(text):
    """The declarations of a header, comments and blank runs removed."""
    import re
    code = re.sub(r"/\*.*?\*/", "", cdef(text), flags=re.S)
    return " ".join(code.split())


def test_header_is_the_cdef_symnet_uses(models, tmp_path):
    """One template: the exported header declares exactly the functions symnet
    binds in process (with its own prefix), plus the trained values."""
    model = models["gated", "float32"]
    model.export_c(tmp_path, name="net")
    header = (tmp_path / "net.h").read_text()
    prefix = model.meta["prefix"]
    inproc = _prototypes(model.c_source.split("typedef float real;")[0])
    exported = _prototypes(header).replace("net_", prefix)
    trained = f"extern const float {prefix}trained_params[NET_N_PARAMS];"
    assert trained in exported and "trained_params" not in inproc
    # the in-process build alone has the tuning hooks (BLAS, threads, the planner's
    # choices; symnet.backend.c.tuning)
    start = inproc.index(f"void {prefix}tune(")
    tune = inproc[start:inproc.index(");", start) + 2]
    start = inproc.index(f"void {prefix}plan(")
    planned = inproc[start:inproc.index(");", start) + 2]
    rechoose = f"void {prefix}rechoose(void);"    # (runtime.check_blas)
    assert rechoose in inproc
    assert "tune(" not in exported and "plan(" not in exported \
        and "rechoose(" not in exported
    inproc = " ".join(inproc.replace(tune, "").replace(planned, "")
                      .replace(rechoose, "").split())
    assert " ".join(exported.replace(trained, "").split()) == inproc
    for fn in ("forward", "loss", "loss_grad", "step", "update", "train"):
        assert f" {prefix}{fn}(" in " " + inproc


def test_header_states_sizes_layout_and_memory(models, tmp_path):
    model = models["digits", "float64"]
    model.export_c(tmp_path, name="digits")
    h = (tmp_path / "digits.h").read_text()
    meta = model.meta
    assert f"#define DIGITS_N_INPUTS {model.n_in} " in h
    assert f"#define DIGITS_N_OUTPUTS {model.n_out}\n" in h
    assert f"#define DIGITS_N_PARAMS {model.theta.size} " in h
    assert "#define DIGITS_REAL double" in h
    assert f"((batch) * {meta['work_per_row']} + {model.theta.size})" in h
    assert "extern const double digits_trained_params[DIGITS_N_PARAMS];" in h
    assert "double digits_step(double *params, const double *X, const double *T, int batch, " \
           "double lr,\n    double *work);" in h
    for p in meta["params"]:
        shape = ", ".join(map(str, p["shape"])) + ("," if len(p["shape"]) == 1 else "")
        assert f" {p['name']:<12} offset {p['offset']:9d}  shape ({shape})" in h
    assert "e.g. B = 32:" in h and "bytes" in h


def test_header_states_where_frozen_parameters_lie(tmp_path):
    """The header said the flat array was in the order of model.params; the frozen
    parameters (trainable=False, BatchNorm's statistics and mode, Dropout's state) lie
    after the trainable ones, so their offsets do not follow that order."""
    import re

    import symnet as sn
    net = sn.Network(sn.Input(3), sn.Dense(4, "tanh", trainable=False),
                     sn.BatchNorm1d(name="N"), sn.Dropout(0.2, name="D"), sn.Dense(2),
                     loss="mse")
    model = net.compile(dtype="float64", seed=0)
    model.export_c(tmp_path, name="net", training=False, params_file="net.params")
    h = (tmp_path / "net.h").read_text()
    assert "in the order of model.params, each row-major" not in h
    assert "(model.theta), each row-major at its offset: the trainable\n * ones first, " \
           "then any frozen ones (trainable=False, BatchNorm's running statistics\n * and " \
           "mode, Dropout's state).  By name, in the order of model.params:" in h
    listed = [(n, int(o)) for n, o in re.findall(r"\*   (\w+)\s+offset\s+(\d+)", h)]
    assert [n for n, _ in listed] == list(model.params)
    raw = np.fromfile(tmp_path / "net.params", dtype="<f8")
    for name, offset in listed:       # each value where the header says it is
        value = model.params[name]
        np.testing.assert_array_equal(raw[offset:offset + value.size], value.ravel(), name)
    frozen = {"W1", "b1", "mean2", "var2", "mode2", "rng3"}
    assert max(o for n, o in listed if n not in frozen) < min(o for n, o in listed
                                                              if n in frozen)


def test_inference_only_export_needs_forward_work_only(models, tmp_path):
    model = models["moons", "float32"]
    model.export_c(tmp_path, name="net", training=False)
    h = (tmp_path / "net.h").read_text()
    assert "net_step" not in h and "net_loss" not in h
    # H of 16 + 16 units, z and O of the output; z_H1 and z_H2 share their place (each dies
    # once tanh(z) is stored: symnet.plan.share), 66 numbers before
    assert "NET_WORK_SIZE(batch) ((batch) * 50)" in h
    # exactly that much work, under AddressSanitizer: the same outputs, nothing outside
    (tmp_path / "main.c").write_text(textwrap.dedent("""
        #include <stdio.h>
        #include <stdlib.h>
        #include "net.h"
        int main(void) {
            float X[5 * NET_N_INPUTS], O[5 * NET_N_OUTPUTS];
            float *work = malloc(sizeof(float) * NET_WORK_SIZE(5));
            for (int i = 0; i < 5 * NET_N_INPUTS; i++) X[i] = (float)i / 7 - 1;
            net_forward(net_trained_params, X, 5, O, work);
            for (int i = 0; i < 5 * NET_N_OUTPUTS; i++) printf("%.9g\\n", O[i]);
            free(work);
            return 0;
        }"""))
    run([*cc(), "-std=c99", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-I", str(tmp_path), str(tmp_path / "main.c"), str(tmp_path / "net.c"), "-o",
         str(tmp_path / "fwd"), "-lm"])
    out = run([str(tmp_path / "fwd")], env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    X = (np.arange(10, dtype=np.float32) / 7 - 1).reshape(5, 2)
    got = np.array(out.stdout.split(), dtype=np.float32)
    np.testing.assert_allclose(got, model.forward(X).ravel(), rtol=1e-6, atol=1e-7)


def test_cli_export_and_params_file(models, tmp_path):
    model = models["xor", "float64"]
    model.save(tmp_path / "m.npz")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run([sys.executable, "-m", "symnet", "export", str(tmp_path / "m.npz"), "--name", "xor",
         "--out", str(tmp_path / "out"), "--params-file"], env=env)
    h = (tmp_path / "out" / "xor.h").read_text()
    c = (tmp_path / "out" / "xor.c").read_text()
    assert "trained_params" not in h + c and "xor.params" in h
    raw = np.fromfile(tmp_path / "out" / "xor.params", dtype="<f8")
    np.testing.assert_array_equal(raw, model.theta)
    run([*cc(), *STRICT, "-c", str(tmp_path / "out" / "xor.c"), "-o", str(tmp_path / "x.o")])
    run([sys.executable, "-m", "symnet", "export", str(tmp_path / "m.npz"),
         "--out", str(tmp_path / "o2")], env=env)
    assert "net_trained_params" in (tmp_path / "o2" / "net.c").read_text()


@pytest.mark.parametrize("bad, why", [
    ("xor.c", r"params_file 'xor.c' is the export's own xor.c \(name='xor' writes"),
    ("./xor.h", r"params_file './xor.h' is the export's own xor.h"),
    ("ABS", r"is an absolute path; it is relative to the export folder"),
    ("../xor.params", r"params_file '../xor.params' does not name a file inside the export "
                      r"folder"),
    (".", r"params_file '.' does not name a file inside"),
    (3, r"params_file must be a file name or path relative to the export folder, e.g. "
        r"'xor.params', got 3")])
def test_params_file_that_clashes_or_leaves_the_folder_is_refused(models, tmp_path, bad, why):
    """Before, params_file="xor.c" was overwritten by the C source, and an absolute path
    was written outside the folder although params_file is relative to it."""
    if bad == "ABS":
        bad = str(tmp_path / "abs.params")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=why):
        models["xor", "float32"].export_c(out, name="xor", params_file=bad)
    assert not out.exists() and not (tmp_path / "abs.params").exists() \
        and not (tmp_path / "xor.params").exists()


def test_params_file_may_lie_in_a_subfolder(models, tmp_path):
    model = models["xor", "float32"]
    paths = model.export_c(tmp_path, name="xor", params_file="data/xor.params")
    assert paths[-1] == str(tmp_path / "data" / "xor.params")
    np.testing.assert_array_equal(np.fromfile(paths[-1], dtype="<f4"), model.theta)


@pytest.mark.parametrize("bad", ["", "9net", "net-1", "int", "sn", "sn_x", "nét", None])
def test_bad_export_name_is_refused(models, tmp_path, bad):
    with pytest.raises(ValueError, match="export name"):
        models["xor", "float32"].export_c(tmp_path, name=bad)
    assert not list(tmp_path.iterdir())


def test_non_finite_parameters_are_refused(tmp_path):
    model = example_network("xor").compile(dtype="float32", seed=0)
    model.params["b2"] = np.array([0, 0, np.nan, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="parameter b2 holds NaN or inf"):
        model.export_c(tmp_path)
    assert not (tmp_path / "net.c").exists()


def test_training_export_of_batchnorm_or_dropout_is_refused(tmp_path):
    """model.step moves BatchNorm's running statistics and Dropout's masks on in Python
    after each step, which the C does not: a training export of such a network is
    refused naming the layers (before, its net_step trained on the running statistics
    without dropout); the forward-only export says in its header that it is in
    evaluation mode, and the command line points to --inference-only."""
    import symnet as sn
    net = sn.Network(sn.Input(5), sn.Dense(8, "tanh"), sn.BatchNorm1d(name="N"),
                     sn.Dropout(0.3, name="D"), sn.Dense(2), loss="mse")
    model = net.compile(dtype="float64", seed=0)
    with pytest.raises(ValueError, match=r"layers 'N' \(BatchNorm1d\), 'D' \(Dropout\) "
                                         r"have a training mode .* training=False"):
        model.export_c(tmp_path / "t", name="net")
    assert not (tmp_path / "t").exists()
    model.export_c(tmp_path / "f", name="net", training=False)
    h = (tmp_path / "f" / "net.h").read_text()
    assert "Forward only, in evaluation mode as model.forward computes it, for\n" \
           " *   'N' (BatchNorm1d), 'D' (Dropout):" in h and "net_step" not in h
    model.save(tmp_path / "m.npz")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "symnet", "export", str(tmp_path / "m.npz"),
                          "--out", str(tmp_path / "cli")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode != 0 and "--inference-only" in res.stderr
    run([sys.executable, "-m", "symnet", "export", str(tmp_path / "m.npz"), "--out",
         str(tmp_path / "cli"), "--inference-only"], env=env)
    assert "net_forward(" in (tmp_path / "cli" / "net.h").read_text()


def test_flags_must_be_booleans(models, tmp_path):
    with pytest.raises(ValueError, match="training must be True or False"):
        models["xor", "float32"].export_c(tmp_path, training="no")


# ------------------------------------------------- the C training example

def test_readme_example_trains_in_c(tmp_path):
    """examples/export: prepare, export with the CLI, the cc command of docs/export.md,
    then training in C alone reaches a good test accuracy."""
    spec = importlib.util.spec_from_file_location(
        "prepare", ROOT / "examples" / "export" / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    prepare.main(out=tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run([sys.executable, "-m", "symnet", "export", str(tmp_path / "model.npz"), "--name", "net",
         "--out", str(tmp_path)], env=env)
    page = (ROOT / "docs" / "export.md").read_text()
    cmd = ("cc -std=c99 -O2 -o examples/export/train examples/export/main.c "
           "examples/export/net.c -lm")      # the binary lands beside the git-ignored files
    assert cmd in page
    shutil.copy(ROOT / "examples" / "export" / "main.c", tmp_path / "main.c")
    run([*cc(), "-std=c99", "-O2", *STRICT[1:], "-o", str(tmp_path / "train"),
         str(tmp_path / "main.c"), str(tmp_path / "net.c"), "-lm"])
    out = run([str(tmp_path / "train"), str(tmp_path / "digits.csv"), "20"]).stdout
    last = [ln for ln in out.splitlines() if ln.startswith("epoch")][-1]
    first = [ln for ln in out.splitlines() if ln.startswith("epoch")][0]
    acc = float(last.split("test accuracy")[1].strip().rstrip("%"))
    assert acc >= 93.0, out
    loss = lambda ln: float(ln.split("loss")[1].split()[0])  # noqa: E731
    assert loss(last) < loss(first) / 5, out
