"""Line dedup: removes lines, paragraphs or three-sentence spans that repeat across the corpus.

    python -m jobs.line_dedup --input runs/demo/dedup --output runs/demo/line_dedup
    python -m jobs.line_dedup --input ... --output ... --set line_dedup.unit=sentences3    # C4
    python -m jobs.line_dedup --input runs/dump2/dedup --output runs/dump2/line_dedup \\
        --set line_dedup.mode=bloom --set line_dedup.bloom_path=runs/dump1/line_dedup  # Dolma, across dumps
    spark-submit dist/submit.py line_dedup --input ... --output ...

Needs `id` (unique) and `text`; carries every other column through and adds `line_dedup_removed_chars`,
`_bytes` and `_lines`. Documents left with too little text go to `rejected/` as
`line_dedup_empty` (with their original text). Units, normalisation and the rules: `stages/line_dedup.py`.

In Spark: each document's distinct unit keys (64-bit, one long per row) -> count documents per key
(and the smallest id holding it) -> the keys to cut, joined back per document -> the removal, a map
over the documents. In bloom mode the filter of the earlier dumps is broadcast to the tasks, and the
filter of this run (earlier dumps plus every unit of this one; `stages/bloom.py`) is built per
partition, OR-ed on the driver and saved as `<output>/bloom.qfb` after the stage commits: a later
dump names this folder (or the file) as its `bloom_path`. `_stats.json` adds the characters, pieces
and documents changed, the number of repeated units, and in bloom mode the filter's m, k, n_added and
its configured, expected and measured false-positive rates.
"""

from __future__ import annotations

import logging
from functools import reduce

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import functions as F

from common import fs
from common.errors import UserError
from pipeline import cli, io, runner, schemas
from pipeline.spark import spark_session
from stages.bloom import BloomFilter, measured_fpr
from stages.line_dedup import (REMOVE, REMOVED_BYTES, REMOVED_CHARS, REMOVED_LINES, BloomPlan, LineDedup, LineDedupConfig,
                               exact_keys, split_units)

log = logging.getLogger(__name__)
BLOOM_FILE = "bloom.qfb"


def main(argv: list[str] | None = None) -> dict:
    args = cli.stage_args("line_dedup", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    config: LineDedupConfig = recipe.section("line_dedup")
    prior = load_prior(config)
    with spark_session("line_dedup", recipe.section("spark"), args.master) as spark:
        docs = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True),
                      [io.read_stage(spark, path) for path in args.input])
        judged, bloom, extra = line_dedup(docs, config, prior, recipe.section("spark").arrow_batch_rows)
        stats = io.write_split(judged, args.output, stage="line_dedup",
                               config=cli.run_config(recipe, args, "line_dedup"),
                               bytes_in=io.input_bytes(spark, [f"{p}/kept" for p in args.input]), extra=extra)
        judged.unpersist()
    if bloom is not None:
        bloom.save(fs.join(io.absolute(args.output), BLOOM_FILE))
    cli.report(stats, args.output)
    print(f"[line_dedup] removed {extra['removed_chars']:,} chars ({extra['removed_lines']:,} pieces) from "
          f"{extra['docs_changed']:,} documents")
    return stats


def line_dedup(docs, config: LineDedupConfig, prior: BloomFilter | None = None, batch_rows: int = 256):
    """(judged rows, persisted; the updated Bloom filter or None; stats) for documents with id and text."""
    check_unique_ids(docs)
    bloom = config.mode == "bloom"
    units = unit_keys(docs, config, with_second=bloom).persist(StorageLevel.MEMORY_AND_DISK)
    marked, hot = marked_keys(units, config)
    plan = docs.sparkSession.sparkContext.broadcast(BloomPlan(prior)) if bloom else None
    stage = LineDedup(config, plan)
    judged = runner.apply(docs.drop(REMOVE).join(marked, "id", "left"), stage, batch_rows)
    judged = judged.persist(StorageLevel.MEMORY_AND_DISK)
    extra = {"unit": config.unit, "mode": config.mode, "repeated_units": hot.count(), **removal_stats(judged)}
    updated = None
    if bloom:
        updated = updated_filter(units, prior or new_filter(config), plan)
        extra["bloom"] = bloom_stats(updated, prior, config)
    units.unpersist()
    return judged, updated, extra


def unit_keys(docs, config: LineDedupConfig, with_second: bool = False):
    """(id, key[, key2]): each document's distinct unit keys, one long per row (`stages.line_dedup`)."""
    fields = [pa.field("id", pa.string()), pa.field("key", pa.int64())]
    fields += [pa.field("key2", pa.int64())] if with_second else []
    schema = pa.schema(fields)

    def run(batches):
        for batch in batches:
            ids, keys = [], []
            for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
                digests = np.unique(split_units(text, config).keys, axis=0)
                ids += [doc_id] * len(digests)
                keys.append(digests)
            both = np.concatenate(keys) if keys else np.zeros((0, 2), np.uint64)
            columns = [pa.array(ids, pa.string()), pa.array(exact_keys(both))]
            columns += [pa.array(np.ascontiguousarray(both[:, 1]).view(np.int64))] if with_second else []
            yield pa.RecordBatch.from_arrays(columns, schema=schema)

    return docs.select("id", "text").mapInArrow(run, schemas.spark(schema))


