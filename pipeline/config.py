"""TOML recipes loaded into frozen dataclasses, with `--set section.key=value` overrides.

A recipe (`pipeline/recipes/*.toml`) has one table per stage, and may start with
`base = "default.toml"` to change only some values of another recipe. Every table and key is checked
against the dataclass registered for it in `SECTIONS`: a typo is an error that names the key, never a
silently ignored setting. Values given with `--set` are parsed as TOML values (`3`, `0.5`, `true`,
`["en", "zh"]`), and as plain strings when they are not valid TOML.

    recipe = Recipe.load("pipeline/recipes/default.toml", ["extract.favor_precision=true"])
    config = recipe.section("extract")          # an ExtractConfig
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.spark import SparkConfig
from stages.tokenize.bpe import TrainTokenizerConfig
from stages.chatml import MixConfig
from stages.code import CodeConfig
from stages.crawl.task import CrawlConfig
from stages.decontam import DecontamConfig
from stages.dedup import DedupConfig
from stages.extract import ExtractConfig
from stages.language import LanguageConfig
from stages.mixture import MixtureConfig
from stages.tokenize.packing import TokenizeConfig
from stages.quality.perplexity import PerplexityConfig, TrainKenlmConfig
from stages.quality.rules import C4Config, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig
from stages.quality.classifier import QualityConfig, TrainLidConfig, TrainQualityConfig
from common.recipe import ConfigError, apply_override, build, read_toml
from stages.synthesis import SynthConfig
from stages.warc import IngestConfig

SECTIONS: dict[str, type] = {
    "spark": SparkConfig,
    "crawl": CrawlConfig,
    "ingest": IngestConfig,
    "extract": ExtractConfig,
    "langid": LanguageConfig,
    "quality": QualityConfig,
    "gopher_quality": GopherQualityConfig,
    "gopher_repetition": GopherRepetitionConfig,
    "c4_quality": C4Config,
    "fineweb_quality": FineWebConfig,
    "train_quality": TrainQualityConfig,
    "perplexity": PerplexityConfig,
    "train_kenlm": TrainKenlmConfig,
    "train_lid": TrainLidConfig,
    "dedup": DedupConfig,
    "decontam": DecontamConfig,
    "upsample": MixtureConfig,
    "mix": MixConfig,
    "code": CodeConfig,
    "synth": SynthConfig,
    "tokenize": TokenizeConfig,
    "train_tokenizer": TrainTokenizerConfig,
}

DEFAULT_RECIPE = Path(__file__).parent / "recipes" / "default.toml"


@dataclass(frozen=True)
class Recipe:
    path: str
    sections: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
        path = Path(path or DEFAULT_RECIPE)
        raw = read_toml(path, recipe_dirs=(DEFAULT_RECIPE.parent,))
        for item in overrides or []:
            apply_override(raw, item)
        sections = {name: build(SECTIONS[name], raw.get(name, {}), name) for name in SECTIONS}
        unknown = sorted(set(raw) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown recipe section [{unknown[0]}] in {path} (known: {', '.join(SECTIONS)})")
        return cls(str(path), sections)

    def section(self, name: str) -> Any:
        return self.sections[name]

    def as_dict(self, *names: str) -> dict[str, dict[str, Any]]:
        """The resolved values of the named sections (all when none are named), for `_config.json`."""
        return {n: dataclasses.asdict(self.sections[n]) for n in names or self.sections}
