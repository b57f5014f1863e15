"""Training shards from documents, in Spark: shuffle, tokenize, pack, re-pack the tails, write, manifest.

    stats = tokenize_and_write(docs, "runs/demo/shards", TokenizeConfig(), config_dict)

Layout (committed atomically like every stage folder):

    shards/
        train/part-*.parquet   split, source, input_ids list<int32>, doc_starts list<int32>, n_tokens, partial
        valid/part-*.parquet
        manifest.json          tokenizer and checksum, seq_len, rows and tokens per split and source, efficiency
        _stats.json, _config.json, _SUCCESS

The texts are hash-partitioned on a seeded hash of their id and sorted inside each partition by
(split, source, hash) in Spark SQL (the split follows the hash of `orig_id` for upsampled copies), so
each partition holds contiguous runs of a shuffled order; each task then tokenizes, packs and writes
its partition in one pass, so the token lists never cross between Python and the JVM. The short row
each partition leaves per group is set aside, re-packed with the others and added, so at most one
short row per (split, source) remains. The tasks write their rows with pyarrow
(pipeline/shard_files.py; `tokenize.writer = "arrow"`, the default) or hand them to Spark's Parquet
writer (`"spark"`, any Hadoop file system, slower); both give the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa

from pipeline import io, schemas, shard_files
from pipeline.spark import ship_files
from stages.tokenize.packing import SHARD_SCHEMA, DocEncoder, TokenizeConfig, pack_batches
from stages.tokenize.tokenizer import QwenTokenizer

SCHEMA_VERSION = 1


def _packer(config: TokenizeConfig, tokenize: bool):
    """The mapInArrow function: packs sorted rows (tokenizing them first when they are texts)."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in pack_batches(DocEncoder(config).encoded(batches) if tokenize else batches, config.seq_len):
            if batch.num_rows:
                yield batch
    return run


def ordered_texts(docs, config: TokenizeConfig):
    """Documents (`id`, `text`, optional `source`, `orig_id`) -> (split, source, text), hash-partitioned on
    sha1("<seed>\\0<id>") and sorted inside each partition by (split, source, that hash): no sampling pass,
    every core tokenizes and packs. The split is `stages.tokenize.packing.split_of_doc`, in SQL."""
    from pyspark.sql import functions as F

    key = lambda column: F.sha1(F.concat(F.lit(f"{config.seed}\0"), F.col(column).cast("string")))
    shuffle_key = split_key = key("id")
    if "orig_id" in docs.columns:
        split_key = F.when(F.coalesce(F.col("orig_id"), F.lit("")) != "", key("orig_id")).otherwise(split_key)
    bucket = F.conv(F.substring(split_key, 1, 8), 16, 10).cast("long")
    source = F.col("source") if "source" in docs.columns else F.lit("unknown")
    return (docs.select(F.when(bucket < F.lit(config.valid_fraction * 0x1_0000_0000), "valid").otherwise("train")
                        .alias("split"), source.alias("source"), shuffle_key.alias("shuffle_key"), "text")
            .repartition(_partitions(docs.sparkSession), "shuffle_key")
            .sortWithinPartitions("split", "source", "shuffle_key")
            .select("split", "source", "text"))


def pack(ordered, config: TokenizeConfig):
    """Ordered texts -> packed rows (SHARD_SCHEMA), the short last row of each (partition, split,
    source) flagged `partial` (the Spark-writer path)."""
    return ordered.mapInArrow(_packer(config, tokenize=True), schemas.spark(SHARD_SCHEMA))


def _partitions(spark) -> int:
    """spark.sql.shuffle.partitions, given explicitly: adaptive execution does not coalesce them (into a
    last wave that leaves cores idle, e.g. 3 tasks on 2 cores), and the packing depends only on this
    number and the seed, never on the executors or the data size."""
    return int(spark.conf.get("spark.sql.shuffle.partitions"))


def repack_tails(tails, config: TokenizeConfig):
    """The partial rows of every partition re-packed together in one task: at most one short row per
    (split, source) remains."""
    return (tails.coalesce(1).sortWithinPartitions("split", "source", "n_tokens", "input_ids")
            .mapInArrow(_packer(config, tokenize=False), schemas.spark(SHARD_SCHEMA)))