def marked_keys(units, config: LineDedupConfig):
    """((id, _remove: the keys to cut from that document), the repeated keys).

    count: keys held by more than `min_docs` documents, cut everywhere; bloom: keys held by more than
    one document, cut from all but the smallest id (repeats inside a document: `LineDedup`)."""
    per_key = units.groupBy("key").agg(F.count("*").alias("n"), F.min("id").alias("first"))
    if config.mode == "count":
        hot = per_key.where(F.col("n") > config.min_docs).select("key")
        pairs = units.join(hot, "key", "left_semi")
    else:
        hot = per_key.where(F.col("n") > 1).select("key", "first")
        pairs = units.join(hot, "key").where(F.col("id") != F.col("first"))
    return pairs.groupBy("id").agg(F.collect_list("key").alias(REMOVE)), hot


def removal_stats(judged) -> dict:
    row = judged.agg(F.sum(REMOVED_CHARS).alias("chars"), F.sum(REMOVED_BYTES).alias("bytes"),
                     F.sum(REMOVED_LINES).alias("lines"),
                     F.sum((F.col(REMOVED_LINES) > 0).cast("long")).alias("docs")).first()
    return {"removed_chars": int(row["chars"] or 0), "removed_bytes": int(row["bytes"] or 0),
            "removed_lines": int(row["lines"] or 0), "docs_changed": int(row["docs"] or 0)}


# ---------------------------------------------------------------- the Bloom filter across dumps


def bloom_file(path: str) -> str:
    """`path` itself, or `<path>/bloom.qfb` when it is a folder (a finished line_dedup stage)."""
    return fs.join(path, BLOOM_FILE) if fs.is_dir(path) else path


def load_prior(config: LineDedupConfig) -> BloomFilter | None:
    """The filter at `bloom_path` (bloom mode only), refused when built under other key settings."""
    if config.mode != "bloom" or not config.bloom_path:
        return None
    path = bloom_file(config.bloom_path)
    prior = BloomFilter.load(path)
    theirs = prior.settings.get("keys", {})
    mismatched = {k: (theirs.get(k), v) for k, v in config.key_settings().items() if theirs.get(k) != v}
    if mismatched or prior.seed != config.seed:
        raise UserError(f"Bloom filter {path} was built with other line_dedup settings (theirs, ours): "
                        f"{mismatched or {'seed': (prior.seed, config.seed)}}")
    log.info("line_dedup: Bloom filter %s: m=%d, k=%d, %d units", path, prior.m, prior.k, prior.n_added)
    return prior


def new_filter(config: LineDedupConfig) -> BloomFilter:
    return BloomFilter.sized(config.expected_items, config.fp_rate, config.seed,
                             settings={"keys": config.key_settings()})


def updated_filter(units, base: BloomFilter, plan) -> BloomFilter:
    """`base` plus every distinct unit of this run: one partial filter per partition, OR-ed here."""
    shape = (base.m, base.k, base.seed)  # not the filter itself: the closure travels with every task
    schema = pa.schema([pa.field("words", pa.binary()), pa.field("n_new", pa.int64())])

    def run(batches):
        part, n_new = BloomFilter(*shape), 0
        prior = plan.value.prior
        for batch in batches:
            keys = np.stack([batch.column(n).to_numpy(zero_copy_only=False) for n in ("key", "key2")], 1)
            keys = keys.astype(np.int64).view(np.uint64)
            fresh = keys if prior is None else keys[~prior.contains(keys)]
            n_new += len(fresh)
            part.add(keys)
        yield pa.RecordBatch.from_arrays([pa.array([part.words.astype("<u8").tobytes()]), pa.array([n_new])],
                                         schema=schema)

    merged = BloomFilter(base.m, base.k, base.seed, base.words.copy(), base.n_added, base.settings)
    distinct = units.select("key", "key2").distinct()
    for row in distinct.mapInArrow(run, schemas.spark(schema)).toLocalIterator():
        merged.words |= np.frombuffer(bytes(row["words"]), dtype="<u8").astype(np.uint64)
        merged.n_added += row["n_new"]
    return merged


def bloom_stats(bloom: BloomFilter, prior: BloomFilter | None, config: LineDedupConfig) -> dict:
    return {"path_in": bloom_file(config.bloom_path) if config.bloom_path else None, "file": BLOOM_FILE,
            "m": bloom.m, "k": bloom.k, "seed": bloom.seed, "n_added": bloom.n_added,
            "n_new": bloom.n_added - (prior.n_added if prior else 0),
            "expected_items": bloom.settings.get("expected_items"), "fp_rate": bloom.settings.get("fp_rate"),
            "fpr_expected": round(bloom.expected_fpr(), 8),
            "fpr_measured": measured_fpr(bloom, config.fpr_probes), "fpr_probes": config.fpr_probes}


def check_unique_ids(docs, stage: str = "line_dedup") -> None:
    clash = docs.groupBy("id").count().where("count > 1").limit(1).collect()
    if clash:
        raise ValueError(f"{stage} needs unique ids; id {clash[0]['id']!r} occurs {clash[0]['count']} times")


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
