"""C text → loaded cffi module, through a content-addressed cache.

Layout of the cache directory (``SYMNET_CACHE_DIR``, default
``$XDG_CACHE_HOME/symnet`` or ``~/.cache/symnet``; when it cannot be written,
``<tmp>/symnet-<uid>`` with a warning):

    _symnet_<hash>.c            the kernel C (no Python in it)
    _symnet_<hash>.<ext>        the compiled extension module
    _symnet_<hash>.json         what the model needs to use it, and the
                                sha256 of the module and of the C
    _symnet_<hash>.lock         held while one process builds the module
    index/<key>.json            network description key → module name, so a
                                cache hit needs neither sympy nor the compiler
    kernels-<hash>.c            the matrix driver shared by every network
    kernels-<hash>.o            (templates/kernels.c.j2), compiled once per
    kernels-<hash>.json         compiler, flags, CPU, number type and register
                                tile, and linked into each module
    wrapper-<hash>.c/.o/.json   cffi's wrapper of a set of declarations with the
                                network's prefix written symnet_net_ (on Linux):
                                compiled once, linked into every module that
                                declares the same functions, its names aliased
                                to the module's own at the link (--defsym)

``<hash>`` covers the C text, the compiler command, its version, the flags
and the Python ABI; builds happen in a private temporary folder and are
renamed into place, so concurrent builds of one network all succeed.  The
JSON records carry a checksum of themselves; any file that fails its check
is rebuilt, and a module is loaded only after its checksum matched.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from functools import lru_cache
from pathlib import Path

from ...version import __version__

EXT = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


class BuildError(RuntimeError):
    """The C compiler failed or could not be run.

    The message shows the command, the compiler's own message and the path of
    the generated C.  Fix: install a C compiler (``apt install gcc``) or point
    ``CC`` at one, e.g. ``CC=gcc``.
    """


def template_dir() -> Path:
    """templates/ ships inside the package when installed, beside it in a checkout."""
    package = Path(__file__).resolve().parents[2]            # symnet/
    for cand in (package / "templates", package.parent / "templates"):
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
    cc = os.environ.get("CC", "").strip() or sysconfig.get_config_var("CC") or "cc"
    try:
        return shlex.split(cc)
    except ValueError as exc:
        raise BuildError(f"CC={cc!r} cannot be read as a command ({exc}); set CC to a C "
                         "compiler, e.g. CC=gcc") from None


_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_switch(name: str, default: bool) -> bool:
    """An on/off setting of the environment: 1/0, true/false, yes/no or on/off, in
    any case; unset or empty: ``default``.  Anything else is refused (a ValueError
    naming it): SYMNET_OPENMP=off or SYMNET_BLAS=flase was taken as on."""
    text = os.environ.get(name, "")
    word = text.strip().lower()
    if not word:
        return default
    if word in _ON or word in _OFF:
        return word in _ON
    raise ValueError(f"{name} must be 1/0, true/false, yes/no or on/off (any case; empty: "
                     f"the default), got {text!r}")


def flags() -> list[str]:
    """Optimisation flags; ``SYMNET_PORTABLE=1`` drops -march=native."""
    # SN_USE_BLAS: the in-process build's tuning hooks (symnet/tuning.py); the
    # emitted C without it is the standalone, libm-only form
    f = ["-O3", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd",
         "-DSN_SIMD", "-DSN_USE_BLAS"]
    if env_switch("SYMNET_OPENMP", True):
        # threads for large products; SYMNET_OPENMP=0 turns them off.  How many: set
        # when a module loads (symnet/tuning.py; SYMNET_PARALLEL_MIN overrides)
        f.append("-fopenmp")
    if not env_switch("SYMNET_PORTABLE", False):
        # SYMNET_MARCH=x86-64-v3 checks AVX2 code on an AVX-512 machine
        f.append("-march=" + (os.environ.get("SYMNET_MARCH", "").strip() or "native"))
        if platform.machine() in ("x86_64", "AMD64"):
            # full-width AVX-512 tiles: measured 100 vs 80 GFLOP/s per core (gcc 12, Zen 4)
            f.append("-mprefer-vector-width=512")
    san = os.environ.get("SYMNET_SANITIZE")
    if san:
        # -O1 as the sanitizers' own docs advise (UBSan at -O3 compiles 10x
        # slower); reports are fatal, so a CI run cannot pass with one in its log.
        f[0] = "-O1"
        f += [f"-fsanitize={san}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
              "-g"]
    return f


def _run_all(cmds: list, timeout: float, meanwhile=None) -> list[tuple[int, str]]:
    """[(exit status, output)] of commands run side by side, each in its own
    process group, so that a timeout or Ctrl-C also ends the programs they
    started (cc1, as, ld); OSError if one cannot start, TimeoutExpired
    after killing them all.  ``meanwhile``: called once the commands have
    started; it returns more commands to run beside them (Python work that
    overlaps the compiler's)."""
    env = os.environ
    if "LD_PRELOAD" in env:  # a sanitized run's runtime only slows the compiler down
        keep = [p for p in env["LD_PRELOAD"].replace(":", " ").split() if "san." not in p]
        env = dict(env, LD_PRELOAD=" ".join(keep))
    procs, results = [], []
    deadline = time.monotonic() + timeout

    def start(cmd):
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True, env=env))
    try:
        for cmd in cmds:
            start(cmd)
        if meanwhile is not None:
            for cmd in meanwhile():
                cmds.append(cmd)
                start(cmd)
        for proc in procs:
            output = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))[0]
            results.append((proc.returncode, output))
        return results
    except BaseException:
        for proc in procs:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        raise


