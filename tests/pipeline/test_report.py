"""The pipeline report on stage folders written by hand (no Spark needed).

Each stage is written the way `pipeline.io.write_split` leaves it: `kept/` and `rejected/` folders of
zstd Parquet with the stage's columns (nulls typed, as Spark writes them), `_stats.json`, `_SUCCESS`.
"""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from common import fs
from common.errors import UserError
from jobs import report as report_job
from pipeline.report import cluster_sizes, stage_dirs, write_report
from stages.tokenize.tokenizer import QwenTokenizer

DOC = {"id": pl.String, "source": pl.String, "text": pl.String, "lang": pl.String, "drop_reason": pl.String}


def frame(rows: list[dict], **extra) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={**DOC, **extra})


def stage(root, label, kept: pl.DataFrame | None, rejected: pl.DataFrame | None, stats: dict, done: bool = True):
    folder = root / label
    folder.mkdir(parents=True)
    for part, df in (("kept", kept), ("rejected", rejected)):
        if df is not None:
            (folder / part).mkdir()
            df.write_parquet(folder / part / "part-00000-0a1b.c000.zstd.parquet", compression="zstd")
    (folder / "_stats.json").write_text(json.dumps(stats))
    if done:
        (folder / "_SUCCESS").write_text("{}")


def split_stats(name: str, kept: int, rejected: int, reasons: dict, **extra) -> dict:
    return {"stage": name, "docs_in": kept + rejected, "kept": kept, "rejected": rejected, "by_reason": reasons,
            "bytes_in": 100, "bytes_out": 60, **extra}


def page_sections(page: str) -> dict[str, str]:
    """{h2 title: the html up to the next h2}."""
    parts = re.split(r"<h2>(.*?)</h2>", page)
    return dict(zip(parts[1::2], parts[2::2]))


