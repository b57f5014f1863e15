"""The tokenize job: exact token accounting, boundaries, packing efficiency, row groups, determinism."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from bench.data import article_pages
from common.errors import JobFailed
from jobs import tokenize
from pipeline import io
from stages.tokenize.tokenizer import QwenTokenizer

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def docs_stage(spark, tmp_path_factory, shared_data):
    """The benchmark's gold article bodies as a finished stage folder with two sources."""
    out = tmp_path_factory.mktemp("tok") / "docs"
    rows = [(name, gold, "news" if i % 3 else "blogs") for i, (name, _, _, gold) in enumerate(article_pages(shared_data))]
    io.write_docs(spark, rows, str(out))
    return out, rows


def run(docs, out, *extra):
    return tokenize.main(["--input", str(docs), "--output", str(out), "--set", "tokenize.seq_len=256",
                          "--set", "tokenize.valid_fraction=0.1", "--set", "tokenize.row_group_rows=16", *extra])


def test_shards_hold_every_token_once(spark, docs_stage, tmp_path):
    docs, rows = docs_stage
    stats = run(docs, tmp_path / "shards")
    tok = QwenTokenizer()
    expected = {}
    for _, text, source in rows:
        expected[source] = expected.get(source, 0) + len(tok.encoding.encode_ordinary(text)) + 1
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    got = {}
    for split in ("train", "valid"):
        table = pq.read_table(tmp_path / "shards" / split)
        assert table.num_rows == manifest["splits"][split]["rows"]
        for source, n in manifest["splits"][split]["tokens_per_source"].items():
            got[source] = got.get(source, 0) + n
        partial = [(s, p) for s, p in zip(table.column("source").to_pylist(), table.column("partial").to_pylist()) if p]
        assert len(partial) <= 2  # at most one short row per source
        assert all(len(r) == 257 for r, p in zip(table.column("input_ids").to_pylist(), table.column("partial").to_pylist()) if not p)
    assert got == expected and stats["docs_in"] == stats["kept"] == len(rows)  # kept: counted from n_docs
    assert manifest["splits"]["train"]["packing_efficiency"] >= 0.995
    assert manifest["tokenizer"]["sha256"] == QwenTokenizer().checksum()
    first = sorted((tmp_path / "shards" / "train").glob("*.parquet"))[0]
    assert pq.ParquetFile(first).metadata.num_row_groups > 1


def test_rerun_is_identical(spark, docs_stage, tmp_path):
    docs, _ = docs_stage
    run(docs, tmp_path / "a")
    run(docs, tmp_path / "b")
    read = lambda p: sorted(map(tuple, spark.read.parquet(str(p / "train")).selectExpr("input_ids", "doc_starts").collect()))
    assert read(tmp_path / "a") == read(tmp_path / "b")


def shard_rows(folder):
    rows = [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: (r["source"], r["partial"], r["input_ids"]))


def test_arrow_and_spark_writers_give_the_same_shards(spark, docs_stage, tmp_path):
    """The default writer (tasks write with pyarrow) equals Spark's Parquet writer row for row, with row
    groups of exactly row_group_rows (the last of a file shorter) and files of at most file_rows."""
    docs, _ = docs_stage
    sets = ("--set", "tokenize.file_rows=40")
    arrow = run(docs, tmp_path / "arrow", *sets)
    spark_written = run(docs, tmp_path / "spark", *sets, "--set", "tokenize.writer=spark")
    for split in ("train", "valid"):
        assert shard_rows(tmp_path / "arrow" / split) == shard_rows(tmp_path / "spark" / split)
        for f in (tmp_path / "arrow" / split).glob("*.parquet"):
            meta = pq.ParquetFile(f).metadata
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            assert meta.num_rows <= 40 and all(n == 16 for n in sizes[:-1]) and 0 < sizes[-1] <= 16, (f.name, sizes)
    drop = lambda m: {k: {**v, "files": None} for k, v in m["splits"].items()}
    assert drop(arrow["manifest"]) == drop(spark_written["manifest"])
    assert arrow["manifest"]["splits"]["train"]["files"] > 2


def test_files_no_task_reported_are_removed(spark, docs_stage, tmp_path):
    """What a failed task attempt left in the temporary folder does not reach the output."""
    from pipeline import shard_files, shards
    from stages.tokenize.packing import TokenizeConfig

    docs, _ = docs_stage
    config = TokenizeConfig(seq_len=256)
    tmp = tmp_path / "tmp"
    (tmp / "train").mkdir(parents=True)
    stray = tmp / "train" / "part-00000-t999-000.zstd.parquet"
    stray.write_bytes(b"half a file")
    docs_df = io.read_stage(spark, str(docs)).select("id", "text", "source")
    shard_files.write_packed(shards.ordered_texts(docs_df, config), str(tmp), config)
    assert not stray.exists() and list((tmp / "train").glob("part-0*"))
    with pytest.raises(ValueError, match="tokenize.writer = 'spark'"):
        shard_files.arrow_filesystem("abfss://container@account.dfs.core.windows.net/shards")


