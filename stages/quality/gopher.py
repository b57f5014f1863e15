"""Gopher's quality and repetition rules (Rae et al. 2021, "Scaling Language Models: Methods, Analysis
& Insights from Training Gopher", appendix A.1.1 and table A1); every default is the published value.

    GopherQuality().run([{"text": "...", "lang": "en"}])     # rows with drop_reason, e.g. 'gopher_short_doc'
    GopherRepetition().check(TextView(text))                 # Drop('gopher_rep_dup_line_frac', '0.500') or None

Drop reasons start with `gopher_` (quality) or `gopher_rep_` (repetition); the detail is the measured
value. Recipe sections: `[gopher_quality]`, `[gopher_repetition]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stages.base import Drop, Verdict
from stages.quality.ngrams import duplicates
from stages.quality.words import Rule, TextView, mean_length, ratio


@dataclass(frozen=True)
class GopherQualityConfig:
    """Gopher quality rules (Rae et al. 2021, appendix A.1.1); 0 disables a rule."""

    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: float = 3.0
    max_avg_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1  # '#' and ellipses per word
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8  # words with at least one letter
    min_stop_words: int = 2
    stop_words: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")


class GopherQuality(Rule):
    """Document length, word length, symbols, bullets, ellipses, alphabetic words, stop words (Gopher)."""

    name = "gopher_quality"
    Config = GopherQualityConfig

    def check(self, view: TextView) -> Verdict:
        return self._words(view) or self._lines(view) or self._vocabulary(view)

    def _words(self, view: TextView) -> Verdict:
        c, text, n, counted = self.config, view.text, len(view.words), view.counted
        if c.min_doc_words and len(counted) < c.min_doc_words:
            return Drop("gopher_short_doc", str(len(counted)))
        if c.max_doc_words and len(counted) > c.max_doc_words:
            return Drop("gopher_long_doc", str(len(counted)))
        mean = mean_length(counted)
        if c.min_avg_word_length and mean < c.min_avg_word_length:
            return Drop("gopher_short_words", f"{mean:.2f}")
        if c.max_avg_word_length and mean > c.max_avg_word_length:
            return Drop("gopher_long_words", f"{mean:.2f}")
        if c.max_symbol_word_ratio and ratio(text.count("#"), n) > c.max_symbol_word_ratio:
            return Drop("gopher_hash_ratio", f"{ratio(text.count('#'), n):.3f}")
        ellipses = text.count("...") + text.count("…")
        if c.max_symbol_word_ratio and ratio(ellipses, n) > c.max_symbol_word_ratio:
            return Drop("gopher_ellipsis_ratio", f"{ratio(ellipses, n):.3f}")
        return None

    def _lines(self, view: TextView) -> Verdict:
        c, lines = self.config, view.text.splitlines()
        bullets = ratio(sum(l.lstrip().startswith(("•", "-")) for l in lines), len(lines))
        if c.max_bullet_lines_ratio and bullets > c.max_bullet_lines_ratio:
            return Drop("gopher_bullet_lines", f"{bullets:.3f}")
        ellipsis = ratio(sum(l.rstrip().endswith(("...", "…")) for l in lines), len(lines))
        if c.max_ellipsis_lines_ratio and ellipsis > c.max_ellipsis_lines_ratio:
            return Drop("gopher_ellipsis_lines", f"{ellipsis:.3f}")
        return None

    def _vocabulary(self, view: TextView) -> Verdict:
        c, alpha = self.config, view.alpha_ratio
        if c.min_alpha_words_ratio and alpha < c.min_alpha_words_ratio:
            return Drop("gopher_alpha_words", f"{alpha:.3f}")
        stops = len(set(c.stop_words) & view.word_set)
        if c.min_stop_words and stops < c.min_stop_words:
            return Drop("gopher_stop_words", str(stops))
        return None


@dataclass(frozen=True)
class GopherRepetitionConfig:
    """Gopher repetition thresholds (Rae et al. 2021, table A1); 0 disables a rule.

    top_ngrams: n -> max share of characters in the most frequent n-gram; dup_ngrams: n -> max share
    of characters in n-grams that occurred before.
    """

    dup_line_frac: float = 0.30
    dup_para_frac: float = 0.30
    dup_line_char_frac: float = 0.20
    dup_para_char_frac: float = 0.20
    top_ngrams: dict[str, float] | None = None  # default {"2": 0.20, "3": 0.18, "4": 0.16}
    dup_ngrams: dict[str, float] | None = None  # default {"5": 0.15, ..., "10": 0.10}


TOP_NGRAMS = {"2": 0.20, "3": 0.18, "4": 0.16}
DUP_NGRAMS = {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10}
PARAGRAPH_BREAK = re.compile(r"\n{2,}")
LINE_BREAK = re.compile(r"\n+")


class GopherRepetition(Rule):
    """Repeated lines, paragraphs and n-grams (Gopher, table A1)."""

    name = "gopher_repetition"
    Config = GopherRepetitionConfig

    def check(self, view: TextView) -> Verdict:
        if not view.text:
            return Drop("gopher_rep_empty", "")
        return self._blocks(view.text) or self._ngrams(view)

    def _blocks(self, text: str) -> Verdict:
        c = self.config
        for kind, parts, frac, char_frac in (
                ("para", PARAGRAPH_BREAK.split(text.strip()), c.dup_para_frac, c.dup_para_char_frac),
                ("line", LINE_BREAK.split(text), c.dup_line_frac, c.dup_line_char_frac)):
            count, chars = duplicates(parts)
            if frac and count / len(parts) > frac:
                return Drop(f"gopher_rep_dup_{kind}_frac", f"{count / len(parts):.3f}")
            if char_frac and chars / len(text) > char_frac:
                return Drop(f"gopher_rep_dup_{kind}_char_frac", f"{chars / len(text):.3f}")
        return None

    def _ngrams(self, view: TextView) -> Verdict:
        c, grams, size = self.config, view.grams, len(view.text)
        for n, limit in (TOP_NGRAMS if c.top_ngrams is None else c.top_ngrams).items():
            if (share := grams.top_chars(int(n)) / size) > limit:
                return Drop(f"gopher_rep_top_{n}_gram", f"{share:.3f}")
        for n, limit in (DUP_NGRAMS if c.dup_ngrams is None else c.dup_ngrams).items():
            if (share := grams.repeated_chars(int(n)) / size) > limit:
                return Drop(f"gopher_rep_dup_{n}_gram", f"{share:.3f}")
        return None
