"""The pipeline is the file tree: symnet's modules import only modules of their
own or an earlier stage, and no import cycle exists.  Every ``import`` in
symnet/ counts, at module level or inside a function: there are no exceptions.
The user's ``Network`` and ``Model``, whose methods run the later stages
(``net.compile()`` is the whole pipeline), are put together in the last stage,
``symnet.api``.

A new module must be given its stage here."""

import ast
import functools
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "symnet"

# Earliest first: the folders of the package are its stages.  A module may import
# modules of its own folder or of an earlier one; within a folder, no cycles.
STAGES = [
    ("foundations", {"version", "guards", "datasets"}),
    ("scalar calculus", "scalar"),            # primitives, C spellings, text and LaTeX
    ("tensor IR", "ir"),
    ("language", "lang"),                     # inputs, layers, merges, the declaration
    ("descriptions and model files", "io"),
    ("derivation", "derive"),
    ("kernel plan", "plan"),
    ("backends", "backend"),                  # backend.c: render, build, tune, run
    ("runtime", "runtime"),                   # model, training, optimizers, MPI
    ("readers of the derivation", "read"),
    ("the user's classes", "api"),
    ("tools", {"__init__", "__main__", "bench"}),
]


def stage_of(module: str, stages=STAGES) -> int | None:
    """The index of the stage a module belongs to: its folder's, or the one
    that names it (root modules, and the packages named in a set)."""
    top = module.split(".")[0]
    for k, (_, what) in enumerate(stages):
        if isinstance(what, str) and top == what:
            return k
        if isinstance(what, set) and (module in what or top in what):
            return k
    return None


def _module_name(package: Path, path: Path) -> str:
    parts = list(path.relative_to(package).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


@functools.lru_cache(maxsize=None)   # every test reads the same tree: parsed once, not 1.5 s a call
def imports(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module → the modules of ``package`` it imports (anywhere in its code); read only."""
    root = package.name

    def exists(name: str) -> bool:
        p = package.joinpath(*name.split("."))
        return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()

    graph = {}
    for path in sorted(package.rglob("*.py")):
        name = _module_name(package, path)
        here = list(path.relative_to(package).parts[:-1])     # the module's package
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    base = here[:len(here) - node.level + 1]
                elif mod == root or mod.startswith(root + "."):
                    base, mod = [], mod[len(root):].lstrip(".")
                else:
                    continue
                prefix = ".".join([*base, *([mod] if mod else [])])
                for alias in node.names:
                    sub = f"{prefix}.{alias.name}" if prefix else alias.name
                    if exists(sub):
                        targets.append(sub)
                    elif prefix:
                        targets.append(prefix)
                    else:                      # a name of the package root itself
                        targets.append("__init__")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(root + "."):
                        targets.append(alias.name[len(root) + 1:])
                    elif alias.name == root:
                        targets.append("__init__")
            found.update(t for t in targets if t != name)
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def later_imports(graph: dict[str, set[str]], stages=STAGES) -> list[str]:
    """Every import of a module of a later stage, as a sentence."""
    stage = {m: stage_of(m, stages) for m in graph}
    return sorted(f"{mod} ({stages[stage[mod]][0]}) imports {dep} ({stages[stage[dep]][0]})"
                  for mod, deps in graph.items() for dep in deps if stage[dep] > stage[mod])


def test_every_module_has_a_stage():
    missing = sorted(m for m in imports() if stage_of(m) is None)
    assert not missing, f"put these modules in a stage folder (or name them in STAGES): {missing}"
    names = {m for _, what in STAGES if isinstance(what, set) for m in what}
    gone = sorted(n for n in names if not any(m == n or m.startswith(n + ".") for m in imports()))
    assert not gone, f"no such modules (remove them from STAGES): {gone}"


def test_no_stage_imports_a_later_one():
    bad = later_imports(imports())
    assert not bad, "imports of a later stage:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(imports())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("edge", [("derive.chain", "scalar.smooth"),
                                  ("scalar.smooth", "scalar.cprint"),
                                  ("backend.c.emit", "plan.lower"),
                                  ("runtime.model", "backend.c.runtime"),
                                  ("api.network", "read.formulas"),
                                  ("backend.c.runtime", "backend.c.emit"),
                                  ("bench.mpi", "runtime.distributed"),
                                  ("bench.conv", "__init__")])
def test_the_reader_sees_real_edges(edge):
    """The parser finds imports, at module level and inside functions, relative
    and absolute (so an empty graph cannot pass the tests above)."""
    assert edge[1] in imports()[edge[0]]


def _package(tmp_path, files: dict) -> Path:
    pkg = tmp_path / "pkg"
    for name, text in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return pkg


def test_the_checks_fail_on_a_cycle_through_a_function_level_import(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "def f():\n    from .sub import c\n    return c\n",
        "sub/__init__.py": "",
        "sub/c.py": "import pkg.a\nfrom ..b import f\n",
        "d.py": "from pkg import a\n",
    })
    graph = imports(pkg)
    assert graph == {"__init__": set(), "a": {"b"}, "b": {"sub.c"}, "sub": set(),
                     "sub.c": {"a", "b"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "sub.c"]]
    stages = [("one", {"__init__", "sub"}), ("two", {"a", "b", "d"})]
    assert later_imports(graph, stages) == ["sub.c (one) imports a (two)",
                                            "sub.c (one) imports b (two)"]
    del graph["b"]                           # no cycle once b is gone
    assert cycles(graph) == []


def test_the_public_names_are_the_user_facing_classes():
    """``sn.Network`` builds the network whose methods run the later stages, and
    ``compile`` and ``sn.load`` give the Model with fit/save/export_c."""
    import symnet as sn
    from symnet.api import model, network
    assert sn.Network is network.Network and sn.load is network.load
    net = sn.Network(sn.Input(2), sn.Dense(1), loss="mse")
    assert all(callable(getattr(net, m)) for m in ("compile", "formulas", "summary"))
    assert type(net.compile(dtype="float64")) is model.Model


@pytest.mark.parametrize("module", ["lang.base", "scalar.notation", "io.files", "api.network",
                                    "api.model", "scalar.primitives", "backend.c.emit"])
def test_docstring_examples_of_the_moved_pieces(module):
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(f"symnet.{module}"))
    assert result.attempted > 0 and result.failed == 0


def test_every_package_is_installed():
    """pyproject.toml lists the packages explicitly: a new folder of modules must be
    among them, or an installed symnet lacks it."""
    import re
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    listed = set(ast.literal_eval(re.search(r"^packages = (\[.*?\])", text, re.M).group(1)))
    found = {".".join(("symnet", *p.parent.relative_to(PACKAGE).parts))
             for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
