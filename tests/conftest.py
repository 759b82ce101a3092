"""Shared fixtures: every test session compiles into its own fresh cache."""

import os
import tempfile

import numpy as np
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (CI included): a failure
# is then reproducible, never a matter of which examples one run happened to draw.
settings.register_profile("symnet", derandomize=True, database=None)
settings.load_profile("symnet")

_CACHE = tempfile.mkdtemp(prefix="symnet-test-cache-")
os.environ.setdefault("SYMNET_CACHE_DIR", _CACHE)


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
