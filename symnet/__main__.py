"""Command line: look at what symnet derives and emits.

    python -m symnet formulas FILE [--latex]      the chain-rule derivation
    python -m symnet c FILE [--dtype float64]     the generated C
    python -m symnet summary FILE [--batch-size 32] [--dtype float64]
                                                  parameters, memory and flops per step
    python -m symnet generate [--check]           regenerate generated/ from examples/
    python -m symnet export MODEL.npz --name net --out DIR [--params-file [PATH]]
                         [--inference-only] [--threads]
                                                  standalone C: DIR/net.h + DIR/net.c

FILE is a model saved by ``model.save`` (``.npz``: its network is read, nothing is
run or compiled), or a Python file (``.py``) that defines a network: a module-level ``net``,
or a function ``network()`` returning one, or any module-level ``symnet.Network``.
A Python file is run as a module to find it: its ``if __name__ == "__main__":``
block is not run, but everything at module level is (training included), so keep
training under that guard, or define ``network()``.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path


def load_network(path: str):
    """The Network of a saved model (``.npz``, read without compiling) or defined by
    a Python file (run without its __main__)."""
    from .api.network import Network
    if not Path(path).exists():
        raise FileNotFoundError(2, "No such file or directory", path)
    if Path(path).is_dir():
        # runpy would look for a __main__.py in it and raise ImportError
        raise UsageError(f"{path} is a directory, not a saved model (.npz) or a Python file")
    if Path(path).is_file() and (Path(path).suffix == ".npz" or _is_zip(path)):
        from .io import files as io
        try:
            return io.read(path, cls=Network)[0]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if Path(path).suffix != ".py":
        # run as Python, a text file failed with a NameError or SyntaxError of its own
        raise UsageError(f"{path} is not a saved model (.npz) or a Python file (.py)")
    ns = runpy.run_path(path, run_name="symnet_network_file")
    if isinstance(ns.get("net"), Network):
        return ns["net"]
    if callable(ns.get("network")):
        net = ns["network"]()
        if isinstance(net, Network):
            return net
        raise UsageError(f"{path}: network() returned {type(net).__name__} {net!r:.60}, "
                         "expected a symnet.Network")
    found = [v for v in ns.values() if isinstance(v, Network)]
    if len(found) == 1:
        return found[0]
    raise UsageError(f"{path}: define `net = symnet.Network(...)` or `def network(): ...` "
                     f"(found {len(found)} Network objects at module level)")


class UsageError(Exception):
    """A mistake in what the user gave: one line on stderr, exit status 2."""


def _is_zip(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def c_source(net, dtype: str = "float32") -> str:
    """The kernel C of a network, emitted without compiling it."""
    from .backend.c.runtime import render
    from .plan.lower import plan
    return render(plan(net.graph()), dtype)[0]


def export(args) -> int:
    """Write the standalone C of a saved model (see ``symnet.backend.c.export``)."""
    from .api.network import load
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file; give the directory to write "
                         f"{args.name}.h and {args.name}.c into")
    try:
        model = load(args.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    params_file = args.params_file
    if params_file is True:
        params_file = f"{args.name}.params"
    try:
        paths = model.export_c(args.out, name=args.name, training=not args.inference_only,
                               threads=args.threads, params_file=params_file)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for p in paths:
        print(f"wrote {p}")
    return 0


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
    except UsageError as exc:
        print(f"python -m symnet: error: {exc}", file=sys.stderr)
        return 2


def _positive_int(text: str) -> int:
    """An argparse type: checked while parsing, so before FILE is run or read."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m symnet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    what = ("a model saved by model.save (.npz), or a Python file (.py) defining a network "
            "(run as a module: its `if __name__ == '__main__':` block is not run, the "
            "rest is, training at module level included)")
    f = sub.add_parser("formulas", help="print the chain-rule derivation of a network")
    f.add_argument("file", help=what)
    f.add_argument("--latex", action="store_true",
                   help="print it as one LaTeX aligned block instead of plain text")
    c = sub.add_parser("c", help="print the generated C of a network")
    c.add_argument("file", help=what)
    c.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="number type of the C (default float32)")
    s = sub.add_parser("summary", help="print parameters, memory and flops per step")
    s.add_argument("file", help=what)
    s.add_argument("--batch-size", type=_positive_int, default=32,
                   help="examples per step (default 32)")
    s.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="number type the bytes are counted in (default float32)")
    g = sub.add_parser("generate", help="regenerate generated/ from examples/")
    g.add_argument("--check", action="store_true", help="only report stale files")
    e = sub.add_parser("export", help="write a saved model as standalone C (net.h, net.c)")
    e.add_argument("model", help="a model saved by model.save (.npz)")
    e.add_argument("--name", default="net", help="prefix of every C name (default: net)")
    e.add_argument("--out", default=".", help="directory to write into (default: .)")
    e.add_argument("--params-file", nargs="?", const=True, default=None, metavar="PATH",
                   help="trained values as raw little-endian binary (a path relative to "
                        "--out; default NAME.params) instead of an initializer in NAME.c")
    e.add_argument("--inference-only", action="store_true",
                   help="only NAME_forward (no loss, gradients or training)")
    e.add_argument("--threads", action="store_true",
                   help="OpenMP threads for large products (compile with -fopenmp)")
    return ap


def _main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.cmd == "generate":
        return generate(args.check)
    if args.cmd == "export":
        return export(args)
    net = load_network(args.file)
    if args.cmd == "c":
        sys.stdout.write(c_source(net, args.dtype))
    elif args.cmd == "summary":
        from .read.summary import summarize
        print(summarize(net, args.batch_size, args.dtype))
    else:
        formulas = net.formulas()
        print(formulas.latex() if args.latex else formulas)
    return 0


if __name__ == "__main__":
    sys.exit(main())
