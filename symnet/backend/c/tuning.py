"""What this machine's matrix products should run on, measured once and cached.

A compiled network's products run either on its own register-blocked kernels
(``templates/gemm.c.j2``, on up to ``threads_max`` OpenMP threads) or, above a
size, on an optimised BLAS installed from PyPI (``scipy-openblas32``, the
OpenBLAS that NumPy and SciPy ship, a dependency of symnet), which
follows the machine's instruction set and core count.  Which one wins, and from
how much work a thread pays for its join, depends on the machine, so both are
measured the first time a network is loaded on it:

* ``rate``: multiply-adds per second of one thread on a 128×256×784 product;
* ``join``: seconds a 64×128×128 product on all threads costs beyond its share of
  the work (that product on all threads less 1/n of it on one; at least an empty
  hand-over): the hand-over of its jobs to the pool of threads
  (``templates/pool.c.j2``), and on a busy machine the wait for a thread the system
  took away in the middle of a job;
* ``thread_min = max(2·join·rate, 4 µs·rate)``: each thread gets at least the
  work of two joins (and 4 µs), so a product on n threads costs less than on one;
* ``blas_min``: the M·N·K from which BLAS was faster than our kernels on every
  measured product at least that large (``inf``: never, or no BLAS installed);
* ``blas_rate``: multiply-adds per second of the BLAS on the rate's product, on
  the threads the cost model gives it (what the cheap check compares).

The figures go to ``<cache>/machine-<key>.json`` (key: compiler, flags, CPU),
so the measurement (about a second) happens once per machine and compiler
settings.  A machine busy with other programs would make those figures wrong
for good (a join stretched to milliseconds keeps every product on one thread),
so they are guarded against load:

* rates are the least time over repeats; the CPU time of the rest of the
  machine during the measurement (``/proc/stat`` less this process) marks it
  ``disturbed`` when others kept more than a quarter of a core busy
  (:class:`Watch`); up to ``ATTEMPTS`` tries, keeping the best figures;
* a disturbed record is stored as such and measured again by the first process
  that loads it and finds the machine quiet (``QUIET_S`` of ``/proc/stat``:
  :func:`_quiet_now`), at least ``RETRY_S`` after the last try (doubling per
  further disturbed try, at most ``RETRY_MAX_S``), keeping the best figures of
  all tries; a look that finds the machine busy is remembered for ``BUSY_S``
  (``machine-<key>.busy``), so that under lasting load a process seldom waits for
  one, and nothing is measured while the load lasts;
* the compiled probe stays beside the record (``machine-<key>.so``), and a
  process checks the record cheaply when it first loads a network (a few
  milliseconds of timing: :func:`quick_check`: the rate, the join, and the BLAS's
  rate, which with them decides where products run); a record the machine now
  clearly beats is measured again.  A record that passed a check on a quiet
  machine is checked again only after ``CHECK_S`` (doubling with each such pass, at
  most a day: ``machine-<key>.checked``), so that most cache hits open no probe at
  all; a check under load does not lengthen that wait.  A measurement on a quiet
  machine counts as the first pass: it is first checked ``CHECK_S`` after it was
  taken.

On top of these thresholds, a planner (:func:`plan`, ``compile(tune=...)``) times
each product of a network, symnet's kernels against the BLAS, and with
``tune="full"`` the register tiles of ``TILES``, keeping the choices per CPU
model, compiler, flags and product shape in ``<cache>/wisdom-<key>.json``.

The exported C (``standalone``) never sees any of this: the hooks exist only in
the in-process build (``SN_USE_BLAS``).

Environment: ``SYMNET_BLAS=0`` keeps every product on symnet's kernels;
``SYMNET_BLAS_MIN`` / ``SYMNET_PARALLEL_MIN`` override the two thresholds (M·N·K);
``OMP_NUM_THREADS`` (or ``SYMNET_OPENMP=0``: one) caps the threads.

>>> t = machine()
>>> {'blas', 'blas_min', 'join_s'} <= set(t)
True
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import math
import os
import shutil
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
        x = float(v)
    except ValueError:
        x = math.nan
    # nan compared false with every size: SYMNET_PARALLEL_MIN=nan put every product on
    # all threads, as did a negative one, with no word
    if not x >= 0:
        raise ValueError(f"{name} must be a number of multiply-adds, 0 or more (inf: never), "
                         f"got {v!r}")
    return x


def threads_max() -> int:
    """Threads a product may use: the cores this process may run on, capped by
    OMP_NUM_THREADS; 1 with SYMNET_OPENMP=0."""
    if not build.env_switch("SYMNET_OPENMP", True):
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
def blas_off() -> bool:
    """SYMNET_BLAS=0 (or false, no, off): every product on symnet's kernels."""
    return not build.env_switch("SYMNET_BLAS", True)


@lru_cache(maxsize=1)
def blas_library():
    """(path, ctypes.CDLL) of scipy-openblas32, or None when it is not installed,
    cannot be loaded, or SYMNET_BLAS=0.  Found without importing the package
    (its import reads package metadata: ~20 ms)."""
    if blas_off():
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
               "void sn_probe_pack(int kind, int N, int K, const float *B, float *Bp);\n"
               "void sn_probe_gemm_packed(int kind, int M, int N, int K, const float *A,"
               " const float *B, const float *Bp, float *C, int reps);\n"
               "size_t sn_probe_packed_size(int N, int K);\n"
               "void sn_probe_join(int threads, int reps);\n")


