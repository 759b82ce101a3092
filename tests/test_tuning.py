"""Where products run (symnet/backend/c/tuning.py): the BLAS path gives the numpy
reference's gradients, the machine's figures are measured once and cached,
and the environment's switches are obeyed."""

import contextlib
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


@pytest.mark.skipif(not HAVE_BLAS, reason="scipy-openblas32 (a dependency) not installed")
@pytest.mark.parametrize("threads", [None, "2"])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", 2e-4)])
def test_products_on_blas_match_numpy_reference(tmp_path, dtype, rtol, threads):
    """SYMNET_BLAS_MIN=0 sends every blocked product (nt, nn and tn) to OpenBLAS; with
    threads, each is cut in two parts (by rows or by columns, whichever is longer) that
    the pool's threads take, each part one call of the library."""
    from test_kernels import ACTS, LOSS, _data
    env = {"SYMNET_BLAS_MIN": "0"}
    if threads:
        env.update(SYMNET_PARALLEL_MIN="1", OMP_NUM_THREADS=threads)
    settings = _grads(env, dtype, tmp_path / "g.npy")
    assert settings["blas"] and "openblas" in settings["blas"] and settings["blas_min"] == 0
    # with threads the override; without, the machine's measured threshold (a number
    # of multiply-adds: the record may be re-measured between processes, so no equality)
    if threads:
        assert settings["thread_min"] == 1
    else:
        assert 1 < settings["thread_min"] < math.inf
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



@pytest.mark.parametrize("name", ["SYMNET_PARALLEL_MIN", "SYMNET_BLAS_MIN"])
@pytest.mark.parametrize("value", ["nan", "-1"])
def test_threshold_out_of_range_is_refused(name, value, monkeypatch):
    """nan compares false with every size and a negative is below all: both were taken
    without a word (every product on all threads, or on the BLAS)."""
    monkeypatch.setenv("SYMNET_BLAS", "0")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name} must be a number of multiply-adds, 0 or "
                                         f"more .*got '{value}'"):
        tuning.settings()


@pytest.mark.parametrize("value", ["0", "inf"])
def test_threshold_zero_and_inf_are_taken(value, monkeypatch):
    monkeypatch.setenv("SYMNET_BLAS", "0")
    monkeypatch.setenv("SYMNET_PARALLEL_MIN", value)
    assert tuning.settings()["thread_min"] == float(value)

def test_machine_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    first = tuning.machine()
    assert first["rate"] > 0 and first["join_s"] >= 0
    assert first["thread_min"] >= 4e-6 * first["rate"]
    assert first["blas_min"] == math.inf or first["blas_min"] > 0
    files = list(tmp_path.glob("machine-*.json"))
    assert len(files) == 1
    tuning._machine.cache_clear()          # a new process: read back, not measured

    def fail(**kw):
        raise AssertionError("measured again")
    monkeypatch.setattr(tuning, "measure", fail)
    # (the check at load, which may measure again on a machine whose load changed,
    # has tests of its own below)
    monkeypatch.setattr(tuning, "quick_check", lambda *a: {"implausible": False})
    monkeypatch.setattr(tuning, "RETRY_S", 3600.0)
    assert tuning.machine() == first
    tuning._machine.cache_clear()
    files[0].write_text(files[0].read_text().replace('"rate": ', '"rate": 1'))
    monkeypatch.setattr(tuning, "measure", lambda **kw: dict(first, rate=7.0))
    assert tuning.machine()["rate"] == 7.0, "a damaged record must be measured again"
    assert build._unseal(files[0])["rate"] == 7.0
    tuning._machine.cache_clear()


