"""python -m symnet.bench.paired --without REWRITE [--workloads transformer,medium]
    [--rounds 150] [--steps 3] [--processes 5] [--dtype float32]

What one of the plan's rewrites is worth, measured in one process: each workload is
compiled twice, as it is and with the rewrite turned off (``--with fuse_loops``: with
the rewrite that is off by default turned on; or with another chunk size of a chunked
pass, ``--chunk N``), and the two models' ``step`` calls alternate, a few
steps of one then of the other, for many rounds; the figure is the median over the
rounds of (time without) / (time with).  Both models meet the same moments of a shared
machine's load, so a change of a few per cent shows where two runs of ``python -m
symnet.bench`` minutes apart can differ by 30 %.  A process's own memory placement moves
its ratio by a few per cent for all its rounds alike, so the pair is compiled and timed
in several new processes (``--processes``, default 5) and the figure is the median of
theirs, each shown.  The BLAS check of a module's first training call (which may move one
build's products off OpenBLAS and not the other's) is off unless ``SYMNET_BLAS_CHECK`` is
set: both builds run their products where the plan puts them.  The rewrites
(symnet.plan): ``fuse_epilogues``, ``fuse_masks``, ``elide_copies``, ``fuse_routes``,
``overwrite``, ``share``; off by default, ``fuse_loops``.

    python -m symnet.bench.paired --without fuse_epilogues --workloads transformer,large
    python -m symnet.bench.paired --chunk 4 --workloads transformer
    SYMNET_MARCH=x86-64-v3 python -m symnet.bench.paired --with fuse_loops

A ratio above 1 means the step is faster with the rewrite (or with the chunk size the
plan chooses).  The workloads are the bench's (symnet/bench/refs.py, seq.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

#: what turning each rewrite off replaces it with (symnet.plan.lower calls them by name)
OFF = {
    "fuse_epilogues": lambda p, ops, later: ops,
    "fuse_masks": lambda p, ops, later: ops,
    "elide_copies": lambda p, ops, before: ops,
    "fuse_routes": lambda p, ops: ops,
    "overwrite": lambda p, ops: ops,
    "share": lambda p: None,
}

#: the rewrites that are off by default, and the switch that turns each on
ON = {"fuse_loops": "FUSE_LOOPS"}


def _workload(name: str, dtype: str):
    """(network maker, parameters maker, step function maker) of a bench workload."""
    from . import refs, seq
    if name in seq.WORKLOADS:
        make, shape, batch, _, _ = seq.WORKLOADS[name]
        X, T = seq._data(shape, batch)
        return make, seq._init, (X.astype(dtype), T.astype(dtype)), seq.LR
    if name in refs.WORKLOADS:
        from . import measure
        wl = refs.WORKLOADS[name]
        X, T = refs.make_data(wl)      # the bench's batch (T as its loss takes it)
        return (lambda: measure.network(wl.sizes, wl.activations, wl.loss),
                lambda model: refs.init_params(wl), (X.astype(dtype), T.astype(dtype)), measure.LR)
    known = sorted(set(seq.WORKLOADS) | set(refs.WORKLOADS))
    raise SystemExit(f"symnet.bench.paired: unknown workload {name!r}; "
                     f"one of {', '.join(known)}")


def compile_pair(make, dtype: str, without: str | None = None, chunk: int | None = None,
                 with_: str | None = None):
    """The network compiled as it is and with ``without`` turned off (``with_`` turned
    on; or chunks of ``chunk`` examples): (model, model).  The second is built in a cache folder of its
    own, a copy of this one without its networks: the cache's index, keyed by the
    network, would otherwise give it the first's module (the same C); the copy keeps the
    machine's record, the planner's timings and the shared driver, so both models run
    their products where the same measurements put them."""
    from ..backend.c import build
    from ..plan import lower, schedule
    a = make().compile(dtype=dtype)
    saved = getattr(lower, without) if without else \
        getattr(lower, ON[with_]) if with_ else schedule.CHUNK
    env = os.environ.get("SYMNET_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="symnet-paired-") as own:
        for f in build.cache_dir().iterdir():
            if f.is_file() and not f.name.startswith("_symnet_"):
                shutil.copy2(f, own)
        try:
            os.environ["SYMNET_CACHE_DIR"] = own
            if without:
                setattr(lower, without, OFF[without])
            elif with_:
                setattr(lower, ON[with_], True)
            else:
                schedule.CHUNK = chunk
            b = make().compile(dtype=dtype)
        finally:
            if without:
                setattr(lower, without, saved)
            elif with_:
                setattr(lower, ON[with_], saved)
            else:
                schedule.CHUNK = saved
            if env is None:
                os.environ.pop("SYMNET_CACHE_DIR", None)
            else:
                os.environ["SYMNET_CACHE_DIR"] = env
    if a.c_source == b.c_source:
        raise SameC("symnet.bench.paired: the two builds have the same C; "
                    "the rewrite changes nothing in this network")
    return a, b


class SameC(SystemExit):
    """The pair's two builds are the same C: nothing to time."""


