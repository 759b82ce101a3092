"""The pipeline is the file tree: symnet's modules import only earlier stages,
and no import cycle exists.  Every ``import`` in symnet/ counts, at module level
or inside a function, except the few facade methods listed in FACADES, which
hand the user's call to a later stage (``net.compile()`` is the whole pipeline).

A new module must be given its stage here; an import of a later stage (or a
new facade) fails this test until the table says why."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "symnet"

# Earliest first.  A module may import modules of its own or an earlier stage.
STAGES = [
    ("foundations", {"guards", "history", "schedules", "datasets", "notation", "check",
                     "cprint", "targets", "stopping", "update"}),
    ("C compiler and cache", {"build", "tuning", "cnames"}),   # compiles any C text
    ("tensor IR", {"ir"}),
    ("scalar calculus", {"smooth"}),
    ("primitives", {"primitives"}),
    ("language", {"dsl", "layers", "layers_multi", "tensor", "conv", "compose", "merge",
                  "recurrent"}),
    ("derivation", {"derive"}),
    ("kernel plan", {"lower"}),
    ("readers of the derivation", {"formulas", "formulas_graph", "explicit", "summary"}),
    ("C text", {"emit"}),
    ("backends", {"backend", "backend.c"}),
    ("model", {"model"}),
    ("training", {"train", "predict", "distributed"}),
    ("files", {"io", "export"}),
    ("tools", {"__init__", "__main__", "sanitize", "bench", "bench.__main__",
               "bench.measure", "bench.refs", "bench.conv", "bench.mpi"}),
]

# (importer, imported): a call handed to a later stage, and why it is allowed; and the
# known cycles left, each with the edge that closes it.
FACADES = {
    ("dsl", "model"): "Network.compile(): the whole pipeline, for the user",
    ("dsl", "formulas"): "Network.formulas(): the derivation, for the user",
    ("model", "train"): "Model.fit(): symnet.train.fit",
    ("model", "io"): "Model.save(): symnet.io.save",
    ("model", "summary"): "Model.summary(): symnet.summary.summarize",
    ("model", "export"): "Model.export_c(): symnet.export.export_c",
    ("model", "predict"): "Model.predict/evaluate(): symnet.predict",
    ("model", "distributed"): "Model.fit(comm=...): symnet.distributed.fit",
    ("dsl", "summary"): "Network.summary(): symnet.summary.summarize",
    # Not a facade: the one cycle left (dsl -> layers -> dsl).  Dense builds its IR
    # node as the general sn.Layer it is a case of, and layers.py takes LayerBase from
    # dsl.py.  The cure is LayerBase and the name checks in a module of their own, to
    # be done once the DSL changes of the tensor and graph work have landed.
    ("dsl", "layers"): "Dense.to_node: a Dense layer is a general sn.Layer",
    # Two more cycles of the same kind came with the general graphs, each closed by a
    # lazy import inside a function: compose.py takes Input from dsl.py (which imports
    # compose), formulas_graph.py takes two helpers from formulas.py (which hands graph
    # networks to it).  Cure: the shared pieces in the earlier module of each pair.
    ("compose", "dsl"): "compose's functions build Input nodes (dsl imports compose)",
    ("formulas_graph", "formulas"): "formulas_graph reuses formulas' sum and TeX helpers",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _exists(name: str) -> bool:
    p = PACKAGE.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _package_of(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE)
    return list(rel.parts[:-1])


def imports() -> dict[str, set[str]]:
    """module → the symnet modules it imports (anywhere in its code)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _package_of(path)[:len(_package_of(path)) - node.level + 1]
                else:
                    if not (node.module or "").startswith("symnet"):
                        continue
                    base = []
                mod = (node.module or "")
                if not node.level:
                    mod = mod[len("symnet"):].lstrip(".")
                prefix = ".".join([*base, *([mod] if mod else [])])
                for alias in node.names:
                    sub = f"{prefix}.{alias.name}" if prefix else alias.name
                    if _exists(sub):
                        targets.append(sub)
                    elif prefix:
                        targets.append(prefix)
                    # else: `from . import __version__`, a name of the package root
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("symnet."):
                        targets.append(alias.name[len("symnet."):])
            found.update(t for t in targets if t != name)
        graph[name] = found
    return graph


def _stage() -> dict[str, int]:
    return {m: k for k, (_, mods) in enumerate(STAGES) for m in mods}


def test_every_module_has_a_stage():
    stage = _stage()
    missing = sorted(set(imports()) - set(stage))
    assert not missing, f"give these modules a stage in tests/test_imports.py: {missing}"
    gone = sorted(set(stage) - set(imports()))
    assert not gone, f"no such modules (remove them from STAGES): {gone}"


def test_no_stage_imports_a_later_one():
    stage = _stage()
    bad = []
    for mod, deps in imports().items():
        for dep in deps:
            if stage[dep] > stage[mod] and (mod, dep) not in FACADES:
                bad.append(f"{mod} ({STAGES[stage[mod]][0]}) imports {dep} "
                           f"({STAGES[stage[dep]][0]})")
    assert not bad, "imports of a later stage:\n" + "\n".join(sorted(bad))


def test_facades_are_still_needed():
    graph = imports()
    stale = [edge for edge in FACADES if edge[1] not in graph.get(edge[0], ())]
    assert not stale, f"these facade imports are gone; remove them from FACADES: {stale}"


def test_no_import_cycles():
    graph = {m: {d for d in deps if (m, d) not in FACADES} for m, deps in imports().items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("edge", [("derive", "smooth"), ("smooth", "cprint"),
                                  ("emit", "lower"), ("model", "backend.c")])
def test_the_reader_sees_real_edges(edge):
    """The parser finds imports (so an empty graph cannot pass the tests above)."""
    assert edge[1] in imports()[edge[0]]
