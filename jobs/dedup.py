"""Dedup: exact (normalised text), URL and MinHash LSH near duplicates; one survivor per group.

    python -m jobs.dedup --input runs/demo/extract --output runs/demo/dedup [--set dedup.threshold=0.8]
    python -m jobs.dedup --input runs/dump2/langid --output runs/dump2/dedup \
        --set 'dedup.index_from=["runs/dump1/dedup"]'          # incremental: against an earlier run
    spark-submit dist/submit.py dedup --input ... --output ...

Needs `id` (unique) and `text`; uses `url` when present; carries every other column through.
Duplicates go to `rejected/` with `drop_reason` `exact_dup`, `url_dup` or `near_dup` and `dup_of`, the
id of the document that was kept (null in `kept/`); kept rows carry `dup_cluster_size`, the number of
documents of this run in their group, themselves included (1: no duplicate; null on rejected rows). Survivors follow `dedup.survivor_order` (highest
`quality_score` when the column exists, then longest text, then smallest id) and do not depend on
partitioning. The output also has `index/`: the keys of the survivors (and of the index it was
checked against), which `dedup.index_from` of a later run reads; documents of earlier runs always
win. Keys and signatures: `stages/dedup.py`, `stages/minhash.py`; graph steps: `pipeline/components.py`.
Several inputs are deduplicated together.
"""

from __future__ import annotations

import json
from functools import reduce

from pyspark.sql import functions as F

from pipeline import cli, io
from pipeline.components import find_duplicates, survivor_index
from pipeline.hadoop import HadoopFS
from pipeline.spark import spark_session
from stages.dedup import CLUSTER_SIZE, KEY_DEFAULTS


def main(argv: list[str] | None = None) -> dict:
    args = cli.stage_args("dedup", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    config = recipe.section("dedup")
    with spark_session("dedup", recipe.section("spark"), args.master) as spark:
        docs = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True),
                      [io.read_stage(spark, path) for path in args.input])
        prior = read_index(spark, config)
        verdicts, nodes = find_duplicates(docs, config, prior=prior)
        verdicts = verdicts.localCheckpoint()  # read three times: judge, cluster sizes, index
        stats = io.write_split(judge(docs, verdicts), args.output, stage="dedup",
                               config=cli.run_config(recipe, args, "dedup"),
                               bytes_in=io.input_bytes(spark, [f"{p}/kept" for p in args.input]),
                               extra=config.key_settings(), parts={"index": survivor_index(nodes, verdicts, prior)})
    cli.report(stats, args.output)
    return stats


def read_index(spark, config):
    """The union of the `index/` of earlier runs, checked to use the same key settings; None if none."""
    indexes = []
    for path in config.index_from:
        io.read_stage(spark, path, "index")  # refuses an unfinished run
        theirs = json.loads(HadoopFS(spark).read_text(f"{path}/_stats.json"))
        theirs = {k: theirs.get(k, KEY_DEFAULTS.get(k)) for k in config.key_settings()}
        mismatched = {k: (theirs[k], v) for k, v in config.key_settings().items() if theirs[k] != v}
        if mismatched:
            raise ValueError(f"{path} was deduplicated with other key settings (theirs, ours): {mismatched}")
        indexes.append(spark.read.parquet(f"{path}/index"))
    return reduce(lambda a, b: a.unionByName(b), indexes).dropDuplicates(["id"]) if indexes else None


def judge(docs, verdicts):
    """`docs` with `drop_reason`, `drop_detail` and `dup_of` from `verdicts` (kept rows: nulls), and the
    survivors' `dup_cluster_size` (1 + the losers whose `dup_of` they are; rejected rows: null)."""
    base = docs.drop("drop_reason", "drop_detail", "dup_of", CLUSTER_SIZE)
    sizes = verdicts.groupBy(F.col("dup_of").alias("id")).agg((F.count("*") + 1).alias("_size"))
    joined = base.join(verdicts, "id", "left").join(sizes, "id", "left")
    size = F.when(F.col("drop_reason").isNull(), F.coalesce("_size", F.lit(1))).cast("long").alias(CLUSTER_SIZE)
    return joined.select(*base.columns, "drop_reason", F.lit(None).cast("string").alias("drop_detail"), "dup_of",
                         size)


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
