"""What ``python -m symnet.bench`` measures: symnet's step and epoch, the
references, compile time in fresh processes, and the large workload's memory.

Each function returns plain numbers (microseconds, seconds, bytes) so the
command line only formats them.  Compile time and memory are measured in new
Python processes, the way a user meets them.

>>> from symnet.bench import refs
>>> model = build_model(refs.WORKLOADS["tiny"])
>>> model.params["W1"].shape
(8, 2)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from . import refs

LR = 0.01
ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the symnet package


def network(sizes, activations, loss):
    """The symnet Network of a layer list, e.g. ((2, 8, 1), ("tanh", "sigmoid"), "mse")."""
    import symnet as sn
    layers = [sn.Input(sizes[0])] + [sn.Dense(w, a) for w, a in zip(sizes[1:], activations)]
    return sn.Network(*layers, loss=loss)


#: how much the planner may time (``compile(tune=...)``), set by ``--tune``
TUNE = "fast"


def build_model(workload, params=None):
    """The workload compiled to float32, starting from the references' parameters."""
    model = network(workload.sizes, workload.activations, workload.loss).compile(
        dtype="float32", tune=TUNE)
    for name, value in (params or refs.init_params(workload)).items():
        model.params[name] = value
    return model


def epoch_batches(workload) -> int:
    """Batches in the whole-epoch data set: about 10⁹ floating-point operations
    (≥ 7 ms of work, so the fixed cost of a ``fit`` call, ~0.1 ms, is ≤ 1.5% of
    it), at least 8 and at most 16384 batches."""
    return int(min(16384, max(8, round(1e9 / refs.flops_per_step(workload)))))


def time_step(model, X, T, min_time: float) -> float:
    """Median µs of one ``model.step`` call."""
    step = model.step
    return refs.time_call(lambda: step(X, T, LR), min_time=min_time)[0]


def time_epoch(model, workload, min_time: float):
    """Median µs per step of one epoch of ``model.fit`` (minibatch, batch = the
    workload's), or the reason it cannot be measured."""
    if not hasattr(model, "fit"):
        return "unavailable: Model.fit does not exist in this version"
    n = epoch_batches(workload)
    X, T = refs.make_data(dataclasses.replace(workload, batch=workload.batch * n), seed=1)

    def epoch():
        model.fit(X, T, method="minibatch", batch_size=workload.batch, epochs=1, lr=LR,
                  progress=False)
    try:
        return refs.time_call(epoch, min_time=min_time, repeats=5)[0] / n
    except (TypeError, ValueError) as exc:
        return f"unavailable: fit failed: {type(exc).__name__}: {exc}"


def time_fit_overhead(model, workload, min_time: float):
    """Median µs of a ``model.fit`` call beyond its steps: one epoch of a single
    batch, less one ``model.step`` on that batch (argument checks, index sampling,
    History bookkeeping)."""
    if not hasattr(model, "fit"):
        return "unavailable"
    X, T = refs.make_data(workload, seed=1)

    def one_batch():
        model.fit(X, T, method="minibatch", batch_size=workload.batch, epochs=1, lr=LR,
                  progress=False)
    fit_us = refs.time_call(one_batch, min_time=min_time)[0]
    step_us = time_step(model, np.ascontiguousarray(X), np.ascontiguousarray(T), min_time)
    return max(0.0, fit_us - step_us)


def time_references(workload, params, X, T, names, min_time: float, model=None):
    """(name -> median µs, name -> why skipped) for the reference steps; with
    ``model``, its ``step`` too (under the name "symnet"), timed in turns with
    them so that all meet the same load (``refs.time_calls``)."""
    with warnings.catch_warnings():  # PyTensor warns at length that it found no BLAS
        warnings.simplefilter("ignore")
        steps, skipped = refs.make_reference_steps(workload, params, X, T, LR, names=names)
    if model is not None:
        step = model.step
        steps = {"symnet": lambda: step(X, T, LR), **steps}
    return refs.time_calls(steps, min_time=min_time), skipped


# ------------------------------------------------------------ fresh processes

_COMPILE = """
import json, resource, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import symnet as sn
t_import = time.perf_counter() - t0
out = {"import_s": t_import, "compiles": []}
for sizes, acts, loss in json.loads(sys.argv[1]):
    t = time.perf_counter()
    layers = [sn.Input(sizes[0])] + [sn.Dense(w, a) for w, a in zip(sizes[1:], acts)]
    sn.Network(*layers, loss=loss).compile(dtype="float32")
    out["compiles"].append(time.perf_counter() - t)
out["total_s"] = time.perf_counter() - t0
# process CPU time, which a busy machine inflates far less than the wall time
ch = resource.getrusage(resource.RUSAGE_CHILDREN)
out["cpu_s"] = time.process_time() - c0
out["cc_cpu_s"] = ch.ru_utime + ch.ru_stime     # the C compiler's
out["sympy_imported"] = "sympy" in sys.modules
try:
    from symnet.backend.c import tuning
    out["tuning"] = tuning.settings()
except Exception as exc:  # an older symnet: no tuning
    out["tuning"] = repr(exc)
print(json.dumps(out))
"""


#: where the fresh processes keep the byte code of symnet's modules
#: (``PYTHONPYCACHEPREFIX``): compiled once, before any timing, as an installed
#: package has it; never written into the source tree
_PYCACHE: str | None = None


