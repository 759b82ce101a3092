"""python -m symnet.bench [--quick] [--workloads tiny,small,medium,large,conv,transformer,gru,
    pinn] [--refs ...]

Times one float32 training step (forward + backward + update) of each workload:
symnet's ``model.step``, a whole epoch in one ``model.fit`` call (per step),
plain numpy back-propagation, and PyTorch / JAX / PyTensor when they are
installed.  Then compile time in new processes (cold and cached, and against
width and depth), the peak memory of the large workload, and data-parallel
steps over MPI at 1 and 2 processes (symnet/bench/mpi.py).

    python -m symnet.bench                 # everything, about 3 minutes
    python -m symnet.bench --quick         # shorter timings, numpy/torch/jax only
    python -m symnet.bench --workloads tiny --sections steps
    python -m symnet.bench --workloads conv --sections steps   # the LeNet-5-like network
    python -m symnet.bench --workloads transformer,gru --sections steps   # sequences
    python -m symnet.bench --sections mpi  # data-parallel steps at 1 and 2 processes
    python -m symnet.bench --workloads pinn   # a Burgers PINN's Adam step; compile vs order
    python -m symnet.bench --isa avx2 --workloads transformer --sections steps
                                           # every library held to AVX2 that can be, checked (symnet/bench/isa.py)

What one of the plan's rewrites is worth, the two builds timed in turns in one process:
``python -m symnet.bench.paired --without fuse_epilogues`` (symnet/bench/paired.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from . import conv, isa, pinn, seq

from . import measure

from . import refs

DEFAULT_REFS = ("numpy", "torch", "jax", "pytensor")
QUICK_REFS = ("numpy", "torch", "jax")
SECTIONS = ("steps", "compile", "memory", "mpi")
MIN_TIME, QUICK_MIN_TIME = 0.3, 0.05   # seconds of calls of each step timed (7 turns)


def _us(v) -> str:
    return f"{v:10.1f}" if isinstance(v, float) else f"{'n/a':>10}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    avx = "AVX-512" if "avx512f" in open("/proc/cpuinfo").read() else "no AVX-512" \
        if os.path.exists("/proc/cpuinfo") else ""
    return f"{cpu}, {os.cpu_count()} cores, {avx}"


def run_steps(names, ref_names, min_time: float, peak: float):
    rows, plans = [], []
    run_steps.plans = plans
    for name in names:
        wl = refs.WORKLOADS[name]
        params = refs.init_params(wl)
        X, T = measure.data(wl)
        model = measure.build_model(wl, params)
        epoch_us = measure.time_epoch(model, wl, min_time)
        fit_us = measure.time_fit_overhead(model, wl, min_time)
        model.params.update(params)  # the references start from the same parameters
        ref_us, skipped = measure.time_references(wl, params, X, T, ref_names, min_time,
                                                  model=model)
        step_us = ref_us.pop("symnet")
        rows.append((wl, step_us, epoch_us, ref_us, skipped, fit_us))
        print_row(wl, step_us, epoch_us, ref_us, peak)
        plans.append((wl.name, model))
    return rows


def print_header(ref_names):
    print(f"\n{'workload':<8} {'symnet step':>12} {'epoch/step':>11} "
          + " ".join(f"{n:>10}" for n in ref_names)
          + f" {'fastest ref':>14} {'speed-up':>9} {'GFLOP/s':>8} {'% peak':>7}")
    print(f"{'':<8} {'(µs)':>12} {'(µs)':>11} " + " ".join(f"{'(µs)':>10}" for _ in ref_names))
    print_header.refs = ref_names


def print_row(wl, step_us, epoch_us, ref_us, peak):
    names = print_header.refs
    fastest = min(ref_us, key=ref_us.get) if ref_us else None
    gflops = measure.flops(wl) / step_us / 1e3
    speed = f"{ref_us[fastest] / step_us:8.2f}x" if fastest else f"{'n/a':>9}"
    print(f"{wl.name:<8} {step_us:12.1f} {_us(epoch_us)[-10:]:>11} "
          + " ".join(_us(ref_us.get(n)) for n in names)
          + f" {fastest or 'none':>14} {speed} {gflops:8.1f} {100 * gflops / peak:6.1f}%"
          + ("  *" if fastest in isa.not_held else ""), flush=True)


def print_notes(rows):
    for wl, step_us, epoch_us, ref_us, skipped, fit_us in rows:
        if isinstance(epoch_us, str):
            print(f"  {wl.name}: whole-epoch training {epoch_us}")
        else:
            print(f"  {wl.name}: whole epoch ({measure.epoch_batches(wl)} batches of "
                  f"{wl.batch}) {epoch_us:.2f} µs per step = "
                  f"{1e6 / epoch_us:,.0f} steps/s, {epoch_us / step_us:.2f}× the step; "
                  "fixed cost per fit call "
                  f"{fit_us if isinstance(fit_us, str) else f'{fit_us:.0f} µs'}")
        for n, why in skipped.items():
            print(f"  {wl.name}: {n} skipped: {why.splitlines()[0][:100]}")


def run_compile(quick: bool):
    wl = refs.WORKLOADS["medium"]
    ct = measure.compile_times(wl, repeats=1 if quick else 3)
    print(f"\nCompile, medium {'-'.join(map(str, wl.sizes))} float32, each in a new "
          "process, from `import symnet` to a loaded model (median of "
          f"{len(ct['cold_all'])}):")
    m = ct["machine"]
    print(f"  first network on a new machine (2-4-1, empty cache: measures the machine, "
          f"compiles the shared matrix driver and wrapper): {m['total_s']:.3f} s")
    print("  (cold: a network never compiled, on a machine where symnet compiled before; its "
          "cache holds\n   the machine's figures, the templates' compiled code, the shared "
          "matrix driver and cffi's\n   wrapper, as a user's second network of the same "
          "number type finds them; byte code of\n   symnet's modules present in every "
          "process)")
    for kind in ("cold", "warm"):
        r = ct[kind]
        label = "cold (never compiled)" if kind == "cold" else "warm (cache hit)     "
        runs = ", ".join(f"{t:.3f}" for t in ct[f"{kind}_all"])
        print(f"  {label}: {r['total_s']:.3f} s  (import symnet {r['import_s']:.3f} s, "
              f"compile call {r['compiles'][0]:.3f} s, sympy imported: "
              f"{r['sympy_imported']}; runs: {runs} s)")
        if "cpu_s" in r:
            print(f"  {' ' * len(label)}  CPU time {r['cpu_s']:.3f} s in Python, "
                  f"{r['cc_cpu_s']:.3f} s in the C compiler")
    widths = (32, 256, 1024) if quick else (32, 128, 512, 1024, 2048)
    depths = (2, 8) if quick else (2, 4, 8, 16)
    sc = measure.compile_scaling(widths, depths)
    print("  cold compile call vs width (3 layers):  "
          + ", ".join(f"{w}: {t:.2f} s" for w, t in sc["width"].items()))
    print("  cold compile call vs depth (width 64):  "
          + ", ".join(f"{d}: {t:.2f} s" for d, t in sc["depth"].items()))
    return ct, sc


def huge_pages(path="/sys/kernel/mm/transparent_hugepage/enabled"):
    """The kernel's transparent huge pages mode ("always", "madvise", "never"), or None
    where there is no such setting (not Linux)."""
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return None
    return next((w[1:-1] for w in text.split() if w.startswith("[")), None)


def print_machine():
    """Where the products run on this machine (symnet/backend/c/tuning.py), measured once."""
    from symnet.backend.c import tuning
    t0 = time.perf_counter()
    rec = tuning.machine()
    took = time.perf_counter() - t0
    s = tuning.settings()
    blas = "none installed" if not rec["blas"] else (
        f"OpenBLAS from M·N·K ≥ {s['blas_min']:.3g}" if s["blas_min"] < float("inf")
        else "OpenBLAS installed, did not win all three product kinds by 5 % at any "
        "measured size")
    print(f"products: one thread {2 * rec['rate'] / 1e9:.1f} GFLOP/s (128×256×784), "
          f"join of {rec['threads_max']} threads {rec['join_s'] * 1e6:.1f} µs → one more "
          f"thread per {s['thread_min']:.3g} multiply-adds, at most {s['threads_max']}; "
          f"BLAS: {blas} ({'cached' if took < 0.05 else f'measured now in {took:.2f} s'}"
          + (f"; measured under load: other programs kept {rec.get('others', 0):.2f} cores "
             "busy, measured again later" if rec.get("disturbed") else "") + ")")
    thp = huge_pages()
    if rec["blas"] and thp not in (None, "always"):
        print(f"    transparent huge pages: {thp}: OpenBLAS's packing buffers are on 4 KiB "
              "pages, on which some machines run its products at a third of their speed "
              "in some processes (docs/performance.md, \"OpenBLAS at two speeds\")")
    for kind, M, N, K, ours, theirs in rec.get("shapes", []):
        if M * N * K >= 1e6:
            print(f"    {('nt', 'nn', 'tn')[kind]} {M}×{N}×{K}: symnet {ours * 1e6:8.1f} µs, "
                  f"BLAS {theirs * 1e6:8.1f} µs")


TARGETS = {"tiny": 5.0, "small": 3.0, "medium": 1.5, "large": 1.1}


def print_targets(rows, ct):
    """The targets against this run's figures (of the sections that ran)."""
    if not rows and not ct:
        return
    print("\nTargets (this run):")
    for wl, step_us, epoch_us, ref_us, skipped, fit_us in rows or []:
        if wl.name in TARGETS and ref_us:
            fastest = min(ref_us, key=ref_us.get)
            r = ref_us[fastest] / step_us
            print(f"  {wl.name:<7} speed-up ≥ {TARGETS[wl.name]}×: {r:5.2f}× vs {fastest:<9}"
                  f" {'reached' if r >= TARGETS[wl.name] else 'NOT reached'}"
                  + isa.held_note(fastest))
        if not isinstance(epoch_us, str):
            print(f"  {wl.name:<7} epoch per step ≤ step: {epoch_us:.1f} vs {step_us:.1f} µs "
                  f"{'reached' if epoch_us <= step_us else 'NOT reached'}")
        if not isinstance(fit_us, str):
            print(f"  {wl.name:<7} fit fixed cost ≤ 200 µs: {fit_us:.0f} µs "
                  f"{'reached' if fit_us <= 200 else 'NOT reached'}")
    if ct:
        cold, warm = ct[0]["cold"]["total_s"], ct[0]["warm"]["total_s"]
        print(f"  cold compile ≤ 1.0 s: {cold:.3f} s {'reached' if cold <= 1 else 'NOT reached'}"
              f"; cache hit ≤ 0.15 s: {warm:.3f} s "
              f"{'reached' if warm <= 0.15 else 'NOT reached'}")