def _build_probe(so: Path):
    """Compile the probe (templates/probe.c.j2: the networks' own matrix code and
    two timing loops) as a plain shared library at ``so``: beside the machine's
    record, for the cheap check of the record when a later process loads it."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(build.template_dir()),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    source = env.get_template("probe.c.j2").render(
        version=__version__, real="float", hooks=True, prefix="sn_probe_")
    with tempfile.TemporaryDirectory(prefix=".probe-", dir=so.parent) as tmp:
        c_path, out = Path(tmp) / "probe.c", Path(tmp) / "probe.so"
        c_path.write_text(source)
        cmd = [*build.compiler(), *build.flags(), "-shared", str(c_path), "-o", str(out), "-lm"]
        build._run_compiler([cmd], c_path, source)
        os.replace(out, so)


def _open_probe(so: Path, sha: str | None = None):
    """(ffi, lib) of a compiled probe, opened with cffi's ABI mode from a private
    copy (checked against ``sha`` when given: ValueError if it differs)."""
    import cffi
    data = so.read_bytes()
    if sha is not None and hashlib.sha256(data).hexdigest() != sha:
        raise ValueError(f"{so.name} fails its checksum")
    build.gomp_environment()
    ffi = cffi.FFI()
    ffi.cdef(_PROBE_CDEF)
    fd, tmp = tempfile.mkstemp(dir=so.parent, prefix=".load-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mapped: the file's name may go at once.  Never unmapped (RTLD_NODELETE): the
        # probe's products run on its own pool of threads (templates/pool.c.j2), which
        # wait inside its code for good; cffi closes a library whose object is collected
        lib = ffi.dlopen(tmp, ffi.RTLD_NOW | ffi.RTLD_NODELETE)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return ffi, lib


@contextlib.contextmanager
def _probe(keep: Path | None = None):
    """The probe compiled into a temporary folder (and copied to ``keep``)."""
    with tempfile.TemporaryDirectory(prefix=".probe-", dir=build.writable_cache_dir()) as tmp:
        so = Path(tmp) / "probe.so"
        _build_probe(so)
        if keep is not None:
            shutil.copyfile(so, Path(tmp) / "keep.so")
            os.replace(Path(tmp) / "keep.so", keep)
        yield _open_probe(so)


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


# ------------------------------------------------------------------ the load
@lru_cache(maxsize=1)
def _clock_ticks() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100.0


def _machine_busy_s():
    """Seconds of CPU time the whole machine has spent so far (all programs, and
    time the hypervisor gave to others: "steal"), from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            f = fh.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f[1:9])
        return (user + nice + system + irq + softirq + steal) / _clock_ticks()
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Watch:
    """Whether a measurement ran on a quiet machine: over its wall time, the CPU time
    of this process and of everything else on the machine.

    ``others``: cores other programs kept busy on average (from /proc/stat, whose
    10 ms ticks blur a few hundredths); ``disturbed``: they kept more than
    ``OTHERS_MAX`` of a core busy, so this process's threads were (or may have been)
    descheduled: a thread join then measures the wait for a thread the system runs
    late, not the machine."""

    OTHERS_MAX = 0.25

    def __enter__(self):
        self.wall, self.cpu, self.busy = time.perf_counter(), time.process_time(), \
            _machine_busy_s()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        busy = _machine_busy_s()
        self.others = None if busy is None or self.busy is None else \
            max(0.0, (busy - self.busy - self.cpu) / max(self.wall, 1e-9))
        return False

    @property
    def disturbed(self) -> bool:
        # /proc/stat counts whole ticks: two of them over a short wall time are no load
        tick = 1.0 / _clock_ticks()
        return self.others is not None and \
            self.others > self.OTHERS_MAX + 2 * tick / max(self.wall, 1e-9)


def own_threads_busy(window_s: float = 0.01) -> float:
    """Cores the other threads of this process kept busy over ``window_s`` (this
    process's CPU time less the calling thread's): e.g. a BLAS's threads that spin for
    a while after a product (numpy's OpenBLAS does).  /proc/stat's watch cannot see them
    (they are this process), yet on a 2-core machine one of them takes the core an
    OpenMP thread of ours needs.  (The bench used to measure the machine right after
    timing numpy's matmul, and printed a 2-thread join of 1.3 ms on a quiet 2-core
    machine, ten times what it measures otherwise.)"""
    p0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
    time.sleep(window_s)
    p1, t1, w1 = time.process_time(), time.thread_time(), time.perf_counter()
    return max(0.0, (p1 - p0) - (t1 - t0)) / max(w1 - w0, 1e-9)


def own_threads_idle(limit_s: float = 0.3) -> float:
    """Wait until the other threads of this process leave the cores alone (a tenth of a
    core at most), for ``limit_s`` at most; returns the cores they kept busy last."""
    end = time.perf_counter() + limit_s
    while True:
        busy = own_threads_busy()
        if busy < 0.1 or time.perf_counter() > end:
            return busy


#: products timed for the BLAS threshold: (kind, M, N, K); kind 0 = A·Bᵀ, 1 = A·B,
#: 2 = Aᵀ·B, as a network's forward, input-gradient and weight-gradient products
SHAPES = [(k, m, n, kk) for (m, n, kk) in
          [(32, 64, 64), (32, 128, 64), (64, 128, 128), (128, 128, 256), (128, 256, 784),
           (256, 256, 256), (256, 1024, 1024)] for k in (0, 1, 2)]

#: the product that rate is measured on: the medium network's first one
RATE_SHAPE = (0, 128, 256, 784)

#: the product the join is measured on (≈ 35 µs on one thread): small enough that what
#: it shows is the hand-over of a product's jobs to the pool's threads, which products
#: of every size pay, rather than how a large product scales (memory, the split of its
#: column blocks: 15 % of the 128×256×784 product, which does not count against a
#: product of 0.3 M multiply-adds)
JOIN_SHAPE = (0, 64, 128, 128)


class _Arrays:
    """Operands big enough for every product the probe times (``small``: for
    RATE_SHAPE and JOIN_SHAPE only); the values do not change the time of a product."""

    def __init__(self, ffi, small: bool = False):
        import numpy as np
        _, m, n, k = RATE_SHAPE if small else (0, 1024, 1024, 2048)
        self.keep = [np.full(m * k, 0.5, np.float32), np.full(n * k, 0.25, np.float32),
                     np.zeros(m * n, np.float32)]
        self.a, self.b, self.c = (ffi.from_buffer("float[]", x) for x in self.keep)


def _rate_and_join(ffi, lib, arrays, nmax: int, rounds: int = 5) -> tuple[float, float]:
    """(multiply-adds per second of one thread on RATE_SHAPE, seconds of a join on
    JOIN_SHAPE)."""
    null = ffi.cast(_BLAS_FN.format(real="float"), 0)

    def gemm_s(shape, best, reps=1):
        kind, M, N, K = shape
        return _seconds(lambda r: lib.sn_probe_gemm(kind, M, N, K, arrays.a, arrays.b,
                                                    arrays.c, r), reps, rounds, best)
    lib.sn_probe_tune(null, math.inf, 1e300, 1)
    rate = RATE_SHAPE[1] * RATE_SHAPE[2] * RATE_SHAPE[3] / gemm_s(RATE_SHAPE, True)
    join = 0.0
    if nmax > 1:
        # What one parallel product costs beyond its share of the work: the same
        # product on all threads against one (medians: a product waits for its
        # slowest thread, which a busy machine delays), and never less than an
        # empty hand-over to the pool.
        one = gemm_s(JOIN_SHAPE, False, 30)
        lib.sn_probe_tune(null, math.inf, 1.0, nmax)
        many = gemm_s(JOIN_SHAPE, False, 30)
        empty = _seconds(lambda r: lib.sn_probe_join(nmax, r), 20, rounds, best=False)
        join = max(many - one / nmax, empty)
        lib.sn_probe_tune(null, math.inf, 1e300, 1)
    return rate, join


