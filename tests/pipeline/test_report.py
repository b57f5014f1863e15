"""The pipeline report on stage folders written by hand (no Spark needed)."""

from __future__ import annotations

import json
import re

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.report import cluster_sizes, stage_dirs, write_report
from stages.tokenizer import QwenTokenizer


def stage(root, name, kept, rejected, stats):
    for part, rows in (("kept", kept), ("rejected", rejected)):
        (root / name / part).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / name / part / "part-0.parquet")
    (root / name / "_stats.json").write_text(json.dumps(stats))
    (root / name / "_SUCCESS").write_text("{}")


def test_cluster_sizes_hand_computed():
    assert cluster_sizes(pl.Series("dup_of", ["a", "a", "b", None])) == {2: 1, 3: 1}


def test_report_sections_and_numbers(tmp_path):
    stage(tmp_path, "langid", [{"id": "1", "lang": "en", "text": "a" * 40}, {"id": "2", "lang": "de", "text": "b" * 8}],
          [{"id": "3", "lang": "fr", "text": "c"}],
          {"docs_in": 3, "kept": 2, "rejected": 1, "by_reason": {"lang_not_kept": 1}, "bytes_in": 10, "bytes_out": 5})
    stage(tmp_path, "quality", [{"id": "1", "lang": "en", "quality_score": None}], [],
          {"docs_in": 1, "kept": 1, "rejected": 0, "by_reason": {}})
    stage(tmp_path, "perplexity", [{"id": "1", "perplexity": 120.0}, {"id": "2", "perplexity": 480.5}], [],
          {"docs_in": 2, "kept": 2, "rejected": 0, "by_reason": {}})
    stage(tmp_path, "dedup", [{"id": "1", "dup_of": None, "lang": "en"}], [{"id": "2", "dup_of": "1", "lang": "de"}],
          {"docs_in": 2, "kept": 1, "rejected": 1, "by_reason": {"near_dup": 1}, "bytes_in": 5, "bytes_out": 3})
    # a later stage whose rows carry dup_of / lang only as nulls must not hide dedup's clusters or the languages
    stage(tmp_path, "upsample", [{"id": "1", "dup_of": None, "lang": None, "n_tokens": 7}],
          [{"id": "9", "dup_of": None, "lang": None, "n_tokens": 3}],
          {"docs_in": 1, "kept": 1, "rejected": 0, "by_reason": {}, "tokens_after": {"web": 7}})
    stage(tmp_path / "mix", "sft", [], [], {"stage": "sft", "conversations": 4, "splits": {"train": {"tokens": 90}}})
    (tmp_path / "extract").mkdir()  # unfinished: no _SUCCESS, left out
    assert list(stage_dirs(tmp_path)) == ["langid", "quality", "perplexity", "dedup", "upsample", "mix/sft"]
    page = write_report(tmp_path).read_text()
    assert re.findall(r"<h2>(.*?)</h2>", page) == ["Funnel", "Drop reasons", "Languages", "Quality score",
                                                   "Perplexity", "Duplicate clusters"]
    tokens = sum(len(QwenTokenizer().encode(t)) for t in ("a" * 40, "b" * 8))  # the sample is every document
    assert f"<td>langid</td><td>3</td><td>2</td><td>1</td><td>10</td><td>5</td><td>~{tokens}</td>" in page
    assert "<td>upsample</td><td>1</td><td>1</td><td>0</td><td>0</td><td>0</td><td>7</td>" in page
    assert "<td>mix/sft</td><td></td><td>4</td><td></td><td>0</td><td>0</td><td>90</td>" in page
    assert "<td>near_dup</td><td>1</td>" in page
    assert "<code>quality_score</code> is null for every kept document of <code>quality</code>" in page
    assert "kept documents of <code>dedup</code>" in page  # languages from the last stage with values
    assert page.count("data:image/png;base64,") == 4  # funnel, languages, perplexity, clusters