def write_rows(rows, tmp: str, config: TokenizeConfig) -> None:
    """Full rows straight into `<tmp>/{train,valid}` in one pass over the data (nothing cached); the
    partial rows go to `<tmp>/_tails-*`, are re-packed and added to the split folders."""
    spark, fs = rows.sparkSession, io.HadoopFS(rows.sparkSession)
    options = {"compression": "zstd", "maxRecordsPerFile": config.file_rows,
               "parquet.block.size": config.row_group_rows * (config.seq_len + 1) * 4}
    splits = shard_files.SPLITS
    io.write_partitioned(rows, "IF(partial, concat('_tails-', split), split)", tmp,
                         splits + tuple(f"_tails-{s}" for s in splits), **options)
    found = [f"{tmp}/_tails-{s}" for s in splits if fs.files(f"{tmp}/_tails-{s}", "*.parquet")]
    if found:
        io.write_partitioned(repack_tails(spark.read.parquet(*found), config), "split", f"{tmp}/_repacked",
                             splits, **options)
    for split in splits if found else ():
        for i, (path, _) in enumerate(fs.files(f"{tmp}/_repacked/{split}", "*.parquet")):
            fs.rename(path, f"{tmp}/{split}/part-tails-{i:05d}.parquet")
    for folder in ("_repacked", *(f"_tails-{s}" for s in splits)):
        fs.delete(f"{tmp}/{folder}")


def tokenize_and_write(docs, output: str, config: TokenizeConfig, run_config: dict) -> dict:
    """Tokenizes documents (`id`, `text`, optional `source`, `orig_id`), packs and writes shards with
    `manifest.json` and `_stats.json`; returns the stats (with the manifest). Documents with no tokens
    are counted as `empty`, documents the encoder fails on as `encode_error` (with the Spark writer the
    tasks report no counts: every dropped document counts as `empty`); the rest are counted from the
    shards (each ends with the one <|endoftext|> it contains: text is encoded with that special token
    disallowed)."""
    spark, started = docs.sparkSession, time.time()
    ship_files(spark, [QwenTokenizer(config.tokenizer or None).path])
    ordered = ordered_texts(docs, config)
    with io.staged_output(spark, output) as tmp:
        if config.writer == "spark":
            write_rows(pack(ordered, config), tmp, config)
            groups, files = _spark_counts(spark, tmp), _spark_files(spark, tmp)
        else:
            groups, files, dropped = shard_files.write_packed(ordered, tmp, config)
        manifest = _manifest(config, groups, files)
        manifest["seconds"] = round(time.time() - started, 3)
        io.write_json(spark, f"{tmp}/manifest.json", manifest)
        kept = sum(s["documents"] for s in manifest["splits"].values())
        docs_in = docs.count() if config.writer == "spark" else kept + sum(dropped.values())
        by_reason = ({k: v for k, v in dropped.items() if v} if config.writer != "spark"
                     else {"empty": docs_in - kept} if docs_in > kept else {})
        io.error_limit("tokenize", by_reason.get("encode_error", 0), docs_in, io.recorded_error_limit(run_config))
        totals = {f"{k}_{n}": v[n] for k, v in manifest["splits"].items() for n in ("rows", "tokens")}
        stats = {"stage": "tokenize", "docs_in": docs_in, "kept": kept, "rejected": docs_in - kept,
                 "by_reason": by_reason, **totals,
                 "seconds": manifest["seconds"]}
        io.write_json(spark, f"{tmp}/_stats.json", stats)
        io.write_json(spark, f"{tmp}/_config.json", {"stage": "tokenize", "output": io.absolute(output), **run_config})
    return {**stats, "manifest": manifest}


def _spark_counts(spark, tmp: str) -> list:
    """Rows, tokens and documents per (split, source), read back from the written shards by Spark."""
    from pyspark.sql import functions as F

    shards = spark.read.parquet(f"{tmp}/train", f"{tmp}/valid")
    return shards.groupBy("split", "source").agg(F.count("*").alias("rows"), F.sum("n_tokens").alias("tokens"),
                                                 F.sum("n_docs").alias("documents")).collect()


def _spark_files(spark, tmp: str) -> dict[str, int]:
    return {split: len(io.HadoopFS(spark).files(f"{tmp}/{split}", "*.parquet")) for split in shard_files.SPLITS}


def _manifest(config: TokenizeConfig, groups: list, files: dict[str, int]) -> dict:
    """The manifest from the counts read back from the written shards (`groups`: split, source, rows,
    tokens, documents) and the files per split."""
    tokenizer = QwenTokenizer(config.tokenizer or None)
    splits = {}
    for split in shard_files.SPLITS:
        mine = sorted((g for g in groups if g["split"] == split), key=lambda g: str(g["source"]))
        rows, tokens = sum(g["rows"] for g in mine), sum(g["tokens"] for g in mine)
        splits[split] = {
            "rows": rows, "tokens": tokens, "documents": sum(g["documents"] for g in mine),
            "packing_efficiency": round(tokens / (rows * (config.seq_len + 1)), 6) if rows else None,
            "tokens_per_source": {g["source"]: g["tokens"] for g in mine},
            "files": files[split],
        }
    return {"schema_version": SCHEMA_VERSION, "tokenizer": {"name": "qwen", "sha256": tokenizer.checksum(),
            "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id},
            "seq_len": config.seq_len, "row_width": config.seq_len + 1, "columns": SHARD_SCHEMA.names,
            "splits": splits}