def _run(cmd: list, timeout: float) -> tuple[int, str]:
    return _run_all([cmd], timeout)[0]


@lru_cache(maxsize=8)
def _compiler_version(cmd: tuple) -> str:
    try:
        rc, out = _run([*cmd, "--version"], min(compile_timeout(), 30))
        return out.splitlines()[0] if out else f"rc={rc}"
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
    package = Path(__file__).resolve().parents[2]            # symnet/
    h = hashlib.sha256(__version__.encode())
    files = sorted(f for f in package.rglob("*.py") if "bench" not in f.parts)
    files += sorted(template_dir().glob("*.j2"))
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
    if env_switch("SYMNET_DEBUG", False):     # SYMNET_DEBUG=0 is off, as the other switches
        print(f"[symnet] {msg}", file=sys.stderr)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------ sealed records
# Every JSON file of the cache carries the sha256 of its own content, so a
# truncated or garbled record reads as a miss instead of as wrong sizes that
# would send the kernels outside their arrays.

_NAME = re.compile(r"_symnet_[0-9a-f]{20}")


def _seal(record: dict) -> str:
    body = json.dumps(record, sort_keys=True)
    return json.dumps({"record": record, "sha256": hashlib.sha256(body.encode()).hexdigest()})


def _unseal(path: Path) -> dict:
    """The record in ``path``; ValueError if it is not exactly what was written."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("record"), dict):
        raise ValueError(f"{path.name} is not a symnet record")
    body = json.dumps(data["record"], sort_keys=True)
    if hashlib.sha256(body.encode()).hexdigest() != data.get("sha256"):
        raise ValueError(f"{path.name} fails its checksum")
    return data["record"]


def _entry(root: Path, name: str) -> dict:
    """The meta of a cached module after checking every file of it against
    the recorded checksums.  Raises (OSError, ValueError) on any damage; the
    module itself is never loaded before this passes, since loading a
    damaged shared object can kill the process."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a symnet module name")
    meta = _unseal(root / f"{name}.json")
    if meta.get("module") != name:
        raise ValueError(f"{name}.json describes {meta.get('module')!r}")
    if _sha(root / f"{name}{EXT}") != meta.get("sha256"):
        raise ValueError(f"{name}{EXT} fails its checksum")
    c_source = (root / f"{name}.c").read_text()
    if hashlib.sha256(c_source.encode()).hexdigest() != meta.get("c_sha256"):
        raise ValueError(f"{name}.c fails its checksum")
    return dict(meta, c_source=c_source, so_path=str(root / f"{name}{EXT}"))


