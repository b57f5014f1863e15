"""The line_dedup job on local Spark against the plain Python reference of tests/stages/test_line_dedup.py,
on real article bodies with planted boilerplate: count mode, and bloom mode across two dumps."""

from __future__ import annotations

import json

import pytest

from common.errors import UserError
from jobs import line_dedup
from pipeline import io
from stages.bloom import BloomFilter, BloomFileError
from tests.stages.test_line_dedup import planted_corpus, reference

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def write_input(spark, docs, path, partitions=3) -> str:
    spark.createDataFrame(docs).repartition(partitions).write.parquet(str(path))
    return str(path)


def job_rows(spark, folder) -> dict[str, tuple]:
    rows = io.read_stage(spark, str(folder)).collect() + io.read_stage(spark, str(folder), "rejected").collect()
    return {r["id"]: (r["text"], r["drop_reason"], r["line_dedup_removed_chars"], r["line_dedup_removed_lines"])
            for r in rows}


@pytest.fixture(scope="module")
def corpus(shared_data):
    return planted_corpus(shared_data)


@pytest.mark.parametrize("unit", ["line", "sentences3"])
def test_count_mode_job_equals_the_reference(spark, corpus, tmp_path, unit):
    inp = write_input(spark, corpus, tmp_path / "in")
    stats = line_dedup.main(["--input", inp, "--output", str(tmp_path / "out"), "--set", f"line_dedup.unit={unit}",
                             "--set", "line_dedup.min_docs=2"])
    expected = reference(corpus, unit, min_docs=2)
    assert job_rows(spark, tmp_path / "out") == expected
    assert stats["removed_chars"] == sum(v[2] for v in expected.values()) > 10_000
    assert stats["removed_lines"] == sum(v[3] for v in expected.values())
    assert stats["removed_bytes"] >= stats["removed_chars"]  # UTF-8: at least one byte per character
    assert stats["docs_changed"] == sum(v[3] > 0 for v in expected.values())
    assert stats["by_reason"] == {"line_dedup_empty": sum(v[1] is not None for v in expected.values())}
    assert stats["docs_in"] == len(corpus) and stats["repeated_units"] >= 6 and stats["unit"] == unit
    config = json.loads((tmp_path / "out" / "_config.json").read_text())
    assert config["config"]["line_dedup"]["min_docs"] == 2 and (tmp_path / "out" / "_SUCCESS").exists()
    assert "source" in io.read_stage(spark, str(tmp_path / "out")).columns  # other columns carried through


def test_bloom_mode_across_two_dumps(spark, corpus, tmp_path):
    """Dump 2 checked against dump 1's saved filter equals the reference with exact sets (p = 1e-6)."""
    first, second = corpus[::2], corpus[1::2] + [dict(corpus[0], id="zz-copy-of-first")]
    settings = ["--set", "line_dedup.mode=bloom", "--set", "line_dedup.unit=paragraph",
                "--set", "line_dedup.expected_items=50000", "--set", "line_dedup.fp_rate=0.000001"]
    stats1 = line_dedup.main(["--input", write_input(spark, first, tmp_path / "in1"),
                              "--output", str(tmp_path / "dump1"), *settings])
    stats2 = line_dedup.main(["--input", write_input(spark, second, tmp_path / "in2", 2),
                              "--output", str(tmp_path / "dump2"), *settings,
                              "--set", f"line_dedup.bloom_path={tmp_path / 'dump1'}"])
    seen: set = set()
    assert job_rows(spark, tmp_path / "dump1") == reference(first, "paragraph", "bloom", seen=seen)
    assert job_rows(spark, tmp_path / "dump2") == reference(second, "paragraph", "bloom", seen=seen)
    assert job_rows(spark, tmp_path / "dump2")["zz-copy-of-first"][1] == "line_dedup_empty"
    bloom1, bloom2 = stats1["bloom"], stats2["bloom"]
    assert bloom2["n_added"] == len(seen) and bloom1["n_added"] + bloom2["n_new"] == len(seen)
    assert bloom2["m"] == bloom1["m"] and bloom2["fp_rate"] == 1e-6 and bloom2["fpr_measured"] <= 1e-4
    saved = BloomFilter.load(str(tmp_path / "dump2" / "bloom.qfb"))
    assert saved.n_added == len(seen) and saved.settings["keys"]["unit"] == "paragraph"
    (tmp_path / "bad.qfb").write_bytes(b"QFBLOOM1 broken")
    with pytest.raises(BloomFileError, match="bad.qfb"):
        line_dedup.main(["--input", str(tmp_path / "in2"), "--output", str(tmp_path / "x"), *settings,
                         "--set", f"line_dedup.bloom_path={tmp_path / 'bad.qfb'}"])
    with pytest.raises(UserError, match="other line_dedup settings"):
        line_dedup.main(["--input", str(tmp_path / "in2"), "--output", str(tmp_path / "x"), *settings,
                         "--set", "line_dedup.unit=line", "--set", f"line_dedup.bloom_path={tmp_path / 'dump1'}"])