def _thread_min(rate: float, join: float) -> float:
    # each thread gets the work of two joins, and never less than 4 µs of work (a pool
    # thread that comes late costs the caller nothing: it finds the jobs taken)
    return max(2.0 * join * rate, 4e-6 * rate)


def measure(budget_s: float = 0.5, keep: Path | None = None, sha: str | None = None) -> dict:
    """Measure this machine (about a second); see the module docstring.  ``keep``:
    where to leave the compiled probe for later checks of the record; a probe already
    there whose checksum is ``sha`` (a measurement again) is used as it is."""
    if keep is not None and sha is not None and keep.exists():
        with contextlib.suppress(OSError, ValueError):
            ffi, lib = _open_probe(keep, sha)
            return dict(_measure(ffi, lib, budget_s), probe_sha256=sha)
    with _probe(keep) as (ffi, lib):
        rec = _measure(ffi, lib, budget_s)
    if keep is not None:
        rec["probe_sha256"] = hashlib.sha256(keep.read_bytes()).hexdigest()
    return rec


#: attempts at a quiet measurement of rate and join before one taken under load is kept
ATTEMPTS = 3


def _measure(ffi, lib, budget_s: float) -> dict:
    nmax = threads_max()
    arrays = _Arrays(ffi)
    null = ffi.cast(_BLAS_FN.format(real="float"), 0)

    def gemm_s(kind, M, N, K):
        reps = max(1, int(2e6 / (M * N * K) * 4))  # ≈ a millisecond per round or more
        return _seconds(lambda r: lib.sn_probe_gemm(kind, M, N, K, arrays.a, arrays.b,
                                                    arrays.c, r), reps)

    # rate and join: the least of a few attempts, each watched for load; the first
    # one on a quiet machine ends them (under load the best of all is kept, and the
    # record says it was disturbed, so that a later process measures again)
    rate, join, others, disturbed = 0.0, math.inf, 0.0, True
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(0.1 * attempt)
        own = own_threads_idle()       # e.g. numpy's BLAS threads, spinning after a product
        with Watch() as w:
            t0 = time.perf_counter()
            r, j = _rate_and_join(ffi, lib, arrays, nmax)
            # the watch spans QUIET_S at least: the timing takes 6-10 ms, under a tick of
            # /proc/stat's and too short to tell load (the tolerance of two ticks is then
            # over 2 cores: beside two spinning programs it said 'quiet', and only the
            # BLAS sweep, where there is one, marked the record disturbed)
            time.sleep(max(0.0, QUIET_S - (time.perf_counter() - t0)))
        rate, join = max(rate, r), min(join, j)
        others = (w.others if w.others is not None else 0.0) + own
        if not w.disturbed and own < Watch.OTHERS_MAX:
            rate, join, disturbed = r, j, False
            break
    out = {"version": __version__, "rate": rate, "join_s": join, "threads_max": nmax,
           "thread_min": _thread_min(rate, join), "blas": None, "blas_min": math.inf,
           "shapes": [], "disturbed": disturbed, "others": round(others, 3),
           "measured_at": time.time(), "attempts": 1}
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
    thread_min = out["thread_min"]
    with Watch() as w:
        out["blas_rate"] = _blas_rate(ffi, lib, arrays, blas, thread_min, nmax)
        for M, N, K in sizes:
            won = True
            # the library on one thread, the product cut in parts for the kernels' pool
            # (as the networks run it: apply)
            _set_blas_threads(1)
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
    out["sweep_disturbed"] = w.disturbed
    if w.disturbed:
        out["disturbed"] = True
        out["others"] = round(max(out["others"], w.others), 3)
    return out


def _blas_rate(ffi, lib, arrays, blas, thread_min: float, nmax: int, rounds: int = 5) -> float:
    """Multiply-adds per second of the BLAS on RATE_SHAPE (least of ``rounds``), on
    the threads the cost model gives that product."""
    kind, M, N, K = RATE_SHAPE
    _set_blas_threads(blas_threads(M * N * K, thread_min, nmax))
    lib.sn_probe_tune(blas, 0.0, thread_min, nmax)
    t = _seconds(lambda r: lib.sn_probe_gemm(kind, M, N, K, arrays.a, arrays.b, arrays.c, r),
                 1, rounds)
    lib.sn_probe_tune(ffi.cast(_BLAS_FN.format(real="float"), 0), math.inf, 1e300, 1)
    return M * N * K / t


# ---------------------------------------------------- checking a stored record
def quick_check(rec: dict, ffi, lib) -> dict:
    """This machine's rate and join now, measured cheaply (a few milliseconds: the least
    of three rounds of the rate product on one thread, and when the record's join could
    be 0.2 ms too long, on all threads and of empty parallel regions), the BLAS's rate
    on the same product when the record has one (what, with them, decided ``blas_min``),
    and whether the stored figures are implausible against them: the machine now
    clearly faster than recorded (rate or BLAS rate 25 % higher, or a join both 4× and
    0.2 ms shorter).  A check taken under load only makes the machine look slower, so
    it never condemns a record that was measured on a quiet machine; ``disturbed``
    says whether it ran under load."""
    arrays = _Arrays(ffi, small=True)
    nmax = min(threads_max(), rec.get("threads_max") or 1)
    null = ffi.cast(_BLAS_FN.format(real="float"), 0)
    kind, M, N, K = RATE_SHAPE

    def gemm_s():
        return _seconds(lambda r: lib.sn_probe_gemm(kind, M, N, K, arrays.a, arrays.b,
                                                    arrays.c, r), 1, 3)
    own_threads_idle(0.1)
    with Watch() as w:
        lib.sn_probe_tune(null, math.inf, 1e300, 1)
        one = gemm_s()
        rate, join = M * N * K / one, None
        if nmax > 1 and rec["join_s"] > 2e-4:
            lib.sn_probe_tune(null, math.inf, 1.0, nmax)
            many = gemm_s()
            lib.sn_probe_tune(null, math.inf, 1e300, 1)
            empty = _seconds(lambda r: lib.sn_probe_join(nmax, r), 5, 3)
            join = max(many - one / nmax, empty)
        blas_rate = None
        found = blas_library() if rec.get("blas") and rec.get("blas_rate") else None
        if found is not None:
            blas_rate = _blas_rate(ffi, lib, arrays, blas_pointer(ffi, "float32"),
                                   rec["thread_min"], nmax, rounds=3)
    faster = rate > 1.25 * rec["rate"]
    shorter = join is not None and join < rec["join_s"] / 4 and join < rec["join_s"] - 2e-4
    blas_faster = blas_rate is not None and blas_rate > 1.25 * rec["blas_rate"]
    return {"rate": rate, "join_s": join, "blas_rate": blas_rate, "others": w.others,
            "disturbed": w.disturbed, "implausible": bool(faster or shorter or blas_faster)}


