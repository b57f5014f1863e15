"""The import rules of ARCHITECTURE.md: common/ imports nothing of ours, stages/ is pure (no pyspark, no torch), training/ has no
pyspark, pipeline/ and jobs/ have no torch; synth/ (Spark jobs that
run a model) may import every layer but jobs/. Checked on the AST, so imports inside functions count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "common": {"pyspark", "torch", "pipeline", "jobs", "training", "stages", "synth"},
    "stages": {"pyspark", "torch", "pipeline", "jobs", "training"},
    "training": {"pyspark", "pipeline", "jobs"},
    "pipeline": {"torch", "training", "jobs"},
    "jobs": {"torch", "training"},
    "synth": {"jobs"},   # Spark jobs that run a model: may import pipeline, stages and training
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layering(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    violations = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files}
    assert not {k: v for k, v in violations.items() if v}


def test_checker_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    import pyspark.sql\n    from torch import nn\n")
    assert imported_roots(sample) == {"pyspark", "torch"}