def test_machine_record_of_fewer_threads_does_not_cap_a_later_process(tmp_path, monkeypatch):
    """A record measured where the process could use one thread (OMP_NUM_THREADS=1, or
    `taskset` to one core) is not the record of a process that may use two: its join
    was timed on one thread and its threads_max capped every product."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SYMNET_OPENMP", raising=False)
    monkeypatch.setattr(tuning, "quick_check", lambda *a: {"implausible": False})
    monkeypatch.setattr(tuning, "RETRY_S", 3600.0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    measured = []

    def measure(**kw):
        measured.append(tuning.threads_max())
        rec = dict(tuning._defaults("test"), threads_max=tuning.threads_max(), rate=1e10,
                   join_s=1e-5, disturbed=False, measured_at=time.time())
        del rec["error"]
        return rec
    monkeypatch.setattr(tuning, "measure", measure)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tuning._machine.cache_clear()
    assert tuning.settings()["threads_max"] == 1
    tuning._machine.cache_clear()          # a new process, allowed two threads
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert tuning.settings()["threads_max"] == 2
    assert measured == [1, 2]
    assert len(list(tmp_path.glob("machine-*.json"))) == 2
    tuning._machine.cache_clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")     # the first record is still there
    assert tuning.settings()["threads_max"] == 1 and measured == [1, 2]
    tuning._machine.cache_clear()


def test_a_record_measured_without_blas_does_not_keep_a_later_process_from_it(
        tmp_path, monkeypatch):
    """SYMNET_BLAS=0 measures the machine without OpenBLAS (the record's blas is None);
    a later process with the BLAS on must not read that record and run without it."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "quick_check", lambda *a: {"implausible": False})
    monkeypatch.setattr(tuning, "RETRY_S", 3600.0)
    measured = []

    def measure(**kw):
        found = tuning.blas_library()
        measured.append(found is not None)
        rec = dict(tuning._defaults("test"), threads_max=tuning.threads_max(), rate=1e10,
                   join_s=1e-5, disturbed=False, measured_at=time.time(),
                   blas=found[0] if found else None, blas_min=1e6 if found else math.inf)
        del rec["error"]
        return rec
    monkeypatch.setattr(tuning, "measure", measure)
    monkeypatch.setenv("SYMNET_BLAS", "0")
    tuning._machine.cache_clear()
    tuning.blas_library.cache_clear()
    assert tuning.settings()["blas"] is None
    tuning._machine.cache_clear()          # a new process, the BLAS on
    tuning.blas_library.cache_clear()
    monkeypatch.delenv("SYMNET_BLAS")
    got = tuning.settings()
    assert tuning.blas_library() is not None          # scipy-openblas32 is a dependency
    assert got["blas"] is not None and got["blas_min"] == 1e6
    assert measured == [False, True]
    assert len(list(tmp_path.glob("machine-*.json"))) == 2
    tuning._machine.cache_clear()
    tuning.blas_library.cache_clear()


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
    from symnet.backend.c.emit import kernels_source
    inproc, prefix = emit(plan(net.graph()), "float32", hooks=True)[:2]
    assert "sn_blas" not in standalone and "SN_USE_BLAS" not in standalone
    assert "sn_tuned" not in standalone
    assert f"void {prefix}tune(" in inproc and "symnet_gemm_float(&sn_tuned," in inproc
    # the BLAS call and the pool of threads are in the driver every in-process module
    # links; the standalone file has neither (its products use OpenMP's parallel for)
    kernels = kernels_source("float32")
    assert "g->blas(101," in kernels and "->blas(" not in inproc
    assert "sn_pool_run" in kernels and "pthread" in kernels
    assert "pthread" not in standalone and "pthread" not in inproc
    assert "#pragma omp parallel for" in standalone


def _spin(n):
    """n processes that keep a core busy each until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.slow
def test_a_measurement_under_load_is_not_the_one_kept(tmp_path, monkeypatch):
    """Measured while every core spins (the machine of a user whose first compile
    runs beside a build): the record says so, nothing is measured again while the load
    lasts, and once it is gone the next process measures again instead of keeping it:
    rate, join and the BLAS threshold (blas_min, its sweep) alike."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "ATTEMPTS", 2)
    tuning._machine.cache_clear()
    spinners = _spin(len(os.sched_getaffinity(0)))
    try:
        time.sleep(0.2)
        loaded = tuning.machine()
        path, = tmp_path.glob("machine-*.json")
        # while the load lasts, a process whose retry time has come finds the machine
        # busy and keeps the record (one look; the next processes read the answer)
        monkeypatch.setattr(tuning, "RETRY_S", 0.0)
        tuning._machine.cache_clear()
        assert not tuning._quiet_now()
        assert tuning.machine()["measured_at"] == loaded["measured_at"]
        assert path.with_suffix(".busy").exists()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert loaded["disturbed"] and loaded["others"] > 0.5, loaded
    if HAVE_BLAS:       # the BLAS sweep ran under the same load, and says so
        assert loaded["blas"] and loaded["sweep_disturbed"] and loaded["shapes"], loaded
    assert build._unseal(path)["measured_at"] == loaded["measured_at"]
    monkeypatch.undo()
    # a new process soon after keeps it (no measurement every time) ...
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    tuning._machine.cache_clear()
    monkeypatch.setattr(tuning, "measure", lambda **kw: pytest.fail("measured again"))
    monkeypatch.setattr(tuning, "quick_check", lambda *a: {"implausible": False})
    monkeypatch.setattr(tuning, "_quiet_now", lambda p=None: True)
    assert tuning.machine()["measured_at"] == loaded["measured_at"]
    monkeypatch.undo()
    # ... and once the retry time has passed, on a machine quiet again (the spinners are
    # gone; other programs of a shared test machine are not ours to stop, so the look
    # at /proc/stat answers "quiet" here), measures again
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "RETRY_S", 0.0)
    monkeypatch.setattr(tuning, "_quiet_now", lambda p=None: True)
    tuning._machine.cache_clear()
    kept = tuning.machine()
    tuning._machine.cache_clear()
    assert kept["measured_at"] != loaded["measured_at"]
    assert build._unseal(path)["measured_at"] == kept["measured_at"]
    assert not kept["disturbed"] or kept["attempts"] > 1, kept
    if HAVE_BLAS:       # blas_min and its sweep measured anew too
        assert kept["shapes"] and kept["shapes"] != loaded["shapes"]
        assert kept["blas_rate"] > 0
        assert not kept["sweep_disturbed"] or kept["disturbed"], kept