# ------------------------------------------------------------------ loading
_loaded: dict[str, object] = {}
STATS = {"compiled": 0, "hits": 0, "kernels": 0, "wrappers": 0}  # in this process, for tests and SYMNET_DEBUG


def _check_sanitizer_runtime(meta: dict):
    """An AddressSanitizer module aborts a process whose first library is not
    libasan; say so before loading it instead."""
    if "address" not in meta.get("sanitize", ""):
        return
    import ctypes
    if not hasattr(ctypes.CDLL(None), "__asan_init"):
        raise BuildError(
            f"this module was built with SYMNET_SANITIZE={meta['sanitize']} and needs the "
            "AddressSanitizer runtime loaded first: run Python as\n"
            "  LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 "
            "python ...\n(or see .ci/sanitize); unset SYMNET_SANITIZE for a normal build.")


def gomp_environment():
    """How OpenMP threads wait, set before libgomp loads (a user's own setting wins)."""
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "10000"


def _import(name: str, path: Path, meta: dict):
    """Load the module from a private copy of bytes that passed the checksum:
    what is loaded is exactly what was checked, and the mapping survives
    anything later done to the cache file in place (truncating a loaded
    shared object kills the process with SIGBUS)."""
    if name in _loaded:
        return _loaded[name]
    # OpenMP threads of our kernels wait for the next product by spinning; on a
    # busy machine libgomp's default (300 000 spins) lets a spinning thread hold
    # a core another process needs and a step can stall for a whole scheduler
    # tick (measured: 42 µs products taking 8 ms).  A short spin keeps the fast
    # hand-off on an idle machine.  Read once, when libgomp loads; a user's own
    # setting wins.
    gomp_environment()
    _check_sanitizer_runtime(meta)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise ImportError(f"{path.name} changed after its checksum was verified")
    try:
        private = Path(tempfile.mkdtemp(dir=path.parent, prefix=".load-"))
    except OSError:  # a read-only cache: load the checked file in place
        private = None
    try:
        if private is not None:
            path = private / path.name
            path.write_bytes(data)
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
    _loaded[name] = mod
    return mod


# ----------------------------------------------------------- cache folders
_warned: set = set()


def fallback_dir() -> Path:
    """The per-user folder used when the cache directory is not writable."""
    uid = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    return Path(tempfile.gettempdir()) / f"symnet-{uid}"


def _private(path: Path) -> bool:
    """Ours alone: a real folder, owned by us, writable by nobody else (a
    shared temp folder must not let others plant modules we would load)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o022:
        return False
    return not hasattr(os, "getuid") or st.st_uid == os.getuid()


def _writable(root: Path):
    """None if ``root`` can hold the cache, else the reason it cannot."""
    try:
        (root / "index").mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
        return None
    except OSError as exc:
        return exc


def writable_cache_dir() -> Path:
    """The cache directory, or the per-user fallback (with a warning) when it
    cannot be written; BuildError when neither can."""
    root = cache_dir()
    err = _writable(root)
    if err is None:
        return root
    fb = fallback_dir()
    if fb != root:
        with contextlib.suppress(OSError):
            fb.mkdir(mode=0o700, exist_ok=True)
        fb_err = _writable(fb) if _private(fb) else "not a private folder of this user"
        if fb_err is None:
            if root not in _warned:
                _warned.add(root)
                warnings.warn(
                    f"symnet's cache directory {root} is not writable ({err}); compiling "
                    f"into {fb} instead. Set SYMNET_CACHE_DIR to a writable folder to "
                    "keep compiled networks there.", RuntimeWarning, stacklevel=4)
            return fb
    else:
        fb_err = err
    raise BuildError(
        f"symnet cannot write its cache directory {root} ({err}) nor the fallback "
        f"{fb} ({fb_err}). Set SYMNET_CACHE_DIR to a writable folder, e.g. "
        "SYMNET_CACHE_DIR=$HOME/.cache/symnet.")


def lookup(key: str):
    """(module, meta) for a cached network key, or None.  Never compiles."""
    roots = [cache_dir()]
    if _private(fallback_dir()) and fallback_dir() != roots[0]:
        roots.append(fallback_dir())
    for root in roots:
        try:
            name = _unseal(root / "index" / f"{key}.json")["module"]
            meta = _entry(root, name)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _debug(f"cache miss for {key} in {root}: {type(exc).__name__}: {exc}")
            continue
        try:
            mod = _import(name, Path(meta["so_path"]), meta)
        except ImportError as exc:
            _debug(f"cache entry {name} does not load ({exc}); rebuilding")
            continue
        _debug(f"cache hit {name} ({meta['so_path']})")
        STATS["hits"] += 1
        return mod, meta
    return None


def _atomic_write(path: Path, data: str):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock between processes building the same module, so it
    is compiled once; without flock (rare file systems) builds still succeed,
    each in its own folder, just not once."""
    try:
        import fcntl
        fh = open(path, "a")
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fh.close()


