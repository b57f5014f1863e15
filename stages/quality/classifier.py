"""fastText quality classifier: training data, training, held-out ROC AUC, and document scoring.

    lines = [fasttext_line(1, text) for text in clean] + [fasttext_line(0, text) for text in junk]
    model = train(lines_file, TrainQualityConfig())            # binary __label__hq / __label__lq
    QualityScorer(QualityConfig(classifier="model.bin", min_quality_score=0.5)).run(docs)

The quality job runs the scorer after the heuristic rules (`QualityFilter`, `stages/quality/filter.py`).

The recipe names positive sources (clean text: curated articles, reference corpora) and negative ones
(boilerplate, spam, what the heuristic rules rejected); `jobs/train_quality.py` reads them with Spark,
holds out a deterministic share of documents (by a hash of the text, so a document never lands on both
sides) and reports ROC AUC on it. The recipe is the one of the DCLM / FineWeb-Edu class of fastText
quality filters (Li et al. 2024; Penedo et al. 2024): lower-cased text, word bigrams, a few epochs.
`boilerplate_text` makes negatives from a page and its known article: the page's visible text minus
the article's lines (menus, footers, cookie notices, link lists).

Documents get `quality_score` (probability of `__label__hq`); with `min_quality_score` > 0 lower ones
are rejected as `low_quality_score`. The model loads lazily, once per process, so the stage pickles small.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from common.fs import shipped
from stages.base import Doc, Drop, Mapper, Verdict, judged

if TYPE_CHECKING:  # filter.py imports this module: the config is only named here
    from stages.quality.filter import QualityConfig

LABELS = {1: "__label__hq", 0: "__label__lq"}
TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class TrainQualityConfig:
    """Training of the classifier (`jobs/train_quality.py`)."""

    positives: tuple[str, ...] = ()  # stage folders / Parquet with a `text` column: clean text
    negatives: tuple[str, ...] = ()  # boilerplate, spam, rule-rejected text
    max_docs_per_class: int = 100_000
    held_out: float = 0.2  # share of documents kept out of training for the ROC AUC
    epoch: int = 25  # few, short documents: more passes than fastText's default 5 (ROC AUC 0.90 -> 0.97)
    lr: float = 0.5
    word_ngrams: int = 2
    dim: int = 64
    min_count: int = 1
    max_chars: int = 10_000
    seed: int = 0


def normalise(text: str, max_chars: int = 10_000) -> str:
    """Lower-cased words and punctuation marks separated by single spaces, on one line."""
    return " ".join(TOKEN.findall((text or "")[:max_chars].lower()))


def fasttext_line(label: int, text: str, max_chars: int = 10_000) -> str:
    return f"{LABELS[label]} {normalise(text, max_chars)}"


def is_held_out(text: str, share: float, seed: int = 0) -> bool:
    """A deterministic split by content: the same text is always on the same side."""
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def visible_blocks(html: str) -> list[str]:
    """The page's visible text nodes (scripts, styles and the head left out), whitespace-collapsed."""
    import lxml.html

    root = lxml.html.fromstring(html)
    for node in root.xpath("//script|//style|//noscript|//template|//head"):
        node.drop_tree()
    blocks = (" ".join(text.split()) for text in root.itertext())
    return [block for block in blocks if block]


def boilerplate_text(blocks: list[str], article: str, min_chars: int = 2) -> str:
    """The page's text blocks that are not part of its article (menus, footers, teasers), one a line."""
    article_flat = " ".join(article.split())
    kept = [b for b in blocks if len(b) >= min_chars and b not in article_flat]
    return "\n".join(kept)


