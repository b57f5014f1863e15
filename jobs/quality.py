"""Quality: heuristic rules (Gopher, C4, FineWeb), signal columns and the classifier's `quality_score`.

    python -m jobs.quality --input runs/demo/langid --output runs/demo/quality \
        [--set quality.classifier=runs/demo/train-quality/model.bin --set quality.min_quality_score=0.5]
    spark-submit dist/submit.py quality --input ... --output ...

Reads `[quality]` (rules to run, classifier, threshold) and the thresholds of each rule from
`[gopher_quality]`, `[gopher_repetition]`, `[c4_quality]`, `[fineweb_quality]`. Uses `lang` when present
(word splitting for zh/ja). Rules: `stages/quality/rules.py`; classifier: `stages/quality/classifier.py`.
"""

from __future__ import annotations

from pipeline import cli
from stages.quality.rules import RulesConfig
from stages.quality.classifier import QualityFilter

RULE_SECTIONS = ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")


def main(argv: list[str] | None = None) -> dict:
    from pipeline import io, runner
    from pipeline.spark import spark_session

    args = cli.stage_args("quality", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    config = recipe.section("quality")
    rules = RulesConfig(rules=config.rules, **{name: recipe.section(name) for name in RULE_SECTIONS})
    with spark_session("quality", recipe.section("spark"), args.master) as spark:
        docs = io.read_stage(spark, args.input[0])
        judged = runner.apply(docs, QualityFilter(config, rules), recipe.section("spark").arrow_batch_rows)
        stats = io.write_split(judged, args.output, stage="quality",
                               config=cli.run_config(recipe, args, "quality", *RULE_SECTIONS),
                               bytes_in=io.input_bytes(spark, [f"{args.input[0]}/kept"]))
    cli.report(stats, args.output)
    return stats


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
