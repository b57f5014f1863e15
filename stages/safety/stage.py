"""The safety job's stage: the safety steps in the recipe's order on each document; the first that
rejects gives the drop reason (`url_blocked`, `badwords`, `toxic`, `pii`) and the later ones do not run.

    Safety(SafetyConfig(steps=("urls", "pii"), url_blocklist="domains.txt")).run(docs)

Every row gets `toxicity_score` and the `pii_<kind>` counts (None where the step did not run on it), so
the output schema does not depend on the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.recipe import require
from stages.base import DROP_REASON, Doc, Filter, Mapper, judged, keep
from stages.safety.badwords import BadWords, BadwordsConfig
from stages.safety.pii import PiiConfig, PiiRedactor
from stages.safety.toxicity import ToxicityConfig, ToxicityScorer
from stages.safety.urls import UrlConfig, UrlFilter

# Every step by name, in the default order: the cheap URL look-up first, redaction of what is kept last.
STEPS: dict[str, type] = {"urls": UrlFilter, "badwords": BadWords, "toxicity": ToxicityScorer, "pii": PiiRedactor}


@dataclass(frozen=True)
class SafetyConfig(UrlConfig, BadwordsConfig, ToxicityConfig, PiiConfig):
    """The recipe's `[safety]` table: each step's keys (see the step's config) and the steps to run."""

    steps: tuple[str, ...] = tuple(STEPS)

    def __post_init__(self):
        for part in (UrlConfig, BadwordsConfig, ToxicityConfig, PiiConfig):
            part.__post_init__(self)
        require(set(self.steps) <= set(STEPS) and len(set(self.steps)) == len(self.steps), "steps",
                list(self.steps), f"distinct steps among {list(STEPS)}")


class Safety(Mapper):
    """The enabled safety steps in order; see the module docstring."""

    name = "safety"
    adds = (*ToxicityScorer.adds, *PiiRedactor.adds)

    def __init__(self, config: SafetyConfig = SafetyConfig()):
        self.config = config
        self.steps = [STEPS[name](config) for name in config.steps]

    def model_files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(path for step in self.steps for path in step.model_files()))

    def map(self, doc: Doc) -> Doc:
        out = keep({**doc, **{field.name: None for field in self.adds}})
        for step in self.steps:
            out = judged(out, step.verdict(out)) if isinstance(step, Filter) else step.map(out)
            if out[DROP_REASON] is not None:
                break
        return out
