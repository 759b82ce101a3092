"""The compile cache and compiler failures."""

import os
import subprocess
import sys
import textwrap

import pytest

import symnet as sn
from symnet.backend.c import build

SCRIPT = textwrap.dedent("""
    import numpy as np, symnet as sn, symnet.backend.c.build as b, sys
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
    lines = src.splitlines()
    includes = {line.split()[1] for line in lines if line.startswith("#include")}
    # OpenMP only where a compiler builds with it: each <omp.h> under `#ifdef _OPENMP`
    omp = [i for i, line in enumerate(lines) if line.startswith("#include <omp.h>")]
    assert all(lines[i - 1].strip() == "#ifdef _OPENMP" for i in omp)
    assert includes - {"<omp.h>"} <= {"<math.h>", "<stddef.h>", "<string.h>"}
    c = tmp_path / "k.c"
    c.write_text(src)
    out = subprocess.run(["gcc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror",
                          "-Wno-unused-variable", "-Wno-unused-parameter", "-Wno-unknown-pragmas", "-c", str(c),
                          "-o", str(tmp_path / "k.o")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_generated_folder_is_up_to_date():
    from symnet.__main__ import generate
    assert generate(check=True) == 0, "generated/ is stale: run `python -m symnet generate`"


def _fake_cc(tmp_path, body):
    fake = tmp_path / "fakecc"
    fake.write_text("#!/bin/sh\n" + body)
    fake.chmod(0o755)
    return str(fake)


def _build_error(monkeypatch, tmp_path, cc, name):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", cc)
    net = sn.Network(sn.Input(2), sn.Dense(3, "tanh", name=name), sn.Dense(1), loss="mse")
    with pytest.raises(build.BuildError) as err:
        net.compile(dtype="float64")
    msg = str(err.value)
    c_path = msg.split("generated C: ")[1].split()[0]
    assert os.path.exists(c_path) and "command: " in msg
    return msg


def test_hanging_compiler_is_killed_with_its_children(tmp_path, monkeypatch):
    pidfile = tmp_path / "child.pid"
    cc = _fake_cc(tmp_path, f"sleep 120 &\necho $! > {pidfile}\nwait\n")
    monkeypatch.setenv("SYMNET_CC_TIMEOUT", "1")
    msg = _build_error(monkeypatch, tmp_path, cc, "Hang")
    assert "did not finish within 1 s" in msg and "SYMNET_CC_TIMEOUT" in msg and cc in msg
    pid = int(pidfile.read_text())
    try:
        state = open(f"/proc/{pid}/status").read().split("State:")[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z"), "the compiler's own child process was left running"


def test_compiler_that_writes_nothing(tmp_path, monkeypatch):
    msg = _build_error(monkeypatch, tmp_path, _fake_cc(tmp_path, "exit 0\n"), "Nothing")
    assert "reported success but wrote no module" in msg


def test_compiler_that_writes_garbage(tmp_path, monkeypatch):
    body = ('while [ $# -gt 0 ]; do [ "$1" = -o ] && echo garbage > "$2"; shift; done\n')
    msg = _build_error(monkeypatch, tmp_path, _fake_cc(tmp_path, body), "Garbage")
    assert "could not be loaded" in msg
    assert not list((tmp_path / "cache").glob("*.json")), "a module that does not load " \
        "must not stay recorded as good"


@pytest.mark.parametrize("cc", ["/", "'unclosed"])
def test_cc_that_is_no_program(cc, tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", cc)
    net = sn.Network(sn.Input(2), sn.Dense(3, name="Nowhere"), sn.Dense(1), loss="mse")
    with pytest.raises(build.BuildError, match="CC"):
        net.compile(dtype="float64")


def test_bad_compile_timeout_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMNET_CC_TIMEOUT", "soon")
    net = sn.Network(sn.Input(2), sn.Dense(3, name="Soon"), sn.Dense(1), loss="mse")
    with pytest.raises(build.BuildError, match="SYMNET_CC_TIMEOUT must be a number"):
        net.compile(dtype="float64")


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_compile_timeout_out_of_range_is_refused(value, tmp_path, monkeypatch):
    """0, a negative or nan killed every compile at once ("did not finish within nan s")."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMNET_CC_TIMEOUT", value)
    net = sn.Network(sn.Input(2), sn.Dense(3, name="Never"), sn.Dense(1), loss="mse")
    with pytest.raises(build.BuildError,
                       match=f"SYMNET_CC_TIMEOUT must be a number of seconds above 0, "
                             f"got '{value}'"):
        net.compile(dtype="float64")


