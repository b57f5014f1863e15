"""Upsample: repeats documents by source / quality-bucket weights or to target token shares per source.

    python -m jobs.upsample --input runs/demo/decontam --output runs/demo/upsample \\
        --set 'upsample.target_shares={web=0.7, wiki=0.3}'
    spark-submit dist/submit.py upsample --input ... --output ...

Needs `id`, `text` and `source` (and `upsample.bucket_column` for bucket weights; `dup_cluster_size`, from
the dedup job, for `upsample.cluster_repeats`, e.g. `[[1, 1, 1.0], [2, 4, 2.0], [5, 100, 3.0], [101, 0, 1.0]]`:
cluster size range [lo, hi] (hi 0: no limit) -> repeat factor, times the other weights); counts Qwen tokens
as the tokenize job does unless `n_tokens` is present. Copies get ids `id#1`, `id#2`, ... and
`orig_id`, `epoch`; documents repeated zero times go to `rejected/` as `downsampled`. The math is in
`stages/mixture.py`; `_stats.json` reports factors and tokens and shares per source before and after.
"""

from __future__ import annotations

from functools import reduce

from pipeline import cli, io, runner
from pipeline.spark import spark_session
from stages.mixture import (CountTokens, HistogramBin, MixtureConfig, Repeat, calibrated_cuts, cluster_ranges,
                            range_label, repeat_factors, token_shares)


def main(argv: list[str] | None = None) -> dict:
    args = cli.stage_args("upsample", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    with spark_session("upsample", recipe.section("spark"), args.master) as spark:
        docs = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True),
                      [io.read_stage(spark, path) for path in args.input])
        judged, report = upsample(docs, recipe.section("upsample"), recipe.section("spark").arrow_batch_rows)
        stats = io.write_split(judged, args.output, stage="upsample", config=cli.run_config(recipe, args, "upsample"),
                               bytes_in=io.input_bytes(spark, [f"{p}/kept" for p in args.input]), extra=report)
        judged.unpersist()
    cli.report(stats, args.output)
    for source, after in report["tokens_after"].items():
        print(f"[upsample] {source}: {report['tokens_before'].get(source, 0):,} -> {after:,} tokens "
              f"(share {report['shares_after'][source]:.4f})")
    return stats


def upsample(docs, config: MixtureConfig, batch_rows: int = 256):
    """(judged copies, persisted; report dict) for documents with `id`, `text`, `source`."""
    from pyspark import StorageLevel

    if "source" not in docs.columns:
        docs = docs.selectExpr("*", "'unknown' AS source")
    counted = runner.apply(docs, CountTokens(config), batch_rows).persist(StorageLevel.MEMORY_AND_DISK)
    factors = repeat_factors(group_tokens(counted, config), config)
    cuts = None
    if config.calibrate:
        binned = runner.apply(counted, HistogramBin(config, factors), batch_rows)
        histograms: dict = {}
        for r in binned.groupBy("mix_group", "u_bin").sum("n_tokens").collect():
            histograms.setdefault(tuple(r["mix_group"].split("\0")), {})[r["u_bin"]] = r["sum(n_tokens)"]
        cuts = calibrated_cuts(histograms, factors)
    judged = runner.apply(counted, Repeat(config, factors, cuts), batch_rows).persist(StorageLevel.MEMORY_AND_DISK)
    before, after = source_tokens(counted), source_tokens(judged.filter(io.KEPT))
    counted.unpersist()
    report = {"factors": {"/".join(g): round(f, 6) for g, f in sorted(factors.items())},
              "tokens_before": before, "tokens_after": after,
              "shares_before": token_shares(before), "shares_after": token_shares(after)}
    return judged, report


def group_tokens(counted, config: MixtureConfig) -> dict[tuple[str, ...], int]:
    """Tokens per (source, bucket[, size range]), keyed as `stages.mixture.group_of` keys documents."""
    bucket = (f"COALESCE(CAST(`{config.bucket_column}` AS STRING), '')"
              if config.bucket_weights and config.bucket_column in counted.columns else "''")
    rows = (counted.selectExpr("COALESCE(NULLIF(CAST(source AS STRING), ''), 'unknown') AS s", f"{bucket} AS b",
                               f"{cluster_sql(config, counted.columns)} AS c", "n_tokens")
            .groupBy("s", "b", "c").sum("n_tokens").collect())
    return {(r["s"], r["b"], r["c"])[:3 if config.cluster_repeats else 2]: r["sum(n_tokens)"] for r in rows}


def cluster_sql(config: MixtureConfig, columns: list[str]) -> str:
    """SQL for `stages.mixture.cluster_label` of each row ('' without cluster_repeats)."""
    size = f"COALESCE(CAST(`{config.cluster_column}` AS BIGINT), 1)" if config.cluster_column in columns else "1"
    cases = [f"WHEN {size} >= {lo}{f' AND {size} <= {hi}' if hi else ''} THEN '{range_label(lo, hi)}'"
             for lo, hi, _ in cluster_ranges(config)]
    return f"CASE {' '.join(cases)} ELSE '' END" if cases else "''"


def source_tokens(df) -> dict[str, int]:
    rows = df.selectExpr("COALESCE(NULLIF(CAST(source AS STRING), ''), 'unknown') AS s", "n_tokens") \
        .groupBy("s").sum("n_tokens").collect()
    return {r["s"]: r["sum(n_tokens)"] for r in sorted(rows, key=lambda r: r["s"])}


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
