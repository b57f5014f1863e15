"""The quality job's stage: the heuristic rules in order on one shared word split, signal columns, then
the fastText classifier's `quality_score` when one is configured.

    QualityRules(RulesConfig()).run(docs)                    # all four rules, in FineWeb's order, plus signals
    QualityFilter(QualityConfig(), RulesConfig(configs={"c4_quality": C4Config(min_sentences=3)})).run(docs)

`RULES` is the one list of rule names: the recipe's `quality.rules`, the recipe sections of their
thresholds (`[gopher_quality]`, `[gopher_repetition]`, `[c4_quality]`, `[fineweb_quality]`) and what
`jobs/quality.py` records all come from it. The first rule that fails gives the drop reason (prefixed
by the rule: `gopher_`, `gopher_rep_`, `c4_`, `fineweb_`), else the classifier's `low_quality_score`.
Rules: `gopher.py`, `c4.py`, `fineweb.py`; the word split they share: `words.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from stages.base import Doc, Mapper, drop, judged, keep
from stages.quality.c4 import C4Quality
from stages.quality.classifier import QualityScorer
from stages.quality.fineweb import FineWebQuality
from stages.quality.gopher import GopherQuality, GopherRepetition
from stages.quality.ngrams import duplicates
from stages.quality.words import TERMINAL, Rule, TextView, mean_length, ratio

# Every heuristic rule by name, in FineWeb's order (the default order they run in).
RULES: dict[str, type[Rule]] = {rule.name: rule for rule in (GopherRepetition, GopherQuality, C4Quality,
                                                             FineWebQuality)}


@dataclass(frozen=True)
class QualityConfig:
    """The quality job (`[quality]`): which heuristic rules run, and the classifier that scores what they keep."""

    rules: tuple[str, ...] = tuple(RULES)
    classifier: str = ""  # fastText model path (jobs/train_quality.py writes one); empty: no score
    min_quality_score: float = 0.0  # reject below this probability of high quality; 0 keeps all
    max_chars: int = 10_000  # characters of a document the classifier reads


@dataclass(frozen=True)
class RulesConfig:
    """Which heuristic rules run, in order, and their thresholds by rule name (missing: the defaults)."""

    rules: tuple[str, ...] = tuple(RULES)
    configs: Mapping[str, Any] = field(default_factory=dict)  # rule name -> its Config, e.g. C4Config(...)

    def config_of(self, name: str):
        config = self.configs.get(name)
        return config if config is not None else RULES[name].Config()


SIGNALS = (pa.field("word_count", pa.int32()), pa.field("mean_word_length", pa.float32()),
           pa.field("stop_word_count", pa.int32()), pa.field("alpha_word_ratio", pa.float32()),
           pa.field("dup_line_char_ratio", pa.float32()), pa.field("line_punct_ratio", pa.float32()))


def signals(view: TextView, stop_words: Iterable[str]) -> Doc:
    """Cheap per-document quality signals, stored as columns for later analysis and classifiers."""
    counted = view.counted
    lines = [l for l in view.text.split("\n") if l.strip()]
    non_newline = len(view.text) - view.text.count("\n")
    return {
        "word_count": len(counted),
        "mean_word_length": mean_length(counted),
        "stop_word_count": len(set(stop_words) & view.word_set),
        "alpha_word_ratio": view.alpha_ratio,
        "dup_line_char_ratio": ratio(duplicates(lines)[1], non_newline),
        "line_punct_ratio": ratio(sum(l[-1] in TERMINAL for l in lines), len(lines)),
    }


class QualityRules(Mapper):
    """All enabled rules in order on one shared word split; the first failure is the drop reason."""

    name = "quality_rules"
    adds = SIGNALS

    def __init__(self, config: RulesConfig = RulesConfig()):
        unknown = set(config.rules) - set(RULES)
        if unknown:
            raise ValueError(f"unknown quality rules {sorted(unknown)} (known: {', '.join(RULES)})")
        self.config = config
        self.rules = [RULES[name](config.config_of(name)) for name in config.rules]
        self.stop_words = config.config_of(GopherQuality.name).stop_words

    def map(self, doc: Doc) -> Doc:
        view = TextView(doc.get("text") or "", doc.get("lang"))
        out = {**doc, **signals(view, self.stop_words)}
        for rule in self.rules:
            verdict, rewritten = rule.apply(view)
            if rewritten is not view:  # C4 with remove_lines: the page goes on as the lines it keeps
                out["text"], view = rewritten.text, rewritten
            if verdict:
                return drop(out, *verdict)
        return keep(out)


class QualityFilter(Mapper):
    """The quality job's stage: heuristic rules, then the classifier's `quality_score` (when configured).

    Every document gets the signal columns and, with a classifier, a score (rule-rejected ones too, for
    analysis); the first rule that fails is the drop reason, else `low_quality_score`. `rules` (default:
    `config.rules` at default thresholds) is used as given; its rule list must be `config.rules`.
    """

    name = "quality"
    adds = (*SIGNALS, pa.field("quality_score", pa.float32()))

    def __init__(self, config: QualityConfig = QualityConfig(), rules: RulesConfig | None = None):
        rules = rules if rules is not None else RulesConfig(rules=config.rules)
        if tuple(rules.rules) != tuple(config.rules):
            raise ValueError(f"quality.rules {list(config.rules)} and the rules given {list(rules.rules)} differ")
        self.config = config
        self.rules = QualityRules(rules)
        self.scorer = QualityScorer(config) if config.classifier else None

    def model_files(self) -> tuple[str, ...]:
        return self.scorer.model_files() if self.scorer else ()

    def map(self, doc: Doc) -> Doc:
        out = self.rules.map(doc)
        out["quality_score"] = self.scorer.score(out.get("text") or "") if self.scorer else None
        if out["drop_reason"] is None and self.scorer:
            return judged(out, self.scorer.score_verdict(out["quality_score"]))
        return out