def compile_timeout() -> float:
    """Seconds a compile may take (``SYMNET_CC_TIMEOUT``, default 600)."""
    text = os.environ.get("SYMNET_CC_TIMEOUT", "600")
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    # 0, a negative or nan killed every compile at once ("did not finish within nan s")
    if not seconds > 0:
        raise BuildError(f"SYMNET_CC_TIMEOUT must be a number of seconds above 0, got {text!r}")
    return seconds


def _march_note(cmd: list) -> str:
    """A line naming SYMNET_MARCH where it set the failed command's -march: the
    compiler's own message (gcc: "bad value 'x' for '-march=' switch") does not."""
    march = os.environ.get("SYMNET_MARCH", "").strip()
    if not march or f"-march={march}" not in cmd:
        return ""
    return (f"\n  SYMNET_MARCH={march!r} set -march={march}: if the compiler's message is "
            "about it, name an instruction set this compiler knows (e.g. x86-64-v3) or "
            "unset SYMNET_MARCH")


def _run_compiler(cmds: list, c_path: Path, c_source: str, meanwhile=None):
    """Run compiler commands side by side (and those ``meanwhile`` returns, see
    ``_run_all``); BuildError with the command, its output and the path of the
    generated C if one fails."""
    def fail(what: str, cmd: list, output: str = ""):
        _atomic_write(c_path, c_source)
        tail = f"\n  compiler output:\n{output.strip()}" if output.strip() else ""
        return BuildError(f"{what}\n  command: {shlex.join(cmd)}\n  generated C: {c_path}{tail}")

    timeout = compile_timeout()
    try:
        results = _run_all(cmds, timeout, meanwhile)
    except OSError as exc:
        raise fail(f"could not run the C compiler {cmds[0][0]!r}: {exc}\nInstall gcc or set CC "
                   "to a C compiler, e.g. CC=gcc.", cmds[0]) from exc
    except subprocess.TimeoutExpired:
        raise fail(f"the C compiler did not finish within {timeout:g} s (killed; "
                   "SYMNET_CC_TIMEOUT sets the limit)", cmds[0]) from None
    for cmd, (rc, output) in zip(cmds, results):
        if rc != 0:
            raise fail(f"the C compiler failed (exit {rc}){_march_note(cmd)}", cmd, output)
    return lambda what: fail(what, cmds[-1], results[-1][1])


_SHARED = re.compile(r"(kernels|wrapper)-[0-9a-f]{20}")


