"""The package layering: training and evaluation never import each other, and ``metrics`` stays pure.

Read from the source with ``ast``, so imports inside functions (the lazy ones a runtime check of
``sys.modules`` would miss) count too. Loading a run (``ropo.models.runs``) and generating answers
(``ropo.generation``) live below both packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "ropo"


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every ``ropo`` module each file of ``package`` imports, at any depth of the file."""
    found: dict[str, set[str]] = {}
    for path in sorted((SOURCE / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(SOURCE))] = {name for name in names if name.split(".")[0] == "ropo"}
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("evaluation", "ropo.training"), ("training", "ropo.evaluation")])
def test_training_and_evaluation_do_not_import_each_other(package, forbidden):
    offenders = {file: sorted(m for m in modules if m == forbidden or m.startswith(forbidden + "."))
                 for file, modules in imported_modules(package).items()}
    assert not {file: mods for file, mods in offenders.items() if mods}


def test_metrics_are_pure_functions_of_tensors_and_texts():
    outside = {file: sorted(m for m in modules if not m.startswith("ropo.metrics"))
               for file, modules in imported_modules("metrics").items()}
    assert not {file: mods for file, mods in outside.items() if mods}


def test_the_shared_layer_imports_neither_package():
    shared = {**imported_modules("models"), "generation.py": imported_modules(".")["generation.py"]}
    climbing = {file: sorted(m for m in modules if m.startswith(("ropo.training", "ropo.evaluation")))
                for file, modules in shared.items()}
    assert not {file: mods for file, mods in climbing.items() if mods}


def module_name(path: Path) -> str:
    parts = ("ropo", *path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every ``ropo`` module and the ``ropo`` modules it imports anywhere in its file (inside
    functions and ``TYPE_CHECKING`` blocks too); ``from package import module`` counts the module,
    not the package."""
    files = {module_name(path): path for path in SOURCE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(files)
                edges.update(submodules if len(submodules) == len(node.names) else {node.module, *submodules})
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
        graph[name] = {edge for edge in edges if edge in files and edge != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_modules_import_each_other_directly_or_in_a_loop():
    graph = import_graph()
    assert "ropo.training.recipe" in graph and "ropo.methods" in graph["ropo.training.recipe"]  # the graph is read
    assert cycles(graph) == []


def test_the_frontier_imports_nothing_from_the_demo():
    graph = import_graph()
    reaching = {module: sorted(m for m in modules if m == "ropo.demo" or m.startswith("ropo.demo."))
                for module, modules in graph.items() if module.startswith("ropo.frontier")}
    assert not {module: mods for module, mods in reaching.items() if mods}


def test_errors_are_below_everything():
    assert import_graph()["ropo.errors"] == set()
