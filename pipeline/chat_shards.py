"""SFT and preference shards from encoded conversations, in Spark; committed atomically with manifest.json.

    write_sft(encoded, "runs/demo/mix/sft", MixConfig(), run_config, stats)
    write_preference(encoded_pairs, "runs/demo/mix/preference", MixConfig(), run_config, stats)

Layout:

    sft/
        train/part-*.parquet   split, input_ids list<int32>, loss_mask list<int8>, doc_starts list<int32>, n_tokens
        valid/part-*.parquet   (whole conversations packed into rows of at most seq_len + 1 tokens, unpadded)
        manifest.json          tokenizer, seq_len, rows, tokens, loss tokens, conversations, packing efficiency
    preference/
        train/, valid/         id, source, split, prompt_ids, chosen_ids, rejected_ids (list<int32>)
        manifest.json

`loss_mask[i] = 1` where token i is an assistant token (see stages/chatml.py); `doc_starts` never
lets attention cross conversations. Conversations are ordered by a seeded hash of their id.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa

from pipeline import io, schemas
from stages.chatml import SFT_SCHEMA, MixConfig, pack_conversations
from stages.tokenize.tokenizer import QwenTokenizer

SCHEMA_VERSION = 1
PREFERENCE_COLUMNS = ("id", "source", "split", "prompt_ids", "chosen_ids", "rejected_ids")


def _packer(seq_len: int, batch_rows: int = 64):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        chunk = []
        for row in pack_conversations((r for b in batches for r in b.to_pylist()), seq_len):
            chunk.append(row)
            if len(chunk) == batch_rows:
                yield pa.RecordBatch.from_pylist(chunk, schema=SFT_SCHEMA)
                chunk = []
        if chunk:
            yield pa.RecordBatch.from_pylist(chunk, schema=SFT_SCHEMA)
    return run


def pack_sft(encoded, config: MixConfig):
    """Encoded conversations (split, shuffle_key, input_ids, loss_mask) -> packed SFT rows."""
    ordered = encoded.select("split", "shuffle_key", "input_ids", "loss_mask").orderBy("split", "shuffle_key")
    return ordered.mapInArrow(_packer(config.seq_len), schemas.spark(SFT_SCHEMA))


def write_sft(encoded, output: str, config: MixConfig, run_config: dict, stats: dict) -> dict:
    """Packs and writes SFT shards with manifest.json and _stats.json; returns the manifest."""
    rows = pack_sft(encoded, config)
    return _write(rows, output, config, run_config, stats, "sft", _sft_split)


def write_preference(pairs, output: str, config: MixConfig, run_config: dict, stats: dict) -> dict:
    """Writes preference rows (prompt, chosen, rejected ids) with manifest.json; returns the manifest."""
    return _write(pairs.select(*PREFERENCE_COLUMNS), output, config, run_config, stats, "preference", _pref_split)


def _write(rows, output: str, config: MixConfig, run_config: dict, stats: dict, kind: str, describe) -> dict:
    spark, started = rows.sparkSession, time.time()
    with io.staged_output(spark, output) as tmp:
        io.write_partitioned(rows, "split", tmp, ("train", "valid"), compression="zstd")
        tokenizer = QwenTokenizer(config.tokenizer or None)
        manifest = {"schema_version": SCHEMA_VERSION, "kind": kind,
                    "tokenizer": {"name": "qwen", "sha256": tokenizer.checksum(), "vocab_size": tokenizer.vocab_size},
                    "seq_len": config.seq_len, "columns": list(rows.columns),
                    "splits": {s: describe(spark.read.parquet(f"{tmp}/{s}"), config) for s in ("train", "valid")},
                    "seconds": round(time.time() - started, 3)}
        io.write_json(spark, f"{tmp}/manifest.json", manifest)
        io.write_json(spark, f"{tmp}/_stats.json", {**stats, "stage": kind, "splits": manifest["splits"]})
        io.write_json(spark, f"{tmp}/_config.json", {"stage": kind, "output": io.absolute(output), **run_config})
    return manifest


def _sft_split(df, config: MixConfig) -> dict:
    from pyspark.sql import functions as F

    row = df.agg(F.count("*").alias("rows"), F.sum("n_tokens").alias("tokens"),
                 F.sum(F.size("doc_starts")).alias("conversations"),
                 F.sum(F.aggregate("loss_mask", F.lit(0).cast("long"), lambda acc, m: acc + m)).alias("loss_tokens")
                 ).first()
    rows, tokens = row["rows"], row["tokens"] or 0
    return {"rows": rows, "tokens": tokens, "conversations": row["conversations"] or 0,
            "loss_tokens": row["loss_tokens"] or 0,
            "packing_efficiency": round(tokens / (rows * (config.seq_len + 1)), 6) if rows else None}


def _pref_split(df, config: MixConfig) -> dict:
    from pyspark.sql import functions as F

    row = df.agg(F.count("*").alias("rows"), F.sum(F.size("prompt_ids")).alias("prompt_tokens"),
                 F.sum(F.size("chosen_ids")).alias("chosen_tokens"),
                 F.sum(F.size("rejected_ids")).alias("rejected_tokens")).first()
    return {k: row[k] or 0 for k in ("rows", "prompt_tokens", "chosen_tokens", "rejected_tokens")}
