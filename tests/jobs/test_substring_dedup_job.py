"""The substring_dedup job on local Spark equals the same stage on a Python list (tests/stages/test_substring_dedup.py
checks that against the brute-force reference), on real article bodies with planted 60-token repeats."""

from __future__ import annotations

import json

import pytest

from jobs import substring_dedup
from pipeline import io
from stages.substring_dedup import (REMOVED_BYTES, REMOVED_CHARS, REMOVED_SPANS, SubstringDedup, SubstringDedupConfig,
                                    mark_substrings)
from tests.stages.test_substring_dedup import planted_corpus

pytestmark = [pytest.mark.spark, pytest.mark.slow]
COLUMNS = ("text", "drop_reason", REMOVED_CHARS, REMOVED_BYTES, REMOVED_SPANS)


def test_job_equals_the_list_stage(spark, shared_data, tmp_path):
    docs, _ = planted_corpus(shared_data, plants=60)
    docs.append(dict(docs[0], id="zz-copy-of-first"))  # a whole copy: nothing left, rejected
    spark.createDataFrame(docs).repartition(3).write.parquet(str(tmp_path / "in"))
    args = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--set", "substring_dedup.min_tokens=50"]
    stats = substring_dedup.main(args)
    config = SubstringDedupConfig(min_tokens=50)
    expected = {r["id"]: tuple(r[c] for c in COLUMNS) for r in SubstringDedup(config).run(mark_substrings(docs, config))}
    rows = io.read_stage(spark, str(tmp_path / "out")).collect() + io.read_stage(spark, str(tmp_path / "out"),
                                                                                  "rejected").collect()
    assert {r["id"]: tuple(r[c] for c in COLUMNS) for r in rows} == expected
    assert expected["zz-copy-of-first"][1] == "substring_dedup_empty"
    assert stats["totals"][REMOVED_BYTES] == sum(v[3] for v in expected.values()) > 10_000
    assert stats["totals"][REMOVED_SPANS] == sum(v[4] for v in expected.values())
    assert stats["docs_changed"] == sum(v[4] > 0 for v in expected.values()) and stats["tokens"] > 50_000
    assert stats["by_reason"] == {"substring_dedup_empty": 1} and stats["docs_in"] == len(docs)
    assert "source" in io.read_stage(spark, str(tmp_path / "out")).columns
    saved = json.loads((tmp_path / "out" / "_config.json").read_text())
    assert saved["config"]["substring_dedup"]["min_tokens"] == 50
    # a rerun replaces the output
    assert substring_dedup.main(args)["kept"] == stats["kept"] == io.read_stage(spark, str(tmp_path / "out")).count()


def test_duplicate_ids_are_refused(spark, tmp_path):
    spark.createDataFrame([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]).write.parquet(str(tmp_path / "in"))
    with pytest.raises(ValueError, match="substring_dedup needs unique ids"):
        substring_dedup.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])
