"""What this machine's matrix products should run on, measured once and cached.

A compiled network's products run either on its own register-blocked kernels
(``templates/gemm.c.j2``, on up to ``threads_max`` OpenMP threads) or, above a
size, on an optimised BLAS installed from PyPI (``scipy-openblas32``, the
OpenBLAS that NumPy and SciPy ship; ``pip install symnet[blas]``), which
follows the machine's instruction set and core count.  Which one wins, and from
how much work a thread pays for its join, depends on the machine, so both are
measured the first time a network is loaded on it:

* ``rate``: multiply-adds per second of one thread on a 128×256×784 product;
* ``join``: seconds a product on all threads costs beyond its share of the
  work (that product on all threads less 1/n of it on one; at least an empty
  parallel region's fork and join): the wake-up of threads, and on a busy
  machine the wait for a thread the system runs late;
* ``thread_min = max(2·join·rate, 10 µs·rate)``: each thread gets at least the
  work of two joins (and 10 µs), so a product on n threads costs less than on one;
* ``blas_min``: the M·N·K from which BLAS was faster than our kernels on every
  measured product at least that large (``inf``: never, or no BLAS installed).

The figures go to ``<cache>/machine-<key>.json`` (key: compiler, flags, CPU),
so the measurement (about a second) happens once per machine and compiler
settings.  The exported C (``standalone``) never sees any of this: the hooks
exist only in the in-process build (``SN_USE_BLAS``).

Environment: ``SYMNET_BLAS=0`` keeps every product on symnet's kernels;
``SYMNET_BLAS_MIN`` / ``SYMNET_PARALLEL_MIN`` override the two thresholds (M·N·K);
``OMP_NUM_THREADS`` (or ``SYMNET_OPENMP=0``: one) caps the threads.

>>> t = machine()
>>> sorted(t)[:3]
['blas', 'blas_min', 'join_s']
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import math
import os
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from ...version import __version__

from . import build

#: cblas symbol names by dtype in scipy-openblas32
_SYMBOLS = {"float32": "scipy_cblas_sgemm", "float64": "scipy_cblas_dgemm"}
_BLAS_FN = ("void (*)(int, int, int, int, int, int, {real}, const {real} *, int, "
            "const {real} *, int, {real}, {real} *, int)")


def _env_float(name: str):
    v = os.environ.get(name)
    if not v:
        return None
    try:
        return float(v)
    except ValueError:
        raise ValueError(f"{name} must be a number (multiply-adds), got {v!r}") from None


def threads_max() -> int:
    """Threads a product may use: the cores this process may run on, capped by
    OMP_NUM_THREADS; 1 with SYMNET_OPENMP=0."""
    if os.environ.get("SYMNET_OPENMP", "1") in ("0", "false", "no"):
        return 1
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return max(1, n)


# ------------------------------------------------------------------ the BLAS
@lru_cache(maxsize=1)
def blas_library():
    """(path, ctypes.CDLL) of scipy-openblas32, or None when it is not installed,
    cannot be loaded, or SYMNET_BLAS=0.  Found without importing the package
    (its import reads package metadata: ~20 ms)."""
    if os.environ.get("SYMNET_BLAS", "1") in ("0", "false", "no"):
        return None
    try:
        spec = importlib.util.find_spec("scipy_openblas32")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    libdir = Path(list(spec.submodule_search_locations)[0]) / "lib"
    # OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each call, taking
    # the cores that symnet's own threaded products run on next; 2^4: they sleep at
    # once (a wake-up costs microseconds against the milliseconds of a BLAS-sized
    # product).  Read when the library loads; a user's own setting wins.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    for path in sorted(libdir.glob("libscipy_openblas*")):
        if path.suffix in (".so", ".dylib", ".dll") or ".so." in path.name:
            try:
                lib = ctypes.CDLL(str(path))
                getattr(lib, _SYMBOLS["float32"])
            except (OSError, AttributeError):
                continue
            return str(path), lib
    return None


def blas_pointer(ffi, dtype: str):
    """The library's ?gemm as a cffi function pointer for a module's tune(), or NULL."""
    found = blas_library()
    if found is None:
        return ffi.NULL
    fn = getattr(found[1], _SYMBOLS[dtype])
    real = "float" if dtype == "float32" else "double"
    return ffi.cast(_BLAS_FN.format(real=real), ctypes.cast(fn, ctypes.c_void_p).value)


def blas_threads(mnk: float, thread_min: float, nmax: int) -> int:
    """Threads for the library's products: as many as the cost model gives a
    product of ``mnk`` multiply-adds (the smallest the library runs).

    >>> blas_threads(1e9, 1e8, 16), blas_threads(1e9, 1e10, 16)
    (10, 1)
    """
    return int(max(1, min(nmax, mnk // thread_min)))


def _set_blas_threads(n: int):
    found = blas_library()
    if found is not None:
        try:
            found[1].scipy_openblas_set_num_threads(ctypes.c_int(n))
        except AttributeError:
            pass


# ----------------------------------------------------------------- the probe
_PROBE_CDEF = ("void sn_probe_tune(" + _BLAS_FN.format(real="float") + ", double, double, int);\n"
               "void sn_probe_gemm(int kind, int M, int N, int K, const float *A,"
               " const float *B, float *C, int reps);\n"
               "void sn_probe_join(int threads, int reps);\n")


@contextlib.contextmanager
def _probe():
    """The probe (templates/probe.c.j2: the networks' own matrix code and two
    timing loops) as a plain shared library, opened with cffi's ABI mode: it is
    needed once per machine, so it lives in a temporary folder for the
    measurement only and never enters the cache of networks."""
    import cffi
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(build.template_dir()),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    source = env.get_template("probe.c.j2").render(
        version=__version__, real="float", hooks=True, prefix="sn_probe_")
    with tempfile.TemporaryDirectory(prefix=".probe-", dir=build.writable_cache_dir()) as tmp:
        c_path, so = Path(tmp) / "probe.c", Path(tmp) / "probe.so"
        c_path.write_text(source)
        cmd = [*build.compiler(), *build.flags(), "-shared", str(c_path), "-o", str(so), "-lm"]
        build._run_compiler([cmd], c_path, source)
        ffi = cffi.FFI()
        ffi.cdef(_PROBE_CDEF)
        yield ffi, ffi.dlopen(str(so))


def _seconds(call, reps: int, rounds: int = 5, best: bool = True) -> float:
    """Seconds of one of `reps` calls: the least (``best``: the product's own
    speed, which other programs on the machine only ever slow down) or the
    median over `rounds` rounds."""
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call(reps)
        out.append((time.perf_counter() - t0) / reps)
    return min(out) if best else sorted(out)[len(out) // 2]


#: products timed for the BLAS threshold: (kind, M, N, K); kind 0 = A·Bᵀ, 1 = A·B,
#: 2 = Aᵀ·B, as a network's forward, input-gradient and weight-gradient products
SHAPES = [(k, m, n, kk) for (m, n, kk) in
          [(32, 64, 64), (32, 128, 64), (64, 128, 128), (128, 128, 256), (128, 256, 784),
           (256, 256, 256), (256, 1024, 1024)] for k in (0, 1, 2)]


def measure(budget_s: float = 0.5) -> dict:
    """Measure this machine (about a second); see the module docstring."""
    with _probe() as (ffi, lib):
        return _measure(ffi, lib, budget_s)


def _measure(ffi, lib, budget_s: float) -> dict:
    import numpy as np
    nmax = threads_max()
    null = ffi.cast(_BLAS_FN.format(real="float"), 0)
    rng = np.random.default_rng(0)
    big = max(m * kk for _, m, _, kk in SHAPES) + max(n * kk for _, _, n, kk in SHAPES)
    A = rng.standard_normal(big).astype(np.float32)
    B = rng.standard_normal(big).astype(np.float32)
    C = np.zeros(max(m * n for _, m, n, _ in SHAPES), np.float32)
    pa, pb, pc = (ffi.from_buffer("float[]", x) for x in (A, B, C))

    def gemm_s(kind, M, N, K, best=True):
        mnk = M * N * K
        reps = max(1, int(2e6 / mnk * 4))  # ≈ a millisecond per round or more
        return _seconds(lambda r: lib.sn_probe_gemm(kind, M, N, K, pa, pb, pc, r), reps,
                        5, best)

    lib.sn_probe_tune(null, math.inf, 1e300, 1)
    shape = (0, 128, 256, 784)      # the medium network's first product
    mnk = shape[1] * shape[2] * shape[3]
    rate = mnk / gemm_s(*shape)
    join = 0.0
    if nmax > 1:
        # What one parallel product costs beyond its share of the work: the same
        # product on all threads against one (medians: a product waits for its
        # slowest thread, which a busy machine delays), and never less than an
        # empty parallel region (fork and join).
        one = gemm_s(*shape, best=False)
        lib.sn_probe_tune(null, math.inf, 1.0, nmax)
        many = gemm_s(*shape, best=False)
        empty = _seconds(lambda r: lib.sn_probe_join(nmax, r), 100, 5, best=False)
        join = max(many - one / nmax, empty)
    # each thread gets the work of two joins, and never less than 10 µs of work
    thread_min = max(2.0 * join * rate, 1e-5 * rate)
    out = {"version": __version__, "rate": rate, "join_s": join, "threads_max": nmax,
           "thread_min": thread_min, "blas": None, "blas_min": math.inf, "shapes": []}
    found = blas_library()
    if found is None:
        return out
    out["blas"] = found[0]
    blas = blas_pointer(ffi, "float32")
    # from the largest product down, while BLAS wins (by 5 %) every product of a
    # size: blas_min is the smallest size it won at; smaller ones only favour our
    # kernels further (no packing, no threads to wake), so the sweep stops there
    t_end = time.perf_counter() + budget_s
    blas_min = math.inf
    sizes = sorted({(m, n, kk) for _, m, n, kk in SHAPES}, key=lambda s: -s[0] * s[1] * s[2])
    for M, N, K in sizes:
        won = True
        # the library gets the threads our cost model gives a product this size: on a
        # busy machine its statically split products stall on a late thread
        _set_blas_threads(blas_threads(M * N * K, thread_min, nmax))
        for kind in (0, 1, 2):
            lib.sn_probe_tune(null, math.inf, thread_min, nmax)
            ours = gemm_s(kind, M, N, K)
            lib.sn_probe_tune(blas, 0.0, thread_min, nmax)
            theirs = gemm_s(kind, M, N, K)
            out["shapes"].append([kind, M, N, K, ours, theirs])
            won = won and theirs < 0.95 * ours
        if not won:
            break
        blas_min = M * N * K
        if time.perf_counter() > t_end:
            break
    out["blas_min"] = blas_min
    return out


# ------------------------------------------------------------------- caching
def _path() -> Path:
    # keyed like a network's module but without running the compiler for its
    # version string (a cache hit must stay cheap: that subprocess costs ~5 ms)
    key = hashlib.sha256(json.dumps(["machine", __version__, build.compiler(), build.flags(),
                                     build._cpu()]).encode()).hexdigest()[:20]
    return build.writable_cache_dir() / f"machine-{key}.json"


def _defaults(why: str) -> dict:
    """Fixed settings where the machine cannot be measured (no working compiler)."""
    return {"version": __version__, "rate": 0.0, "join_s": 0.0, "threads_max": 2,
            "thread_min": 3e7, "blas": None, "blas_min": math.inf, "shapes": [],
            "error": why}


@lru_cache(maxsize=4)
def _machine(path: str) -> dict:
    p = Path(path)
    try:
        rec = build._unseal(p)
        if rec.get("version") == __version__:
            return rec
    except (OSError, ValueError):
        pass
    try:
        rec = measure()
    except build.BuildError as exc:  # the network itself was built: keep it usable
        build._debug(f"the machine could not be measured: {exc}")
        return _defaults(str(exc).splitlines()[0])
    build._atomic_write(p, build._seal(rec))
    build._debug(f"measured this machine: {json.dumps(rec)}")
    return rec


def machine() -> dict:
    """This machine's measured figures (cached in the cache directory)."""
    try:
        path = _path()
    except (build.BuildError, OSError) as exc:  # no writable cache: a loaded module
        return _defaults(str(exc).splitlines()[0])  # still runs, on the defaults
    return dict(_machine(str(path)))


