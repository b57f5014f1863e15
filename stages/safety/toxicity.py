"""Toxicity classifier hook: a fastText model scores each document (`toxicity_score`, the probability of
the positive class); documents above `toxicity_threshold` are rejected as `toxic`.

    ToxicityScorer(ToxicityConfig(toxicity_model="runs/toxicity/model.bin", toxicity_threshold=0.8)).map(doc)

The model is trained with the quality classifier's machinery (`make train-quality`, `jobs/train_quality.py`,
`stages/quality/classifier.py`) on user-labelled data: `train_quality.positives` the toxic examples,
`train_quality.negatives` clean ones; its held-out ROC AUC is in that job's `_stats.json`. The model loads
lazily, once per process (the stage pickles small) and ships to cluster nodes with the job. Without a
model the step scores nothing and keeps every document.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from common.recipe import require, require_fraction
from stages.base import Doc, Drop, Mapper, judged, keep
from stages.quality.classifier import hq_probability, load_classifier


@dataclass(frozen=True)
class ToxicityConfig:
    """The toxicity classifier (`[safety]` keys)."""

    toxicity_model: str = ""  # fastText model (positives: toxic); empty: no score
    toxicity_threshold: float = 0.5  # reject above this probability of the positive (toxic) class
    toxicity_max_chars: int = 10_000  # characters of a document the classifier reads

    def __post_init__(self):
        require_fraction(self, "toxicity_threshold")
        require(self.toxicity_max_chars > 0, "toxicity_max_chars", self.toxicity_max_chars, "> 0")


class ToxicityScorer(Mapper):
    """Adds `toxicity_score`; rejects documents above `toxicity_threshold` as `toxic`."""

    name = "toxicity"
    adds = (pa.field("toxicity_score", pa.float32()),)

    def __init__(self, config: ToxicityConfig = ToxicityConfig()):
        self.config = config

    def model_files(self) -> tuple[str, ...]:
        return (self.config.toxicity_model,) if self.config.toxicity_model else ()

    def score(self, text: str) -> float:
        model = load_classifier(self.config.toxicity_model)
        return hq_probability(model, text, self.config.toxicity_max_chars)

    def map(self, doc: Doc) -> Doc:
        if not self.config.toxicity_model:
            return keep({**doc, "toxicity_score": None})
        score = self.score(doc.get("text") or "")
        verdict = Drop("toxic", f"{score:.3f}") if score > self.config.toxicity_threshold else None
        return judged({**doc, "toxicity_score": score}, verdict)