# ------------------------------------------------------------------- caching
def _path() -> Path:
    # keyed like a network's module but without running the compiler for its
    # version string (a cache hit must stay cheap: that subprocess costs ~5 ms)
    # and by the threads this process may use (its cores, OMP_NUM_THREADS): the record's
    # join is timed on them and caps the products' threads, so a record measured under
    # `taskset -c 0,1` or OMP_NUM_THREADS=2 held a later process on 16 cores to two
    # threads (16-core Xeon, the bench's transformer step called in a row: 5.9–6.2 ms so
    # at 4–8 threads, 3.4–4.8 ms on their own record); and by SYMNET_BLAS=0, under which
    # the record has no BLAS: kept under the same key, it left every later process
    # without OpenBLAS (both words in the key, so records from before are measured anew)
    key = hashlib.sha256(json.dumps(["machine", __version__, build.compiler(), build.flags(),
                                     build._cpu(), "pool", JOIN_SHAPE, threads_max(),
                                     build.driver_digest(),
                                     "no blas" if blas_off() else "blas"]).encode())
    key = key.hexdigest()[:20]
    return build.writable_cache_dir() / f"machine-{key}.json"


def _defaults(why: str) -> dict:
    """Fixed settings where the machine cannot be measured (no working compiler)."""
    return {"version": __version__, "rate": 0.0, "join_s": 0.0, "threads_max": 2,
            "thread_min": 3e7, "blas": None, "blas_min": math.inf, "shapes": [],
            "error": why}


#: seconds after a measurement taken under load before a process measures again (once
#: it finds the machine quiet); it doubles with each further disturbed attempt, up to
#: RETRY_MAX_S, while the record holds the best figures of all attempts (load only ever
#: slows a measurement down).  Measurements after the first begin only on a quiet
#: machine, so a long load adds no attempts and does not delay the one after it.
RETRY_S = 30.0
RETRY_MAX_S = 300.0
#: seconds of /proc/stat a process watches to tell whether the machine is quiet now,
#: before it measures a disturbed record again
QUIET_S = 0.1
#: seconds during which a look that found the machine busy stands for every process
#: (``machine-<key>.busy``): under lasting load a cache hit seldom waits for a look
BUSY_S = 10.0


def _quiet_now(p: Path | None = None) -> bool:
    """Whether other programs leave the machine quiet now (:class:`Watch` over QUIET_S);
    a busy answer is kept beside the record at ``p`` for BUSY_S, and read back instead
    of looking again."""
    busy = p.with_suffix(".busy") if p is not None else None
    if busy is not None:
        with contextlib.suppress(OSError, ValueError):
            if 0 <= time.time() - float(busy.read_text()) < BUSY_S:
                return False
    with Watch() as w:
        time.sleep(QUIET_S)
    if w.disturbed and busy is not None:
        with contextlib.suppress(OSError):
            build._atomic_write(busy, repr(time.time()))
    build._debug(f"the machine now: {w.others} cores of other programs"
                 f"{' (busy)' if w.disturbed else ''}")
    return not w.disturbed


def _due(rec: dict, p: Path | None = None) -> bool:
    """Whether a disturbed record should be measured again now: RETRY_S after the last
    try (doubling per disturbed try, at most RETRY_MAX_S), once the machine is quiet."""
    if not rec.get("disturbed"):
        return False
    wait = min(RETRY_MAX_S, RETRY_S * 2 ** (min(int(rec.get("attempts", 1)), 30) - 1))
    if time.time() - rec.get("measured_at", 0.0) < wait:
        return False
    return _quiet_now(p)


def _merge(old: dict | None, new: dict) -> dict:
    """A new measurement against the stored one: a quiet one replaces it; one under
    load keeps the better figure of each (the machine's own speed is at least the
    best ever seen), the BLAS sweep of a quiet one (``blas_min`` and its timings), and
    counts the attempt."""
    if not new.get("disturbed") or old is None:
        return new
    rate, join = max(old["rate"], new["rate"]), min(old["join_s"], new["join_s"])
    attempts = old.get("attempts", 1) + 1 if old.get("disturbed") else 1
    out = dict(new, rate=rate, join_s=join, thread_min=_thread_min(rate, join),
               attempts=attempts)
    if new.get("blas") and old.get("blas") == new["blas"]:
        out["blas_rate"] = max(old.get("blas_rate") or 0.0, new.get("blas_rate") or 0.0)
        if new.get("sweep_disturbed") and not old.get("sweep_disturbed", True):
            out.update(blas_min=old["blas_min"], shapes=old["shapes"], sweep_disturbed=False)
    return out


def _read(p: Path):
    try:
        rec = build._unseal(p)
        # a record without the load check's fields predates it: measured again
        if rec.get("version") == __version__ and "rate" in rec and "measured_at" in rec:
            return rec
    except (OSError, ValueError):
        pass
    return None


#: seconds after a record passed the cheap check before a process checks it again; it
#: doubles with each check the record passes (at most a day), so that a cache hit
#: usually costs no check at all (opening the probe and timing it: ~0.1 s of CPU)
CHECK_S = 60.0


def _check_due(rec: dict, p: Path) -> bool:
    """Whether the record's cheap check is due: never checked (unless measured on a
    quiet machine less than CHECK_S ago: the measurement is its first pass), or the
    last pass was more than CHECK_S·2^(passes − 1) seconds ago
    (``machine-<key>.checked``)."""
    try:
        seen = build._unseal(p.with_suffix(".checked"))
        if seen.get("measured_at") != rec.get("measured_at"):
            return True
        wait = min(86400.0, CHECK_S * 2 ** (min(int(seen["passes"]), 20) - 1))
        return not 0 <= time.time() - float(seen["at"]) < wait
    except (OSError, ValueError, KeyError, TypeError):
        # a quiet measurement moments ago (the first network of a machine, then the
        # user's next one): checking it again would time the same figures (0.07-0.4 s
        # of a cold compile)
        with contextlib.suppress(TypeError, ValueError):
            if not rec.get("disturbed") and \
                    0 <= time.time() - float(rec.get("measured_at")) < CHECK_S:
                return False
        return True


