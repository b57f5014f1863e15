"""Training shards from tokenized documents, in Spark: shuffle, pack, re-pack the tails, write, manifest.

    stats = write_shards(tokenized_docs, "runs/demo/shards", TokenizeConfig(), config_dict)

Layout (committed atomically like every stage folder):

    shards/
        train/part-*.parquet   split, source, input_ids list<int32>, doc_starts list<int32>, n_tokens, partial
        valid/part-*.parquet
        manifest.json          tokenizer and checksum, seq_len, rows and tokens per split and source, efficiency
        _stats.json, _config.json, _SUCCESS

Documents are range-partitioned on (split, source, seeded hash of id), so each partition packs a sorted
run; the short row each partition leaves per group is re-packed in one task with the others, so at
most one short row per (split, source) remains.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa

from pipeline import io, runner, schemas
from stages.packing import SHARD_SCHEMA, Tokenize, TokenizeConfig, pack_groups
from stages.tokenizer import QwenTokenizer

SCHEMA_VERSION = 1


def _packer(seq_len: int, batch_rows: int = 64):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = pack_groups((r for b in batches for r in b.to_pylist()), seq_len)
        chunk = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == batch_rows:
                yield pa.RecordBatch.from_pylist(chunk, schema=SHARD_SCHEMA)
                chunk = []
        if chunk:
            yield pa.RecordBatch.from_pylist(chunk, schema=SHARD_SCHEMA)
    return run


def pack(docs, config: TokenizeConfig):
    """Tokenized documents (split, source, shuffle_key, input_ids) -> packed rows (SHARD_SCHEMA)."""
    spark_schema = schemas.spark(SHARD_SCHEMA)
    ordered = docs.select("split", "source", "shuffle_key", "input_ids").orderBy("split", "source", "shuffle_key")
    packed = ordered.mapInArrow(_packer(config.seq_len), spark_schema).persist()
    tails = (packed.filter("partial").coalesce(1)
             .sortWithinPartitions("split", "source", "n_tokens", "input_ids")
             .mapInArrow(_packer(config.seq_len), spark_schema))
    return packed.filter("NOT partial").unionByName(tails), packed


def tokenize_and_write(docs, output: str, config: TokenizeConfig, run_config: dict, batch_rows: int = 256) -> dict:
    """Tokenizes documents (`id`, `text`, optional `source`), packs and writes shards; returns the stats."""
    from pyspark import StorageLevel

    if "source" not in docs.columns:
        docs = docs.selectExpr("*", "'unknown' AS source")
    judged = runner.apply(docs.select("id", "text", "source"), Tokenize(config), batch_rows)
    judged = judged.persist(StorageLevel.MEMORY_AND_DISK)
    counts = {r["drop_reason"]: r["count"] for r in judged.groupBy("drop_reason").count().collect()}
    stats = {"stage": "tokenize", "docs_in": sum(counts.values()), "kept": counts.get(None, 0),
             "rejected": sum(v for k, v in counts.items() if k), "by_reason": {k: v for k, v in counts.items() if k}}
    manifest = write_shards(judged.filter("drop_reason IS NULL"), output, config, run_config, stats)
    judged.unpersist()
    return {**stats, "manifest": manifest}


def write_shards(tokenized, output: str, config: TokenizeConfig, run_config: dict, stats: dict) -> dict:
    """Packs and writes shards with `manifest.json` and `_stats.json`; returns the manifest."""
    spark, started = tokenized.sparkSession, time.time()
    rows, cached = pack(tokenized, config)
    width = config.seq_len + 1
    with io.staged_output(spark, output) as tmp:
        io.write_partitioned(rows, "split", tmp, ("train", "valid"), compression="zstd",
                             maxRecordsPerFile=config.file_rows,
                             **{"parquet.block.size": config.row_group_rows * width * 4})
        manifest = _manifest(spark, tmp, config)
        manifest["seconds"] = round(time.time() - started, 3)
        io.write_json(spark, f"{tmp}/manifest.json", manifest)
        totals = {f"{k}_{n}": v[n] for k, v in manifest["splits"].items() for n in ("rows", "tokens")}
        io.write_json(spark, f"{tmp}/_stats.json", {**stats, **totals, "seconds": manifest["seconds"]})
        io.write_json(spark, f"{tmp}/_config.json", {"stage": "tokenize", "output": io.absolute(output), **run_config})
    cached.unpersist()
    return manifest


def _manifest(spark, tmp: str, config: TokenizeConfig) -> dict:
    """Counts read back from the written shards."""
    from pyspark.sql import functions as F

    tokenizer = QwenTokenizer(config.tokenizer or None)
    splits = {}
    for split in ("train", "valid"):
        df = spark.read.parquet(f"{tmp}/{split}")
        by_source = df.groupBy("source").agg(F.count("*").alias("rows"), F.sum("n_tokens").alias("tokens"),
                                             F.sum(F.size("doc_starts")).alias("segments")).collect()
        rows = sum(r["rows"] for r in by_source)
        tokens = sum(r["tokens"] or 0 for r in by_source)
        splits[split] = {
            "rows": rows, "tokens": tokens,
            "packing_efficiency": round(tokens / (rows * (config.seq_len + 1)), 6) if rows else None,
            "tokens_per_source": {r["source"]: r["tokens"] for r in sorted(by_source, key=lambda r: str(r["source"]))},
            "files": len(io.HadoopFS(spark).files(f"{tmp}/{split}", "*.parquet")),
        }
    return {"schema_version": SCHEMA_VERSION, "tokenizer": {"name": "qwen", "sha256": tokenizer.checksum(),
            "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id},
            "seq_len": config.seq_len, "row_width": config.seq_len + 1, "columns": SHARD_SCHEMA.names,
            "splits": splits}
