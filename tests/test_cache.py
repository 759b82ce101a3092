"""The compile cache under concurrency, damage and unwritable folders.

Damage is checked in fresh processes: a damaged module that got loaded at all
could kill the process, so each case must show the process lived, gave the
right numbers, rebuilt what was damaged, and never loaded the damaged file.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pytest

import symnet as sn
from symnet.backend.c import build

ROOT = Path(__file__).resolve().parent.parent

# Prints: compiled, hits, forward output, and the sha256 of every shared
# object handed to the importer (recorded before it is loaded).
SCRIPT = textwrap.dedent("""
    import hashlib, importlib.util, json, sys
    loaded = []
    _spec = importlib.util.spec_from_file_location
    def spy(name, path, *a, **k):
        loaded.append(hashlib.sha256(open(path, "rb").read()).hexdigest())
        return _spec(name, path, *a, **k)
    importlib.util.spec_from_file_location = spy
    import numpy as np, symnet as sn, symnet.backend.c.build as b
    net = sn.Network(sn.Input(3), sn.Dense(5, "tanh"), sn.Dense(2), loss="mse")
    m = net.compile(dtype="float64", seed=3)
    X = np.linspace(-1, 1, 12).reshape(4, 3)
    print(json.dumps({"compiled": b.STATS["compiled"], "hits": b.STATS["hits"],
                      "y": m.forward(X).tolist(), "loaded": loaded, "so": m.so_path}))
""")


def _env(cache, **extra):
    return dict(os.environ, SYMNET_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT), **extra)


def _start(env):
    return subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{err}"
    return json.loads(out.splitlines()[-1]), err


def _entries(cache: Path):
    """Every module of the cache, as build sees it (checksums verified)."""
    names = {p.name.split(".")[0] for p in cache.glob("_symnet_*.json")}
    return {n: build._entry(cache, n) for n in names}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache holding one network, and what a process printed building it."""
    cache = tmp_path_factory.mktemp("cache")
    out, _ = _finish(_start(_env(cache)))
    assert out["compiled"] == 1
    return cache, out


def test_concurrent_builds_compile_once_and_agree(tmp_path):
    procs = [_start(_env(tmp_path)) for _ in range(4)]
    outs = [_finish(p)[0] for p in procs]
    assert sum(o["compiled"] for o in outs) == 1, "the build lock lets one process compile"
    assert all(o["y"] == outs[0]["y"] for o in outs)
    assert len({o["so"] for o in outs}) == 1
    assert len({h for o in outs for h in o["loaded"]}) == 1, "all loaded the same module"
    assert len(_entries(tmp_path)) == 1
    assert not list(tmp_path.glob(".build-*")) and not list(tmp_path.glob(".tmp-*"))


