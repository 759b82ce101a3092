"""Property-based tests: random networks have the gradients of finite
differences, and random malformed inputs never crash the process."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from conftest import targets_for
from gradcheck import check
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symnet as sn
from symnet.scalar.primitives import ACTIVATIONS

_z = sp.Symbol("z")
CUSTOM = {"cubic": _z ** 3 / 3 + _z, "sine": sp.sin(_z),
          "mish": _z * sp.tanh(sp.log(1 + sp.exp(_z)))}
_o, _t = sp.symbols("o t")
LOSSES = {"mse": "mse", "bce": "bce", "softmax_cross_entropy": "softmax_cross_entropy",
          "quartic": (_o - _t) ** 4 / 4}

architectures = st.fixed_dictionaries({
    "n_in": st.integers(1, 5),
    "layers": st.lists(st.tuples(st.integers(1, 6),
                                 st.sampled_from(list(ACTIVATIONS) + list(CUSTOM)),
                                 st.booleans()), min_size=1, max_size=3),
    "loss": st.sampled_from(list(LOSSES)),
})

_models: dict = {}  # compiled once per (architecture, dtype): a compile costs ~0.4 s


def model_for(arch: dict, dtype: str):
    layers = [list(layer) for layer in arch["layers"]]
    if arch["loss"] == "bce":
        layers[-1][1] = "sigmoid"
    if arch["loss"] == "softmax_cross_entropy":
        layers[-1][0] = max(layers[-1][0], 2)
    key = (arch["n_in"], tuple(map(tuple, layers)), arch["loss"], dtype)
    if key not in _models:
        net = sn.Network(sn.Input(arch["n_in"]),
                         *[sn.Dense(w, CUSTOM.get(a, a), bias=b) for w, a, b in layers],
                         loss=LOSSES[arch["loss"]])
        _models[key] = net.compile(dtype=dtype, seed=0)
    return _models[key]


def data(model, loss, batch, seed):
    rng = np.random.default_rng(seed)
    for k, v in model.params.items():  # fresh parameters; biases off zero
        model.params[k] = rng.normal(0, 0.3 if k.startswith("b") else 0.6, v.shape)
    X = rng.normal(size=(batch, model.n_in))
    T = targets_for("mse" if loss == "quartic" else loss, rng, batch, model.n_out)
    return X, T


SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


@settings(max_examples=15, **SETTINGS)
@given(arch=architectures, batch=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_random_networks_match_finite_differences(arch, batch, seed):
    model = model_for(arch, "float64")
    X, T = data(model, arch["loss"], batch, seed)
    check(model, X, T, rtol=1e-6)


@settings(max_examples=8, **SETTINGS)
@given(arch=architectures, batch=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_random_networks_in_float32_agree_with_float64(arch, batch, seed):
    m64, m32 = model_for(arch, "float64"), model_for(arch, "float32")
    X, T = data(m64, arch["loss"], batch, seed)
    for k, v in m64.params.items():
        m32.params[k] = v
    L64, g64 = m64.loss_and_grad(X, T)
    L32, g32 = m32.loss_and_grad(X, T)
    assert L32 == pytest.approx(L64, rel=1e-4, abs=1e-5)
    for k in g64:
        scale = np.abs(g64[k]).max() + 1e-3
        assert np.abs(g32[k] - g64[k]).max() <= 1e-3 * scale, k


def test_random_malformed_inputs_never_crash_the_process():
    """In a subprocess: a crash there is a failed test here, not a dead pytest."""
    here = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parent), str(here)]))
    out = subprocess.run([sys.executable, str(here / "fuzz_inputs.py"), "250"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, \
        f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    assert "fuzz ok 250" in out.stdout