def paired(a, b, data, lr: float, rounds: int, steps: int) -> dict:
    """Alternate ``steps`` steps of a and of b (which goes first alternates too), for
    ``rounds`` rounds after a warm-up: milliseconds per step and the rounds' ratios."""
    X, T = data
    for m in (a, b):
        for _ in range(5):
            m.step(X, T, lr)
    ta, tb = [], []
    for r in range(rounds):
        order = ((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta))
        for m, out in order:
            t0 = time.perf_counter()
            for _ in range(steps):
                m.step(X, T, lr)
            out.append((time.perf_counter() - t0) / steps * 1e3)
    ratio = np.array(tb) / np.array(ta)
    return {"a_ms": statistics.median(ta), "b_ms": statistics.median(tb),
            "ratio": float(np.median(ratio)), "q25": float(np.quantile(ratio, 0.25)),
            "q75": float(np.quantile(ratio, 0.75))}


def _in_processes(argv: list, n: int, names: list) -> dict:
    """Each workload's ratios from ``n`` new processes running this with ``argv`` (one
    process each time: a process's memory placement moves one pair's ratio by a few per
    cent, the same way for all its rounds)."""
    out = {name: [] for name in names}
    for _ in range(n):
        proc = subprocess.run([sys.executable, "-m", "symnet.bench.paired", *argv,
                               "--processes", "1", "--json"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                             else f"symnet.bench.paired: exit status {proc.returncode}")
        for name, r in json.loads(proc.stdout.strip().splitlines()[-1]).items():
            out[name].append(r)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m symnet.bench.paired",
                                 description=__doc__.split("\n\n")[1])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--without", choices=sorted(OFF), help="the rewrite to turn off")
    which.add_argument("--with", dest="with_", choices=sorted(ON),
                       help="the rewrite, off by default, to turn on")
    which.add_argument("--chunk", type=int, help="examples per chunk of a chunked pass, "
                       "against the plan's own (symnet.plan.schedule.CHUNK)")
    ap.add_argument("--workloads", default="transformer")
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--processes", type=int, default=5,
                    help="new processes, each compiling and timing the pair (default 5)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.chunk is not None and args.chunk < 1:
        ap.error(f"--chunk: expected a number of examples ≥ 1, got {args.chunk}")
    if args.rounds < 1 or args.steps < 1:
        ap.error("--rounds and --steps: expected ≥ 1")
    if args.processes < 1:
        ap.error(f"--processes: expected ≥ 1, got {args.processes}")
    # the BLAS check of a module's first training call may put one build's products on the
    # tiles and leave the other's on the BLAS (symnet.backend.c.tuning): off, unless asked
    # (and as it was after this call: main may be called from a program)
    asked = os.environ.get("SYMNET_BLAS_CHECK")
    os.environ.setdefault("SYMNET_BLAS_CHECK", "0")
    try:
        return _run(args)
    finally:
        if asked is None:
            os.environ.pop("SYMNET_BLAS_CHECK", None)


def _run(args) -> int:
    from ..backend.c import build
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if args.processes == 1:
        results = {}
        for name in names:
            make, init, data, lr = _workload(name, args.dtype)
            try:
                a, b = compile_pair(make, args.dtype, args.without, args.chunk, args.with_)
            except SameC:
                if len(names) == 1:
                    raise
                results[name] = [None]      # the others are still timed
                continue
            for m in (a, b):
                m.params.update(init(m))
            results[name] = [paired(a, b, data, lr, args.rounds, args.steps)]
        if args.json:
            print(json.dumps({k: v[0] for k, v in results.items()}))
            return 0
    else:
        own = ["--without", args.without] if args.without else \
            ["--with", args.with_] if args.with_ else ["--chunk", str(args.chunk)]
        results = _in_processes(own + ["--workloads", ",".join(names), "--rounds",
                                       str(args.rounds), "--steps", str(args.steps),
                                       "--dtype", args.dtype], args.processes, names)
    other = f"without {args.without}" if args.without else \
        f"with {args.with_}" if args.with_ else f"chunks of {args.chunk}"
    print(f"symnet.bench.paired: each workload as it is (A) and {other} (B), "
          f"{args.rounds} rounds of {args.steps} steps of each in turn, {args.dtype}, "
          f"in {args.processes} process{'es' if args.processes > 1 else ''}"
          + ("" if build.env_switch("SYMNET_BLAS_CHECK", True) else "; BLAS check off"))
    for name, rs in results.items():
        if any(r is None for r in rs):
            print(f"  {name:<12} the same C: the rewrite changes nothing in this network")
            continue
        ratios = [r["ratio"] for r in rs]
        print(f"  {name:<12} A {statistics.median(r['a_ms'] for r in rs):8.3f} ms  "
              f"B {statistics.median(r['b_ms'] for r in rs):8.3f} ms  "
              f"B/A: median {statistics.median(ratios):.4f} of the processes' medians "
              f"(each {', '.join(f'{x:.3f}' for x in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
