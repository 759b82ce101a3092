"""C text → loaded cffi module, through a content-addressed cache.

Layout of the cache directory (``SYMNET_CACHE_DIR``, default
``$XDG_CACHE_HOME/symnet`` or ``~/.cache/symnet``):

    _symnet_<hash>.c            the kernel C (no Python in it)
    _symnet_<hash>.<ext>        the compiled extension module
    _symnet_<hash>.json         what the model needs to use it, and the
                                module's sha256 (a damaged file is rebuilt)
    index/<key>.json            network description key → module name, so a
                                cache hit needs neither sympy nor the compiler

``<hash>`` covers the C text, the compiler command, its version, the flags
and the Python ABI; builds happen in a private temporary folder and are
renamed into place, so concurrent builds of one network all succeed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from . import __version__

EXT = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


class BuildError(RuntimeError):
    """The C compiler failed or could not be run.

    The message shows the command, the compiler's own message and the path of
    the generated C.  Fix: install a C compiler (``apt install gcc``) or point
    ``CC`` at one, e.g. ``CC=gcc``.
    """


def template_dir() -> Path:
    """templates/ ships inside the package when installed, beside it in a checkout."""
    here = Path(__file__).resolve().parent
    for cand in (here / "templates", here.parent / "templates"):
        if (cand / "network.c.j2").exists():
            return cand
    raise FileNotFoundError("symnet's templates/ folder is missing from the installation")


def cache_dir() -> Path:
    env = os.environ.get("SYMNET_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "symnet"


def compiler() -> list[str]:
    """The compiler command: ``CC`` if set, else Python's own, else cc."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def flags() -> list[str]:
    """Optimisation flags; ``SYMNET_PORTABLE=1`` drops -march=native."""
    f = ["-O3", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
    if os.environ.get("SYMNET_OPENMP", "1") not in ("0", "false", "no"):
        f.append("-fopenmp")  # threads for large products; SYMNET_OPENMP=0 turns them off
        par = os.environ.get("SYMNET_PARALLEL_MIN")  # M·N·K from which products use threads
        if par:
            f.append(f"-DSN_PARALLEL={float(par)!r}")
    if os.environ.get("SYMNET_PORTABLE", "") not in ("1", "true", "yes"):
        f.append("-march=native")
        if platform.machine() in ("x86_64", "AMD64"):
            # full-width AVX-512 tiles: measured 100 vs 80 GFLOP/s per core (gcc 12, Zen 4)
            f.append("-mprefer-vector-width=512")
    san = os.environ.get("SYMNET_SANITIZE")
    if san:
        f += [f"-fsanitize={san}", "-fno-omit-frame-pointer", "-g"]
    return f


@lru_cache(maxsize=8)
def _compiler_version(cmd: tuple) -> str:
    try:
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else f"rc={out.returncode}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"


@lru_cache(maxsize=1)
def _cpu() -> str:
    """The CPU's feature flags: a -march=native module only runs where built."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return hashlib.sha256(line.encode()).hexdigest()[:16]
    except OSError:
        pass
    import platform
    return platform.machine()


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hash of the compiler stages' own code, so a changed symnet never hits
    a stale cache entry."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256(__version__.encode())
    files = sorted(here.glob("*.py")) + sorted(template_dir().glob("*.j2"))
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_key(*parts: str) -> str:
    cmd = compiler()
    h = hashlib.sha256()
    for p in [*parts, " ".join(cmd), _compiler_version(tuple(cmd)), " ".join(flags()),
              _cpu(), EXT, sys.implementation.cache_tag or ""]:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _debug(msg: str):
    if os.environ.get("SYMNET_DEBUG"):
        print(f"[symnet] {msg}", file=sys.stderr)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_loaded: dict[str, object] = {}
STATS = {"compiled": 0, "hits": 0}  # in this process, for tests and SYMNET_DEBUG


def _import(name: str, path: Path):
    if name in _loaded:
        return _loaded[name]
    # OpenMP threads of our kernels wait for the next product by spinning; on a
    # busy machine libgomp's default (300 000 spins) lets a spinning thread hold
    # a core another process needs and a step can stall for a whole scheduler
    # tick (measured: 42 µs products taking 8 ms).  A short spin keeps the fast
    # hand-off on an idle machine.  Read once, when libgomp loads; a user's own
    # setting wins.
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "10000"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _loaded[name] = mod
    return mod


def lookup(key: str):
    """(module, meta) for a cached network key, or None.  Never compiles."""
    root = cache_dir()
    try:
        index = json.loads((root / "index" / f"{key}.json").read_text())
        name = index["module"]
        meta = json.loads((root / f"{name}.json").read_text())
        so = root / f"{name}{EXT}"
        if name not in _loaded and _sha(so) != meta["sha256"]:
            _debug(f"cache entry {name} is damaged; rebuilding")
            return None
        mod = _import(name, so)
        meta["c_source"] = (root / f"{name}.c").read_text()
        meta["so_path"] = str(so)
        _debug(f"cache hit {name} ({so})")
        STATS["hits"] += 1
        return mod, meta
    except (OSError, ValueError, KeyError, ImportError) as exc:
        _debug(f"cache miss for {key}: {type(exc).__name__}: {exc}")
        return None


def _atomic_write(path: Path, data: str):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _compile(cmds: list, c_path: Path, c_source: str):
    """Run the compiler commands side by side; BuildError (with the command, the
    compiler's message and the generated C's path) if one fails."""
    procs = []
    try:
        for cmd in cmds:
            procs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True)))
        results = [(cmd, p.communicate(timeout=600), p.returncode) for cmd, p in procs]
    except (OSError, subprocess.SubprocessError) as exc:
        for _, p in procs:
            p.kill()
        _atomic_write(c_path, c_source)
        raise BuildError(
            f"could not run the C compiler: {exc}\n  command: {shlex.join(cmds[0])}\n"
            f"  generated C: {c_path}\nInstall gcc or set CC to a C compiler.") from exc
    for cmd, (_, err), rc in results:
        if rc != 0:
            _atomic_write(c_path, c_source)
            raise BuildError(
                f"the C compiler failed (exit {rc})\n"
                f"  command: {shlex.join(cmd)}\n  generated C: {c_path}\n"
                f"  compiler output:\n{err.strip()}")


def build(key: str, c_source: str, cdef: str, meta: dict):
    """Compile ``c_source`` with its cffi wrapper and load it; record it under
    ``key``.  Returns (module, meta)."""
    import cffi
    root = cache_dir()
    try:
        (root / "index").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(
            f"cannot create symnet's cache directory {root}: {exc}. Set SYMNET_CACHE_DIR "
            "to a writable folder.") from exc
    name = f"_symnet_{build_key(c_source, cdef)}"
    so = root / f"{name}{EXT}"
    c_path = root / f"{name}.c"
    if not (so.exists() and (root / f"{name}.json").exists()
            and _sha(so) == json.loads((root / f"{name}.json").read_text()).get("sha256")):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp:
            tmp = Path(tmp)
            (tmp / f"{name}.c").write_text(c_source)
            # Two translation units compiled at the same time: the kernels at full
            # optimisation, and cffi's wrapper (Python.h, argument conversion) at
            # -O1 (it only converts arguments); then one link.  Measured, medium
            # network, loaded 2-core machine: build step 0.93 s as one -O3 unit,
            # 0.70-0.76 s this way; whole cold compile median 1.19 → 1.12 s.
            ffi = cffi.FFI()
            ffi.cdef(cdef)
            ffi.set_source(name, cdef)  # the kernels' prototypes; they are linked in
            wrapper = tmp / f"{name}_cffi.c"
            with contextlib.redirect_stdout(io.StringIO()):  # cffi says "generating ..."
                ffi.emit_c_code(str(wrapper))
            out = tmp / f"{name}{EXT}"
            inc = sysconfig.get_paths()["include"]
            fl = flags()
            light = ["-O1" if f == "-O3" else f for f in fl]
            steps = [[*compiler(), *fl, "-c", str(tmp / f"{name}.c"), "-o", str(tmp / "k.o")],
                     [*compiler(), *light, f"-I{inc}", "-c", str(wrapper), "-o",
                      str(tmp / "w.o")]]
            link = [*compiler(), *fl, "-shared", str(tmp / "w.o"), str(tmp / "k.o"), "-o",
                    str(out), "-lm"]
            _compile(steps, c_path, c_source)
            _compile([link], c_path, c_source)
            os.replace(tmp / f"{name}.c", c_path)
            os.replace(out, so)
        STATS["compiled"] += 1
        _debug(f"compiled {name} in {time.perf_counter() - t0:.3f} s: "
               + "; ".join(shlex.join(c) for c in [*steps, link]))
    meta = dict(meta, module=name, sha256=_sha(so))
    _atomic_write(root / f"{name}.json", json.dumps(meta, indent=1))
    _atomic_write(root / "index" / f"{key}.json", json.dumps({"module": name}))
    mod = _import(name, so)
    meta["c_source"] = c_source
    meta["so_path"] = str(so)
    return mod, meta
