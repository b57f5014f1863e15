"""Ingest and extract jobs end to end on local Spark, on the real archives and pages in ../shared/data."""

from __future__ import annotations

import json

import pytest

from bench.data import benchmark_warc
from jobs import extract, ingest, langid
from pipeline import io, runner
from stages.extract import Extractor
from tests.stages.test_warc import all_archives, warcio_count

pytestmark = pytest.mark.spark


def test_ingest_accounts_for_every_record(spark, tmp_path, shared_data):
    archives = all_archives(shared_data)
    stats = ingest.main(["--input", *map(str, archives), "--output", str(tmp_path / "ingest")])
    counts = [warcio_count(p) for p in archives]
    assert stats["docs_in"] == sum(n for n, _ in counts) + sum(broken for _, broken in counts)
    assert stats["by_reason"]["broken_file"] == sum(broken for _, broken in counts)
    assert stats["kept"] == io.read_stage(spark, str(tmp_path / "ingest")).count()
    assert stats["files"] == len(archives)
    rejected = io.read_stage(spark, str(tmp_path / "ingest"), "rejected")
    assert rejected.filter("drop_reason is null").count() == 0
    assert rejected.filter("warc_file is null or warc_offset is null").count() == 0


def test_stage_gives_the_same_rows_on_a_list_and_through_spark(spark, tmp_path, shared_data):
    paths = sorted(str(p) for p in (shared_data / "dolma-samples").glob("*.warc.gz"))
    ingest.main(["--input", *paths, "--output", str(tmp_path / "ingest")])
    pages = io.read_stage(spark, str(tmp_path / "ingest"))
    via_spark = sorted((r.asDict() for r in runner.apply(pages, Extractor()).collect()), key=lambda r: r["id"])
    via_list = sorted(Extractor().run([r.asDict() for r in pages.collect()]), key=lambda r: r["id"])
    assert len(via_spark) == 37 and via_spark == via_list


def test_extract_job_on_benchmark_pages(spark, tmp_path, shared_data):
    warc = benchmark_warc(shared_data, tmp_path / "in" / "bench.warc.gz", limit=20)
    ingest.main(["--input", str(warc), "--output", str(tmp_path / "ingest")])
    stats = extract.main(["--input", str(tmp_path / "ingest"), "--output", str(tmp_path / "extract"),
                          "--set", "extract.min_text_chars=200"])
    assert stats["docs_in"] == 20 and stats["kept"] >= 18
    docs = io.read_stage(spark, str(tmp_path / "extract"))
    assert {"text", "title", "date", "host", "url", "warc_file"} <= set(docs.columns) and "html" not in docs.columns
    # the default cheap metadata pass: og:title / <title>, and the day of the WARC-Date (ingest's fetch_time)
    assert docs.filter("title is null or date != '2020-01-01'").count() == 0
    config = json.loads((tmp_path / "extract" / "_config.json").read_text())
    assert config["config"]["extract"]["min_text_chars"] == 200 and config["overrides"]
    stats = langid.main(["--input", str(tmp_path / "extract"), "--output", str(tmp_path / "langid"),
                         "--set", 'langid.languages=["en"]'])
    langs = io.read_stage(spark, str(tmp_path / "langid")).groupBy("lang").count().collect()
    assert stats["docs_in"] == docs.count() and stats["kept"] >= 15 and [r["lang"] for r in langs] == ["en"]
    assert set(stats["by_reason"]) <= {"lang_not_kept", "low_lang_score"}


def test_extract_refuses_an_unfinished_input(spark, tmp_path):
    (tmp_path / "ingest" / "kept").mkdir(parents=True)
    with pytest.raises(io.StageNotReady):
        extract.main(["--input", str(tmp_path / "ingest"), "--output", str(tmp_path / "extract")])