def _pycache() -> str:
    global _PYCACHE
    if _PYCACHE is None:
        _PYCACHE = tempfile.mkdtemp(prefix="symnet-bench-pyc-")
        import atexit
        atexit.register(shutil.rmtree, _PYCACHE, ignore_errors=True)
        env = dict(os.environ, PYTHONPYCACHEPREFIX=_PYCACHE)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0",
                        str(Path(ROOT) / "symnet")], env=env, capture_output=True,
                       timeout=600)
    return _PYCACHE


def _python(script: str, args: list[str], cache: str) -> dict:
    env = dict(os.environ, SYMNET_CACHE_DIR=cache, PYTHONPYCACHEPREFIX=_pycache(),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # a user's symnet has its byte code (pip compiles it at install): without it every
    # new process would compile symnet's modules from source (~0.2 s)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compile_times(workload, repeats: int = 3) -> dict:
    """Seconds from ``import symnet`` to a loaded model, each in a new process:
    ``machine`` (a tiny network compiled first into an empty cache: this also
    measures the machine once, see symnet/tuning.py), ``cold`` (the workload
    never compiled before, the machine known) and ``warm`` (the same again: a
    cache hit).  ``cold`` and ``warm`` are the runs with the median total of
    ``repeats``, each cold one in a new cache holding only what the first network
    left that is not a network, as a user's second network finds it: the machine's
    figures, the templates' compiled code (``jinja/``, symnet/backend/c/emit.py), the
    shared matrix driver (``kernels-*``) and cffi's wrapper that every network of a
    number type shares (``wrapper-*``, symnet/backend/c/build.py: the first network is
    float32 too).  ``machine`` is the figure of a cache with nothing in it."""
    tiny = json.dumps([[[2, 4, 1], ["tanh", "linear"], "mse"]])
    spec = json.dumps([[workload.sizes, workload.activations, workload.loss]])
    colds, warms = [], []
    with tempfile.TemporaryDirectory(prefix="symnet-bench-") as first:
        machine = _python(_COMPILE, [tiny], first)
        known = [f for f in os.listdir(first)
                 if f.startswith(("machine-", "kernels-", "wrapper-"))
                 and not f.endswith(".lock")]
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="symnet-bench-") as cache:
                for f in known:
                    shutil.copy(os.path.join(first, f), cache)
                if os.path.isdir(os.path.join(first, "jinja")):   # the templates' code
                    shutil.copytree(os.path.join(first, "jinja"), os.path.join(cache, "jinja"))
                colds.append(_python(_COMPILE, [spec], cache))
                warms.append(_python(_COMPILE, [spec], cache))

    def median(runs):
        return sorted(runs, key=lambda r: r["total_s"])[len(runs) // 2]
    return {"machine": machine, "cold": median(colds), "warm": median(warms),
            "cold_all": [r["total_s"] for r in colds],
            "warm_all": [r["total_s"] for r in warms]}


def compile_scaling(widths, depths) -> dict:
    """Cold compile seconds of MLPs of several widths (3 layers) and depths
    (width 64), in one new process after a warm-up compile (so sympy's import
    is not counted)."""
    nets = [[[16, 8, 4], ["tanh", "linear"], "mse"]]  # warm-up (and the machine's figures)
    nets += [[[w, w, w, 10], ["relu", "relu", "linear"], "softmax_cross_entropy"]
             for w in widths]
    nets += [[[64] * (d + 1) + [10], ["relu"] * d + ["linear"], "softmax_cross_entropy"]
             for d in depths]
    with tempfile.TemporaryDirectory(prefix="symnet-bench-") as cache:
        out = _python(_COMPILE, [json.dumps(nets)], cache)
    t = out["compiles"][1:]
    return {"width": dict(zip(widths, t[:len(widths)])),
            "depth": dict(zip(depths, t[len(widths):]))}


_MEMORY = """
import json, resource, sys, tracemalloc
import numpy as np
from symnet.bench import refs
from symnet.bench.measure import build_model, LR
def peak():
    # VmHWM: this process's peak resident set; ru_maxrss would include the
    # parent's size at fork on Linux
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
wl = refs.WORKLOADS[sys.argv[1]]
X, T = refs.make_data(wl)
before = peak()
model = build_model(wl)
model.step(X, T, LR)
tracemalloc.start()
for _ in range(5):
    model.step(X, T, LR)
_, traced = tracemalloc.get_traced_memory()
tracemalloc.stop()
arrays = model.theta.nbytes + model.grad.nbytes \
    + model.runtime.work_size(model.runtime.work_rows) * model.dtype.itemsize
print(json.dumps({"maxrss": peak(), "maxrss_before_model": before, "model_arrays": arrays,
                  "data": X.nbytes + T.nbytes, "per_step_python_alloc": traced}))
"""


def peak_memory(workload) -> dict:
    """Bytes: the process's peak resident set (VmHWM) with the
    model built and stepped, the same before building it, the model's own
    arrays, and Python-level allocations during 5 steps (tracemalloc peak)."""
    with tempfile.TemporaryDirectory(prefix="symnet-bench-") as cache:
        return _python(_MEMORY, [workload.name], cache)


def peak_gflops(min_time: float) -> float:
    return refs.measure_peak_gflops(seconds=min_time)


def flops(workload) -> int:
    return refs.flops_per_step(workload)


def data(workload):
    X, T = refs.make_data(workload)
    return np.ascontiguousarray(X), np.ascontiguousarray(T)
