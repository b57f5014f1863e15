"""TOML recipes loaded into frozen dataclasses, with `--set section.key=value` overrides.

A recipe (`pipeline/recipes/*.toml`) has one table per stage, and may start with
`base = "default.toml"` to change only some values of another recipe. Every table and key is checked
against the dataclass registered for it in `SECTIONS`: a typo is an error that names the key, never a
silently ignored setting. Values given with `--set` are parsed as TOML values (`3`, `0.5`, `true`,
`["en", "zh"]`), and as plain strings when they are not valid TOML.

    recipe = load_recipe("pipeline/recipes/default.toml", ["extract.favor_precision=true"])
    config = recipe.extract                     # an ExtractConfig (common.recipe.Recipe)
"""

from __future__ import annotations

from pathlib import Path

from common.recipe import Recipe
from pipeline.spark import SparkConfig
from stages.tokenize.bpe import TrainTokenizerConfig
from stages.chatml import MixConfig
from stages.code import CodeConfig
from stages.crawl.task import CrawlConfig
from stages.decontam import DecontamConfig
from stages.dedup import DedupConfig
from stages.extract import ExtractConfig
from stages.language import LanguageConfig
from stages.line_dedup import LineDedupConfig
from stages.mixture import MixtureConfig
from stages.substring_dedup import SubstringDedupConfig
from stages.tokenize.packing import TokenizeConfig
from stages.quality.perplexity import PerplexityConfig, TrainKenlmConfig
from stages.quality.filter import RULES, QualityConfig
from stages.quality.classifier import TrainLidConfig, TrainQualityConfig
from stages.safety import SafetyConfig
from stages.synthesis import SynthConfig
from stages.warc import IngestConfig

SECTIONS: dict[str, type] = {
    "spark": SparkConfig,
    "crawl": CrawlConfig,
    "ingest": IngestConfig,
    "extract": ExtractConfig,
    "langid": LanguageConfig,
    "quality": QualityConfig,
    "safety": SafetyConfig,   # URL blocklists, bad words, toxicity, PII (stages/safety/)
    **{name: rule.Config for name, rule in RULES.items()},   # one table per quality rule set, named as the rule
    "train_quality": TrainQualityConfig,
    "perplexity": PerplexityConfig,
    "train_kenlm": TrainKenlmConfig,
    "train_lid": TrainLidConfig,
    "dedup": DedupConfig,
    "line_dedup": LineDedupConfig,
    "substring_dedup": SubstringDedupConfig,
    "decontam": DecontamConfig,
    "upsample": MixtureConfig,
    "mix": MixConfig,
    "code": CodeConfig,
    "synth": SynthConfig,
    "tokenize": TokenizeConfig,
    "train_tokenizer": TrainTokenizerConfig,
}

DEFAULT_RECIPE = Path(__file__).parent / "recipes" / "default.toml"


def load_recipe(path: str | Path | None = None, overrides: list[str] = ()) -> Recipe:
    """A pipeline recipe (default: pipeline/recipes/default.toml); a base is found beside it or in
    pipeline/recipes/."""
    return Recipe.load(Path(path or DEFAULT_RECIPE), SECTIONS, list(overrides), recipe_dirs=(DEFAULT_RECIPE.parent,))
