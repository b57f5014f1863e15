"""FineWeb's own rules (Penedo et al. 2024, "The FineWeb Datasets", section 3.6): line punctuation
ratio 0.12, short line ratio 0.67 at 30 characters, duplicated line characters 0.01, newlines per word 0.3.

    FineWebQuality().check(TextView(text))       # Drop('fineweb_line_punct_ratio', '0.000') or None

Drop reasons start with `fineweb_`. Recipe section: `[fineweb_quality]`.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.base import Drop, Verdict
from stages.quality.ngrams import duplicates
from stages.quality.words import TERMINAL, Rule, TextView, ratio


@dataclass(frozen=True)
class FineWebConfig:
    """FineWeb's own rules (Penedo et al. 2024, section 3.6)."""

    min_line_punct_ratio: float = 0.12  # share of lines ending in terminal punctuation
    line_punct_exclude_zero: bool = False  # True: a page with no such line is not judged by it
    max_short_line_ratio: float = 0.67
    short_line_chars: int = 30
    max_char_dup_ratio: float = 0.01  # characters in duplicated lines / all non-newline characters
    max_newline_ratio: float = 0.3  # newlines per word


class FineWebQuality(Rule):
    """Line punctuation, short lines, duplicated lines, list-like pages (FineWeb)."""

    name = "fineweb_quality"
    Config = FineWebConfig

    def check(self, view: TextView) -> Verdict:
        c, text = self.config, view.text
        lines = [l for l in text.split("\n") if l.strip()]
        if not lines:
            return Drop("fineweb_empty", "")
        punct = sum(bool(l) and l[-1] in TERMINAL for l in lines) / len(lines)
        if punct < c.min_line_punct_ratio and not (punct == 0 and c.line_punct_exclude_zero):
            return Drop("fineweb_line_punct_ratio", f"{punct:.3f}")
        short = sum(len(l) <= c.short_line_chars for l in lines) / len(lines)
        if short > c.max_short_line_ratio:
            return Drop("fineweb_short_line_ratio", f"{short:.3f}")
        dup = ratio(duplicates(lines)[1], len(text) - text.count("\n"))
        if dup > c.max_char_dup_ratio:
            return Drop("fineweb_char_dup_ratio", f"{dup:.3f}")
        newlines = ratio(text.count("\n"), len(view.words))
        if newlines > c.max_newline_ratio:
            return Drop("fineweb_list_ratio", f"{newlines:.3f}")
        return None
