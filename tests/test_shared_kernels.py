"""The matrix driver every in-process network links (templates/kernels.c.j2): compiled
once per machine, compiler, flags, number type and register tile into the compile
cache, shared by the networks, safe when processes build it at once, rebuilt when
damaged; exported C still carries its own copy."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symnet as sn
from symnet.backend.c import build
from symnet.backend.c.emit import kernels_source

ROOT = Path(__file__).resolve().parent.parent


def _logging_cc(tmp_path) -> Path:
    """A compiler command that logs every call, then runs gcc."""
    log = tmp_path / "cc.log"
    cc = tmp_path / "cc"
    cc.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec gcc "$@"\n')
    cc.chmod(0o755)
    return cc


def _kernel_compiles(log: Path) -> int:
    """Calls that compiled the shared driver (its C file given with -c)."""
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines()
               if " -c " in line and "kernels-" in line and line.endswith(".o"))


def _mlp(width: int):
    return sn.Network(sn.Input(40), sn.Dense(width, "relu"), sn.Dense(3), loss="mse")


def _numpy_forward(model, X):
    """The MLP's output by numpy from the model's parameters."""
    p = model.params
    H = np.maximum(X @ p["W1"].T + p["b1"], 0)
    return H @ p["W2"].T + p["b2"]


def test_networks_share_one_compiled_driver(tmp_path, monkeypatch):
    """Two networks of one dtype: the driver is compiled with the first and only linked
    into the second; both compute what numpy computes (products large enough to take
    the driver: 32·200·40 multiply-adds ≥ SN_SMALL)."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(_logging_cc(tmp_path)))
    X = np.random.default_rng(0).normal(size=(32, 40))
    a = _mlp(200).compile(dtype="float64", seed=1)
    assert _kernel_compiles(tmp_path / "cc.log") == 1
    b = _mlp(210).compile(dtype="float64", seed=2)
    assert _kernel_compiles(tmp_path / "cc.log") == 1, "the second network compiled it again"
    assert a.runtime.meta["kernels"] == b.runtime.meta["kernels"]
    for m in (a, b):
        np.testing.assert_allclose(m.forward(X), _numpy_forward(m, X), rtol=1e-12, atol=1e-12)
    # the network's own C calls the driver and does not define it
    assert "symnet_gemm_double(&sn_tuned," in a.c_source
    assert "sn_tile(" not in a.c_source
    # another number type: a driver of its own
    c = _mlp(200).compile(dtype="float32", seed=1)
    assert _kernel_compiles(tmp_path / "cc.log") == 2
    assert c.runtime.meta["kernels"] != a.runtime.meta["kernels"]
    np.testing.assert_allclose(c.forward(X.astype(np.float32)),
                               _numpy_forward(c, X.astype(np.float32)), rtol=1e-4, atol=1e-4)