@pytest.mark.slow
def test_a_measurement_under_load_says_so_without_a_blas_too(tmp_path, monkeypatch):
    """The rate and join take 6-10 ms to time: a watch of that length cannot tell load
    from /proc/stat's 10 ms ticks, and where no BLAS sweep followed (no OpenBLAS
    installed), a measurement beside a spinning program on every core was stored as
    quiet, for good.  The watch now spans QUIET_S."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "blas_library", lambda: None)
    monkeypatch.setattr(tuning, "ATTEMPTS", 1)
    tuning._machine.cache_clear()
    spinners = _spin(len(os.sched_getaffinity(0)))
    try:
        time.sleep(0.2)
        rec = tuning.machine()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
        tuning._machine.cache_clear()
    assert rec["blas"] is None and "sweep_disturbed" not in rec, rec
    assert rec["disturbed"] and rec["others"] > 0.5, rec


def test_a_long_load_does_not_delay_the_measurement_after_it(tmp_path, monkeypatch):
    """A disturbed record is measured again by the first process that finds the machine
    quiet, RETRY_S after the last try, doubling per try but never more than
    RETRY_MAX_S; while the machine is busy, never (and the answer of one look stands
    for BUSY_S)."""
    now = time.time()
    quiet = []
    monkeypatch.setattr(tuning, "_quiet_now", lambda p=None: quiet[-1])
    rec = {"disturbed": True, "attempts": 8, "measured_at": now - tuning.RETRY_MAX_S - 1}
    quiet.append(True)
    assert tuning._due(rec), "eight tries under load held the record for over an hour"
    assert not tuning._due(dict(rec, measured_at=now - tuning.RETRY_S - 1))
    assert tuning._due({"disturbed": True, "attempts": 1, "measured_at": now - tuning.RETRY_S - 1})
    assert not tuning._due({"disturbed": True, "attempts": 1, "measured_at": now - 1})
    assert not tuning._due(dict(rec, disturbed=False))
    quiet.append(False)
    assert not tuning._due(rec), "measured again under load"
    monkeypatch.undo()
    # a busy answer is read back instead of looking again, until BUSY_S has passed
    p = tmp_path / "machine-x.json"
    build._atomic_write(p.with_suffix(".busy"), repr(time.time()))
    monkeypatch.setattr(tuning, "Watch", lambda: pytest.fail("looked again"))
    assert not tuning._quiet_now(p)
    build._atomic_write(p.with_suffix(".busy"), repr(time.time() - tuning.BUSY_S - 1))
    monkeypatch.undo()
    monkeypatch.setattr(tuning, "QUIET_S", 0.01)
    tuning._quiet_now(p)          # looks (whatever it finds on a shared machine)


def test_a_record_taken_under_load_is_not_condemned_by_a_check_too_short_to_see_load(
        tmp_path, monkeypatch):
    """The cheap check at load times a few milliseconds, too few of /proc/stat's ticks to
    tell a busy machine: beside 2-8 cores of other programs it said 'not disturbed', and
    found the record (taken under load) slower than the machine, so a process measured
    the busy machine again (1-2 in 10 loads under a lasting load; the slow test of a
    measurement under load failed so).  For a record taken under load an implausible
    check now counts only where a proper look finds the machine quiet."""
    p = tmp_path / "machine-x.json"
    p.with_suffix(".so").write_bytes(b"probe")
    monkeypatch.setattr(tuning, "_check_due", lambda rec, p: True)
    monkeypatch.setattr(tuning, "_open_probe", lambda so, sha: (None, None))
    monkeypatch.setattr(tuning, "quick_check", lambda rec, ffi, lib: {
        "implausible": True, "disturbed": False, "others": 3.5})
    looks, quiet = [], [False]
    monkeypatch.setattr(tuning, "_quiet_now", lambda path=None: looks.append(path) or quiet[0])
    rec = {"disturbed": True, "probe_sha256": "x", "measured_at": time.time()}
    assert tuning._checked(rec, p), "a busy machine measured again"
    assert looks == [p]
    quiet[0] = True
    assert not tuning._checked(rec, p), "a quiet machine keeps a record it clearly beats"
    # a record taken on a quiet machine: the machine beating it under any load condemns it
    looks.clear()
    assert not tuning._checked(dict(rec, disturbed=False), p) and looks == []


def test_a_quiet_sweep_is_kept_over_a_disturbed_one():
    """Measured again under load, the record keeps the best rate and join seen and the
    BLAS threshold of the sweep that ran on a quiet machine."""
    blas = "/lib/libscipy_openblas.so"
    old = {"rate": 5e10, "join_s": 1e-4, "blas": blas, "blas_min": 6.7e7, "blas_rate": 9e10,
           "shapes": [[0, 256, 256, 256, 1.0, 0.5]], "sweep_disturbed": False,
           "disturbed": True, "attempts": 1}
    new = {"rate": 2e10, "join_s": 3e-3, "blas": blas, "blas_min": math.inf,
           "blas_rate": 3e10, "shapes": [[0, 256, 1024, 1024, 1.0, 2.0]],
           "sweep_disturbed": True, "disturbed": True, "attempts": 1}
    got = tuning._merge(old, new)
    assert got["rate"] == 5e10 and got["join_s"] == 1e-4 and got["attempts"] == 2
    assert got["blas_min"] == 6.7e7 and got["shapes"] == old["shapes"]
    assert got["blas_rate"] == 9e10 and not got["sweep_disturbed"]
    # a disturbed sweep replaces a disturbed one; a quiet measurement replaces all
    got = tuning._merge(dict(old, sweep_disturbed=True), new)
    assert got["blas_min"] == math.inf and got["shapes"] == new["shapes"]
    quiet = dict(new, disturbed=False, sweep_disturbed=False)
    assert tuning._merge(old, quiet) == quiet


@pytest.mark.slow
def test_an_implausible_record_is_measured_again(tmp_path, monkeypatch):
    """A record that says 'quiet' but holds figures the machine clearly beats now (a
    third of its rate, a 7.4 ms join) fails the cheap check at load and is replaced."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    tuning._machine.cache_clear()
    first = tuning.machine()
    path, = tmp_path.glob("machine-*.json")
    # (measured more than CHECK_S ago: a quiet measurement is first checked then)
    slow = dict(first, rate=first["rate"] / 3, join_s=7.4e-3, disturbed=False,
                measured_at=time.time() - tuning.CHECK_S - 1)
    build._atomic_write(path, build._seal(slow))
    tuning._machine.cache_clear()
    again = tuning.machine()
    tuning._machine.cache_clear()
    assert again["measured_at"] > slow["measured_at"]
    assert build._unseal(path)["measured_at"] == again["measured_at"]
    # a plausible record is kept: figures that no machine beats (10^18 multiply-adds a
    # second, no join) pass the check.  (Ten times the figures just measured failed once
    # in a run of the slow tests, two workers on two cores: figures measured under load
    # can be that far below what the check finds a moment later.)
    ffi, lib = tuning._open_probe(path.with_suffix(".so"), again["probe_sha256"])
    fast = dict(again, rate=1e18, join_s=0.0)
    if again.get("blas_rate"):
        fast["blas_rate"] = 1e18
    assert not tuning.quick_check(fast, ffi, lib)["implausible"]
    if HAVE_BLAS:
        # the BLAS now clearly faster than recorded (what decided blas_min, measured
        # under load; a million multiply-adds per second, which no machine's BLAS is
        # as slow as): implausible, even with rate and join plausible
        assert again["blas_rate"] > 0
        check = tuning.quick_check(dict(fast, blas_rate=1e6), ffi, lib)
        assert check["implausible"] and check["blas_rate"] > 1.25e6, check