def settings() -> dict:
    """The thresholds products use now: the measured ones unless overridden."""
    if os.environ.get("SYMNET_SANITIZE"):  # no probe under the sanitizers: fixed defaults
        rec = _defaults("SYMNET_SANITIZE")
    else:
        rec = machine()
    nmax = min(threads_max(), rec.get("threads_max") or threads_max())
    blas_min = _env_float("SYMNET_BLAS_MIN")
    thread_min = _env_float("SYMNET_PARALLEL_MIN")
    blas = rec["blas"]
    if os.environ.get("SYMNET_BLAS", "1") in ("0", "false", "no"):
        blas = None
    elif blas_min is not None and blas is None and blas_library() is not None:
        blas = blas_library()[0]
    return {"blas": blas, "blas_min": rec["blas_min"] if blas_min is None else blas_min,
            "thread_min": rec["thread_min"] if thread_min is None else thread_min,
            "threads_max": nmax}


def apply(module, prefix: str, dtype: str) -> dict:
    """Give a loaded network module its products' settings; returns them."""
    tune = getattr(module.lib, prefix + "tune", None)
    if tune is None:
        return {}
    s = settings()
    use_blas = s["blas"] is not None and s["blas_min"] < math.inf
    ptr = blas_pointer(module.ffi, dtype) if use_blas else module.ffi.NULL
    use_blas = use_blas and ptr != module.ffi.NULL
    if use_blas:
        _set_blas_threads(blas_threads(max(s["blas_min"], 1.0), s["thread_min"],
                                       s["threads_max"]))
    tune(ptr, s["blas_min"] if use_blas else math.inf, s["thread_min"], s["threads_max"])
    return dict(s, blas=s["blas"] if use_blas else None)


def main(argv=None) -> int:
    """``python -m symnet.backend.c.tuning [--again]``: print this machine's figures; ``--again``
    measures anew (e.g. when the first measurement ran on a busy machine)."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m symnet.backend.c.tuning", description=main.__doc__)
    ap.add_argument("--again", action="store_true", help="measure again and replace the file")
    args = ap.parse_args(argv)
    if args.again:
        with contextlib.suppress(OSError, build.BuildError):
            _path().unlink()
        _machine.cache_clear()
    rec = machine()
    print(json.dumps({k: v for k, v in rec.items() if k != "shapes"}, indent=1))
    print("in use now:", json.dumps(settings()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
