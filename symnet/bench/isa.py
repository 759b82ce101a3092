"""``python -m symnet.bench --isa avx2``: one run with every library held to AVX2 that can be.

A benchmark on an AVX-512 machine says little about the AVX2-only machines many users
have (symnet's tiles and PyTorch's eager overhead scale differently with the vector
width), and holding symnet alone to AVX2 (``SYMNET_MARCH=x86-64-v3``) compares AVX2 C
with references that still run AVX-512.  ``--isa avx2`` runs the benchmark in a new
process whose environment holds each library to AVX2 before any of them loads:

    symnet's C                        SYMNET_MARCH=x86-64-v3 (gcc -march=x86-64-v3)
    OpenBLAS (numpy's, symnet's BLAS) OPENBLAS_CORETYPE=Haswell
    PyTorch's kernels                 ATEN_CPU_CAPABILITY=avx2
    MKL (PyTorch's BLAS)              MKL_ENABLE_INSTRUCTIONS=AVX2
    oneDNN (PyTorch)                  ONEDNN_MAX_CPU_ISA=AVX2
    XLA (JAX)                         XLA_FLAGS=--xla_cpu_max_isa=AVX2

XLA's flag holds the code XLA generates, not JAX's products: XLA hands those to YNNPACK,
which picks its kernels from the CPU's own features (AVX-512 kernels on an AVX-512 machine
whatever the flag).  So a held run also times each reference's own product
(``check_held``) and names the ones that run faster than the instruction set allows.

The result estimates an AVX2 machine of the same clock, caches and cores; it is not one
(an AVX2 core's load ports, caches and frequency differ).  symnet's machine
measurements and the planner's wisdom are kept per compiler flags, so the AVX2 build
measures its own.
"""

from __future__ import annotations

import os
import subprocess
import sys

#: the environment variable the new process carries, so that it does not start again
MARK = "SYMNET_BENCH_ISA"

HELD = {
    "avx2": {
        "SYMNET_MARCH": "x86-64-v3",
        "OPENBLAS_CORETYPE": "Haswell",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },
}
XLA_FLAG = {"avx2": "--xla_cpu_max_isa=AVX2"}
#: what /proc/cpuinfo must list for the instruction set to run at all
NEEDS = {"avx2": ("avx2", "fma")}


def cpu_flags(path: str = "/proc/cpuinfo") -> set | None:
    """The CPU's feature flags, or None where the system does not say (not Linux)."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return set()


def held_env(isa: str, environ: dict) -> dict:
    """``environ`` with every library held to ``isa``, and the mark set."""
    env = dict(environ)
    env.update(HELD[isa])
    flags = env.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith("--xla_cpu_max_isa=")] + [XLA_FLAG[isa]]
    env["XLA_FLAGS"] = " ".join(flags)
    env[MARK] = isa
    return env


def check(isa: str, flags: set | None) -> str | None:
    """Why ``isa`` cannot run on a CPU with these flags, or None."""
    if flags is None:
        return f"--isa {isa}: this system does not list its CPU's features (/proc/cpuinfo)"
    missing = [f for f in NEEDS[isa] if f not in flags]
    if missing:
        return f"--isa {isa}: this CPU lacks {', '.join(missing)}"
    return None


def restart(isa: str, argv: list) -> int:
    """Run ``python -m symnet.bench argv`` in a new process held to ``isa``; its exit status.
    (A new process, not this one replaced: ``main([...])`` called from Python returns.)"""
    sys.stdout.flush()
    sys.stderr.flush()
    return subprocess.call([sys.executable, "-m", "symnet.bench", *argv],
                           env=held_env(isa, os.environ))


#: a reference whose own product runs this much faster than numpy's OpenBLAS held to the
#: same instruction set is taken as not held: OpenBLAS's Haswell kernels reach about 90 %
#: of an AVX2 core's FMA rate, so even a perfect AVX2 product is at most ~1.1× theirs
NOT_HELD_ABOVE = 1.25

#: references found not held in this run: name -> their product's rate over numpy's
not_held: dict = {}


def unheld(rates: dict, numpy_gflops: float) -> dict:
    """The references of ``rates`` (name -> GFLOP/s of its own 1024² float32 product,
    None where not measured) that ran faster than the instruction set allows, as
    name -> rate / numpy's rate (numpy's OpenBLAS held to it, ``numpy_gflops``)."""
    return {name: g / numpy_gflops for name, g in rates.items()
            if g is not None and numpy_gflops > 0 and g > NOT_HELD_ABOVE * numpy_gflops}


def held_note(name: str) -> str:
    """What a reference's figures are worth in this run, when it was found not held."""
    if name not in not_held:
        return ""
    return f" ({name} not held to {os.environ.get(MARK, '').upper()}: see the header)"


WHY_NOT_HELD = {
    "jax": "XLA's YNNPACK picks its products' kernels from the CPU's own features and "
           "ignores --xla_cpu_max_isa; with XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= "
           "XLA runs its own code instead, which the cap holds, and which is slower than "
           "YNNPACK's AVX2 kernels would be (docs/performance.md)",
}


def check_held(ref_names, numpy_gflops: float, seconds: float, measure=None) -> list:
    """In a held run, time each reference's own product and fill ``not_held``; the
    header's lines (none outside a held run)."""
    isa = os.environ.get(MARK)
    if isa not in HELD:
        return []
    if measure is None:
        from .refs import product_gflops as measure
    rates = {r: measure(r, seconds) for r in ref_names if r in ("torch", "jax")}
    not_held.clear()
    not_held.update(unheld(rates, numpy_gflops))
    shown = ", ".join(f"{r} {g:.0f}" for r, g in rates.items() if g is not None)
    if not shown:
        return []
    lines = [f"the caps checked, each library's own 1024x1024 float32 product: numpy "
             f"{numpy_gflops:.0f}, {shown} GFLOP/s"]
    for r, x in not_held.items():
        lines.append(f"    {r}: {x:.2f}x numpy's OpenBLAS held to {isa.upper()}, more than "
                     f"{isa.upper()} gives on this machine: its products are NOT held, its "
                     f"figures below are {r} at this CPU's full width. "
                     + WHY_NOT_HELD.get(r, ""))
    return lines


def describe() -> str:
    """A line for the benchmark's header when this run is held to an instruction set."""
    isa = os.environ.get(MARK)
    if isa not in HELD:
        return ""
    held = ", ".join(f"{k}={v}" for k, v in HELD[isa].items())
    return (f"held to {isa.upper()} (--isa {isa}: {held}, XLA_FLAGS={XLA_FLAG[isa]}): an "
            f"estimate of an {isa.upper()}-only machine of this clock and these caches")
