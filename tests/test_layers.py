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
