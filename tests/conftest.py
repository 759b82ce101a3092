"""Shared fixtures, and one fresh compile cache per test session.

The cache is made by the first process of the session (pytest itself, or
pytest-xdist's controller) and handed to xdist's workers through the environment
(they start after this file is read), so a network compiled by one worker is a
cache hit for the others; the cache's own locks make concurrent builds of one
network safe.  The process that made it removes it at exit.  A SYMNET_CACHE_DIR
set by the caller is used as it is."""

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (CI included): a failure
# is then reproducible, never a matter of which examples one run happened to draw.
settings.register_profile("symnet", derandomize=True, database=None)
settings.load_profile("symnet")

if "SYMNET_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="symnet-test-cache-")
    os.environ["SYMNET_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def pytest_configure(config):
    """With several xdist workers, measure the machine (symnet/backend/c/tuning.py) once here,
    before they start: on a machine still quiet, and not once per worker."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    if os.environ.get("SYMNET_SANITIZE"):
        return
    from symnet.backend.c import tuning
    tuning.machine()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def targets_for(loss: str, rng, batch: int, n_out: int) -> np.ndarray:
    """Targets in each loss's domain: one-hot rows, (0,1) values, or reals."""
    if loss == "softmax_cross_entropy":
        return np.eye(n_out)[rng.integers(0, n_out, batch)]
    if loss == "bce":
        return rng.uniform(0.05, 0.95, (batch, n_out))
    return rng.normal(size=(batch, n_out))


# ------------------------------------------------ where the test time goes
# SYMNET_TEST_CPU=N prints the N tests that took the most CPU time (this process's
# and the C compiler's, which wall-clock durations on a busy machine do not show)
# and how many networks each compiled.
_CPU_TOP = int(os.environ.get("SYMNET_TEST_CPU", "0") or 0)
_cpu_rows: list = []


if _CPU_TOP:
    import resource
    import time

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        from symnet.backend.c import build

        def now():
            ch = resource.getrusage(resource.RUSAGE_CHILDREN)
            return time.process_time(), ch.ru_utime + ch.ru_stime, build.STATS["compiled"]
        before = now()
        yield
        after = now()
        _cpu_rows.append((after[0] - before[0], after[1] - before[1], after[2] - before[2],
                          item.nodeid))

    def pytest_terminal_summary(terminalreporter):
        own = sum(r[0] for r in _cpu_rows)
        cc = sum(r[1] for r in _cpu_rows)
        n = sum(r[2] for r in _cpu_rows)
        terminalreporter.write_line(f"CPU time: {own:.1f} s in Python, {cc:.1f} s in the C "
                                    f"compiler, {n} networks compiled, {len(_cpu_rows)} tests")
        for py, c, k, nodeid in sorted(_cpu_rows, key=lambda r: -(r[0] + r[1]))[:_CPU_TOP]:
            terminalreporter.write_line(f"{py + c:7.2f} s  (python {py:6.2f}, cc {c:6.2f}, "
                                        f"{k:3d} compiled)  {nodeid}")