def _kernels_ok(root: Path, name: str) -> bool:
    """Whether the shared kernels object ``name`` is in the cache, whole."""
    try:
        rec = _unseal(root / f"{name}.json")
        return rec.get("object") == name and _sha(root / f"{name}.o") == rec.get("sha256")
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _shared_kernels(root: Path, source: str | None, tmp: Path):
    """The object of the shared matrix driver ``source`` (``templates/kernels.c.j2``)
    for a module being built in ``tmp``: yields (object path, compile command or None);
    with a command, the caller runs it beside its own and the object is put into the
    cache (renamed into place, with its checksum) when the block ends without error.
    Held under a lock, so that one process compiles it and the others wait for it.
    ``source`` None: no shared object (yields (None, None))."""
    if source is None:
        yield None, None
        return
    name = f"kernels-{build_key('kernels', source)}"
    obj = root / f"{name}.o"
    if _kernels_ok(root, name):
        yield obj, None
        return
    with _lock(root / f"{name}.lock"):
        if _kernels_ok(root, name):           # built by another process meanwhile
            yield obj, None
            return
        (tmp / f"{name}.c").write_text(source)
        out = tmp / f"{name}.o"
        yield out, [*compiler(), *flags(), "-c", str(tmp / f"{name}.c"), "-o", str(out)]
        sha = _sha(out)
        os.replace(tmp / f"{name}.c", root / f"{name}.c")
        os.replace(out, obj)
        _atomic_write(root / f"{name}.json", _seal({"object": name, "sha256": sha}))
        STATS["kernels"] += 1
        _debug(f"compiled the shared kernels {obj}")


_REALS = {"float32": "float", "float64": "double"}


@lru_cache(maxsize=1)
def driver_digest() -> str:
    """A digest of the matrix driver's templates: the machine's record and the planner's
    timings are of that driver (symnet.backend.c.tuning), so a changed driver measures
    anew instead of reading figures another one ran at.  The files' bytes, not the
    rendered C: a cache hit renders no template."""
    h = hashlib.sha256()
    for name in ("kernels.c.j2", "gemm.c.j2", "gemm_portable.c.j2", "pool.c.j2", "probe.c.j2"):
        path = template_dir() / name
        h.update(path.read_bytes() if path.exists() else name.encode())
    return h.hexdigest()[:16]


@lru_cache(maxsize=4)
def kernels_source(dtype: str) -> str:
    """The C of the matrix driver that every in-process module of this dtype links
    (``templates/kernels.c.j2``: gemm.c.j2's part "kernels"), compiled once per
    machine into the cache by ``build``."""
    if dtype not in _REALS:
        raise ValueError(f"dtype must be one of {list(_REALS)}, got {dtype!r}")
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template_dir()),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("kernels.c.j2").render(
        version=__version__, real=_REALS[dtype], hooks=True, part="kernels", prefix="")


#: a network's prefix in the declarations (symnet.backend.c.emit.emit), and the one
#: name a shared wrapper calls it by
_PREFIX = re.compile(r"\bsymnet_[0-9a-f]{10}_(?=\w)")
_CANON = "symnet_net_"
#: the linker aliases a name to another (GNU ld, gold, lld): where it does not, each
#: module compiles a wrapper of its own
_ALIASES = sys.platform.startswith("linux")


def canonical_cdef(cdef: str) -> tuple[str, dict] | None:
    r"""cffi's declarations of a module as a shared wrapper takes them: comments gone,
    the network's prefix written ``symnet_net_``; with {shared name: the module's own}.
    None where the declarations carry more than one prefix (kept as they are).

    >>> canonical_cdef("/* net */\nint symnet_0123456789_f(int x);\n")
    ('int symnet_net_f(int x);\n', {'symnet_net_f': 'symnet_0123456789_f'})
    """
    text = re.sub(r"/\*.*?\*/", "", cdef, flags=re.S)
    if len(set(_PREFIX.findall(text))) > 1:
        return None
    renames = {}
    for m in re.finditer(r"\b(symnet_[0-9a-f]{10}_)(\w+)", text):
        renames[_CANON + m.group(2)] = m.group(0)
    text = _PREFIX.sub(_CANON, text)
    return "".join(line.rstrip() + "\n" for line in text.splitlines() if line.strip()), renames


def _declarations(canon: str) -> dict | None:
    """{name: declaration, spaces normalised} of canonical declarations
    (``canonical_cdef``); None if one does not name a function ``symnet_net_*``."""
    out = {}
    for decl in canon.split(";"):
        decl = " ".join(decl.split())
        if decl:
            m = re.search(r"\b(" + _CANON + r"\w+)\s*\(", decl)
            if m is None:
                return None
            out[m.group(1)] = decl
    return out


