"""Where products run (symnet/backend/c/tuning.py): the BLAS path gives the numpy
reference's gradients, the machine's figures are measured once and cached,
and the environment's switches are obeyed."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import numpy_reference as ref
from symnet.backend.c import build, tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_BLAS = importlib.util.find_spec("scipy_openblas32") is not None

_GRADS = """
import json, sys, numpy as np
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from test_kernels import _net, _data, ACTS, LOSS
model = _net().compile(dtype=sys.argv[2], seed=3)
X, T = _data()
L, g = model.loss_and_grad(X.astype(model.dtype), T.astype(model.dtype))
np.save(sys.argv[3], np.concatenate([[L]] + [g[k].ravel() for k in sorted(g)]))
np.savez(sys.argv[3] + ".params.npz", **{k: v for k, v in model.params.items()})
print(json.dumps(model.tuning))
"""


def _grads(env_extra, dtype, out):
    env = dict(os.environ, **env_extra)
    proc = subprocess.run([sys.executable, "-c", _GRADS, ROOT, dtype, str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not HAVE_BLAS, reason="scipy-openblas32 (extra 'blas') not installed")
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", 2e-4)])
def test_products_on_blas_match_numpy_reference(tmp_path, dtype, rtol):
    """SYMNET_BLAS_MIN=0 sends every blocked product (nt, nn and tn) to OpenBLAS."""
    from test_kernels import ACTS, LOSS, _data
    settings = _grads({"SYMNET_BLAS_MIN": "0"}, dtype, tmp_path / "g.npy")
    assert settings["blas"] and "openblas" in settings["blas"] and settings["blas_min"] == 0
    got = np.load(tmp_path / "g.npy")
    params = dict(np.load(str(tmp_path / "g.npy") + ".params.npz"))
    X, T = _data()
    if dtype == "float32":
        X = X.astype(np.float32)
        params = {k: v.astype(np.float64) for k, v in params.items()}
    L_ref, g_ref = ref.loss_and_grad(params, X, T, list(ACTS), LOSS)
    want = np.concatenate([[L_ref]] + [g_ref[k].ravel() for k in sorted(g_ref)])
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_blas_switched_off(tmp_path):
    settings = _grads({"SYMNET_BLAS": "0", "SYMNET_BLAS_MIN": "0"}, "float64",
                      tmp_path / "g.npy")
    assert settings["blas"] is None


def test_threads_follow_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert tuning.threads_max() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert 1 <= tuning.threads_max() <= len(os.sched_getaffinity(0))
    monkeypatch.setenv("SYMNET_OPENMP", "0")
    assert tuning.threads_max() == 1


def test_overrides_and_bad_values(monkeypatch):
    monkeypatch.setenv("SYMNET_PARALLEL_MIN", "12345")
    monkeypatch.setenv("SYMNET_BLAS", "0")
    s = tuning.settings()
    assert s["thread_min"] == 12345 and s["blas"] is None
    monkeypatch.setenv("SYMNET_PARALLEL_MIN", "many")
    with pytest.raises(ValueError, match="SYMNET_PARALLEL_MIN"):
        tuning.settings()


def test_machine_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    first = tuning.machine()
    assert first["rate"] > 0 and first["join_s"] >= 0
    assert first["thread_min"] >= 1e-5 * first["rate"]
    assert first["blas_min"] == math.inf or first["blas_min"] > 0
    files = list(tmp_path.glob("machine-*.json"))
    assert len(files) == 1
    tuning._machine.cache_clear()          # a new process: read back, not measured

    def fail(**kw):
        raise AssertionError("measured again")
    monkeypatch.setattr(tuning, "measure", fail)
    assert tuning.machine() == first
    tuning._machine.cache_clear()
    files[0].write_text(files[0].read_text().replace('"rate": ', '"rate": 1'))
    monkeypatch.setattr(tuning, "measure", lambda **kw: dict(first, rate=7.0))
    assert tuning.machine()["rate"] == 7.0, "a damaged record must be measured again"
    assert build._unseal(files[0])["rate"] == 7.0
    tuning._machine.cache_clear()


def test_machine_that_cannot_be_measured_gets_fixed_defaults(tmp_path, monkeypatch):
    """A probe that does not compile leaves networks usable with the old constants,
    and nothing is recorded (the next process tries again)."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    tuning._machine.cache_clear()

    def broken(**kw):
        raise build.BuildError("the C compiler failed (exit 1)")
    monkeypatch.setattr(tuning, "measure", broken)
    rec = tuning.machine()
    assert rec["blas"] is None and rec["blas_min"] == math.inf and rec["thread_min"] == 3e7
    assert "compiler failed" in rec["error"]
    assert not list(tmp_path.glob("machine-*.json"))
    tuning._machine.cache_clear()


