"""Run a command with symnet's kernels built under AddressSanitizer and
UndefinedBehaviorSanitizer, so that any out-of-bounds access or undefined
behaviour in the generated C stops the run with a report.

    python -m symnet.backend.c.sanitize python -m pytest -q tests/test_gradients.py

An ASan-built extension can only be loaded into a process whose first
library is the ASan runtime; Python itself is not built with it, so the
runtime is preloaded (``LD_PRELOAD``).  Leak checking is off: the Python
interpreter itself keeps memory until exit.  Every report is fatal
(``-fno-sanitize-recover=all`` in ``build.flags()``), and sanitized modules
have their own cache keys, so they never mix with normal builds.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .build import BuildError, compiler

CHECKS = "address,undefined"


def runtime(cc: list | None = None) -> str:
    """Path of the compiler's ASan runtime (``gcc -print-file-name=libasan.so``)."""
    cc = cc or compiler()
    try:
        out = subprocess.run([*cc, "-print-file-name=libasan.so"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"cannot ask {cc[0]!r} for its ASan runtime: {exc}") from exc
    if not os.path.isabs(out) or not os.path.exists(out):
        raise BuildError(f"{' '.join(cc)} has no AddressSanitizer runtime (libasan.so); "
                         "install it (e.g. apt install libasan8) or use gcc")
    return out


def environment(base: dict | None = None, checks: str = CHECKS) -> dict:
    """``base`` (default os.environ) plus what a sanitized run needs."""
    env = dict(os.environ if base is None else base)
    env["SYMNET_SANITIZE"] = checks
    if "address" in checks:
        env["LD_PRELOAD"] = " ".join(filter(None, [runtime(), env.get("LD_PRELOAD")]))
        env["ASAN_OPTIONS"] = ":".join(filter(None, [
            "detect_leaks=0", "halt_on_error=1", env.get("ASAN_OPTIONS")]))
    env["UBSAN_OPTIONS"] = ":".join(filter(None, [
        "print_stacktrace=1", "halt_on_error=1", env.get("UBSAN_OPTIONS")]))
    return env


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    return subprocess.call(argv, env=environment())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