def shared_declarations(canon: tuple[str, dict], every: str) -> tuple[str, str, dict] | None:
    """The one wrapper the in-process networks of a number type share, where the
    module's canonical declarations ``canon`` (``canonical_cdef``) are among ``every``,
    the declarations of every function such a module may define
    (``symnet.backend.c.emit.universal_cdef``): (its
    declarations, its C: the declarations and a stand-in for each function, {shared
    name: the module's own, or the stand-in of a function the module does not
    define}).  The stand-ins return 0 and are never called: symnet calls a function of
    a module only where its network defines it (the class-label passes where the loss
    takes labels).  None where the declarations are others (jets)."""
    mine = _declarations(canon[0])
    found = canonical_cdef(every)
    if not mine or found is None:
        return None
    text = found[0]
    every = _declarations(text)
    if not every or any(every.get(name) != decl for name, decl in mine.items()):
        return None
    # the same C for every module: the declarations and a stand-in for each function
    source = "".join(decl + ";\n" for decl in every.values())
    source += ("/* stand-ins for the functions a network does not define, linked in their "
               "place: never called */\n")
    renames = dict(canon[1])
    for name, decl in every.items():
        own = "sn_absent_" + name[len(_CANON):]
        ret = decl[:decl.index(name)].strip()
        source += ('__attribute__((visibility("hidden"))) ' + decl.replace(name, own, 1)
                   + (" { }\n" if ret == "void" else " { return 0; }\n"))
        if name not in mine:
            renames[name] = own
    return text, source, renames


@contextlib.contextmanager
def _shared_wrapper(root: Path, canon: str, tmp: Path):
    """The object of cffi's wrapper of the declarations ``canon`` (``canonical_cdef``)
    for a module being built in ``tmp``: yields (object path, module name of the
    wrapper, whether the caller must still write and compile it there); a new one goes
    into the cache (renamed into place, with its checksum) when the block ends without
    error.  Held under a lock, as the shared kernels."""
    key = build_key("wrapper", canon)
    name, module = f"wrapper-{key}", f"_symnet_w{key}"
    obj = root / f"{name}.o"
    if _kernels_ok(root, name):
        yield obj, module, False
        return
    with _lock(root / f"{name}.lock"):
        if _kernels_ok(root, name):           # built by another process meanwhile
            yield obj, module, False
            return
        out = tmp / f"{name}.o"
        yield out, module, True
        sha = _sha(out)
        os.replace(tmp / f"{name}.c", root / f"{name}.c")
        os.replace(out, obj)
        _atomic_write(root / f"{name}.json", _seal({"object": name, "sha256": sha}))
        STATS["wrappers"] += 1
        _debug(f"compiled the shared wrapper {obj}")


def _driver_for(c_source: str) -> str | None:
    """The shared driver's C (default tile) that ``c_source`` declares and calls, if any."""
    for dtype, real in _REALS.items():
        if f"void symnet_gemm_{real}(const sn_tuning *sn_t," in c_source:
            return kernels_source(dtype)
    return None


def _splits() -> bool:
    """Whether a network's C may be compiled in two parts (split.py): with a compiler
    that knows hidden visibility (GCC, Clang), on more than one core, unless
    ``SYMNET_SPLIT=0``."""
    if not env_switch("SYMNET_SPLIT", True):
        return False
    if (os.cpu_count() or 1) < 2:
        return False
    version = _compiler_version(tuple(compiler())).lower()
    return "gcc" in version or "clang" in version


def _units(c_source: str, tmp: Path, name: str) -> list[tuple[Path, Path]]:
    """[(C file, object)] to compile for the network's text ``c_source`` (written to
    ``tmp/<name>.c``): its two parts where it divides, else the file itself."""
    if _splits():
        from .split import split
        parts = split(c_source)
        if parts is not None:
            out = []
            for i, text in enumerate(parts):
                src = tmp / f"{name}.part{i + 1}.c"
                src.write_text(f"/* part {i + 1} of 2 of {name}.c (symnet/backend/c/split.py) "
                               f"*/\n{text}")
                out.append((src, tmp / f"k{i + 1}.o"))
            return out
    return [(tmp / f"{name}.c", tmp / "k.o")]