def test_damaged_driver_is_compiled_again(tmp_path, monkeypatch):
    """A truncated object fails its checksum: the next network compiles it anew (and
    never links the damaged one)."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(_logging_cc(tmp_path)))
    _mlp(200).compile(dtype="float64")
    (obj,) = (tmp_path / "cache").glob("kernels-*.o")
    obj.write_bytes(obj.read_bytes()[:100])
    X = np.random.default_rng(0).normal(size=(32, 40))
    m = _mlp(220).compile(dtype="float64", seed=4)
    assert _kernel_compiles(tmp_path / "cc.log") == 2
    np.testing.assert_allclose(m.forward(X), _numpy_forward(m, X), rtol=1e-12, atol=1e-12)
    assert build._kernels_ok(tmp_path / "cache", obj.stem)


def _wrapper_compiles(log: Path) -> int:
    """Calls that compiled a shared cffi wrapper (its C file given with -c)."""
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines()
               if " -c " in line and "wrapper-" in line and line.endswith(".o"))


@pytest.mark.skipif(not build._ALIASES, reason="the linker aliases names on Linux only")
def test_networks_with_the_same_functions_share_one_wrapper(tmp_path, monkeypatch):
    """cffi's wrapper is compiled with the first network that declares a set of
    functions and linked into the next ones (their names aliased to each module's own):
    each model computes what numpy computes from its own parameters, also in one process
    with the others loaded; a network declaring other functions (class labels) gets a
    wrapper of its own; a damaged wrapper object is compiled again."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(_logging_cc(tmp_path)))
    log = tmp_path / "cc.log"
    X = np.random.default_rng(0).normal(size=(32, 40))
    flags = sys.getdlopenflags()
    try:        # loaded into the global scope too, where a shared name could bind elsewhere
        sys.setdlopenflags(os.RTLD_NOW | os.RTLD_GLOBAL)
        models = [_mlp(w).compile(dtype="float64", seed=s)
                  for w, s in ((200, 1), (17, 2), (9, 3))]
    finally:
        sys.setdlopenflags(flags)
    assert _wrapper_compiles(log) == 1, "the next networks compiled the wrapper again"
    assert len({m.runtime.meta["prefix"] for m in models}) == 3
    for m in models:
        assert m.runtime.meta["lib_prefix"] == "symnet_net_"
        np.testing.assert_allclose(m.forward(X), _numpy_forward(m, X), rtol=1e-12, atol=1e-12)
        m.step(X, np.zeros((32, 3)), 0.1)       # the step of its own network, not another's
        np.testing.assert_allclose(m.forward(X), _numpy_forward(m, X), rtol=1e-12, atol=1e-12)
    # softmax cross-entropy declares the class-label functions too: the same wrapper
    # (it declares every function a network may define), its own functions linked in
    net = sn.Network(sn.Input(40), sn.Dense(9, "relu"), sn.Dense(3), loss="softmax_cross_entropy")
    c = net.compile(dtype="float64", seed=4)
    assert _wrapper_compiles(log) == 1
    labels = np.array([[0.0], [2.0]] * 16)
    rows = np.eye(3)[labels[:, 0].astype(int)]
    assert c.loss(X, labels) == pytest.approx(c.loss(X, rows), rel=1e-12)
    assert c.runtime.meta["wrapper"] == models[0].runtime.meta["wrapper"]
    # another number type: a wrapper of its own
    e = _mlp(13).compile(dtype="float32", seed=6)
    assert _wrapper_compiles(log) == 2
    np.testing.assert_allclose(e.forward(X.astype(np.float32)),
                               _numpy_forward(e, X.astype(np.float32)), rtol=1e-4, atol=1e-4)
    # a truncated wrapper object fails its checksum: compiled anew, never linked
    for obj in (tmp_path / "cache").glob("wrapper-*.o"):
        obj.write_bytes(obj.read_bytes()[:100])
    d = _mlp(11).compile(dtype="float64", seed=5)
    assert _wrapper_compiles(log) == 3
    np.testing.assert_allclose(d.forward(X), _numpy_forward(d, X), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not build._ALIASES, reason="the linker aliases names on Linux only")
def test_a_function_the_network_does_not_define_is_a_stand_in(tmp_path, monkeypatch):
    """The shared wrapper declares the class-label passes also for a network whose loss
    takes no labels: there they are stand-ins that return 0 and touch nothing (symnet
    never calls them: the model has no label passes)."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    m = _mlp(5).compile(dtype="float64", seed=1)
    assert m.runtime.kernels.labels is None
    mod = build._loaded[m.runtime.meta["module"]]
    null = mod.ffi.NULL
    assert mod.lib.symnet_net_loss_labels(null, null, null, 4, null) == 0.0
    assert mod.lib.symnet_net_train_labels(null, null, null, null, 0, 1, null, null, 0, null,
                                           null, null, 0, null, null, null, null) == 0
    # its own functions are the network's
    X = np.random.default_rng(1).normal(size=(3, 40))
    np.testing.assert_allclose(m.forward(X), _numpy_forward(m, X), rtol=1e-12, atol=1e-12)


def test_every_network_declares_what_the_shared_wrapper_declares():
    """The declarations every in-process network may have (emit.universal_cdef) hold
    those of networks of every kind: a regression, a classifier (class labels), a
    convolution, a recurrence, attention; in float32 and float64."""
    from symnet.backend.c.emit import cdef, universal_cdef
    from symnet.backend.c.runtime import render
    from symnet.plan.lower import plan
    nets = [
        _mlp(4),
        sn.Network(sn.Input(6), sn.Dense(3), loss="softmax_cross_entropy"),
        sn.Network(sn.Input((1, 6, 6)), sn.Conv2d(2, 3), sn.Flatten(),
                   sn.Dense(2, "sigmoid"), loss="bce"),
        sn.Network(sn.Input((3, 2)), sn.GRU(3), sn.Dense(1), loss="mse"),
        sn.Network(sn.Input((4, 4)), sn.MultiHeadAttention(2), sn.Flatten(), sn.Dense(2),
                   loss="softmax_cross_entropy"),
    ]
    for net in nets:
        for dtype in ("float32", "float64"):
            header = render(plan(net.graph()), dtype, hooks=True)[1]
            shared = build.shared_declarations(build.canonical_cdef(cdef(header)),
                                               universal_cdef(dtype))
            assert shared is not None, (net.describe(), dtype)
            decls, source, renames = shared
            assert ("float" if dtype == "float32" else "double") + " symnet_net_loss(" in decls
            assert all(v.startswith(("symnet_", "sn_absent_")) for v in renames.values())
            other = "float64" if dtype == "float32" else "float32"
            assert build.shared_declarations(build.canonical_cdef(cdef(header)),
                                             universal_cdef(other)) is None


def test_declarations_with_the_prefix_written_once():
    """The shared wrapper's declarations: the network's prefix replaced, comments gone;
    declarations with no prefix (jets) as they are; two prefixes are not merged."""
    canon, renames = build.canonical_cdef(
        "/* the network\n * net */\nvoid symnet_0a1b2c3d4e_forward(const float *x);\n"
        "float symnet_0a1b2c3d4e_loss(int batch);\n")
    assert canon == "void symnet_net_forward(const float *x);\nfloat symnet_net_loss(int batch);\n"
    assert renames == {"symnet_net_forward": "symnet_0a1b2c3d4e_forward",
                       "symnet_net_loss": "symnet_0a1b2c3d4e_loss"}
    assert build.canonical_cdef("void sn_jet_grad(int n);\n") == ("void sn_jet_grad(int n);\n", {})
    assert build.canonical_cdef("void symnet_0a1b2c3d4e_f(int n);\n"
                                "void symnet_ffffffffff_g(int n);\n") is None


BUILD = textwrap.dedent("""
    import sys, numpy as np, symnet as sn
    net = sn.Network(sn.Input(40), sn.Dense(int(sys.argv[1]), "relu"), sn.Dense(3), loss="mse")
    m = net.compile(dtype="float64", tune="off")
    X = np.random.default_rng(0).normal(size=(32, 40))
    p = m.params
    want = np.maximum(X @ p["W1"].T + p["b1"], 0) @ p["W2"].T + p["b2"]
    print(float(abs(m.forward(X) - want).max()))
""")


def test_processes_building_at_once_compile_it_once(tmp_path):
    """Three processes compile three networks into one empty cache at the same time:
    all succeed, and the driver was compiled once (the others waited for it)."""
    cache = tmp_path / "cache"
    env = dict(os.environ, SYMNET_CACHE_DIR=str(cache), CC=str(_logging_cc(tmp_path)),
               PYTHONPATH=str(ROOT), SYMNET_BLAS="0")
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(w)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in (200, 201, 202)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert float(out.split()[-1]) < 1e-12
    assert _kernel_compiles(tmp_path / "cc.log") == 1
    assert len(list(cache.glob("kernels-*.o"))) == 1
    assert not list(cache.glob(".build-*")), "a temporary build folder was left behind"


def test_export_carries_its_own_driver(tmp_path):
    """export_c stays self-contained: the exported C defines its matrix driver (with
    threads=True the tiled one) and compiles and links alone with libm."""
    net = _mlp(200)
    model = net.compile(dtype="float32", seed=0)
    model.export_c(tmp_path, name="net", threads=True)
    src = (tmp_path / "net.c").read_text()
    assert "static void sn_gemm(" in src and "symnet_gemm_" not in src and "sn_tuned" not in src
    main = tmp_path / "main.c"
    main.write_text('#include "net.h"\nstatic float w[NET_WORK_SIZE(4)], x[4 * 40], o[4 * 3];\n'
                    "int main(void) { net_forward(net_trained_params, x, 4, o, w);"
                    " return o[0] != o[0]; }\n")
    out = subprocess.run(["gcc", "-std=c99", "-O1", "-fopenmp", str(main), str(tmp_path / "net.c"),
                          "-o", str(tmp_path / "main"), "-lm"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_driver_source_per_dtype():
    """The driver's C: one typedef per number type, the BLAS call, no network in it."""
    f, d = kernels_source("float32"), kernels_source("float64")
    assert "typedef float real;" in f and "void symnet_gemm_float(const sn_tuning *sn_t," in f
    assert "typedef double real;" in d and "void symnet_gemm_double(" in d
    assert "->blas(101," in f and "sn_mm_nt" not in f and "_tune(" not in f


def test_build_links_the_driver_the_source_calls(tmp_path, monkeypatch):
    """Any in-process C (rendered with hooks, e.g. the input-gradient kernels) built
    without naming the driver gets the default one linked: the module loads and
    computes what numpy computes."""
    from symnet.backend.c.emit import cdef, universal_cdef
    from symnet.backend.c.runtime import Runtime, render
    from symnet.backend.common import plan_meta
    from symnet.plan.lower import plan as make_plan
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path / "cache"))
    net = _mlp(200)
    plan = make_plan(net.graph())
    source, header, prefix = render(plan, "float64", hooks=True)
    meta = dict(plan_meta(plan, net.describe(), "float64"), prefix=prefix, products=[],
                tile=None)
    rt = Runtime(*build.build("x" * 24, source, cdef(header), meta))
    assert rt.meta["kernels"] and (tmp_path / "cache" / f"{rt.meta['kernels']}.o").exists()
    rng = np.random.default_rng(0)
    rt.params[:] = rng.normal(size=rt.params.size)
    X = rng.normal(size=(32, 40))
    p = {q["name"]: rt.params[q["offset"]:q["offset"] + int(np.prod(q["shape"]))]
         .reshape(q["shape"]) for q in rt.meta["params"]}
    want = np.maximum(X @ p["W1"].T + p["b1"], 0) @ p["W2"].T + p["b2"]
    np.testing.assert_allclose(rt.forward(X), want, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not build._ALIASES, reason="the linker aliases names on Linux only")
def test_without_the_shared_declarations_a_module_has_the_wrapper_of_its_own(tmp_path,
                                                                            monkeypatch):
    """A header template the shared declarations cannot be rendered from (None) leaves
    each module the wrapper of its own declarations: it compiles and computes."""
    from symnet.backend.c import emit
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(_logging_cc(tmp_path)))
    monkeypatch.setattr(emit, "universal_cdef", lambda dtype: None)
    m = _mlp(7).compile(dtype="float64", seed=1)
    assert _wrapper_compiles(tmp_path / "cc.log") == 1
    wrapper = (tmp_path / "cache" / f"{m.runtime.meta['wrapper']}.c").read_text()
    assert "sn_absent_" not in wrapper and "symnet_net_loss_labels" not in wrapper
    X = np.random.default_rng(2).normal(size=(4, 40))
    np.testing.assert_allclose(m.forward(X), _numpy_forward(m, X), rtol=1e-12, atol=1e-12)
