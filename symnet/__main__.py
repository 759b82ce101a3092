"""Command line: look at what symnet derives and emits.

    python -m symnet formulas FILE.py [--latex]   the chain-rule derivation
    python -m symnet c FILE.py [--dtype float64]  the generated C
    python -m symnet generate [--check]           regenerate generated/ from examples/

FILE.py defines a network: a module-level ``net``, or a function ``network()``
returning one, or any module-level ``symnet.Network``.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path


def load_network(path: str):
    """The Network defined by a Python file (without running its __main__)."""
    from .dsl import Network
    if not Path(path).exists():
        raise FileNotFoundError(2, "No such file or directory", path)
    ns = runpy.run_path(path, run_name="symnet_network_file")
    if isinstance(ns.get("net"), Network):
        return ns["net"]
    if callable(ns.get("network")):
        net = ns["network"]()
        if isinstance(net, Network):
            return net
    found = [v for v in ns.values() if isinstance(v, Network)]
    if len(found) == 1:
        return found[0]
    raise SystemExit(f"{path}: define `net = symnet.Network(...)` or `def network(): ...` "
                     f"(found {len(found)} Network objects)")


def c_source(net, dtype: str = "float32") -> str:
    """The kernel C of a network, emitted without compiling it."""
    from .emit import emit
    from .lower import plan
    return emit(plan(net.graph()), dtype)[0]


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def generate(check: bool = False) -> int:
    """Write generated/<example>.c for every examples/*.py defining a network."""
    root = repo_root()
    stale = []
    for example in sorted((root / "examples").glob("*.py")):
        text = example.read_text()
        if "def network(" not in text:
            continue
        out = root / "generated" / f"{example.stem}.c"
        src = c_source(load_network(str(example)))
        if check:
            if not out.exists() or out.read_text() != src:
                stale.append(out.name)
        else:
            out.parent.mkdir(exist_ok=True)
            out.write_text(src)
            print(f"wrote {out.relative_to(root)}")
    if stale:
        print("stale: " + ", ".join(stale) + " (run: python -m symnet generate)")
        return 1
    return 0


def main(argv=None) -> int:
    """The command line; errors a user makes are one line on stderr (exit 2), and
    a closed pipe (``... | head``) ends it quietly."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away: stop quietly; point stdout at devnull so that
        # Python's flush at exit does not complain again
        import os
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except FileNotFoundError as exc:
        print(f"python -m symnet: error: no such file: {exc.filename}", file=sys.stderr)
        return 2
    except IsADirectoryError as exc:
        print(f"python -m symnet: error: {exc.filename} is a directory, not a Python file",
              file=sys.stderr)
        return 2


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m symnet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("formulas", help="print the chain-rule derivation of a network")
    f.add_argument("file")
    f.add_argument("--latex", action="store_true")
    c = sub.add_parser("c", help="print the generated C of a network")
    c.add_argument("file")
    c.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    g = sub.add_parser("generate", help="regenerate generated/ from examples/")
    g.add_argument("--check", action="store_true", help="only report stale files")
    args = ap.parse_args(argv)
    if args.cmd == "generate":
        return generate(args.check)
    net = load_network(args.file)
    if args.cmd == "c":
        sys.stdout.write(c_source(net, args.dtype))
    else:
        formulas = net.formulas()
        print(formulas.latex() if args.latex else formulas)
    return 0


if __name__ == "__main__":
    sys.exit(main())