def build(key: str, c_source: str, cdef: str, meta: dict, kernels: str | None = None,
          shared: str | None = None, meanwhile=None):
    """Compile ``c_source`` with its cffi wrapper and load it; record it under
    ``key``.  ``kernels``: the C of the shared matrix driver the source calls
    (``symnet.backend.c.emit.kernels_source``), compiled once into the cache and
    linked in; by default the driver of the default tile when the source calls one.
    ``shared``: the declarations of every function a module of its kind may define
    (``symnet.backend.c.emit.universal_cdef``): where they hold ``cdef``'s, the module
    links the cffi wrapper of all of them, which every such module shares (on Linux).
    ``meanwhile``: called once while the compiler runs (Python work that loading the
    module needs next, which would otherwise wait for the compiler).
    Returns (module, meta)."""
    if kernels is None:         # C rendered for the in-process build calls the shared driver
        kernels = _driver_for(c_source)
    root = writable_cache_dir()
    name = f"_symnet_{build_key(c_source, cdef, kernels or '')}"
    so = root / f"{name}{EXT}"
    c_path = root / f"{name}.c"
    cmd = None
    with _lock(root / f"{name}.lock"):
        try:
            meta = _entry(root, name)  # another process built it while we waited
        except (OSError, ValueError) as exc:
            if so.exists() or c_path.exists():
                _debug(f"cache entry {name} is damaged ({exc}); rebuilding")
            t0 = time.perf_counter()
            canon = canonical_cdef(cdef) if _ALIASES else None
            if canon is not None:
                # (declarations, the wrapper's C, {shared name: the module's own}): the
                # wrapper every network of the number type shares where it can, else
                # the one of modules with the same declarations
                canon = (shared_declarations(canon, shared) if shared else None) or \
                    (canon[0], canon[0], canon[1])
            with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp, \
                    _shared_kernels(root, kernels, Path(tmp)) as (k_obj, k_cmd), \
                    (_shared_wrapper(root, canon[1], Path(tmp)) if canon is not None
                     else contextlib.nullcontext((None, None, True))) as (w_obj, w_mod, w_new):
                tmp = Path(tmp)
                (tmp / f"{name}.c").write_text(c_source)
                fl = flags()
                # Translation units compiled at the same time: the network's kernels at
                # full optimisation, in two parts where they divide (symnet/backend/c/
                # split.py: each part about half the compiler's time, on its own core),
                # and cffi's wrapper (Python.h, argument conversion) at -O1 (it only
                # converts arguments); then one link.  Measured, medium network, loaded
                # 2-core machine: build step 0.93 s as one -O3 unit, 0.70-0.76 s with the
                # wrapper apart; whole cold compile median 1.19 → 1.12 s.  Apart, the
                # names of the user's layers never meet the macros of Python.h.  The
                # kernels (and the shared driver, when it is missing) start first:
                # cffi's parsing of the declarations for the wrapper overlaps them.
                units = _units(c_source, tmp, name)
                steps = [[*compiler(), *fl, "-c", str(src), "-o", str(obj)]
                         for src, obj in units]
                if k_cmd is not None:   # the shared driver, compiled beside the units
                    steps.append(k_cmd)

                # cffi's wrapper: shared by every module with the same declarations (the
                # network's prefix aside) where the linker aliases names, so that only the
                # first such module on a machine compiles it (0.27 s of gcc, and cffi's
                # parsing here); its names are the module's own through --defsym
                w_path = w_obj if canon is not None else tmp / "w.o"

                def wrapper_step():
                    if not w_new:
                        if meanwhile is not None:
                            meanwhile()
                        return []
                    import cffi
                    ffi = cffi.FFI()
                    decl = canon[0] if canon is not None else cdef
                    ffi.cdef(decl)
                    # the prototypes (and stand-ins); the kernels are linked in
                    ffi.set_source(w_mod or name, canon[1] if canon is not None else decl)
                    wrapper = w_path.with_suffix(".c")
                    with contextlib.redirect_stdout(io.StringIO()):  # cffi: "generating ..."
                        ffi.emit_c_code(str(wrapper))
                    light = ["-O1" if f == "-O3" else f for f in fl]
                    inc = sysconfig.get_paths()["include"]
                    return [[*compiler(), *light, f"-I{inc}", "-c", str(wrapper), "-o",
                             str(w_path)]]
                out = tmp / f"{name}{EXT}"
                aliases = []
                if canon is not None:
                    # -Bsymbolic: the module's calls bind to its own functions, also where
                    # modules load into the global scope (RTLD_GLOBAL), and their shared
                    # names are those of every other module's
                    aliases = ["-Wl,-Bsymbolic", f"-Wl,--defsym,PyInit_{name}=PyInit_{w_mod}"] + \
                        [f"-Wl,--defsym,{a}={b}" for a, b in sorted(canon[2].items())]
                try:
                    _run_compiler(steps, c_path, c_source, meanwhile=wrapper_step)
                except BuildError:
                    if len(units) == 1:
                        raise
                    # the parts failed where the whole text may not (a reading of it
                    # split.py got wrong): compile it whole, as the message would show
                    _debug("the network's C in two parts did not compile; compiling it "
                           "whole")
                    units = [(tmp / f"{name}.c", tmp / "k.o")]
                    steps = [[*compiler(), *fl, "-c", str(tmp / f"{name}.c"), "-o",
                              str(tmp / "k.o")]]
                    if k_cmd is not None and not Path(k_cmd[-1]).exists():
                        steps.append(k_cmd)
                    _run_compiler(steps, c_path, c_source,
                                  meanwhile=wrapper_step if not w_path.exists() else None)
                cmd = [*compiler(), *fl, "-shared", str(w_path), *[str(o) for _, o in units],
                       *([str(k_obj)] if k_obj is not None else []), "-o", str(out), "-lm",
                       *aliases]
                fail = _run_compiler([cmd], c_path, c_source)
                if not out.is_file():
                    raise fail("the C compiler reported success but wrote no module")
                if canon is not None:
                    meta = dict(meta, wrapper=w_mod and f"wrapper-{w_mod[len('_symnet_w'):]}")
                    if canon[2]:                    # the functions by their shared names
                        meta = dict(meta, lib_prefix=_CANON)
                meta = dict(meta, module=name, sha256=_sha(out),
                            c_sha256=hashlib.sha256(c_source.encode()).hexdigest(),
                            sanitize=os.environ.get("SYMNET_SANITIZE", ""),
                            kernels=Path(k_obj).stem if k_obj is not None else None)
                os.replace(tmp / f"{name}.c", c_path)
                os.replace(out, so)
                _atomic_write(root / f"{name}.json", _seal(meta))
            STATS["compiled"] += 1
            _debug(f"compiled {name} in {time.perf_counter() - t0:.3f} s: "
                   + "; ".join(shlex.join(c) for c in [*steps, cmd]))
            meta = dict(meta, c_source=c_source, so_path=str(so))
    _atomic_write(root / "index" / f"{key}.json", _seal({"module": name}))
    try:
        mod = _import(name, so, meta)
    except ImportError as exc:
        with contextlib.suppress(OSError):  # compile it afresh next time
            (root / f"{name}.json").unlink()
        for shared in (meta.get("kernels"), meta.get("wrapper")):
            if shared and _SHARED.fullmatch(shared):
                with contextlib.suppress(OSError):  # and the shared objects it linked
                    (root / f"{shared}.json").unlink()
        how = f"\n  command: {shlex.join(cmd)}" if cmd else ""
        raise BuildError(f"the compiled module {so} could not be loaded: {exc}{how}\n"
                         f"  generated C: {c_path}") from exc
    return mod, meta