def run_memory():
    wl = refs.WORKLOADS["large"]
    m = measure.peak_memory(wl)
    mb = 1 / 2**20
    print(f"\nMemory, large {'-'.join(map(str, wl.sizes))} batch {wl.batch}, new process:")
    print(f"  peak resident set (VmHWM): {m['maxrss'] * mb:.1f} MiB "
          f"(before building the model: {m['maxrss_before_model'] * mb:.1f} MiB)")
    print(f"  model arrays (params + grads + work): {m['model_arrays'] * mb:.1f} MiB; "
          f"batch data {m['data'] * mb:.1f} MiB")
    print(f"  Python allocations during 5 steps (tracemalloc peak): "
          f"{m['per_step_python_alloc']} bytes")
    return m


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m symnet.bench", description=__doc__.split(
        "\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short timings, fewer references")
    ap.add_argument("--tune", default="fast", choices=("off", "fast", "full"),
                    help="how much the planner may time (compile(tune=...)); default fast")
    ap.add_argument("--workloads", default=",".join([*refs.WORKLOADS, "conv"]),
                    help="comma-separated, from " + ", ".join(refs.WORKLOADS) + ", conv, "
                    + ", ".join(seq.WORKLOADS) + ", pinn")
    ap.add_argument("--refs", default=None, help="references to run, from "
                    + ", ".join(refs.REFERENCES) + " (default: "
                    + ",".join(DEFAULT_REFS) + "; --quick: " + ",".join(QUICK_REFS) + ")")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="comma-separated, from " + ", ".join(SECTIONS))
    ap.add_argument("--time", type=float, default=None, metavar="SECONDS",
                    help="seconds of calls of each step timed, over its 7 turns (default "
                    f"{MIN_TIME}; --quick: {QUICK_MIN_TIME}): longer gives steadier "
                    "ratios on a busy machine (the pinn workload keeps its own 7 repeats)")
    ap.add_argument("--isa", default="native", choices=("native", *isa.HELD),
                    help="native (default), or avx2: run again with symnet's C, OpenBLAS, "
                    "PyTorch, MKL, oneDNN and XLA held to AVX2 (an estimate of an "
                    "AVX2-only machine on this one; each reference's own product is "
                    "timed, and one the cap does not hold, as JAX's, is named)")
    args = ap.parse_args(argv)
    if args.isa != "native" and os.environ.get(isa.MARK) != args.isa:
        why = isa.check(args.isa, isa.cpu_flags())
        if why:
            ap.error(why)
        raise SystemExit(isa.restart(args.isa, list(sys.argv[1:] if argv is None else argv)))
    if args.time is not None and not (args.time > 0 and args.time <= 600):
        ap.error(f"--time: expected seconds in (0, 600], got {args.time:g}")
    names = [w for w in args.workloads.split(",") if w]
    for w in names:
        if w not in refs.WORKLOADS and w not in ("conv", "pinn") and w not in seq.WORKLOADS:
            ap.error(f"unknown workload {w!r}; choose from {', '.join(refs.WORKLOADS)}, conv, "
                     + ", ".join(seq.WORKLOADS) + ", pinn")
    # checked before the PINN-only run below too, which would otherwise skip an unknown
    # section or reference and time nothing
    ref_names = args.refs.split(",") if args.refs else list(
        QUICK_REFS if args.quick else DEFAULT_REFS)
    for r in ref_names:
        if r not in refs.REFERENCES:
            ap.error(f"unknown reference {r!r}; choose from {', '.join(refs.REFERENCES)}")
    sections = args.sections.split(",")
    for s in sections:
        if s not in SECTIONS:
            ap.error(f"unknown section {s!r}; choose from {', '.join(SECTIONS)}")
    with_conv = "conv" in names
    with_pinn = "pinn" in names
    sequences = [w for w in names if w in seq.WORKLOADS]
    names = [w for w in names if w not in ("conv", "pinn") and w not in seq.WORKLOADS]
    if with_pinn and not names and not with_conv and not sequences:
        t0 = time.perf_counter()
        pinn_refs = [r for r in (args.refs or "torch,jax").split(",") if r in pinn.REFERENCES]
        if isa.describe():
            print(isa.describe())
            held_time = (args.time if args.time is not None
                         else QUICK_MIN_TIME if args.quick else MIN_TIME)
            for line in isa.check_held(pinn_refs, measure.peak_gflops(held_time), held_time):
                print(line)
        # the PINN workload alone: its steps and (section compile) its compile times
        pinn.run(args.quick, pinn_refs, steps="steps" in sections,
                 compile_times="compile" in sections)
        print(f"\nbenchmark took {time.perf_counter() - t0:.1f} s")
        return
    min_time = args.time if args.time is not None else QUICK_MIN_TIME if args.quick else MIN_TIME

    measure.TUNE = args.tune
    t0 = time.perf_counter()
    print(f"symnet benchmark: {machine()}; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print("Every figure is a median (steps: of 7 repeats, each ≥ "
          f"{min_time / 7 * 1e3:.0f} ms of calls, symnet's step and the references "
          "timed in turns so that they meet the same load; compile: of 3 new processes).")
    # the machine first: right after numpy's matmul its BLAS threads still spin, and a
    # measurement then would time our threads' join against them
    if isa.describe():
        print(isa.describe())
    print_machine()
    peak = measure.peak_gflops(min_time)
    print(f"float32 peak measured now (numpy 1024x1024 matmul): {peak:.1f} GFLOP/s")
    for line in isa.check_held(ref_names, peak, min_time):
        print(line)
    rows = ct = None
    if "steps" in sections and names:
        print_header(ref_names)
        rows = run_steps(names, ref_names, min_time, peak)
        print("\nspeed-up = fastest reference / symnet step; GFLOP/s and % peak are "
              "symnet's step (matrix products only)."
              + (" *: the fastest reference was not held to the instruction set (the header)."
                 if isa.not_held else ""))
        print_notes(rows)
        print("\nwhere the products run (the planner's choices, compile(tune=...)):")
        for name, model in run_steps.plans:
            conv.print_plan(name, model)
    if "steps" in sections and with_conv:
        conv.run(min_time, peak, [r for r in ("torch", "jax") if r in ref_names])
    if "steps" in sections:
        for w in sequences:
            seq.run(w, min_time, [r for r in ref_names if r in ("torch", "jax")], peak)
    if "steps" in sections and with_pinn:
        pinn.run(args.quick, [r for r in ref_names if r in pinn.REFERENCES],
                 compile_times="compile" in sections)
    if "compile" in sections:
        ct = run_compile(args.quick)
    if "memory" in sections:
        run_memory()
    print_targets(rows, ct)
    if "mpi" in sections:
        from . import mpi
        mpi.report(names, args.quick)
    print(f"\nbenchmark took {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