def _module_files(cache):
    (meta,) = cache.glob("_symnet_*.json")
    name = meta.name[:-len(".json")]
    (index,) = (cache / "index").glob("*.json")
    return {"so": cache / f"{name}{build.EXT}", "meta": meta, "c": cache / f"{name}.c",
            "index": index}


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _flip(path):
    data = bytearray(path.read_bytes())
    for k in range(len(data) // 3, len(data) // 3 + 64):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def _tamper_meta(path):
    data = json.loads(path.read_text())
    data["record"]["n_params"] *= 1000  # would send the kernels outside their arrays
    path.write_text(json.dumps(data))


DAMAGE = {  # kind: (file, how, whether the module must be compiled again)
    "so-empty": ("so", lambda p: p.write_bytes(b""), True),
    "so-half": ("so", lambda p: _truncate(p, 0.5), True),
    "so-flipped-bytes": ("so", _flip, True),
    "so-missing": ("so", os.unlink, True),
    "meta-garbage": ("meta", lambda p: p.write_text("{not json at all"), True),
    "meta-half": ("meta", lambda p: _truncate(p, 0.5), True),
    "meta-tampered": ("meta", _tamper_meta, True),
    "meta-list": ("meta", lambda p: p.write_text("[1, 2]"), True),
    "c-truncated": ("c", lambda p: _truncate(p, 0.3), True),
    "c-missing": ("c", os.unlink, True),
    "index-garbage": ("index", lambda p: p.write_bytes(b"\x00\xff garbage"), False),
    "index-empty": ("index", lambda p: p.write_text(""), False),
    "index-escapes": ("index", lambda p: p.write_text(
        json.dumps({"record": {"module": "../../../etc/passwd"}, "sha256": "0"})), False),
}


def _damaged_copy(cache, dest, kind):
    shutil.copytree(cache, dest)
    files = _module_files(dest)
    which, how, _ = DAMAGE[kind]
    how(files[which])
    so = files["so"]
    return hashlib.sha256(so.read_bytes()).hexdigest() if which == "so" and so.exists() \
        else None


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_kind_of_damage_is_a_cache_miss(built, tmp_path, monkeypatch, kind):
    cache, _ = built
    _damaged_copy(cache, tmp_path / "c", kind)
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # no fallback folder either
    key = _module_files(cache)["index"].stem
    assert build.lookup(key) is None


SAMPLE = ["so-empty", "so-flipped-bytes", "meta-tampered", "index-escapes"]


def test_damage_is_rebuilt_without_loading_the_damaged_module(built, tmp_path):
    """End to end in fresh processes, for one case of each file."""
    cache, first = built
    procs, damaged = {}, {}
    for kind in SAMPLE:
        damaged[kind] = _damaged_copy(cache, tmp_path / kind, kind)
        procs[kind] = _start(_env(tmp_path / kind))
    for kind, proc in procs.items():
        out, err = _finish(proc)
        assert out["y"] == first["y"], kind
        assert out["compiled"] == int(DAMAGE[kind][2]), (kind, out, err)
        assert damaged[kind] not in out["loaded"], f"{kind}: the damaged module was loaded"
        assert len(_entries(tmp_path / kind)) == 1, f"{kind}: not repaired"


def test_damaged_module_is_rebuilt_in_the_same_process(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(tmp_path))
    net = sn.Network(sn.Input(2), sn.Dense(3, "softplus", name="A"), sn.Dense(1), loss="mse")
    model = net.compile(dtype="float64")
    files = _module_files(tmp_path)
    files["so"].write_bytes(b"")
    files["meta"].write_text("garbage")
    before = build.STATS["compiled"]
    again = net.compile(dtype="float64")
    assert build.STATS["compiled"] == before + 1
    assert again.forward([[0.5, -1.0]]) == pytest.approx(model.forward([[0.5, -1.0]]))
    assert len(_entries(tmp_path)) == 1


def _unwritable_dir(tmp_path):
    """An existing folder this process cannot create files in.  chmod does
    not bind root, so as root use a kernel folder that refuses it too."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    ro = Path("/sys/kernel")
    assert build._writable(ro) is not None, "need a folder root cannot write"
    return ro


@pytest.mark.parametrize("kind", ["file", "under-a-file", "read-only-dir"])
def test_unwritable_cache_falls_back_with_a_warning(kind, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = {"file": blocker, "under-a-file": blocker / "cache",
              "read-only-dir": None}[kind] or _unwritable_dir(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(target))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setattr(build, "_warned", set())
    net = sn.Network(sn.Input(2), sn.Dense(2, "elu", name=f"F{len(kind)}"), sn.Dense(1))
    with pytest.warns(RuntimeWarning, match=r"not writable.*SYMNET_CACHE_DIR"):
        model = net.compile(dtype="float64")
    fallback = build.fallback_dir()
    assert fallback.parent == tmp and Path(model.so_path).parent == fallback
    assert oct(fallback.stat().st_mode & 0o777) == "0o700"
    # The next compile finds it there, without compiling or warning again.
    before = build.STATS["compiled"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.compile(dtype="float64")
    assert build.STATS["compiled"] == before


@pytest.mark.parametrize("planted", ["file", "shared-folder"])
def test_no_usable_cache_says_what_to_do(planted, tmp_path, monkeypatch):
    """The fallback in the shared temp folder is used only if it is ours
    alone; otherwise another user could plant a module we would load."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SYMNET_CACHE_DIR", str(blocker))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    fb = build.fallback_dir()
    if planted == "file":
        fb.write_text("")
    else:
        fb.mkdir()
        fb.chmod(0o777)
    net = sn.Network(sn.Input(2), sn.Dense(2, name="G"), sn.Dense(1))
    with pytest.raises(build.BuildError, match=r"cannot write.*Set SYMNET_CACHE_DIR"):
        net.compile(dtype="float64")
    assert build.lookup("0" * 24) is None