def test_spark_split_is_the_documented_hash_and_empty_documents_are_counted(spark, tmp_path):
    """The split computed in Spark SQL equals `split_of_doc` (copies follow their original), and a
    document with no tokens is counted as `empty`, not lost."""
    from pipeline import shards
    from stages.tokenize.packing import TokenizeConfig, split_of_doc

    config = TokenizeConfig(valid_fraction=0.3, seed=7)
    rows = [(f"d{i}", f"doc {i}", "web", None if i % 4 else f"d{i // 2}") for i in range(400)]
    docs = spark.createDataFrame(rows, "id string, text string, source string, orig_id string")
    got = sorted(map(tuple, shards.ordered_texts(docs, config).select("text", "split").collect()))
    assert got == sorted((text, split_of_doc(config, i, o)) for i, text, _, o in rows)
    assert {s for _, s in got} == {"train", "valid"}
    io.write_docs(spark, [("a", "some text", "web"), ("b", "", "web"), ("c", "more", "web")], str(tmp_path / "docs"))
    stats = run(tmp_path / "docs", tmp_path / "shards")
    assert (stats["docs_in"], stats["kept"], stats["by_reason"]) == (3, 2, {"empty": 1})


def test_train_tokenizer_job(spark, docs_stage, tmp_path):
    from tokenizers import Tokenizer

    from jobs import train_tokenizer

    docs, rows = docs_stage
    report = train_tokenizer.main(["--input", str(docs), "--output", str(tmp_path / "bpe"),
                                   "--set", "train_tokenizer.vocab_size=1000", "--set", "train_tokenizer.held_out=0.1"])
    assert report["train_docs"] + report["held_out_docs"] == len(rows) and report["held_out_docs"] > 5
    tok = Tokenizer.from_file(str(tmp_path / "bpe" / "tokenizer.json"))
    assert tok.get_vocab_size() == 1000 and tok.decode(tok.encode(rows[0][1]).ids) == rows[0][1]
    assert 2.0 < report["bytes_per_token"] < report["qwen_bytes_per_token"]  # 1,000 merges compress less than Qwen's


def test_a_document_the_encoder_panics_on_is_counted_and_the_job_finishes(spark, tmp_path):
    """tiktoken panics (pyo3 PanicException, a BaseException) on ~1 MB of spaces: a ChatML-source
    document like that is counted as `encode_error`; above spark.max_error_fraction the job fails."""
    rows = [(f"d{i}", f"document number {i}", "web") for i in range(30)] + [("x", " " * 2_000_000, "instruct")]
    io.write_docs(spark, rows, str(tmp_path / "docs"))
    stats = run(tmp_path / "docs", tmp_path / "shards", "--set", "spark.max_error_fraction=0.05")
    assert (stats["docs_in"], stats["kept"], stats["by_reason"]) == (31, 30, {"encode_error": 1})
    with pytest.raises(JobFailed, match="tokenize: 1 of 31 records raised errors"):
        run(tmp_path / "docs", tmp_path / "strict", "--set", "spark.max_error_fraction=0.01")
    assert not (tmp_path / "strict" / "_SUCCESS").exists()


def test_datasets_loads_the_shards_and_a_stage_folder(spark, docs_stage, tmp_path):
    """`datasets.load_dataset("parquet", ...)` reads what the pipeline writes, with the documented columns."""
    datasets = pytest.importorskip("datasets")
    docs, rows = docs_stage
    run(docs, tmp_path / "shards")
    shards = datasets.load_dataset("parquet", cache_dir=str(tmp_path / "cache"), data_files={
        split: str(tmp_path / "shards" / split / "*.parquet") for split in ("train", "valid")})
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    for split in ("train", "valid"):
        assert shards[split].num_rows == manifest["splits"][split]["rows"]
        assert {"split", "source", "input_ids", "doc_starts", "n_tokens", "n_docs", "partial"} <= set(
            shards[split].column_names)
    full = [r for r in shards["train"] if not r["partial"]]
    assert full and all(len(r["input_ids"]) == 257 for r in full)
    kept = datasets.load_dataset("parquet", cache_dir=str(tmp_path / "cache"),
                                 data_files=str(docs / "kept" / "*.parquet"), split="train")
    assert kept.num_rows == len(rows) and {"id", "text", "source"} <= set(kept.column_names)
    assert sorted(kept["text"]) == sorted(text for _, text, _ in rows)