def test_generated_standalone_c_has_no_tuning_hook():
    """The BLAS hook exists only in the in-process form (rendered with hooks=True)."""
    import symnet as sn
    from symnet.backend.c.emit import emit
    from symnet.plan.lower import plan
    net = sn.Network(sn.Input(300), sn.Dense(70, "relu"), sn.Dense(5), loss="mse")
    standalone = emit(plan(net.graph()), "float32")[0]
    inproc, prefix = emit(plan(net.graph()), "float32", hooks=True)[:2]
    assert "sn_blas" not in standalone and "SN_USE_BLAS" not in standalone
    assert f"void {prefix}tune(" in inproc and "sn_blas(101," in inproc


def _spin(n):
    """n processes that keep a core busy each until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.slow
def test_a_measurement_under_load_is_not_the_one_kept(tmp_path, monkeypatch):
    """Measured while every core spins (the machine of a user whose first compile
    runs beside a build): the record says so, and once the load is gone the next
    process measures again instead of keeping it."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "ATTEMPTS", 2)
    monkeypatch.setattr(tuning, "blas_library", lambda: None)   # rate and join only
    tuning._machine.cache_clear()
    spinners = _spin(len(os.sched_getaffinity(0)))
    try:
        time.sleep(0.2)
        loaded = tuning.machine()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert loaded["disturbed"] and loaded["others"] > 0.5, loaded
    path, = tmp_path.glob("machine-*.json")
    assert build._unseal(path)["measured_at"] == loaded["measured_at"]
    tuning._machine.cache_clear()
    # a new process soon after keeps it (no measurement every time under lasting load) ...
    monkeypatch.setattr(tuning, "measure", lambda **kw: pytest.fail("measured again"))
    monkeypatch.setattr(tuning, "quick_check", lambda *a: {"implausible": False})
    assert tuning.machine()["measured_at"] == loaded["measured_at"]
    monkeypatch.undo()
    # ... and once the retry time has passed, measures again
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "blas_library", lambda: None)
    monkeypatch.setattr(tuning, "RETRY_S", 0.0)
    for _ in range(3):        # other programs on a shared machine may still disturb it
        tuning._machine.cache_clear()
        kept = tuning.machine()
        if not kept["disturbed"]:
            break
        time.sleep(0.5)
    tuning._machine.cache_clear()
    assert kept["measured_at"] != loaded["measured_at"]
    assert build._unseal(path)["measured_at"] == kept["measured_at"]
    assert not kept["disturbed"] or kept["attempts"] > 1, kept


@pytest.mark.slow
def test_an_implausible_record_is_measured_again(tmp_path, monkeypatch):
    """A record that says 'quiet' but holds figures the machine clearly beats now (a
    third of its rate, a 7.4 ms join) fails the cheap check at load and is replaced."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    tuning._machine.cache_clear()
    first = tuning.machine()
    path, = tmp_path.glob("machine-*.json")
    slow = dict(first, rate=first["rate"] / 3, join_s=7.4e-3, disturbed=False)
    build._atomic_write(path, build._seal(slow))
    tuning._machine.cache_clear()
    again = tuning.machine()
    tuning._machine.cache_clear()
    assert again["measured_at"] > slow["measured_at"]
    assert build._unseal(path)["measured_at"] == again["measured_at"]
    # a plausible record is kept: its own figures pass the check
    ffi, lib = tuning._open_probe(path.with_suffix(".so"), again["probe_sha256"])
    assert not tuning.quick_check(dict(again, rate=again["rate"] * 10, join_s=0.0), ffi,
                                  lib)["implausible"]


def test_watch_counts_other_programs():
    """The load check itself: a spinning process on the machine shows as others' cores."""
    spinners = _spin(1)
    try:
        time.sleep(0.2)
        with tuning.Watch() as w:
            time.sleep(0.5)
    finally:
        spinners[0].kill()
        spinners[0].wait()
    assert w.others is not None and w.others > 0.5 and w.disturbed
