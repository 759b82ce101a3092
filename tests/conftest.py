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
