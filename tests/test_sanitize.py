"""The sanitizer build mode works end to end: a clean network runs without a
report, and a memory error or undefined behaviour in compiled C is caught
and fatal (so `.ci/sanitize` cannot pass with one).  These run the sanitized
code in subprocesses; `.ci/sanitize` runs the networks of the suite."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import symnet as sn
from symnet.backend.c import build, sanitize
from symnet.runtime.model import network_key

ROOT = Path(__file__).resolve().parent.parent

RUN = textwrap.dedent("""
    import sys, numpy as np, symnet as sn
    net = sn.Network(sn.Input(3), sn.Dense(6, "softplus"), sn.Dense(3, "tanh"),
                     sn.Dense(2), loss="softmax_cross_entropy")
    m = net.compile(dtype=sys.argv[2])
    X = np.random.default_rng(0).normal(size=(40, 3))
    T = np.eye(2)[np.arange(40) % 2]
    m.forward(X); m.loss(X, T); m.loss_and_grad(X, T); m.step(X, T, lr=0.1)
    print("clean run done", flush=True)
    if sys.argv[1] == "overflow":       # a work buffer for 1 example, used for 40
        work = np.zeros(m.meta["work_per_row"], m.dtype)
        out = np.zeros((40, 2), m.dtype)
        rt = m.runtime
        rt.kernels.forward(rt.buffer(m.theta), rt.buffer(m.as_inputs(X)), 40, rt.buffer(out),
                           rt.buffer(work))
        print("overflow not caught", flush=True)
""")

CANARY = textwrap.dedent("""
    import symnet.backend.c.build as b
    mod, _ = b.build("canary" + "0" * 18, "int symnet_canary_add(int x) { return x + 1; }\\n",
                     "int symnet_canary_add(int x);", {"dtype": "none"})
    print(mod.lib.symnet_canary_add(2**31 - 2), flush=True)
    print(mod.lib.symnet_canary_add(2**31 - 1), flush=True)
""")


def _sanitized(tmp_path, *args):
    try:
        env = sanitize.environment(dict(os.environ, SYMNET_CACHE_DIR=str(tmp_path),
                                        PYTHONPATH=str(ROOT)))
    except build.BuildError as exc:  # no libasan for this compiler
        pytest.fail(f"the sanitizer build mode needs libasan: {exc}")
    return subprocess.run([sys.executable, "-c", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.slow
def test_clean_network_runs_without_report_and_overflow_is_caught(tmp_path, dtype):
    ok = _sanitized(tmp_path, RUN, "clean", dtype)
    assert ok.returncode == 0 and "Sanitizer" not in ok.stderr, ok.stderr
    bad = _sanitized(tmp_path, RUN, "overflow", dtype)
    assert "clean run done" in bad.stdout and "not caught" not in bad.stdout
    assert bad.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in bad.stderr, bad.stderr[-3000:]


@pytest.mark.slow
def test_undefined_behaviour_is_fatal(tmp_path):
    out = _sanitized(tmp_path, CANARY)
    assert out.stdout.split() == [str(2**31 - 1)], out.stdout
    assert out.returncode != 0
    assert "signed integer overflow" in out.stderr, out.stderr[-3000:]


def test_sanitized_builds_have_their_own_cache_keys(monkeypatch):
    desc = sn.Network(sn.Input(2), sn.Dense(1)).describe()
    plain = network_key(desc, "float64"), build.build_key("x")
    monkeypatch.setenv("SYMNET_SANITIZE", "address,undefined")
    assert "-fno-sanitize-recover=all" in build.flags()
    assert network_key(desc, "float64") != plain[0] and build.build_key("x") != plain[1]


def test_sanitized_module_without_runtime_is_refused_not_fatal(tmp_path, monkeypatch):
    """Loading an ASan module into a process without the runtime would abort
    it; symnet says what to do instead."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMNET_SANITIZE", "address,undefined")
    net = sn.Network(sn.Input(2), sn.Dense(2, name="Asan"), sn.Dense(1))
    with pytest.raises(build.BuildError, match=r"LD_PRELOAD=\$\(gcc -print-file-name"):
        net.compile(dtype="float64")