def roc_auc(scores: list[float], labels: list[int]) -> float:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count half)."""
    pairs = sorted(zip(scores, labels))
    ranks, i = [0.0] * len(pairs), 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        for k in range(i, j):
            ranks[k] = (i + j + 1) / 2  # mean 1-based rank of the tied run
        i = j
    positives = sum(label for _, label in pairs)
    negatives = len(pairs) - positives
    if not positives or not negatives:
        raise ValueError("ROC AUC needs both positive and negative examples")
    rank_sum = sum(rank for rank, (_, label) in zip(ranks, pairs) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def train(lines_path: str | Path, config: TrainQualityConfig = TrainQualityConfig()):
    """Trains the binary fastText classifier on a file of `fasttext_line`s (one thread: reproducible)."""
    import fasttext

    return fasttext.train_supervised(
        input=str(lines_path), epoch=config.epoch, lr=config.lr, wordNgrams=config.word_ngrams,
        dim=config.dim, minCount=config.min_count, thread=1, seed=config.seed, verbose=0)


def hq_probability(model, text: str, max_chars: int = 10_000) -> float:
    """P(__label__hq | text), via the low-level call (fasttext 0.9.3's `predict` breaks under NumPy 2)."""
    answers = model.f.predict(normalise(text, max_chars) + "\n", 2, 0.0, "replace")
    probs = {label: min(1.0, float(p)) for p, label in answers}
    if LABELS[1] in probs:
        return probs[LABELS[1]]
    return 1.0 - probs.get(LABELS[0], 0.0)


def evaluate(model, texts: Iterable[str], labels: Iterable[int], max_chars: int = 10_000) -> dict:
    scores = [hq_probability(model, t, max_chars) for t in texts]
    labels = list(labels)
    right = sum((s >= 0.5) == bool(y) for s, y in zip(scores, labels))
    return {"docs": len(labels), "positives": sum(labels), "roc_auc": round(roc_auc(scores, labels), 4),
            "accuracy": round(right / len(labels), 4)}


@functools.cache
def load_classifier(path: str):
    import fasttext

    path = shipped(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"quality classifier not found at {path}; run `make train-quality`")
    with contextlib.redirect_stderr(io.StringIO()):
        return fasttext.load_model(path)


class QualityScorer(Mapper):
    """Adds `quality_score`; rejects documents under `min_quality_score` as `low_quality_score`."""

    name = "quality_score"
    adds = (pa.field("quality_score", pa.float32()),)

    def __init__(self, config: QualityConfig):
        if not config.classifier:
            raise ValueError("QualityScorer needs quality.classifier (a fastText model path)")
        self.config = config

    def model_files(self) -> tuple[str, ...]:
        return (self.config.classifier,)

    def score(self, text: str) -> float:
        return hq_probability(load_classifier(self.config.classifier), text, self.config.max_chars)

    def score_verdict(self, score: float) -> Verdict:
        """Drop('low_quality_score', score) under `min_quality_score`, else None (keep)."""
        return Drop("low_quality_score", f"{score:.3f}") if score < self.config.min_quality_score else None

    def map(self, doc: Doc) -> Doc:
        score = self.score(doc.get("text") or "")
        return judged({**doc, "quality_score": score}, self.score_verdict(score))


@dataclass(frozen=True)
class TrainLidConfig:
    """A custom fastText language-ID model (`jobs/train_lid.py`); labels become `__label__<code>`.

    Character n-grams of 2-4 and a small dimension follow fastText's LID recipe (Joulin et al. 2016,
    "Bag of Tricks for Efficient Text Classification"; the lid.176 models).
    """

    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)  # code -> text files / globs / stages
    held_out: float = 0.2
    min_chars: int = 20  # shorter lines are not used
    max_lines_per_lang: int = 100_000
    epoch: int = 25
    lr: float = 0.5
    dim: int = 16
    minn: int = 2
    maxn: int = 4
    word_ngrams: int = 1
    seed: int = 0


def lid_line(lang: str, text: str) -> str:
    return f"__label__{lang} {' '.join(text.split())}"


def train_lid(lines_path: str | Path, config: TrainLidConfig):
    import fasttext

    return fasttext.train_supervised(
        input=str(lines_path), epoch=config.epoch, lr=config.lr, dim=config.dim, minn=config.minn,
        maxn=config.maxn, wordNgrams=config.word_ngrams, minCount=1, thread=1, seed=config.seed, verbose=0)


def lid_accuracy(model, labelled: list[tuple[str, str]]) -> dict:
    """Share of (lang, text) pairs whose top label is right, overall and per language."""
    right, per_lang = 0, {}
    for lang, text in labelled:
        answers = model.f.predict(" ".join(text.split()) + "\n", 1, 0.0, "replace")
        ok = bool(answers) and answers[0][1] == f"__label__{lang}"
        right += ok
        hits, total = per_lang.get(lang, (0, 0))
        per_lang[lang] = (hits + ok, total + 1)
    return {"docs": len(labelled), "accuracy": round(right / max(1, len(labelled)), 4),
            "per_lang": {k: round(h / t, 4) for k, (h, t) in sorted(per_lang.items())}}
