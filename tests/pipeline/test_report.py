"""The pipeline report on stage folders written by hand (no Spark needed)."""

from __future__ import annotations

import json
import re

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.report import cluster_sizes, stage_dirs, write_report


def stage(root, name, kept, rejected, stats):
    for part, rows in (("kept", kept), ("rejected", rejected)):
        (root / name / part).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / name / part / "part-0.parquet")
    (root / name / "_stats.json").write_text(json.dumps(stats))
    (root / name / "_SUCCESS").write_text("{}")


def test_cluster_sizes_hand_computed():
    assert cluster_sizes(pl.Series("dup_of", ["a", "a", "b", None])) == {2: 1, 3: 1}


def test_report_sections_and_numbers(tmp_path):
    stage(tmp_path, "langid", [{"id": "1", "lang": "en"}, {"id": "2", "lang": "de"}], [{"id": "3", "lang": "fr"}],
          {"docs_in": 3, "kept": 2, "rejected": 1, "by_reason": {"lang_not_kept": 1}, "bytes_in": 10, "bytes_out": 5})
    stage(tmp_path, "dedup", [{"id": "1", "dup_of": None, "lang": "en"}], [{"id": "2", "dup_of": "1", "lang": "de"}],
          {"docs_in": 2, "kept": 1, "rejected": 1, "by_reason": {"near_dup": 1}, "bytes_in": 5, "bytes_out": 3})
    (tmp_path / "extract").mkdir()  # unfinished: no _SUCCESS, left out
    assert [p.name for p in stage_dirs(tmp_path)] == ["langid", "dedup"]
    page = write_report(tmp_path).read_text()
    assert re.findall(r"<h2>(.*?)</h2>", page) == ["Funnel", "Drop reasons", "Languages", "Duplicate clusters"]
    assert "<td>langid</td><td>3</td><td>2</td><td>1</td>" in page and "<td>near_dup</td><td>1</td>" in page
    assert page.count("data:image/png;base64,") == 3
