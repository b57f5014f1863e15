"""Dedup: exact (normalised text), URL and MinHash LSH near duplicates; one survivor per group.

    python -m jobs.dedup --input runs/demo/extract --output runs/demo/dedup [--set dedup.threshold=0.8]
    spark-submit jobs/dedup.py --input ... --output ...

Needs `id` (unique) and `text`; uses `url` when present; carries every other column through.
Duplicates go to `rejected/` with `drop_reason` `exact_dup`, `url_dup` or `near_dup` and `dup_of`, the
id of the document that was kept (null in `kept/`). Survivors follow `dedup.survivor_order` (highest
`quality_score` when the column exists, then longest text, then smallest id) and do not depend on
partitioning. Keys and signatures: `stages/dedup.py`, `stages/minhash.py`; graph steps:
`pipeline/components.py`. Several inputs are deduplicated together.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import functions as F

from pipeline import cli, io
from pipeline.components import find_duplicates
from pipeline.spark import spark_session


def main(argv: list[str] | None = None) -> dict:
    args = cli.stage_args("dedup", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    config = recipe.section("dedup")
    with spark_session("dedup", recipe.section("spark"), args.master) as spark:
        docs = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True),
                      [io.read_stage(spark, path) for path in args.input])
        judged = judge(docs, find_duplicates(docs, config))
        params = config.minhash()
        stats = io.write_split(judged, args.output, stage="dedup", config=cli.run_config(recipe, args, "dedup"),
                               bytes_in=io.input_bytes(spark, [f"{p}/kept" for p in args.input]),
                               extra={"num_perm": params.num_perm, "bands": params.bands, "rows": params.rows})
    cli.report(stats, args.output)
    return stats


def judge(docs, verdicts):
    """`docs` with `drop_reason`, `drop_detail` and `dup_of` from `verdicts` (kept rows: nulls)."""
    base = docs.drop("drop_reason", "drop_detail", "dup_of")
    joined = base.join(verdicts, "id", "left")
    return joined.select(*base.columns, "drop_reason", F.lit(None).cast("string").alias("drop_detail"), "dup_of")


if __name__ == "__main__":
    main()
