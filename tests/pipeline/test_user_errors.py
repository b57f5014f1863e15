"""User errors are one line naming the file, key or value, exit status 2, no traceback; inputs and the
recipe are checked before Spark starts; `--debug` shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import UserError, cli_main
from pipeline.config import load_recipe
from common.recipe import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def run_job(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


def recipe(tmp_path: Path, text: str | bytes, name: str = "r.toml") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def test_a_bad_override_is_one_line_before_spark_starts(tmp_path):
    (tmp_path / "in").mkdir()
    proc = run_job("jobs.extract", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                   "--set", "extract.min_text_char=5")
    line = one_line_error(proc, "jobs.extract: error:", "extract.min_text_char")
    assert "known:" in line and "Spark" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()


def test_a_missing_input_is_reported_before_spark_starts(tmp_path):
    proc = run_job("jobs.langid", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out"))
    one_line_error(proc, "--input", "nowhere", "no such file")
    proc = run_job("jobs.ingest", "--input", str(tmp_path / "*.warc.gz"), "--output", str(tmp_path / "out"))
    one_line_error(proc, "matches no file")


def test_debug_shows_the_traceback(tmp_path):
    args = ("--input", str(tmp_path), "--output", str(tmp_path / "o"), "--set", "spark.arrow_batch_rows=-1")
    for proc in (run_job("jobs.extract", *args, "--debug"), run_job("jobs.extract", *args, env={"QWENFORGE_DEBUG": "1"})):
        assert proc.returncode == 2 and "Traceback" in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].endswith("spark.arrow_batch_rows must be > 0, got -1")


def test_the_trainer_reports_recipe_errors_in_one_line(tmp_path):
    proc = run_job("training.train", "--recipe", recipe(tmp_path, "[optim]\nlr = 'fast'\n"))
    one_line_error(proc, "training.train: error:", "optim.lr expects float, got 'fast'")


BAD_RECIPES = {
    "top-level value": ("extract = 5\n", "'extract' must be a [extract] table, got 5"),
    "missing base": ('base = "nope.toml"\n', "base 'nope.toml' is not a recipe in"),
    "escaping base": ('base = "../../../../../../etc/passwd"\n', "is not a recipe in"),
    "absolute base": ('base = "/etc/passwd"\n', "is not a recipe in"),
    "non-string base": ("base = 3\n", "base must be a recipe file name, got 3"),
    "non-UTF-8": (b"[extract]\nfast = true # caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset"),
    "bad TOML": ("[extract\n", "is not valid TOML"),
    "unknown table": ("[extrakt]\nfast = true\n", "unknown recipe section [extrakt]"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipe_files_are_config_errors_naming_the_file(tmp_path, case):
    text, message = BAD_RECIPES[case]
    path = recipe(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert message in str(err.value) and (case == "unknown table" or path in str(err.value))


def test_a_folder_or_a_missing_file_as_recipe(tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        load_recipe(tmp_path)
    with pytest.raises(ConfigError, match="recipe not found"):
        load_recipe(tmp_path / "missing.toml")


def test_a_base_inside_the_recipe_folder_or_the_project_recipes_is_read(tmp_path):
    recipe(tmp_path, "[extract]\nmin_text_chars = 9\n", "parent.toml")
    assert load_recipe(recipe(tmp_path, 'base = "parent.toml"\n')).section("extract").min_text_chars == 9
    demo = load_recipe(recipe(tmp_path, 'base = "demo.toml"\n'))   # pipeline/recipes/demo.toml, by name
    assert demo.section("extract") == load_recipe(ROOT / "pipeline/recipes/demo.toml").section("extract")


OUT_OF_RANGE = [
    ("spark.arrow_batch_rows=-1", "spark.arrow_batch_rows must be > 0, got -1"),
    ("spark.max_error_fraction=1.5", "spark.max_error_fraction must be between 0 and 1, got 1.5"),
    ("tokenize.seq_len=0", "tokenize.seq_len must be > 0, got 0"),
    ("tokenize.valid_fraction=-0.1", "tokenize.valid_fraction must be between 0 and 1"),
    ("dedup.bands=0", "dedup.bands must be > 0, got 0"),
    ("dedup.shingle=\"line\"", "dedup.shingle must be 'word', 'char' or 'auto', got 'line'"),
    ("langid.min_score=2", "langid.min_score must be between 0 and 1, got 2.0"),
    ("decontam.mode=\"erase\"", "decontam.mode must be 'drop' or 'cut'"),
    ("upsample.source_weights={web=-1}", "upsample.source_weights.web must be >= 0"),
    ("extract.min_text_chars=-3", "extract.min_text_chars must be >= 0, got -3"),
    ("extract.metadata=full", "extract.metadata must be 'cheap', 'trafilatura' or 'none', got 'full'"),
    ("extract", "--set expects section.key=value, got 'extract'"),
    ("extract.=1", "--set expects section.key=value"),
]


@pytest.mark.parametrize("override,message", OUT_OF_RANGE)
def test_values_are_validated_where_the_dataclass_is_defined(override, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(None, [override])
    assert message in str(err.value)


def test_cli_main_exit_statuses(capsys):
    def bad(argv):
        raise UserError("recipe x.toml: key 'a.b' is wrong")

    with pytest.raises(SystemExit) as exit_:
        cli_main(bad, [])
    assert exit_.value.code == 2 and capsys.readouterr().err.strip().endswith("error: recipe x.toml: key 'a.b' is wrong")
    assert cli_main(lambda argv: argv, ["--debug", "--x"]) == ["--x"]   # --debug is removed before main sees it
