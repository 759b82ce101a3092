"""The ``mpi`` section of ``python -m symnet.bench``: data-parallel training steps.

For each workload and P = 1, 2 processes (``mpiexec -n P python -m mpi4py -m
symnet.bench.mpi``), the global batch of every step is the workload's batch,
split over the processes (B/P examples each: the same steps as one process,
done by P).  Measured in those processes, as medians:

- step: a one-epoch ``fit(..., comm=MPI.COMM_WORLD)`` (minibatch) divided by
  its steps, all processes timed together (the slowest counts);
- all-reduce: one in-place ``Allreduce`` of the step's buffer alone (the
  parameter count + 5 float64 numbers), the communication part of a step;
- at P = 1 also the same epoch through ``fit`` without ``comm`` (one compiled
  call per ~0.1 s of steps, no Python per step), the one-process baseline.

Each process runs the kernels with OMP_NUM_THREADS = cores / P (threads serve
the large products only), so P processes never ask for more threads than cores.

    python -m symnet.bench --sections mpi [--quick] [--workloads tiny,small]
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from . import refs
from .measure import LR, ROOT, build_model, epoch_batches

PROCESSES = (1, 2)


def _timed(comm, fn, min_time: float, repeats: int = 5) -> float:
    """Median µs per call of fn(), the same number of calls on every process
    (fn is collective), each repeat timed by the slowest process."""
    from mpi4py import MPI
    fn()
    comm.Barrier()
    t = time.perf_counter()
    fn()
    estimate = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
    inner = max(1, int(min_time / repeats / max(estimate, 1e-9)))
    per = []
    for _ in range(repeats):
        comm.Barrier()
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        per.append(comm.allreduce(time.perf_counter() - t, op=MPI.MAX) / inner * 1e6)
    return statistics.median(per)


def worker(names, quick: bool) -> list:
    """Run inside every process; returns the measurements (rank 0's are printed)."""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank, P = comm.Get_rank(), comm.Get_size()
    min_time = 0.1 if quick else 0.5
    rows = []
    for name in names:
        wl = refs.WORKLOADS[name]
        model = build_model(wl)
        batch = max(1, wl.batch // P)
        steps = max(16, epoch_batches(wl) // (8 if quick else 1))
        X, T = refs.make_data(dataclasses.replace(wl, batch=wl.batch * steps), seed=1)
        X, T = np.ascontiguousarray(X), np.ascontiguousarray(T)
        Xr, Tr = np.ascontiguousarray(X[rank::P]), np.ascontiguousarray(T[rank::P])

        def epoch(c=comm, model=model, Xr=Xr, Tr=Tr, batch=batch):
            model.fit(Xr, Tr, method="minibatch", batch_size=batch, epochs=1, lr=LR,
                      progress=False, comm=c)
        step_us = _timed(comm, epoch, min_time, repeats=5) / steps
        buf = np.zeros(model.theta.size + 5)
        args = (MPI.IN_PLACE, [buf, MPI.DOUBLE], MPI.SUM)
        reduce_us = _timed(comm, lambda a=args: comm.Allreduce(*a), min_time / 4)
        alone_us = None
        if P == 1:
            alone_us = _timed(comm, lambda: epoch(None), min_time, repeats=5) / steps
        rows.append({"workload": name, "params": int(model.theta.size), "P": P,
                     "batch": batch, "steps": steps, "step_us": step_us,
                     "allreduce_us": reduce_us, "fit_without_comm_us": alone_us})
    return rows


def measure(names, quick: bool = False, processes=PROCESSES) -> dict:
    """{P: rows} measured in new MPI jobs; raises RuntimeError when one fails."""
    from ..runtime.distributed import mpiexec
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = {}
    for P in processes:
        # one core per process: the kernels' threads (large products) share the cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // P))
        cmd = mpiexec(P) + [sys.executable, "-m", "mpi4py", "-m", "symnet.bench.mpi",
                            "--workloads", ",".join(names)] + (["--quick"] if quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        out[P] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def report(names, quick: bool = False):
    """Print the section; a missing MPI is reported, not raised."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("\nData-parallel steps over MPI (minibatch, float32; each step's global batch "
          "is the workload's, split over P processes on this machine; OMP_NUM_THREADS = "
          f"cores / P; load average {load:.1f} at the start):")
    try:
        import mpi4py  # noqa: F401
        res = measure(names, quick)
    except (ImportError, FileNotFoundError) as exc:
        print(f"  skipped: {exc} (pip install '.[mpi]')")
        return None
    print(f"  {'workload':<8} {'params':>9} {'P':>2} {'batch/proc':>10} {'step (µs)':>11} "
          f"{'all-reduce (µs)':>16} {'share':>6} {'P=1 / P':>8} {'no comm (µs)':>13}")
    base = {r["workload"]: r for r in res.get(1, [])}
    for P, rows in res.items():
        for r in rows:
            b = base.get(r["workload"])
            speed = f"{b['step_us'] / r['step_us']:7.2f}x" if b else f"{'n/a':>8}"
            alone = r["fit_without_comm_us"]
            print(f"  {r['workload']:<8} {r['params']:>9,} {P:>2} {r['batch']:>10} "
                  f"{r['step_us']:11.1f} {r['allreduce_us']:16.1f} "
                  f"{100 * r['allreduce_us'] / r['step_us']:5.1f}% {speed} "
                  f"{'' if alone is None else f'{alone:13.1f}'}", flush=True)
    print("  step: one-epoch fit(comm=...) per step, slowest process; all-reduce: the "
          "step's buffer alone; share: all-reduce / step; P=1 / P: step time at 1 "
          "process over at P; no comm: the same epoch by fit without comm (compiled "
          "epoch, no Python per step).")
    return res


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m symnet.bench.mpi")
    ap.add_argument("--workloads", default=",".join(refs.WORKLOADS))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rows = worker([w for w in args.workloads.split(",") if w], args.quick)
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(json.dumps(rows), flush=True)


if __name__ == "__main__":
    main()
