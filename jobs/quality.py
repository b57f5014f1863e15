"""Quality: heuristic rules (Gopher, C4, FineWeb), signal columns and the classifier's `quality_score`.

    python -m jobs.quality --input runs/demo/langid --output runs/demo/quality \
        [--set quality.classifier=runs/demo/train-quality/model.bin --set quality.min_quality_score=0.5]
    spark-submit dist/submit.py quality --input ... --output ...

Reads `[quality]` (rules to run, classifier, threshold) and the thresholds of each rule from the recipe
section named after it (`[gopher_quality]`, `[c4_quality]`, ...: the names of `stages.quality.filter.RULES`).
Uses `lang` when present (word splitting for zh/ja). The stage: `stages/quality/filter.py`.
"""

from __future__ import annotations

from pipeline import cli
from stages.quality.filter import RULES, QualityConfig, QualityFilter, RulesConfig


def quality_stage(config: QualityConfig, **rule_configs) -> QualityFilter:
    """The stage from the recipe: `[quality]`, and each rule's section by rule name."""
    return QualityFilter(config, RulesConfig(config.rules, rule_configs))


def main(argv: list[str] | None = None) -> dict:
    return cli.run_record_stage("quality", quality_stage, __doc__.splitlines()[0], argv, sections=tuple(RULES))


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
