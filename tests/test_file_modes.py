"""Files symnet writes for the user (export_c, model.save) get the ordinary mode
0666 less the process's umask (0644 with the usual umask 022), not 0600."""

import os
import stat

import numpy as np
import pytest

import symnet as sn


@pytest.fixture(scope="module")
def model():
    return sn.Network(sn.Input(2), sn.Dense(3, "tanh"), sn.Dense(1), loss="mse").compile()


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_exported_files_follow_the_umask(model, tmp_path, umask):
    paths = model.export_c(tmp_path, name="net", params_file="net.params")
    assert len(paths) == 3
    for p in paths:
        assert _mode(p) == 0o666 & ~umask, (p, oct(_mode(p)))


def test_saved_models_follow_the_umask(model, tmp_path, umask):
    model.save(tmp_path / "m.npz")
    assert _mode(tmp_path / "m.npz") == 0o666 & ~umask
    np.testing.assert_array_equal(sn.load(tmp_path / "m.npz").params["W1"], model.params["W1"])


def test_overwriting_keeps_the_umask_mode(model, tmp_path):
    old = os.umask(0o022)
    try:
        model.export_c(tmp_path, name="net")
        model.export_c(tmp_path, name="net")
        assert _mode(tmp_path / "net.c") == 0o644
    finally:
        os.umask(old)