def funnel(page: str) -> dict[str, list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", page_sections(page)["Funnel"])
    return {cells[0]: cells[1:] for cells in (re.findall(r"<td>(.*?)</td>", r) for r in rows[1:])}


def test_cluster_sizes_hand_computed():
    assert cluster_sizes(pl.Series("dup_of", ["a", "a", "b", None])) == {2: 1, 3: 1}


def test_stage_dirs_finds_nested_stages_in_pipeline_order(tmp_path):
    for label, name in (("shards", "tokenize"), ("mix/sft", "sft"), ("langid", "langid"), ("mix/pretrain", "pretrain"),
                        ("math-qwen/mix/sft", "sft"), ("code-qwen/dedup", "dedup"), ("code-qwen/code", "ingest_code"),
                        ("code-qwen/shards", "tokenize"), ("extract", "extract"), (".dedup.tmp-1a2b", "dedup")):
        stage(tmp_path, label, None, None, {"stage": name})
    (tmp_path / "train" / "checkpoints").mkdir(parents=True)  # a training folder: no stage
    assert list(stage_dirs(tmp_path)) == ["extract", "langid", "mix/pretrain", "mix/sft", "shards", "code-qwen/code",
                                          "code-qwen/dedup", "code-qwen/shards", "math-qwen/mix/sft"]


def test_report_sections_and_numbers(tmp_path):
    texts = ["An English sentence about rivers. " * 3, "Ein deutscher Satz.", "Une phrase.", "Short."]
    stage(tmp_path, "langid",
          frame([{"id": "1", "text": texts[0], "lang": "en"}, {"id": "2", "text": texts[1], "lang": "de"}]),
          frame([{"id": "3", "text": texts[2], "lang": "fr", "drop_reason": "lang_not_kept"},
                 {"id": "4", "text": texts[3], "lang": None, "drop_reason": "lang_not_kept"}], lang_score=pl.Float64),
          split_stats("langid", 2, 2, {"lang_not_kept": 2}))
    # stages/quality/classifier.py: a float32 score for every document, under min_quality_score rejected
    score = {"quality_score": pl.Float32}
    stage(tmp_path, "quality", frame([{"id": "1", "quality_score": 0.75}, {"id": "2", "quality_score": 0.5}], **score),
          frame([{"id": "3", "quality_score": 0.25, "drop_reason": "low_quality_score"},
                 {"id": "4", "quality_score": 0.125, "drop_reason": "gopher_rep_top_2_gram"}], **score),
          split_stats("quality", 2, 2, {"low_quality_score": 1, "gopher_rep_top_2_gram": 1}))
    # jobs/perplexity.py: `perplexity` per document, `perplexity_bucket`, the tail bucket rejected
    ppl = {"perplexity": pl.Float64, "perplexity_bucket": pl.String}
    stage(tmp_path, "perplexity",
          frame([{"id": "1", "perplexity": 120.0, "perplexity_bucket": "head"},
                 {"id": "2", "perplexity": 480.5, "perplexity_bucket": "middle"},
                 {"id": "5", "perplexity": None, "perplexity_bucket": None}], **ppl),  # a language without a model
          frame([{"id": "6", "perplexity": 2100.0, "perplexity_bucket": "tail", "drop_reason": "perplexity_tail"}],
                **ppl),
          split_stats("perplexity", 3, 1, {"perplexity_tail": 1}, cutoffs={"en": [200.0, 600.0]}))
    dup = {"dup_of": pl.String}
    stage(tmp_path, "dedup", frame([{"id": i} for i in "125"], **dup),
          frame([{"id": i, "dup_of": of, "drop_reason": "near_dup"} for i, of in (("7", "1"), ("8", "1"), ("9", "2"))],
                **dup),
          split_stats("dedup", 3, 3, {"near_dup": 3}, removed_chars=1234, measured_fpr=0.0099))
    # later and specialist stages with the same columns (nulls, other clusters) must not be read for the plots
    stage(tmp_path, "upsample", frame([{"id": "1", "lang": None}], dup_of=pl.String, n_tokens=pl.Int64),
          frame([], dup_of=pl.String), split_stats("upsample", 1, 0, {}, tokens_after={"web": 7, "instruct": 2}))
    stage(tmp_path, "code-qwen/dedup", frame([{"id": "c1"}], **dup),
          frame([{"id": f"c{i}", "dup_of": "c1", "drop_reason": "near_dup"} for i in range(2, 7)], **dup),
          split_stats("dedup", 1, 5, {"near_dup": 5}))
    sft_splits = {"train": {"rows": 1, "tokens": 90}, "valid": {"rows": 1, "tokens": 9}}
    stage(tmp_path, "mix/sft", None, None, {"stage": "sft", "conversations": 4, "too_long": 0, "splits": sft_splits})
    stage(tmp_path, "mix/preference", None, None, {"stage": "preference", "splits": {
        "train": {"rows": 5, "prompt_tokens": 50, "chosen_tokens": 20, "rejected_tokens": 30},
        "valid": {"rows": 1, "prompt_tokens": 5, "chosen_tokens": 2, "rejected_tokens": 3}}})
    stage(tmp_path, "decontam", frame([]), frame([]), split_stats("decontam", 0, 0, {}), done=False)  # failed rerun
    page = write_report(tmp_path).read_text()
    sections = page_sections(page)
    assert list(sections) == ["Funnel", "Drop reasons", "Stage counters", "Languages", "Quality score", "Perplexity",
                              "Duplicate clusters"]
    # a stage's own counters from _stats.json (line dedup's removed characters, PII by kind, ...), numbers only
    assert "<td>dedup</td><td>removed_chars</td><td>1,234</td>" in sections["Stage counters"]
    assert "<td>dedup</td><td>measured_fpr</td><td>0.0099</td>" in sections["Stage counters"]
    assert "<td>mix/sft</td><td>conversations</td><td>4</td>" in sections["Stage counters"]
    assert "<td>upsample</td><td>tokens_after.web</td><td>7</td>" in sections["Stage counters"]   # a table of numbers
    assert "cutoffs" not in sections["Stage counters"]                                               # not numbers

    rows = funnel(page)
    assert list(rows) == ["langid", "quality", "perplexity", "dedup", "upsample", "mix/preference", "mix/sft",
                          "code-qwen/dedup"]
    tokens = len(QwenTokenizer().encode(texts[0])) + len(QwenTokenizer().encode(texts[1]))  # the sample: every doc
    assert rows["langid"] == ["4", "2", "2", "100", "60", f"~{tokens}", ""]
    assert rows["upsample"] == ["1", "1", "0", "100", "60", "9", ""]                       # tokens_after: counted
    assert rows["mix/sft"] == ["", "4", "", "", "", "99", ""]                              # conversations
    assert rows["mix/preference"] == ["", "6", "", "", "", "110", ""]                      # pairs
    assert "unfinished (no _SUCCESS), left out: decontam" in sections["Funnel"]
    assert "<td>perplexity</td><td>perplexity_tail</td><td>1</td>" in sections["Drop reasons"]

    assert "<code>langid</code> with a value: kept: 2 documents; rejected: 1 documents" in sections["Languages"]
    # medians by hand: (0.75 + 0.5) / 2, (0.25 + 0.125) / 2; (120 + 480.5) / 2 and 2100
    assert "<code>quality</code> with a value: kept: 2 documents, median 0.625; rejected: 2 documents, median 0.1875" \
           in sections["Quality score"] and sections["Quality score"].count("data:image/png;base64,") == 1
    assert "<code>perplexity</code> with a value: kept: 2 documents, median 300.2; rejected: 1 documents, median 2100" \
           in sections["Perplexity"] and sections["Perplexity"].count("data:image/png;base64,") == 1
    assert "2 clusters in <code>dedup</code>, 3 duplicates rejected, largest cluster 3 documents" \
           in sections["Duplicate clusters"]
    assert page.count("data:image/png;base64,") == 6  # funnel documents + tokens, languages, 2 histograms, clusters


def test_missing_stages_and_null_columns_are_named(tmp_path):
    stage(tmp_path, "langid", frame([{"id": "1", "text": "x"}]), frame([]), split_stats("langid", 1, 0, {}))
    no_score = {"quality_score": pl.Float32}   # no quality.classifier: the column is there, every value null
    stage(tmp_path, "quality", frame([{"id": "1", "quality_score": None}], **no_score), frame([], **no_score),
          split_stats("quality", 1, 0, {}))
    stage(tmp_path, "dedup", frame([{"id": "1"}], dup_of=pl.String), frame([], dup_of=pl.String),
          split_stats("dedup", 1, 0, {}))
    sections = page_sections(write_report(tmp_path).read_text())
    assert "<code>lang</code> is null for every document of <code>langid</code>" in sections["Languages"]
    assert "<code>quality_score</code> is null for every document of <code>quality</code> (no quality classifier" \
           in sections["Quality score"]
    assert "no <code>perplexity</code> stage in this run" in sections["Perplexity"]
    assert "(no near-duplicates found)" in sections["Duplicate clusters"]
    assert "Drop reasons" not in sections and "Mixture (training shards)" not in sections
    assert all("<img" not in sections[t] for t in ("Languages", "Quality score", "Perplexity", "Duplicate clusters"))


# ----------------------------------------------------------------------------- a run on a real S3 server (moto)

def small_run(root):
    """Every section from a few rows: texts (estimated tokens), scores, clusters, a nested stage, a failed
    rerun, a job in progress (a dot-folder) and the shards' manifest."""
    score, dup = {"quality_score": pl.Float32}, {"dup_of": pl.String}
    stage(root, "langid", frame([{"id": "1", "text": "Rivers run to the sea.", "lang": "en"}]),
          frame([{"id": "2", "text": "Une phrase.", "lang": "fr", "drop_reason": "lang_not_kept"}]),
          split_stats("langid", 1, 1, {"lang_not_kept": 1}))
    stage(root, "quality", frame([{"id": "1", "quality_score": 0.75}], **score),
          frame([{"id": "3", "quality_score": 0.25, "drop_reason": "low_quality_score"}], **score),
          split_stats("quality", 1, 1, {"low_quality_score": 1}))
    stage(root, "dedup", frame([{"id": "1"}], **dup), frame([{"id": "4", "dup_of": "1", "drop_reason": "near_dup"}],
                                                             **dup), split_stats("dedup", 1, 1, {"near_dup": 1}))
    stage(root, "mix/sft", None, None, {"stage": "sft", "conversations": 2, "splits": {"train": {"rows": 2}}})
    stage(root, "decontam", frame([]), frame([]), split_stats("decontam", 0, 0, {}), done=False)
    stage(root, ".upsample.tmp-1a2b", frame([]), frame([]), split_stats("upsample", 0, 0, {}))
    (root / "shards").mkdir()
    (root / "shards" / "manifest.json").write_text(json.dumps({"splits": {"train": {
        "tokens_per_source": {"web": 1000, "sft": 24}, "packing_efficiency": 0.97}}}))


def test_report_of_a_run_on_s3_is_the_local_report(tmp_path, s3):
    local = tmp_path / "run"
    small_run(local)
    expected = write_report(local).read_text(encoding="utf-8")
    fs.upload_folder(local, f"{s3}/run")
    assert report_job.main(["--root", f"{s3}/run"]) == f"{s3}/run/report.html"
    page = fs.read_bytes(f"{s3}/run/report.html").decode()
    assert page == expected.replace(str(local), f"{s3}/run")     # the root is named in the title only
    assert list(page_sections(page)) == ["Funnel", "Drop reasons", "Stage counters", "Languages", "Quality score",
                                         "Perplexity", "Duplicate clusters", "Mixture (training shards)"]
    # Hadoop's scheme for the same bucket, the page elsewhere: another URI and a local file
    same = s3.replace("s3://", "s3a://")
    report_job.main(["--root", f"{same}/run", "--out", f"{same}/pages/run.html"])
    assert fs.read_bytes(f"{s3}/pages/run.html").decode() == expected.replace(str(local), f"{same}/run")
    assert write_report(f"{s3}/run", tmp_path / "out" / "run.html") == tmp_path / "out" / "run.html"
    assert fs.glob(tmp_path / "out", "*") == [str(tmp_path / "out" / "run.html")]   # renamed into place


def test_report_of_a_missing_run_is_a_user_error(tmp_path, s3):
    for root in (tmp_path / "typo", f"{s3}/typo"):
        with pytest.raises(UserError, match="no such run folder"):
            write_report(root)
    assert not (tmp_path / "typo").exists() and fs.glob(s3, "*") == []
