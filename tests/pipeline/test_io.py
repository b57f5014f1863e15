"""Atomic stage output: layout, exact stats, refusal of unfinished folders, reruns that replace."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from pipeline import io, runner, schemas
from stages.base import Drop, Filter

pytestmark = pytest.mark.spark


class EvenOnly(Filter):
    name = "even"

    def verdict(self, doc):
        return None if doc["n"] % 2 == 0 else Drop("odd", f"n={doc['n']}")


def numbers(spark, count: int):
    schema = pa.schema([pa.field("id", pa.string()), pa.field("n", pa.int64())])
    return spark.createDataFrame([(str(i), i) for i in range(count)], schemas.spark(schema))


def test_layout_and_exact_stats(spark, tmp_path):
    out = tmp_path / "even"
    stats = io.write_split(runner.apply(numbers(spark, 10), EvenOnly()), str(out), stage="even", config={"k": 1})
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "_SUCCESS", "_config.json", "_stats.json", "kept", "rejected"]
    assert stats["kept"] == 5 and stats["rejected"] == 5 and stats["by_reason"] == {"odd": 5}
    assert json.loads((out / "_stats.json").read_text()) == stats
    assert json.loads((out / "_config.json").read_text())["k"] == 1
    assert all(p.name.endswith(".zstd.parquet") for p in (out / "kept").glob("part-*"))
    rejected = io.read_stage(spark, str(out), "rejected").collect()
    assert sorted(r["drop_detail"] for r in rejected) == [f"n={i}" for i in (1, 3, 5, 7, 9)]
    assert not list(tmp_path.glob(".even.tmp-*"))


def test_rerun_replaces_and_empty_parts_exist(spark, tmp_path):
    out = str(tmp_path / "even")
    io.write_split(runner.apply(numbers(spark, 10), EvenOnly()), out, stage="even", config={})
    io.write_split(runner.apply(numbers(spark, 3).filter("n = 0"), EvenOnly()), out, stage="even", config={})
    assert io.read_stage(spark, out).count() == 1
    assert io.read_stage(spark, out, "rejected").count() == 0


def test_unfinished_folder_is_refused(spark, tmp_path):
    out = tmp_path / "even"
    io.write_split(runner.apply(numbers(spark, 4), EvenOnly()), str(out), stage="even", config={})
    (out / "_SUCCESS").unlink()
    with pytest.raises(io.StageNotReady, match="no _SUCCESS"):
        io.read_stage(spark, str(out))
    with pytest.raises(io.StageNotReady, match="does not exist"):
        io.read_stage(spark, str(tmp_path / "missing"))


def test_stale_temporary_folders_are_removed(spark, tmp_path):
    stale = tmp_path / ".even.tmp-dead"
    (stale / "kept").mkdir(parents=True)
    io.write_split(runner.apply(numbers(spark, 2), EvenOnly()), str(tmp_path / "even"), stage="even", config={})
    assert not stale.exists()


def test_list_archives_expands_globs_folders_and_manifests(spark, tmp_path, shared_data):
    warcs = shared_data / "warcio-test-warcs"
    manifest = tmp_path / "warc.paths"
    manifest.write_text("# comment\nexample.warc.gz\n\nexample.arc\n")
    assert io.list_archives(spark, [str(manifest)], str(warcs)) == [str(warcs / "example.arc"), str(warcs / "example.warc.gz")]
    globbed = io.list_archives(spark, [str(warcs / "example*.warc.gz")])
    assert str(warcs / "example.warc.gz") in globbed and all(p.endswith(".warc.gz") for p in globbed)
    folder = io.list_archives(spark, [str(warcs)])
    assert str(warcs / "bad.arc") in folder and not any(p.endswith(("LICENSE", ".bad")) for p in folder)
    with pytest.raises(FileNotFoundError):
        io.list_archives(spark, [str(tmp_path / "nothing*.warc")])