def _switch_readers():
    """{setting: a function of whether its reader takes it as on}."""
    from symnet.backend.c import tuning

    def openmp():
        on = "-fopenmp" in build.flags()
        assert tuning.threads_max() == (len(os.sched_getaffinity(0)) if on else 1)
        return on

    def debug():
        import contextlib
        import io
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            build._debug("a message")
        return "[symnet] a message" in err.getvalue()

    return {"SYMNET_OPENMP": openmp,
            "SYMNET_DEBUG": debug,
            "SYMNET_PORTABLE": lambda: not any(f.startswith("-march=") for f in build.flags()),
            "SYMNET_SPLIT": build._splits,
            "SYMNET_BLAS": lambda: not tuning.blas_off(),
            "SYMNET_BLAS_CHECK": lambda: tuning.check_wanted({"blas": "on", "blas_min": 0})}


@pytest.mark.parametrize("name", ["SYMNET_OPENMP", "SYMNET_PORTABLE", "SYMNET_SPLIT",
                                  "SYMNET_BLAS", "SYMNET_BLAS_CHECK", "SYMNET_DEBUG"])
def test_on_off_settings_take_their_words_and_refuse_others(name, monkeypatch):
    """1/0, true/false, yes/no, on/off in any case; empty is the default.  Anything else
    was taken as the default (SYMNET_OPENMP=off or SYMNET_BLAS=flase: on; SYMNET_DEBUG=0
    printed)."""
    for other in ("SYMNET_OPENMP", "SYMNET_PORTABLE", "SYMNET_SPLIT", "SYMNET_BLAS", "SYMNET_DEBUG",
                  "SYMNET_BLAS_CHECK", "SYMNET_BLAS_MIN", "SYMNET_SANITIZE", "CC",
                  "OMP_NUM_THREADS"):
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)      # SYMNET_SPLIT: on one core, off
    on = _switch_readers()[name]
    for word, expected in [("1", True), ("TRUE", True), ("Yes", True), (" on ", True),
                           ("0", False), ("false", False), ("NO", False), ("Off", False)]:
        monkeypatch.setenv(name, word)
        assert on() is expected, word
    monkeypatch.setenv(name, "")
    assert on() is (name not in ("SYMNET_PORTABLE", "SYMNET_DEBUG"))
    for bad in ("flase", "2", "enabled"):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=f"{name} must be 1/0, true/false, yes/no or "
                                             f"on/off .*got '{bad}'"):
            on()

def test_a_bad_march_setting_is_named_beside_the_compilers_message(tmp_path, monkeypatch):
    """gcc's "bad value 'nonsense' for '-march=' switch" does not say where the value
    came from."""
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SYMNET_PORTABLE", raising=False)
    monkeypatch.setenv("SYMNET_MARCH", "nonsense")
    net = sn.Network(sn.Input(2), sn.Dense(3, name="Nonsense"), sn.Dense(1), loss="mse")
    with pytest.raises(build.BuildError) as err:
        net.compile(dtype="float64")
    msg = str(err.value)
    assert "SYMNET_MARCH='nonsense' set -march=nonsense" in msg
    assert "compiler output:" in msg and "nonsense" in msg.split("compiler output:")[1]
    # a command without it (SYMNET_PORTABLE=1 drops -march) gets no such line
    assert build._march_note(["cc", "-O3", "-c", "x.c"]) == ""