def test_a_record_that_passed_its_check_is_not_checked_at_every_load(tmp_path, monkeypatch):
    """The cheap check at load runs on the first load; after a pass, loads within
    CHECK_S skip it (a cache hit opens no probe), one after that checks again, and a
    record measured anew is checked anew.  A quiet measurement counts as the first
    pass: loads within CHECK_S of it do not check it; a disturbed one is checked."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "blas_library", lambda: None)
    tuning._machine.cache_clear()
    first = tuning.machine()
    path, = tmp_path.glob("machine-*.json")
    calls = []

    def check(rec, ffi, lib):
        calls.append(rec["measured_at"])
        return {"implausible": False}
    monkeypatch.setattr(tuning, "quick_check", check)
    monkeypatch.setattr(tuning, "measure", lambda **kw: pytest.fail("measured again"))
    monkeypatch.setattr(tuning, "RETRY_S", 3600.0)     # a disturbed record: not measured
    for disturbed, checks in ((False, 0), (True, 1)):
        build._atomic_write(path, build._seal(dict(first, disturbed=disturbed,
                                                   measured_at=time.time() - 1)))
        with contextlib.suppress(OSError):
            path.with_suffix(".checked").unlink()
        tuning._machine.cache_clear()
        tuning.machine()
        assert len(calls) == checks, (disturbed, calls)
    calls.clear()
    # measured longer ago than CHECK_S on a quiet machine, never checked: checked
    quiet = dict(first, disturbed=False, measured_at=time.time() - tuning.CHECK_S - 1)
    build._atomic_write(path, build._seal(quiet))
    with contextlib.suppress(OSError):
        path.with_suffix(".checked").unlink()

    def load():
        tuning._machine.cache_clear()
        return tuning.machine()
    load()
    assert len(calls) == 1
    load()
    load()
    assert len(calls) == 1, "checked again within CHECK_S"
    seen = build._unseal(path.with_suffix(".checked"))
    assert seen["passes"] == 1 and seen["measured_at"] == quiet["measured_at"]
    build._atomic_write(path.with_suffix(".checked"),
                        build._seal(dict(seen, at=time.time() - tuning.CHECK_S - 1)))
    load()
    assert len(calls) == 2, "not checked once CHECK_S had passed"
    assert build._unseal(path.with_suffix(".checked"))["passes"] == 2
    build._atomic_write(path, build._seal(dict(quiet, measured_at=quiet["measured_at"] + 1)))
    load()
    assert len(calls) == 3, "a new record was not checked"
    # a pass under load does not double the wait before the next check
    seen = build._unseal(path.with_suffix(".checked"))
    monkeypatch.setattr(tuning, "quick_check", lambda rec, ffi, lib: calls.append(1) or
                        {"implausible": False, "disturbed": True})
    for passes in (1, 1):
        build._atomic_write(path.with_suffix(".checked"),
                            build._seal(dict(seen, at=time.time() - tuning.CHECK_S - 1)))
        load()
        assert build._unseal(path.with_suffix(".checked"))["passes"] == passes
    assert len(calls) == 5
    tuning._machine.cache_clear()


def test_a_busy_thread_of_this_process_is_counted():
    """A thread of this process that keeps a core busy (as numpy's BLAS threads spin
    after a product) shows in own_threads_busy; none does when it is gone."""
    import threading
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass
    th = threading.Thread(target=spin)
    th.start()
    try:
        time.sleep(0.02)
        busy = tuning.own_threads_busy(0.05)
    finally:
        stop.set()
        th.join()
    assert busy > 0.0, busy
    assert tuning.own_threads_busy(0.05) < 0.1


def test_measurement_waits_for_the_process_own_busy_threads(tmp_path, monkeypatch):
    """The machine is measured once the process's other threads are idle; where they
    stay busy, the record says it was disturbed (so it is measured again later)."""
    seen = iter([0.9, 0.8, 0.02])
    monkeypatch.setattr(tuning, "own_threads_busy", lambda window_s=0.01: next(seen))
    assert tuning.own_threads_idle(limit_s=10.0) == 0.02   # waited for the third look
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "ATTEMPTS", 1)
    monkeypatch.setattr(tuning, "blas_library", lambda: None)
    monkeypatch.setattr(tuning, "own_threads_idle", lambda limit_s=0.3: 0.9)
    rec = tuning.measure()
    assert rec["disturbed"] and rec["others"] >= 0.9, rec


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


# ------------------------------------------------------------------ the planner
def _counting_blas(calls):
    """A cblas_sgemm (row-major) in numpy that records each call's sizes."""
    import ctypes
    fp = ctypes.POINTER(ctypes.c_float)
    proto = ctypes.CFUNCTYPE(None, *[ctypes.c_int] * 6, ctypes.c_float, fp, ctypes.c_int, fp,
                             ctypes.c_int, ctypes.c_float, fp, ctypes.c_int)

    def gemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc):
        calls.append((ta, tb, M, N, K))
        a = np.ctypeslib.as_array(A, ((K, lda) if ta == 112 else (M, lda)))
        b = np.ctypeslib.as_array(B, ((N, ldb) if tb == 112 else (K, ldb)))
        c = np.ctypeslib.as_array(C, (M, ldc))
        a = a[:, :M].T if ta == 112 else a[:, :K]
        b = b[:, :K].T if tb == 112 else b[:, :N]
        c[:, :N] = alpha * (a @ b) + (beta * c[:, :N] if beta else 0)
    return proto(gemm)


