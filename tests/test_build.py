"""The compile cache and compiler failures."""

import os
import subprocess
import sys
import textwrap

import pytest

import symnet as sn
from symnet import build

SCRIPT = textwrap.dedent("""
    import numpy as np, symnet as sn, symnet.build as b, sys
    net = sn.Network(sn.Input(3), sn.Dense(5, "relu"), sn.Dense(2), loss="mse")
    m = net.compile(dtype="float32")
    print(b.STATS["compiled"], b.STATS["hits"], "sympy" in sys.modules)
""")


def _run(env):
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_second_process_loads_from_cache_without_compiling(tmp_path):
    env = dict(os.environ, SYMNET_CACHE_DIR=str(tmp_path))
    assert _run(env) == ["1", "0", "True"]
    compiled, hits, sympy_loaded = _run(env)
    assert (compiled, hits) == ("0", "1")
    assert sympy_loaded == "False", "a cache hit must not import sympy"


def test_concurrent_builds_all_succeed(tmp_path):
    env = dict(os.environ, SYMNET_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


def test_missing_compiler_error_shows_command_and_c_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "/nonexistent/cc")
    net = sn.Network(sn.Input(2), sn.Dense(3, "softplus"), sn.Dense(1), loss="mse")
    with pytest.raises(build.BuildError) as err:
        net.compile(dtype="float64")
    msg = str(err.value)
    assert "/nonexistent/cc" in msg and ".c" in msg and "CC" in msg
    c_path = msg.split("generated C: ")[1].split()[0]
    assert os.path.exists(c_path)


def test_failing_compiler_error_shows_its_message(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    fake = tmp_path / "badcc"
    fake.write_text("#!/bin/sh\necho 'fatal: this compiler always fails' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    net = sn.Network(sn.Input(2), sn.Dense(3, "elu"), sn.Dense(1), loss="mse")
    with pytest.raises(build.BuildError, match="(?s)exit 3.*this compiler always fails"):
        net.compile(dtype="float64")


def test_cc_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    log = tmp_path / "cc.log"
    wrapper = tmp_path / "mycc"
    wrapper.write_text(f"#!/bin/sh\necho called >> {log}\nexec gcc \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("CC", str(wrapper))
    sn.Network(sn.Input(2), sn.Dense(3, "gelu"), sn.Dense(1), loss="mse").compile()
    assert log.read_text().count("called") >= 1


def test_kernel_c_is_plain_c99(tmp_path):
    """The emitted kernel compiles alone as strict C99 with only <math.h>-level headers."""
    net = sn.Network(sn.Input(3), sn.Dense(4, "swish"), sn.Dense(3, "softplus"),
                     sn.Dense(2, "sigmoid"), loss="bce")
    src = net.compile(dtype="float32").c_source
    assert "Python" not in src and "#include <Python.h>" not in src
    includes = {line.split()[1] for line in src.splitlines() if line.startswith("#include")}
    assert includes <= {"<math.h>", "<stddef.h>", "<string.h>"}
    c = tmp_path / "k.c"
    c.write_text(src)
    out = subprocess.run(["gcc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror",
                          "-Wno-unused-variable", "-Wno-unused-parameter", "-Wno-unknown-pragmas", "-c", str(c),
                          "-o", str(tmp_path / "k.o")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_generated_folder_is_up_to_date():
    from symnet.__main__ import generate
    assert generate(check=True) == 0, "generated/ is stale: run `python -m symnet generate`"
