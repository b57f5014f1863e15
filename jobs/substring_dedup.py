"""Substring dedup: cuts every repeat of a span of >= 50 Qwen tokens but its first occurrence (Lee et al. 2022).

    python -m jobs.substring_dedup --input runs/demo/line_dedup --output runs/demo/substring_dedup
    python -m jobs.substring_dedup --input ... --output ... --set substring_dedup.min_tokens=100
    spark-submit dist/submit.py substring_dedup --input ... --output ...

Needs `id` (unique: it orders the corpus, so "first" is the smallest id) and `text`; carries every
other column through and adds `substring_dedup_removed_chars`, `_bytes` and `_spans`. Documents left
with too little text go to `rejected/` as `substring_dedup_empty` (with their original text). The
rule and the suffix array: `stages/substring_dedup.py`.

In Spark: each document's Qwen tokens (a map over the documents) -> on the driver, in id order, one
token sequence, its suffix array and LCP, and per document the byte ranges to cut (the corpus's tokens
are held once, 4 bytes each, as in Lee et al.'s single-machine suffix array) -> the ranges joined back
per document -> the removal, a map. `_stats.json` adds the corpus's tokens, the tokens and documents
changed, the seconds spent on the suffix array, and under "totals" the characters, bytes and spans cut.
"""

from __future__ import annotations

import logging
import time
from functools import reduce

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel

from jobs.line_dedup import check_unique_ids
from pipeline import cli, io, runner, schemas
from pipeline.spark import ship_files, spark_session
from stages.substring_dedup import (CUT, REMOVED_BYTES, REMOVED_CHARS, REMOVED_SPANS, SubstringDedup,
                                    SubstringDedupConfig, corpus_cuts, encode)
from stages.tokenize.tokenizer import ranks_path

log = logging.getLogger(__name__)
TOTALS = (REMOVED_CHARS, REMOVED_BYTES, REMOVED_SPANS)


def main(argv: list[str] | None = None) -> dict:
    args = cli.stage_args("substring_dedup", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    config: SubstringDedupConfig = recipe.section("substring_dedup")
    with spark_session("substring_dedup", recipe.section("spark"), args.master) as spark:
        docs = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True),
                      [io.read_stage(spark, path) for path in args.input])
        judged, extra = substring_dedup(docs, config, recipe.section("spark").arrow_batch_rows)
        stats = io.write_split(judged, args.output, stage="substring_dedup",
                               config=cli.run_config(recipe, args, "substring_dedup"),
                               bytes_in=io.input_bytes(spark, [f"{p}/kept" for p in args.input]), extra=extra,
                               totals=TOTALS)
        judged.unpersist()
    cli.report(stats, args.output)
    totals = stats.get("totals", {})
    print(f"[substring_dedup] cut {totals.get(REMOVED_BYTES, 0):,} bytes ({totals.get(REMOVED_SPANS, 0):,} spans) "
          f"from {extra['docs_changed']:,} documents")
    return stats


def substring_dedup(docs, config: SubstringDedupConfig, batch_rows: int = 256):
    """(judged rows, persisted; stats) for documents with id and text."""
    check_unique_ids(docs, "substring_dedup")
    spark = docs.sparkSession
    ids, token_lists = corpus_tokens(docs, config)
    began = time.perf_counter()
    cuts = corpus_cuts(token_lists, config)
    seconds = time.perf_counter() - began
    changed = [(doc_id, cut) for doc_id, cut in zip(ids, cuts) if cut]
    log.info("substring_dedup: %d tokens in %d documents, suffix array and cuts in %.1f s; %d documents changed",
             sum(map(len, token_lists)), len(ids), seconds, len(changed))
    marks = spark.createDataFrame(changed, f"id string, {CUT} array<long>")
    judged = runner.apply(docs.drop(CUT).join(marks, "id", "left"), SubstringDedup(config), batch_rows)
    extra = {"min_tokens": config.min_tokens, "tokens": int(sum(map(len, token_lists))),
             "docs_changed": len(changed), "suffix_array_seconds": round(seconds, 2)}
    return judged.persist(StorageLevel.MEMORY_AND_DISK), extra


def corpus_tokens(docs, config: SubstringDedupConfig) -> tuple[list[str], list[np.ndarray]]:
    """Every document's id and Qwen token ids, in id order, on the driver."""
    ship_files(docs.sparkSession, [str(ranks_path(config.tokenizer or None))])
    schema = pa.schema([pa.field("id", pa.string()), pa.field("tokens", pa.binary())])
    tokenizer = config.tokenizer

    def run(batches):
        for batch in batches:
            texts = batch.column("text").to_pylist()
            tokens = [encode(text, tokenizer).astype("<i4").tobytes() for text in texts]
            yield pa.RecordBatch.from_arrays([batch.column("id"), pa.array(tokens, pa.binary())], schema=schema)

    table = docs.select("id", "text").mapInArrow(run, schemas.spark(schema)).toArrow()  # Arrow all the way
    ids, tokens = table.column("id").to_pylist(), table.column("tokens")
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return [ids[i] for i in order], [np.frombuffer(tokens[i].as_buffer(), dtype="<i4") for i in order]


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