def _checked(rec: dict, p: Path) -> bool:
    """Whether a stored record passes the cheap check (True when it cannot be checked:
    no probe beside it, or when the check is not due)."""
    so = p.with_suffix(".so")
    if not rec.get("probe_sha256") or not so.exists() or not _check_due(rec, p):
        return True
    try:
        ffi, lib = _open_probe(so, rec["probe_sha256"])
    except (OSError, ValueError) as exc:
        build._debug(f"the machine's probe cannot be used ({exc})")
        return True
    check = quick_check(rec, ffi, lib)
    build._debug(f"checked the machine's record: {json.dumps(check)}")
    # A record taken under load is measured again only once the machine is quiet: the
    # check's own watch lasts a few milliseconds, too short for /proc/stat's ticks to
    # tell load (it answered "quiet" beside 2-8 cores of others, and a busy machine was
    # measured again), so for such a record a proper look decides
    if check["implausible"] and not (rec.get("disturbed") and (
            check.get("disturbed") or not _quiet_now(p))):
        return False
    passes = 0
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        seen = build._unseal(p.with_suffix(".checked"))
        if seen.get("measured_at") == rec.get("measured_at"):
            passes = int(seen["passes"])
    # a pass under load proves little (load only slows the check down): the next check
    # comes as soon as after the last pass, not twice as late
    passes = max(1, passes) if check.get("disturbed") else passes + 1
    with contextlib.suppress(OSError):
        build._atomic_write(p.with_suffix(".checked"), build._seal(
            {"measured_at": rec.get("measured_at"), "at": time.time(), "passes": passes}))
    return True


@lru_cache(maxsize=4)
def _machine(path: str) -> dict:
    p = Path(path)
    rec = _read(p)
    if rec is not None and not _due(rec, p) and _checked(rec, p):
        return rec
    # one process measures at a time (the others would only disturb it); whoever
    # waited reads what it stored
    with build._lock(p.with_suffix(".lock")):
        again = _read(p)
        if again is not None and again != rec and not _due(again, p):
            return again
        try:
            new = measure(keep=p.with_suffix(".so"), sha=(rec or {}).get("probe_sha256"))
        except build.BuildError as exc:  # the network itself was built: keep it usable
            build._debug(f"the machine could not be measured: {exc}")
            return _defaults(str(exc).splitlines()[0])
        new = _merge(rec, new)
        build._atomic_write(p, build._seal(new))
    build._debug(f"measured this machine: {json.dumps(new)}")
    return new


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
    if blas_off():
        blas = None
    elif blas_min is not None and blas is None and blas_library() is not None:
        blas = blas_library()[0]
    return {"blas": blas, "blas_min": rec["blas_min"] if blas_min is None else blas_min,
            "thread_min": rec["thread_min"] if thread_min is None else thread_min,
            "threads_max": nmax}


# ------------------------------------------------------------------ the planner
#: how much a load may time: "off" nothing (the machine's thresholds alone); "fast"
#: (the default) each product of the network not yet in the wisdom, ours against the
#: BLAS at three batches, on the probe that measuring the machine compiled anyway, within
#: FAST_BUDGET_S (the rest at a later load); "full" every product at four batches,
#: and the register tiles of TILES on the network's products (a probe compiled each).
#: Batch 16: the half of a batch of 32 that a small network's chunks run (plan.schedule.
#: halves), where OpenBLAS still wins (Zen 3: 4.6 against 7.4 µs for 16×128×64)
TUNE = ("off", "fast", "full")
FAST_BUDGET_S = 0.15
#: M·N·K (at the largest batch timed) below which a product is not planned: a layer of
#: 10 outputs of 64 inputs is (Zen 3, batch 32: OpenBLAS 1.1 µs, symnet's tiles 2.1)
PLAN_MIN = 1e5
BATCHES = {"fast": (16, 32, 256), "full": (16, 64, 256, 1024)}
#: register tiles (rows × columns of C in registers) the "full" planner compiles and
#: times: AVX2's 16 vector registers hold 4×3, 3×4 or 2×6 accumulators of 8 floats,
#: AVX-512's 32 hold 8×2, 4×4, 12×1 or 6×2 of 16
TILES = {"avx512": [(8, 32), (4, 64), (12, 16), (6, 32)],
         "avx2": [(4, 24), (3, 32), (2, 48)]}     # 6×16: 100× slower (gcc 12, Zen 3)
#: the tile gemm.c.j2 uses when none is chosen, by instruction set
DEFAULT_TILE = {"avx512": (8, 32), "avx2": (4, 24)}


