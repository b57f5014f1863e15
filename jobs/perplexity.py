"""Perplexity: KenLM perplexity per document and a head / middle / tail bucket from percentiles.

    python -m jobs.perplexity --input runs/demo/quality --output runs/demo/perplexity \
        --set 'perplexity.models={en = "runs/demo/kenlm/en.bin"}' [--set 'perplexity.drop_buckets=["tail"]']

Scores with `stages.quality.perplexity.Perplexity` (cc_net normalisation, `kenlm.Model`), then computes the
cutoffs per language on the data in Spark: `percentile_approx` (or exact `percentile` with
`perplexity.exact_percentiles=true`) at `perplexity.percentiles` (cc_net: 0.3 and 0.6). Fixed cutoffs
in `perplexity.cutoffs` (`en_head`, `en_middle`) take precedence. Buckets in `drop_buckets` are
rejected as `perplexity_<bucket>`; `_stats.json` records the cutoffs.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from pipeline import cli, io, runner
from pipeline.spark import spark_session
from stages.quality.perplexity import Perplexity


def data_cutoffs(scored, config, lang) -> dict[str, list[float]]:
    """{lang: [head cutoff, middle cutoff]} from the perplexities of each language."""
    points = ", ".join(str(p) for p in config.percentiles)
    function = "percentile" if config.exact_percentiles else "percentile_approx"
    rows = (scored.where("perplexity IS NOT NULL").groupBy(lang.alias("lang"))
            .agg(F.expr(f"{function}(perplexity, array({points}))").alias("cutoffs")).collect())
    return {r["lang"]: [float(v) for v in r["cutoffs"]] for r in rows}


def with_buckets(scored, cutoffs: dict[str, list[float]], lang, drop: tuple[str, ...]):
    """Fills `perplexity_bucket` where the stage left it empty, and rejects the `drop` buckets."""
    computed = F.lit(None).cast("string")
    for code, (head, middle) in cutoffs.items():
        computed = F.when((lang == code) & (F.col("perplexity") <= head), "head").when(
            (lang == code) & (F.col("perplexity") <= middle), "middle").when(lang == code, "tail").otherwise(computed)
    bucketed = scored.withColumn("perplexity_bucket", F.coalesce("perplexity_bucket", computed))
    dropped = F.col("drop_reason").isNull() & F.col("perplexity_bucket").isin(*drop) if drop else F.lit(False)
    return (bucketed.withColumn("drop_detail", F.when(dropped, F.format_number("perplexity", 1)).otherwise(F.col("drop_detail")))
            .withColumn("drop_reason", F.when(dropped, F.concat(F.lit("perplexity_"), "perplexity_bucket"))
                        .otherwise(F.col("drop_reason"))))


def main(argv: list[str] | None = None) -> dict:
    args = cli.stage_args("perplexity", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    config = recipe.section("perplexity")
    with spark_session("perplexity", recipe.section("spark"), args.master) as spark:
        docs = io.read_stage(spark, args.input[0])
        lang = F.coalesce(F.col("lang"), F.lit(config.default_lang)) if "lang" in docs.columns else F.lit(config.default_lang)
        scored = runner.apply(docs, Perplexity(config), recipe.section("spark").arrow_batch_rows).persist()
        cutoffs = data_cutoffs(scored, config, lang)
        stats = io.write_split(with_buckets(scored, cutoffs, lang, config.drop_buckets), args.output, stage="perplexity",
                               config=cli.run_config(recipe, args, "perplexity"),
                               bytes_in=io.input_bytes(spark, [f"{args.input[0]}/kept"]), extra={"cutoffs": cutoffs})
        scored.unpersist()
    cli.report(stats, args.output)
    return stats


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
