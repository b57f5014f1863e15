"""C4's line and page rules (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
Unified Text-to-Text Transformer", section 2.2, and the C4 code's extras).

Lines must end in terminal punctuation and have at least 3 words; a page needs at least 5 sentences;
"lorem ipsum" or "{" condemns the page; lines mentioning JavaScript or cookie / terms policies go.

    C4Quality().check(TextView(text))                  # Drop('c4_too_few_sentences', '1') or None
    verdict, kept_lines = C4Quality().judge(view)      # also the lines C4 keeps

Drop reasons start with `c4_`. Recipe section: `[c4_quality]`; with `remove_lines = true` the kept
text is only the lines C4 keeps (what C4 itself did).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stages.base import Drop, Verdict
from stages.quality.words import Rule, TextView, sentences


@dataclass(frozen=True)
class C4Config:
    """C4's page and line rules (Raffel et al. 2020, section 2.2, and the C4 code's extras)."""

    min_sentences: int = 5  # 0 disables
    min_words_per_line: int = 3
    max_word_length: int = 1000  # lines with a longer word are dropped (C4 code)
    terminal_punct_lines: bool = True  # keep only lines ending in . ? ! " '
    remove_citations: bool = True  # strip [1], [edit], [citation needed] before judging a line
    lorem_ipsum: bool = True
    curly_bracket: bool = True
    javascript_lines: bool = True
    policy_lines: bool = True
    remove_lines: bool = False  # True: the kept text is only the lines C4 keeps (C4 itself does this)


CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
C4_END = (".", "?", "!", '"', "'")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4Quality(Rule):
    """Line filtering plus page rules of C4; `judge` also returns the lines C4 keeps."""

    name = "c4_quality"
    Config = C4Config

    def check(self, view: TextView) -> Verdict:
        verdict, _ = self.judge(view)
        return verdict

    def apply(self, view: TextView) -> tuple[Verdict, TextView]:
        """With `remove_lines`, a kept page goes on as the lines C4 keeps."""
        if not self.config.remove_lines:
            return self.check(view), view
        verdict, kept = self.judge(view)
        return verdict, view if verdict else TextView("\n".join(kept), view.lang)

    def judge(self, view: TextView) -> tuple[Verdict, list[str]]:
        """(verdict, kept lines): a page verdict stops at the first line that condemns the page."""
        c, kept, n_sentences = self.config, [], 0
        for raw in view.text.splitlines():
            line, verdict = self._line(raw.strip())
            if verdict:
                return verdict, kept
            if line is not None:
                kept.append(line)
                n_sentences += sentences(line, view.lang) if c.min_sentences else 0
        if c.min_sentences and n_sentences < c.min_sentences:
            return Drop("c4_too_few_sentences", str(n_sentences)), kept
        return None, kept

    def _line(self, line: str) -> tuple[str | None, Verdict]:
        """(the line if kept else None, a verdict when the line condemns the whole page)."""
        c, tokens = self.config, line.split()
        if c.max_word_length and len(line) > c.max_word_length and any(len(t) > c.max_word_length for t in tokens):
            return None, None
        if c.remove_citations:
            line = CITATION.sub("", line)
        if c.terminal_punct_lines and (not line.endswith(C4_END) or line.endswith("...")):
            return None, None
        if len(tokens) < c.min_words_per_line:
            return None, None
        lower = line.lower()
        if c.lorem_ipsum and "lorem ipsum" in lower:
            return None, Drop("c4_lorem_ipsum", "")
        if c.javascript_lines and "javascript" in lower:
            return None, None
        if c.curly_bracket and "{" in line:
            return None, Drop("c4_curly_bracket", "")
        if c.policy_lines and any(p in lower for p in POLICY):
            return None, None
        return line, None