def check_tune(tune) -> str:
    if tune not in TUNE:
        raise ValueError(f"tune must be one of {', '.join(map(repr, TUNE))}, got {tune!r}")
    return tune


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name, family and model (wisdom is kept per CPU model)."""
    found = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                k = k.strip()
                if k in ("model name", "cpu family", "model") and k not in found:
                    found[k] = v.strip()
                if len(found) == 3:
                    break
    except OSError:
        pass
    import platform
    return " / ".join(found.get(k, "?") for k in ("model name", "cpu family", "model")) \
        if found else platform.processor() or platform.machine()


def _wisdom_path() -> Path:
    key = hashlib.sha256(json.dumps(["wisdom", __version__, build.compiler(), build.flags(),
                                     build._cpu(), cpu_model(), threads_max(),
                                     build.driver_digest()]).encode())
    return build.writable_cache_dir() / f"wisdom-{key.hexdigest()[:20]}.json"


def _read_wisdom(p: Path) -> dict:
    try:
        rec = build._unseal(p)
        if rec.get("version") == __version__:
            return rec
    except (OSError, ValueError):
        pass
    return {"version": __version__, "cpu": cpu_model(), "compiler": build.compiler(),
            "flags": build.flags(), "products": {}, "tiles": {}}


def _shape_key(shape) -> str:
    return ":".join(map(str, shape))


def _sizes(shape, batch: int) -> tuple:
    kind, *mnk = shape
    return (kind, *[batch if d == 0 else d for d in mnk])


def decide(timings: dict) -> float:
    """M·N·K from which the BLAS runs a product, from {batch: [ours_s, blas_s, mnk]}:
    the smallest timed size from which the BLAS won (by 5 %) at every larger one
    too; inf when it lost at the largest.

    >>> decide({"32": [1.0, 2.0, 100], "256": [8.0, 5.0, 800]})
    800
    >>> decide({"32": [1.0, 0.5, 100], "256": [8.0, 9.0, 800]})
    inf
    """
    out = math.inf
    for _, (ours, theirs, mnk) in sorted(timings.items(), key=lambda kv: -kv[1][2]):
        if not theirs < 0.95 * ours:
            break
        out = mnk
    return out


def _wisdom_key(shape, chunked=None) -> str:
    """The wisdom's key of a product: its shape's, ``:c`` for one that the chunked pass
    runs inside its chunks (timed on one thread), ``:p`` for one of those on B's panels
    packed once for all the chunks (timed on them)."""
    how = (chunked or {}).get(tuple(shape))
    return _shape_key(shape) + ("" if how is None else ":p" if how else ":c")


def _time_products(lib, ffi, shapes, batches, s, budget_s, rounds, chunked=None):
    """{wisdom key: {batch: [ours_s, blas_s, mnk]}} of the shapes timed within the
    budget.  A shape in ``chunked`` ({shape: packed}, ``chunk_products``) is timed as
    the chunks run it: on one thread, and symnet's tiles on B's panels packed beforehand
    (64-byte aligned, as in ``work``) where the pass packs them (a layer's weights, once
    for all the chunks: symnet.plan.schedule.packs).  Timed on two threads, copying B's
    panels in each product instead, two products of the bench's transformer went to the
    BLAS by 7 % each and its step ran 4 % slower for it (AVX-512 Xeon, two threads: 5.79
    against 5.55 ms with every product on the tiles)."""
    import numpy as np
    null = ffi.cast(_BLAS_FN.format(real="float"), 0)
    blas = blas_pointer(ffi, "float32")
    out, t_end = {}, time.perf_counter() + budget_s
    for shape in shapes:
        if time.perf_counter() > t_end:
            break
        rec = {}
        for b in batches:
            kind, M, N, K = _sizes(shape, b)
            a = np.ones(max(M * K, 1), np.float32)
            bb = np.ones(max(N * K, 1), np.float32)
            c = np.zeros(max(M * N, 1), np.float32)
            pa, pb, pc = (ffi.from_buffer("float[]", x) for x in (a, bb, c))
            mnk = M * N * K
            reps = max(1, int(8e6 / mnk))
            # a chunk's product runs on the thread that runs the chunk (the pool is busy
            # with the chunks: templates/pool.c.j2), on the tiles or the BLAS alike
            how = (chunked or {}).get(tuple(shape))
            threads = s["threads_max"] if how is None else 1
            lib.sn_probe_tune(null, math.inf, s["thread_min"], threads)
            if how and kind in (0, 1):
                n = max(int(lib.sn_probe_packed_size(N, K)), 1)
                room = np.empty(n + 16, np.float32)
                at = (-room.ctypes.data % 64) // 4          # the first 64-byte boundary
                bp = ffi.from_buffer("float[]", room[at:at + n])
                lib.sn_probe_pack(kind, N, K, pb, bp)
                ours = _seconds(lambda r: lib.sn_probe_gemm_packed(kind, M, N, K, pa, pb, bp,
                                                                   pc, r), reps, rounds)
            else:
                ours = _seconds(lambda r: lib.sn_probe_gemm(kind, M, N, K, pa, pb, pc, r),
                                reps, rounds)
            _set_blas_threads(1)       # the pool cuts the product (apply)
            lib.sn_probe_tune(blas, 0.0, s["thread_min"], threads)
            theirs = _seconds(lambda r: lib.sn_probe_gemm(kind, M, N, K, pa, pb, pc, r), reps,
                              rounds)
            rec[str(b)] = [ours, theirs, mnk]
        out[_wisdom_key(shape, chunked)] = rec
    return out


#: monotonic time before which this process times no product (after timings under load)
_PLAN_PAUSE = [0.0]


def _pause_path(wisdom: Path) -> Path:
    return wisdom.with_suffix(".pause")


def _paused(wisdom: Path) -> bool:
    """Whether a process recently timed products under load: then the processes that
    start after it (each a cache hit that would spend up to FAST_BUDGET_S on timings
    it then throws away, while the load lasts) time nothing until the pause ends."""
    try:
        until = float(_pause_path(wisdom).read_text())
    except (OSError, ValueError):
        return False
    return time.time() < until


def _pause(wisdom: Path, seconds: float):
    with contextlib.suppress(OSError):
        build._atomic_write(_pause_path(wisdom), repr(time.time() + seconds))


def plan(products, tune: str = "fast", s: dict | None = None, chunked=None) -> dict:
    """The planner: for each product of a network ([kind, M, N, K], 0 for the batch),
    the M·N·K from which it runs on the BLAS, from the wisdom of this CPU model,
    compiler and flags (``wisdom-<key>.json`` in the cache), timing what it lacks as
    ``tune`` allows; ``{shape key: mnk_min}`` (inf: symnet's kernels at every size).
    ``chunked``: ``chunk_products``, the products that run inside the chunks of the
    pass, timed as they run there."""
    check_tune(tune)
    s = s or settings()
    shapes = [tuple(p) for p in products or []]
    chunked = {tuple(p[:4]): bool(p[4]) for p in chunked or []}
    if tune == "off" or not shapes or s["blas"] is None or \
            _env_float("SYMNET_BLAS_MIN") is not None:
        return {}
    try:
        path = _wisdom_path()
    except (build.BuildError, OSError):
        return {}
    wisdom = _read_wisdom(path)
    batches = BATCHES["full" if tune == "full" else "fast"]
    known = wisdom["products"]
    # products too small for the BLAS ever to win (the machine's sweep starts lower)
    # keep the machine's threshold, untimed
    shapes = [sh for sh in shapes if math.prod(_sizes(sh, max(batches))[1:]) >= PLAN_MIN]
    todo = [sh for sh in dict.fromkeys(shapes)
            if not all(str(b) in known.get(_wisdom_key(sh, chunked), {}) for b in batches)]
    if todo and time.monotonic() >= _PLAN_PAUSE[0] and not _paused(path):
        rec = machine()
        so = _path().with_suffix(".so")
        try:
            ffi, lib = _open_probe(so, rec.get("probe_sha256") or "none")
        except (OSError, ValueError):     # no probe (a record from elsewhere): nothing timed
            ffi = lib = None
        if lib is not None:
            with Watch() as w:
                timed = _time_products(lib, ffi, todo, batches, s,
                                       math.inf if tune == "full" else FAST_BUDGET_S,
                                       5 if tune == "full" else 3, chunked)
            if w.disturbed:       # timings under load are neither kept nor used,
                timed = {}        # and this process (and the next ones) wait before
                _PLAN_PAUSE[0] = time.monotonic() + RETRY_S     # timing again
                _pause(path, RETRY_S)
            for key, t in timed.items():
                known[key] = dict(known.get(key, {}), **t)
            if timed:
                with build._lock(path.with_suffix(".lock")):
                    on_disk = _read_wisdom(path)
                    for key, t in timed.items():
                        on_disk["products"][key] = dict(on_disk["products"].get(key, {}), **t)
                    build._atomic_write(path, build._seal(on_disk))
            build._debug(f"planned {len(timed)} products"
                         f"{' (under load: not used)' if w.disturbed else ''}: {json.dumps(timed)}")
    return {_shape_key(sh): _below(decide(known[k]), known[k], s)
            for sh in shapes if (k := _wisdom_key(sh, chunked)) in known}


def _below(mnk_min: float, timings: dict, s: dict) -> float:
    """A product the BLAS won at every size timed: below the smallest (a small network's
    chunk of 16 rows before its batch of 16 is timed) the machine's own threshold holds,
    as for a product never timed.

    >>> _below(800, {"32": [2.0, 1.0, 800], "256": [9.0, 5.0, 6400]}, {"blas_min": 100})
    100
    >>> _below(6400, {"32": [1.0, 2.0, 800], "256": [9.0, 5.0, 6400]}, {"blas_min": 100})
    6400
    """
    smallest = min((t[2] for t in timings.values()), default=math.inf)
    return min(mnk_min, s["blas_min"]) if mnk_min == smallest else mnk_min


def isa() -> str | None:
    """The vector instruction set the build's flags give gemm.c.j2's tiles: "avx512",
    "avx2", or None (no tiles to choose among)."""
    f = build.flags()
    march = next((x.split("=", 1)[1] for x in f if x.startswith("-march=")), None)
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    if march is None:
        return None
    if march == "native":
        return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else None
    if march in ("x86-64-v4",) or "avx512" in march:
        return "avx512"
    return "avx2" if march in ("x86-64-v3", "haswell", "znver1", "znver2", "znver3") else None


def choose_tile(products, s: dict | None = None):
    """The register tile (rows, columns) for a network's products on this machine: each
    candidate of TILES compiled into the probe and timed on the products at batch 256
    (symnet's kernels, the machine's threads), the least total time winning; cached in
    the wisdom per shape and tile.  None: the default tile (or nothing to choose)."""
    kind = isa()
    shapes = [tuple(p) for p in products or []]
    shapes = [sh for sh in dict.fromkeys(shapes) if math.prod(_sizes(sh, 256)[1:]) >= PLAN_MIN]
    if kind is None or not shapes:
        return None
    s = s or settings()
    path = _wisdom_path()
    wisdom = _read_wisdom(path)
    names = [f"{mr}x{nr}" for mr, nr in TILES[kind]]
    known = wisdom["tiles"]
    todo = [t for t in TILES[kind] if any(f"{t[0]}x{t[1]}" not in known.get(_shape_key(sh), {})
                                          for sh in shapes)]
    if todo:
        timed = _time_tiles(todo, shapes, s)
        if timed.pop("disturbed", False):   # timings under load: neither kept nor used
            timed = {}
        for key, t in timed.items():
            known[key] = dict(known.get(key, {}), **t)
        if timed:
            with build._lock(path.with_suffix(".lock")):
                on_disk = _read_wisdom(path)
                for key, t in timed.items():
                    on_disk["tiles"][key] = dict(on_disk["tiles"].get(key, {}), **t)
                build._atomic_write(path, build._seal(on_disk))
    totals = {n: sum(known.get(_shape_key(sh), {}).get(n, math.inf) for sh in shapes)
              for n in names}
    best = min(totals, key=totals.get)
    build._debug(f"register tiles: {json.dumps(totals)}")
    tile = tuple(map(int, best.split("x")))
    return None if tile == DEFAULT_TILE[kind] or totals[best] == math.inf else tile


def _time_tiles(tiles, shapes, s) -> dict:
    """{shape key: {"MRxNR": seconds at batch 256}}, and "disturbed"."""
    import numpy as np
    root = build.writable_cache_dir()
    out = {}
    with tempfile.TemporaryDirectory(prefix=".tiles-", dir=root) as tmp:
        import jinja2
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(build.template_dir()),
                                 trim_blocks=True, lstrip_blocks=True,
                                 keep_trailing_newline=True)
        source = env.get_template("probe.c.j2").render(
            version=__version__, real="float", hooks=True, prefix="sn_probe_")
        c_path = Path(tmp) / "probe.c"
        c_path.write_text(source)
        cmds = [[*build.compiler(), *build.flags(), f"-DSN_MR={mr}", f"-DSN_NR={nr}",
                 "-shared", str(c_path), "-o", str(Path(tmp) / f"{mr}x{nr}.so"), "-lm"]
                for mr, nr in tiles]
        build._run_compiler(cmds, c_path, source)
        with Watch() as w:
            for mr, nr in tiles:
                ffi, lib = _open_probe(Path(tmp) / f"{mr}x{nr}.so")
                null = ffi.cast(_BLAS_FN.format(real="float"), 0)
                lib.sn_probe_tune(null, math.inf, s["thread_min"], s["threads_max"])
                for sh in shapes:
                    kind, M, N, K = _sizes(sh, 256)
                    arrays = [np.ones(max(n, 1), np.float32) for n in (M * K, N * K, M * N)]
                    pa, pb, pc = (ffi.from_buffer("float[]", x) for x in arrays)
                    reps = max(1, int(8e6 / (M * N * K)))
                    t = _seconds(lambda r: lib.sn_probe_gemm(kind, M, N, K, pa, pb, pc, r),
                                 reps, 5)
                    out.setdefault(_shape_key(sh), {})[f"{mr}x{nr}"] = t
    out["disturbed"] = w.disturbed
    return out


def preload():
    """Import what loading a compiled network needs next (cffi's C parser, which
    opening the machine's probe for the planner takes, the BLAS, numpy's random numbers
    for the parameters): called while the compiler runs (``build.build``'s
    ``meanwhile``), when Python would only wait for it (0.03-0.07 s of a cold
    compile)."""
    import cffi
    import numpy.random  # noqa: F401
    cffi.FFI()
    blas_library()


def apply(module, prefix: str, dtype: str, products=None, tune: str = "fast",
          chunked=None) -> dict:
    """Give a loaded network module its products' settings; returns them, with
    ``plan``: the planner's choice per product (``"kind M×N×K": "blas from <mnk>"``
    or ``"symnet"``; M, N or K ``b``: the batch).  ``chunked``: ``chunk_products``."""
    fn = getattr(module.lib, prefix + "tune", None)
    if fn is None:
        return {}
    s = settings()
    chosen = plan(products, tune, s, chunked) if s["blas"] is not None else {}
    use_blas = s["blas"] is not None and (s["blas_min"] < math.inf or
                                           any(v < math.inf for v in chosen.values()))
    ptr = blas_pointer(module.ffi, dtype) if use_blas else module.ffi.NULL
    use_blas = use_blas and ptr != module.ffi.NULL
    if use_blas:
        # The library runs on one thread: a product routed to it is cut in parts that
        # the kernels' own pool of threads takes (templates/pool.c.j2), as many as the
        # cost model gives that product.  The library's own threads join like a parallel
        # region, waiting for a thread the system runs late: on a busy 2-core machine
        # (load 2-3) the medium step took 50-84 ms on them against 1.6-2.4 ms on one.
        _set_blas_threads(1)
    fn(ptr, s["blas_min"] if use_blas else math.inf, s["thread_min"], s["threads_max"])
    set_plan = getattr(module.lib, prefix + "plan", None)
    if set_plan is not None and use_blas and chosen:
        keys = list(chosen)[:64]
        shapes = module.ffi.new("int[]", [int(x) for k in keys for x in k.split(":")])
        mins = module.ffi.new("double[]", [min(chosen[k], 1e300) for k in keys])
        set_plan(len(keys), shapes, mins)
    names = ("nt", "nn", "tn")
    readable = {}
    for k, v in chosen.items():
        kind, *mnk = map(int, k.split(":"))
        label = f"{names[kind]} " + "×".join("b" if d == 0 else str(d) for d in mnk)
        readable[label] = "symnet" if v == math.inf or not use_blas else f"blas from {v:.3g}"
    return dict(s, blas=s["blas"] if use_blas else None, tune=tune, plan=readable)


# ------------------------------------------------ the BLAS checked in each process
#: On some machines OpenBLAS runs the same product at one speed in one process and at a
#: third of it in the next, for as long as that process lives: on a 2-core EPYC (Zen 1,
#: 512 KiB L2; Linux's transparent huge pages on `madvise`) nn 256×64×256 ran at 8 GFLOP/s
#: in most processes and at 34 in some, and the transformer's step at 24-25 ms against
#: 14-15 (on symnet's tiles alone 15.2-16.4 ms in every process).  It is the 4 KiB pages
#: behind the library's packing buffers (with huge pages for every mapping all processes
#: ran fast), which a process cannot choose, and which the planner, timing each product
#: once in one process, cannot see; nor did timing the products again in each process on
#: one thread (the same ratio in fast and slow processes).  So a module whose products run
#: on the BLAS times its own loss-and-gradient pass at its first training call in a
#: process (Runtime.check_blas): CHECK_WARM passes on that call's batch (at most its first
#: CHECK_ROWS rows) while the module's choice of threads settles, then CHECK_PAIRS pairs
#: in turns with the BLAS and without it.  When the BLAS's pass takes more than
#: CHECK_SLOWER times as long (the median pair), every product of the module runs on
#: symnet's tiles in this process; a check that other programs disturbed keeps the plan.
#: On a machine without the two speeds the plan's pass is the faster, and nothing changes;
#: where a process switches, its numbers differ from a process that did not by rounding.
#: SYMNET_BLAS_CHECK=0 skips the check.
CHECK_ROWS = 256
CHECK_WARM = 7
CHECK_PAIRS = 6
#: 1.1: with the 16-wide tile the transformer's tiles caught up with the BLAS in fast
#: processes too, and a check that read 1.06–1.32 (the BLAS's pass slower, not at a third
#: of its speed) kept a plan slower than the tiles at 1.3 (Zen 1, two threads); the GRU,
#: whose plan wins, read 0.91–1.06
CHECK_SLOWER = 1.1


def check_verdict(grown: float) -> bool:
    """Whether the BLAS runs slow in this process: the plan's pass took ``grown`` times
    as long as the same pass on symnet's tiles.

    >>> check_verdict(1.6), check_verdict(0.9), check_verdict(1.05)
    (True, False, False)
    """
    return grown > CHECK_SLOWER


def check_wanted(applied: dict) -> bool:
    """Whether a module given ``applied`` (``apply``'s settings) checks its BLAS: it runs
    products on the BLAS (planned, or from the machine's threshold), and neither
    SYMNET_BLAS_CHECK=0, SYMNET_BLAS_MIN nor the sanitizers say otherwise."""
    if not build.env_switch("SYMNET_BLAS_CHECK", True) \
            or os.environ.get("SYMNET_SANITIZE") or _env_float("SYMNET_BLAS_MIN") is not None:
        return False       # (a threshold the user set is obeyed as set)
    return applied.get("blas") is not None and (
        applied.get("blas_min", math.inf) < math.inf
        or any(v.startswith("blas") for v in applied.get("plan", {}).values()))


#: each module's verdict in this process ({its prefix: True when its products run on
#: symnet's tiles, False when as planned, None while being checked}): the models of one
#: network share its module, which one check decides for all
VERDICTS: dict = {}


def products_of(plan_) -> list:
    """[kind, M, N, K] of a kernel plan's matrix products (0: the batch), each once;
    products with another symbolic size are left to the machine's thresholds."""
    from ...plan.ops import MatMul
    out = []
    ops = [*plan_.forward, *plan_.backward, *getattr(plan_, "loss", [])]
    for op in ops:
        entry = _product(op) if isinstance(op, MatMul) else None
        if entry is not None and entry not in out:
            out.append(entry)
    return out


def _product(op):
    """[kind, M, N, K] of a MatMul op (0: the batch), or None for another symbolic size."""
    # M = "batch * R" (a Linear at each of R positions of a sequence): timed and
    # matched as any M, its threshold an M·N·K like the rest
    dims = [0 if d == "batch" or isinstance(d, str) and d.startswith("batch * ")
            else d for d in (op.M, op.N, op.K)]
    if all(isinstance(d, int) for d in dims) and dims.count(0) <= 1:
        return [("nt", "nn", "tn").index(op.kind), *dims]
    return None


def chunk_products(plan_) -> list:
    """[kind, M, N, K, packed] (``products_of``'s four and 1 or 0) of the products that
    the chunked pass runs inside its chunks, each on the thread that runs the chunk
    (symnet.plan.ops.Halves): ``packed`` 1 where B is a layer's weights that the pass
    packs once for all its chunks (symnet.plan.schedule.packs)."""
    from ...plan.ops import MatMul
    h = getattr(plan_, "halves", None)
    if h is None:
        return []
    packs = set(h.packs or [])
    ours = [op for op in (*h.head, *h.rows, *(h.rows_labels or []), *h.tail)
            if isinstance(op, MatMul)]
    out = []
    for entry in products_of(plan_):
        same = [op for op in ours if _product(op) == entry]
        if same:
            packed = all((op.B, op.kind, op.N, op.K) in packs for op in same)
            out.append([*entry, int(packed)])
    return out


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