def test_planned_product_runs_on_the_blas_and_others_do_not(tmp_path, monkeypatch):
    """The planner's choice reaches the C: the one product planned for the BLAS (the
    first layer's forward product, any batch) calls it, with its sizes; the others,
    and every product with tune="off", stay on symnet's kernels; outputs agree."""
    import ctypes

    import symnet as sn
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMNET_BLAS_MIN", "inf")
    # one part per product: the pool cuts a product of more multiply-adds than the
    # machine's thread_min (measured; 32×128×64 is cut on some machines)
    monkeypatch.setenv("SYMNET_PARALLEL_MIN", "1e12")
    tuning._machine.cache_clear()
    tuning.machine()             # measured before the BLAS is replaced
    calls = []
    fake = _counting_blas(calls)

    def pointer(ffi, dtype):
        address = ctypes.cast(fake, ctypes.c_void_p).value
        return ffi.cast(tuning._BLAS_FN.format(real="float"), address)
    monkeypatch.setattr(tuning, "blas_pointer", pointer)
    monkeypatch.setattr(tuning, "plan",
                        lambda products, tune="fast", s=None, chunked=None: {} if tune == "off"
                        else {":".join(map(str, p)): (0.0 if p == [0, 0, 128, 64] else math.inf)
                              for p in products})
    net = sn.Network(sn.Input(64), sn.Dense(128, "relu"), sn.Dense(10), loss="mse")
    X = np.random.default_rng(0).normal(size=(32, 64)).astype(np.float32)
    off = net.compile(dtype="float32", tune="off")
    assert [0, 0, 128, 64] in off.meta["products"]
    want = off.forward(X)
    assert calls == [] and off.tuning["plan"] == {}
    planned = net.compile(dtype="float32", tune="fast")
    assert planned.tuning["plan"]["nt b×128×64"] == "blas from 0"
    assert planned.tuning["plan"]["nt b×10×128"] == "symnet"
    got = planned.forward(X)
    assert calls == [(111, 112, 32, 128, 64)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # cut for the pool: the parts cover the product's 128 outputs once, each a full
    # 32×…×64 product, and the result is unchanged
    monkeypatch.setenv("SYMNET_PARALLEL_MIN", "1")
    calls.clear()
    cut = net.compile(dtype="float32", tune="fast")
    np.testing.assert_allclose(cut.forward(X), want, rtol=1e-5, atol=1e-5)
    assert len(calls) >= min(2, tuning.settings()["threads_max"])
    assert all(c[:3] == (111, 112, 32) and c[4] == 64 for c in calls)
    assert sum(c[3] for c in calls) == 128
    tuning._machine.cache_clear()


def test_blas_runs_on_one_thread_and_the_pool_cuts_its_products(tmp_path, monkeypatch):
    """The library's own threads join like a parallel region, waiting for a thread the
    system runs late; it runs on one, and the kernels' pool shares out the parts of a
    product routed to it (test_products_on_blas_match_numpy_reference checks them)."""
    import symnet as sn
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMNET_BLAS_MIN", "inf")
    tuning._machine.cache_clear()
    monkeypatch.setattr(tuning, "settings", lambda: {
        **tuning._defaults("test"), "blas": "libfake", "blas_min": math.inf,
        "thread_min": 1e6, "threads_max": 4})
    monkeypatch.setattr(tuning, "plan", lambda products, tune="fast", s=None, chunked=None:
                        {":".join(map(str, p)): 1.0 for p in products})
    threads = []
    monkeypatch.setattr(tuning, "_set_blas_threads", threads.append)
    net = sn.Network(sn.Input(64), sn.Dense(128, "relu"), sn.Dense(10), loss="mse")
    net.compile(dtype="float32", tune="fast")
    assert threads == [1]
    tuning._machine.cache_clear()


def test_planner_keeps_its_wisdom_and_times_only_what_it_lacks(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SYMNET_BLAS_MIN", raising=False)
    s = {"blas": "lib", "blas_min": math.inf, "thread_min": 1e6, "threads_max": 2}
    timed = []

    def fake_time(lib, ffi, shapes, batches, s, budget, rounds, chunked=None):
        timed.extend(shapes)
        # the BLAS wins the big product at both batches, loses the small one at 32
        return {":".join(map(str, sh)): {str(b): [1.0, 0.5 if sh[2] > 100 or b > 32 else 2.0,
                                                  b * sh[2] * sh[3]] for b in batches}
                for sh in shapes}
    monkeypatch.setattr(tuning, "_time_products", fake_time)
    monkeypatch.setattr(tuning.Watch, "disturbed", property(lambda self: False))
    monkeypatch.setattr(tuning, "_PLAN_PAUSE", [0.0])
    monkeypatch.setattr(tuning, "_open_probe", lambda so, sha: ("ffi", "lib"))
    monkeypatch.setattr(tuning, "machine", lambda: {"probe_sha256": "x"})
    got = tuning.plan([[0, 0, 512, 512], [0, 0, 10, 640]], "fast", s)
    assert got == {"0:0:512:512": min(tuning.BATCHES["fast"]) * 512 * 512,
                   "0:0:10:640": 256 * 10 * 640}
    assert timed == [(0, 0, 512, 512), (0, 0, 10, 640)]
    (wisdom,) = tmp_path.glob("wisdom-*.json")
    assert set(build._unseal(wisdom)["products"]) == set(got)
    timed.clear()
    # another network sharing one product: only the new one is timed
    again = tuning.plan([[0, 0, 512, 512], [1, 0, 640, 10], [1, 0, 8, 8]], "fast", s)
    assert timed == [(1, 0, 640, 10)] and again["0:0:512:512"] == got["0:0:512:512"]
    # "full" wants more batches: timed anew; "off" times nothing and plans nothing
    timed.clear()
    tuning.plan([[0, 0, 512, 512]], "full", s)
    assert timed == [(0, 0, 512, 512)]
    timed.clear()
    assert tuning.plan([[0, 0, 1, 1]], "off", s) == {} and timed == []
    with pytest.raises(ValueError,
                       match="tune must be one of 'off', 'fast', 'full', got 'fastest'"):
        tuning.plan([[0, 0, 1, 1]], "fastest", s)


def test_products_inside_the_chunks_are_timed_as_they_run_there(tmp_path, monkeypatch):
    """A product that the chunked pass runs inside its chunks is timed apart (its own
    wisdom key), told to the timer with whether its B is packed, and planned under its
    shape's key, which the module's table matches."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SYMNET_BLAS_MIN", raising=False)
    s = {"blas": "lib", "blas_min": math.inf, "thread_min": 1e6, "threads_max": 2}
    told = []

    def fake_time(lib, ffi, shapes, batches, s, budget, rounds, chunked=None):
        told.append((list(shapes), dict(chunked or {})))
        # the BLAS wins as the product is timed alone, loses as the chunks run it
        return {tuning._wisdom_key(sh, chunked): {
            str(b): [1.0, 2.0 if (chunked or {}).get(sh) is not None else 0.5, b * 512 * 512]
            for b in batches} for sh in shapes}
    monkeypatch.setattr(tuning, "_time_products", fake_time)
    monkeypatch.setattr(tuning.Watch, "disturbed", property(lambda self: False))
    monkeypatch.setattr(tuning, "_PLAN_PAUSE", [0.0])
    monkeypatch.setattr(tuning, "_open_probe", lambda so, sha: ("ffi", "lib"))
    monkeypatch.setattr(tuning, "machine", lambda: {"probe_sha256": "x"})
    chunked = tuning.plan([[0, 0, 512, 512], [2, 512, 512, 0]], "fast", s,
                          chunked=[[0, 0, 512, 512, 1], [2, 512, 512, 0, 0]])
    assert chunked == {"0:0:512:512": math.inf, "2:512:512:0": math.inf}
    assert told == [([(0, 0, 512, 512), (2, 512, 512, 0)],
                     {(0, 0, 512, 512): True, (2, 512, 512, 0): False})]
    (wisdom,) = tmp_path.glob("wisdom-*.json")
    assert set(build._unseal(wisdom)["products"]) == {"0:0:512:512:p", "2:512:512:0:c"}
    # the same shape in a network that runs it alone: timed again, under its plain key
    alone = tuning.plan([[0, 0, 512, 512]], "fast", s)
    assert alone == {"0:0:512:512": min(tuning.BATCHES["fast"]) * 512 * 512}
    assert told[-1] == ([(0, 0, 512, 512)], {})


def test_chunk_products_of_a_transformer():
    """The transformer's products all run inside its chunks; those on a layer's weights
    (A·Wᵀ forward, δ·W backward) read B packed, the weight gradients (δᵀ·X) do not."""
    from symnet.bench import seq
    from symnet.plan.lower import plan as make_plan
    p = make_plan(seq.transformer_network().graph())
    got = tuning.chunk_products(p)
    assert [e[:4] for e in got] == tuning.products_of(p)
    packed = {tuple(e[:4]) for e in got if e[4]}
    assert (0, 0, 192, 64) in packed and (1, 0, 64, 192) in packed       # Q, K, V
    assert all(kind != 2 for kind, *_ in packed)
    assert [2, 192, 64, 0, 0] in got


def test_the_probe_computes_products_on_packed_panels(tmp_path, monkeypatch):
    """The probe's packed products (what the planner times for a chunk's product on a
    layer's weights) are the products: against numpy, kinds A·Bᵀ and A·B, sizes that
    leave a partial panel."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    tuning._machine.cache_clear()
    rec = tuning.machine()
    (path,) = tmp_path.glob("machine-*.json")
    ffi, lib = tuning._open_probe(path.with_suffix(".so"), rec["probe_sha256"])
    tuning._machine.cache_clear()
    null = ffi.cast(tuning._BLAS_FN.format(real="float"), 0)
    lib.sn_probe_tune(null, math.inf, 1e300, 1)
    rng = np.random.default_rng(0)
    for kind, (M, N, K) in [(0, (37, 45, 70)), (1, (64, 200, 33)), (0, (256, 192, 64))]:
        A = rng.normal(size=(M, K)).astype(np.float32)
        B = rng.normal(size=(N, K) if kind == 0 else (K, N)).astype(np.float32)
        C = np.full((M, N), np.nan, np.float32)
        bp = ffi.new("float[]", int(lib.sn_probe_packed_size(N, K)))
        pa, pb, pc = (ffi.from_buffer("float[]", x) for x in (A, B, C))
        lib.sn_probe_pack(kind, N, K, pb, bp)
        lib.sn_probe_gemm_packed(kind, M, N, K, pa, pb, bp, pc, 2)
        want = A.astype(np.float64) @ (B.T if kind == 0 else B).astype(np.float64)
        np.testing.assert_allclose(C, want, rtol=1e-4, atol=1e-4 * np.sqrt(K))


def test_timings_under_load_are_neither_used_nor_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SYMNET_BLAS_MIN", raising=False)
    s = {"blas": "lib", "blas_min": math.inf, "thread_min": 1e6, "threads_max": 2}
    monkeypatch.setattr(tuning, "_time_products", lambda lib, ffi, shapes, batches, *a: {
        ":".join(map(str, sh)): {str(b): [1.0, 0.5, b] for b in batches} for sh in shapes})
    monkeypatch.setattr(tuning, "_open_probe", lambda so, sha: ("ffi", "lib"))
    monkeypatch.setattr(tuning, "machine", lambda: {"probe_sha256": "x"})
    monkeypatch.setattr(tuning.Watch, "disturbed", property(lambda self: True))
    monkeypatch.setattr(tuning, "_PLAN_PAUSE", [0.0])
    assert tuning.plan([[0, 0, 800, 8]], "fast", s) == {}
    assert not list(tmp_path.glob("wisdom-*.json"))
    # the process then waits RETRY_S before timing again
    assert tuning._PLAN_PAUSE[0] > time.monotonic() + tuning.RETRY_S / 2
    monkeypatch.setattr(tuning.Watch, "disturbed", property(lambda self: False))
    assert tuning.plan([[0, 0, 800, 8]], "fast", s) == {}
    # and so does a new process (no pause of its own) while the cache holds the pause
    tuning._PLAN_PAUSE[0] = 0.0
    (pause,) = tmp_path.glob("wisdom-*.pause")
    assert float(pause.read_text()) > time.time() + tuning.RETRY_S / 2
    assert tuning.plan([[0, 0, 800, 8]], "fast", s) == {}
    assert not list(tmp_path.glob("wisdom-*.json"))
    pause.write_text(repr(time.time() - 1))         # the pause over
    assert tuning.plan([[0, 0, 800, 8]], "fast", s) == {"0:0:800:8": min(tuning.BATCHES["fast"])}
    assert list(tmp_path.glob("wisdom-*.json"))


def test_compile_rejects_unknown_tune():
    import symnet as sn
    net = sn.Network(sn.Input(2), sn.Dense(1), loss="mse")
    with pytest.raises(ValueError, match="tune must be one of"):
        net.compile(tune="always")


def _full_net():
    import symnet as sn
    return sn.Network(sn.Input(96), sn.Dense(160, "tanh"), sn.Dense(5), loss="mse")


def test_full_tune_compiles_the_tile_timed_fastest(tmp_path, monkeypatch):
    """tune="full" builds its own module with the register tile the timings chose (here
    given: the second candidate of this machine's instruction set); outputs and
    gradients are those of the default tile's module."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    kind = tuning.isa()
    if kind is None:
        pytest.skip("no vector instruction set with tiles to choose among")
    want = tuning.TILES[kind][1]
    monkeypatch.setattr(tuning, "_time_tiles", lambda tiles, shapes, s: {
        **{":".join(map(str, sh)): {f"{mr}x{nr}": 1.0 if (mr, nr) == want else 2.0
                                    for mr, nr in tiles} for sh in shapes},
        "disturbed": False})
    X = np.random.default_rng(1).normal(size=(64, 96))
    T = np.random.default_rng(2).normal(size=(64, 5))
    off = _full_net().compile(dtype="float64", tune="off")
    full = _full_net().compile(dtype="float64", tune="full")
    assert full.tuning["tile"] == f"{want[0]}x{want[1]}" and off.tuning["tile"] == "default"
    # the network links a driver of its own tile (compiled once, kept in the cache)
    kernels = tmp_path / f"{full.runtime.meta['kernels']}.c"
    assert kernels.read_text().startswith(f"#define SN_MR {want[0]}\n#define SN_NR {want[1]}\n")
    assert full.runtime.meta["kernels"] != off.runtime.meta["kernels"]
    np.testing.assert_allclose(full.forward(X), off.forward(X), rtol=1e-12, atol=1e-12)
    (L1, g1), (L2, g2) = full.loss_and_grad(X, T), off.loss_and_grad(X, T)
    assert abs(L1 - L2) <= 1e-12 * abs(L2)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-10, atol=1e-12)
    (wisdom,) = tmp_path.glob("wisdom-*.json")
    assert build._unseal(wisdom)["tiles"]
    tuning._machine.cache_clear()


@pytest.mark.slow
def test_full_tune_times_real_tiles(tmp_path, monkeypatch):
    """Unpatched: every candidate tile compiles, is timed and recorded, and the model
    built with the winner computes what the default one does."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    kind = tuning.isa()
    if kind is None:
        pytest.skip("no vector instruction set with tiles to choose among")
    X = np.random.default_rng(1).normal(size=(64, 96)).astype(np.float32)
    full = _full_net().compile(dtype="float32", tune="full")
    off = _full_net().compile(dtype="float32", tune="off")
    np.testing.assert_allclose(full.forward(X), off.forward(X), rtol=1e-5, atol=1e-5)
    # kept only when timed on a quiet machine (the products' timings of "full" too)
    tiles = {k: v for w in tmp_path.glob("wisdom-*.json")
             for k, v in build._unseal(w)["tiles"].items()}
    if tiles:
        assert all(set(t) == {f"{mr}x{nr}" for mr, nr in tuning.TILES[kind]}
                   for t in tiles.values())
    tuning._machine.cache_clear()
