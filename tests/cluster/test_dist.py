"""tools/dist.py: the code zip executors import from, the assets archive and the packed environment's contents.

    pytest tests/cluster/test_dist.py
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement

from stages.tokenize import fast_bpe
from tools import dist

ROOT = dist.ROOT


def test_code_zip_is_reproducible_and_importable(tmp_path):
    a, b = dist.build_zip(tmp_path / "a.zip"), dist.build_zip(tmp_path / "b.zip")
    assert a.read_bytes() == b.read_bytes()
    names = set(zipfile.ZipFile(a).namelist())
    packages = ("common", "pipeline", "stages", "jobs", "training", "synth")
    expected = {str(p.relative_to(ROOT)) for pkg in packages for p in (ROOT / pkg).rglob("*.py")
                if "__pycache__" not in p.parts}
    assert expected <= names and "pipeline/recipes/default.toml" in names
    assert not any(n.startswith(("tests/", "bench/", "tools/")) for n in names)
    code = "import stages.tokenize.tokenizer, jobs.langid; print(stages.tokenize.tokenizer.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(a)},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{a}/stages/tokenize/tokenizer.py"


def test_assets_archive_holds_the_model_files_at_its_top(tmp_path):
    """The model files and the fast encoder's class table cache, valid for this checkout."""
    archive = dist.build_assets(tmp_path / "assets.tar.gz")
    with tarfile.open(archive) as tar:
        members = {m.name: m.size for m in tar.getmembers()}
    module, ranks = fast_bpe._native_module(), ROOT / "assets" / "qwen.tiktoken"
    names = [*dist.ASSETS, *(["qwen.tiktoken.classes"] if module else [])]   # no C module: no table to ship
    assert members == {name: (ROOT / "assets" / name).stat().st_size for name in names}
    assert not module or fast_bpe.read_cache(fast_bpe.cache_path(ranks), fast_bpe.table_key(module, ranks))


def test_runtime_closure_is_the_project_dependencies_without_training_and_spark():
    closure = dist.runtime_closure(dist.project_requirements())
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {dist._name(Requirement(r).name) for r in declared} - dist.SKIP
    assert wanted <= set(closure)
    assert not {"torch", "pyspark", "matplotlib", "pytest", "transformers"} & set(closure)
    assert {"lxml", "numpy"} <= set(closure)  # reached through trafilatura and fasttext
    with_torch = dist.runtime_closure(dist.project_requirements() + ["torch"], dist.SKIP - {"torch"})
    assert {"torch", "sympy", "filelock"} <= set(with_torch) and "pyspark" not in with_torch


@pytest.mark.parametrize("stage, usage, flag", [("langid", "jobs.langid", "--output"),
                                                ("synth.rejection", "synth.rejection", "--model")])
def test_launcher_runs_a_module_from_the_zip(tmp_path, stage, usage, flag):
    """`submit.py langid ...` runs jobs.langid; a dotted name (the synthesis jobs) runs that module."""
    code, launcher = dist.build_zip(tmp_path / "q.zip"), dist.build_launcher(tmp_path / "submit.py")
    out = subprocess.run([sys.executable, str(launcher), stage, "--help"], cwd=tmp_path,
                         env={"PYTHONPATH": str(code)}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {usage}") and flag in out.stdout
