"""Decontam: drops (or cuts) documents sharing a 13-gram with the recipe's evaluation sets; per-benchmark report.

    python -m jobs.decontam --input runs/demo/dedup --output runs/demo/decontam \\
        --set 'decontam.benchmarks={gsm8k="../shared/data/gsm8k/test.jsonl", mmlu="../shared/data/mmlu/test"}'
    spark-submit dist/submit.py decontam --input ... --output ...

Needs `id` and `text`; carries every other column through and adds `contam_benchmark`, `contam_items`,
`contam_spans`. The benchmark n-grams are hashed on the driver (`stages/decontam.py`) and broadcast;
documents are never collected. `_stats.json` holds `benchmarks`: per benchmark the items and n-grams
indexed, the documents that overlap it and the test items they hit. Several inputs are read together.
"""

from __future__ import annotations

import logging
from functools import reduce

from pipeline import cli, io, runner
from pipeline.spark import spark_session
from stages.decontam import BenchmarkIndex, Decontaminate, build_index

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> dict:
    from pyspark import StorageLevel

    args = cli.stage_args("decontam", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    config = recipe.section("decontam")
    with spark_session("decontam", recipe.section("spark"), args.master) as spark:
        index = build_index(config.benchmarks, config.ngram, config.min_short_words)
        if not config.benchmarks:
            log.warning("decontam.benchmarks is empty: every document is kept")
        docs = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True),
                      [io.read_stage(spark, path) for path in args.input])
        stage = Decontaminate(config, spark.sparkContext.broadcast(index))
        judged = runner.apply(docs, stage, recipe.section("spark").arrow_batch_rows).persist(StorageLevel.MEMORY_AND_DISK)
        report = benchmark_report(judged, index)
        stats = io.write_split(judged, args.output, stage="decontam", config=cli.run_config(recipe, args, "decontam"),
                               bytes_in=io.input_bytes(spark, [f"{p}/kept" for p in args.input]),
                               extra={"mode": config.mode, "benchmarks": report})
        judged.unpersist()
    cli.report(stats, args.output)
    for name, row in report.items():
        print(f"[decontam] {name}: {row['docs']} documents overlap {row['items_hit']} of {row['items']} test items")
    return stats


def benchmark_report(judged, index: BenchmarkIndex) -> dict:
    """Per benchmark: items and n-grams indexed, documents overlapping it, distinct test items hit."""
    from pyspark.sql import functions as F

    hits = (judged.filter("contam_items IS NOT NULL").select("id", F.explode("contam_items").alias("item"))
            .withColumn("benchmark", F.split("item", ":").getItem(0))
            .groupBy("benchmark").agg(F.countDistinct("id").alias("docs"), F.countDistinct("item").alias("items_hit"))
            .collect())
    found = {r["benchmark"]: r for r in hits}
    return {name: {**counts, "docs": found[name]["docs"] if name in found else 0,
                   "items_hit": found[name]["items_hit"] if name in found else 0}
            for name, counts in index.counts.items()}


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
