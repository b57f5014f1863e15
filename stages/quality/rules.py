"""Heuristic quality rules: Gopher quality, Gopher repetition, C4 and FineWeb, each a Filter.

    GopherQuality().run([{"text": "...", "lang": "en"}])       # rows with drop_reason, e.g. 'gopher_short_doc'
    QualityRules(RulesConfig()).run(docs)                      # all four, in FineWeb's order, plus signal columns

Sources of the rules and their thresholds (every default below is the published value):
- Gopher quality and repetition: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights
  from Training Gopher", appendix A.1.1 and table A1.
- C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
  Transformer", section 2.2 (lines ending in terminal punctuation, at least 3 words a line, at least 5
  sentences a page, no "lorem ipsum", no "{", no lines mentioning JavaScript or cookie/terms policies).
- FineWeb: Penedo et al. 2024, "The FineWeb Datasets", section 3.6 (line punctuation ratio 0.12, short
  line ratio 0.67 at 30 chars, duplicated line chars 0.01, newline per word 0.3).

Words: `words(text, lang)` splits like a rule-based tokenizer (punctuation, clitics and hyphens are
their own tokens), so counts match the spaCy-based reference implementation (datatrove) on English;
for Chinese and Japanese, where whitespace does not separate words, every CJK character is a word.
Drop reasons are stable strings prefixed by the rule (`gopher_`, `gopher_rep_`, `c4_`, `fineweb_`); the
detail says the measured value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa

from stages.base import Doc, Filter, Mapper, reject

# Unicode Sentence_Terminal characters of the scripts common on the web (Latin, Armenian, Arabic,
# Devanagari, Myanmar, Ethiopic, Khmer, CJK full- and half-width), and the ASCII ones.
TERMINAL = frozenset(".!?։؝؞؟۔܀܁܂।॥၊။።፧፨᙮។៕‼‽⁇⁈⁉。．！？｡︒﹒﹖﹗")
CJK_LANGS = frozenset({"zh", "ja"})
CJK_CHAR = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
CJK_RE = re.compile(f"[{CJK_CHAR}]|[^{CJK_CHAR}]+")
CJK_ONE = re.compile(f"[{CJK_CHAR}]")

# Tokenizer pieces. A whitespace chunk loses leading and trailing punctuation one mark at a time
# ("..." stays whole), English clitics ('s, n't, 're ...) become tokens, and hyphens / dashes between
# letters or digits split words, as rule-based tokenizers do.
ELLIPSIS = re.compile(r"^(.*?)(\.\.\.+|…)$", re.S)
CLITIC = re.compile(r"^(.+?)(n't|n’t|'s|’s|'re|’re|'ve|’ve|'ll|’ll|'d|’d|'m|’m)$", re.I)
INFIX = re.compile(r"(?<=[^\W_])([-–—~]+)(?=[^\W\d_])|(?<=\d)(-)(?=\d)")
DASH = re.compile(r"[-–—~]")
ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr vs etc inc ltd co corp no jan feb mar apr jun jul aug sep sept oct nov dec "
    "mt ft gen gov sen rep rev prof col lt sgt capt".split())


@functools.lru_cache(maxsize=1 << 16)
def split_chunk(chunk: str) -> tuple[str, ...]:
    """One whitespace-free chunk -> tokens (prefix marks, core pieces, clitic, suffix marks); cached,
    since the same punctuated words ("said," "it.") recur in every document."""
    if chunk.isalnum():  # most words: nothing to split
        return (chunk,)
    core, last = chunk[:-1], chunk[-1]
    if core.isalnum() and last not in ".'’" and not last.isalnum():  # "word," "word)" "word?"
        return core, last
    head = []
    while chunk and not chunk[0].isalnum() and len(chunk) > 1 and not chunk.startswith("..."):
        head.append(chunk[0])
        chunk = chunk[1:]
    tail = []
    while len(chunk) > 1:
        if m := ELLIPSIS.match(chunk):
            if not m.group(1):
                break
            chunk, mark = m.group(1), m.group(2)
        elif not chunk[-1].isalnum() and not _abbreviation(chunk):
            chunk, mark = chunk[:-1], chunk[-1]
        elif m := CLITIC.match(chunk):
            chunk, mark = m.group(1), m.group(2)
        else:
            break
        tail.append(mark)
    core = [p for p in INFIX.split(chunk) if p] if DASH.search(chunk) else [chunk]
    return (*head, *core, *tail[::-1])


def _abbreviation(chunk: str) -> bool:
    """A final '.' that belongs to the word: U.S., e.g., Mr. (not the end of a sentence)."""
    if not chunk.endswith("."):
        return False
    core = chunk[:-1]
    letters = core.replace(".", "")
    if not letters.isalpha():
        return False
    return "." in core or core.lower() in ABBREVIATIONS or core[-1].isupper()


def words(text: str, lang: str | None = None) -> list[str]:
    """Word tokens of `text`; CJK characters are one word each for Chinese and Japanese."""
    if lang in CJK_LANGS and CJK_ONE.search(text):
        return [t for piece in CJK_RE.findall(text) for t in _plain_words(piece)]
    return _plain_words(text)


def _plain_words(text: str) -> list[str]:
    out: list[str] = []
    for chunk in text.split():
        if chunk.isalnum():  # inlined fast path of split_chunk: most chunks are plain words
            out.append(chunk)
        else:
            out.extend(split_chunk(chunk))
    return out


def has_alpha(token: str) -> bool:
    return token.isalpha() or any(ch.isalpha() for ch in token)


def mean_length(tokens: list[str]) -> float:
    return sum(map(len, tokens)) / len(tokens) if tokens else 0.0


def is_symbol(token: str) -> bool:
    """A token with no letter or digit ('-', '...', '|')."""
    return not token.isalnum() and not any(ch.isalnum() for ch in token)


def sentence_count(tokens: list[str]) -> int:
    """Sentences in a token list: a run of terminal marks followed by another token ends one."""
    flags = [t[0] in TERMINAL and all(ch in TERMINAL for ch in t) for t in tokens]
    ends = sum(1 for a, b in zip(flags, flags[1:]) if a and not b)
    return ends + 1 if tokens else 0


class TextView:
    """One document's text with its word split computed once, shared by the rules."""

    def __init__(self, text: str, lang: str | None = None):
        self.text, self.lang = text or "", lang

    @cached_property
    def words(self) -> list[str]:
        return words(self.text, self.lang)

    @cached_property
    def counted(self) -> list[str]:
        """Words with a letter or digit (Gopher counts these)."""
        return [w for w in self.words if w.isalnum() or not is_symbol(w)]

    @cached_property
    def alpha_ratio(self) -> float:
        """Share of words with at least one letter."""
        return _ratio(sum(1 for w in self.words if has_alpha(w)), len(self.words))

    @cached_property
    def word_set(self) -> set[str]:
        return set(self.words)

    @cached_property
    def grams(self) -> NgramIndex:
        return NgramIndex(self.words)


class Rule(Filter):
    """A heuristic filter over a TextView: `check` returns None (keep) or (reason, detail)."""

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    def check(self, view: TextView) -> tuple[str, str] | None:
        raise NotImplementedError

    def keep(self, doc: Doc):
        verdict = self.check(TextView(doc.get("text") or "", doc.get("lang")))
        return True if verdict is None else (False, *verdict)


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


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

    def check(self, view: TextView) -> tuple[str, str] | None:
        return self._words(view) or self._lines(view) or self._vocabulary(view)

    def _words(self, view: TextView) -> tuple[str, str] | None:
        c, text, n, counted = self.config, view.text, len(view.words), view.counted
        if c.min_doc_words and len(counted) < c.min_doc_words:
            return "gopher_short_doc", str(len(counted))
        if c.max_doc_words and len(counted) > c.max_doc_words:
            return "gopher_long_doc", str(len(counted))
        mean = mean_length(counted)
        if c.min_avg_word_length and mean < c.min_avg_word_length:
            return "gopher_short_words", f"{mean:.2f}"
        if c.max_avg_word_length and mean > c.max_avg_word_length:
            return "gopher_long_words", f"{mean:.2f}"
        if c.max_symbol_word_ratio and _ratio(text.count("#"), n) > c.max_symbol_word_ratio:
            return "gopher_hash_ratio", f"{_ratio(text.count('#'), n):.3f}"
        ellipses = text.count("...") + text.count("…")
        if c.max_symbol_word_ratio and _ratio(ellipses, n) > c.max_symbol_word_ratio:
            return "gopher_ellipsis_ratio", f"{_ratio(ellipses, n):.3f}"
        return None

    def _lines(self, view: TextView) -> tuple[str, str] | None:
        c, lines = self.config, view.text.splitlines()
        bullets = _ratio(sum(l.lstrip().startswith(("•", "-")) for l in lines), len(lines))
        if c.max_bullet_lines_ratio and bullets > c.max_bullet_lines_ratio:
            return "gopher_bullet_lines", f"{bullets:.3f}"
        ellipsis = _ratio(sum(l.rstrip().endswith(("...", "…")) for l in lines), len(lines))
        if c.max_ellipsis_lines_ratio and ellipsis > c.max_ellipsis_lines_ratio:
            return "gopher_ellipsis_lines", f"{ellipsis:.3f}"
        return None

    def _vocabulary(self, view: TextView) -> tuple[str, str] | None:
        c, alpha = self.config, view.alpha_ratio
        if c.min_alpha_words_ratio and alpha < c.min_alpha_words_ratio:
            return "gopher_alpha_words", f"{alpha:.3f}"
        stops = len(set(c.stop_words) & view.word_set)
        if c.min_stop_words and stops < c.min_stop_words:
            return "gopher_stop_words", str(stops)
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


def duplicates(items: list[str]) -> tuple[int, int]:
    """(items seen before, characters in them), counting each repeat after the first occurrence."""
    seen, count, chars = set(), 0, 0
    for item in items:
        if item in seen:
            count, chars = count + 1, chars + len(item)
        else:
            seen.add(item)
    return count, chars


def top_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram: its length (words joined by spaces) x count."""
    return NgramIndex(tokens).top_chars(n)


def repeated_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters of n-grams that occurred before; a repeat skips ahead n words so none counts twice."""
    return NgramIndex(tokens).repeated_chars(n)


class NgramIndex:
    """n-grams of a token list as 64-bit polynomial hashes of token ids (numpy), for the repetition rules.

    Equal n-grams get equal hashes; two different ones collide with probability ~n / 2**64. Counting
    on hashes instead of joined strings makes the rules fast enough for 600 docs/s per core.
    """

    BASE = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, tokens: list[str]):
        vocab: dict[str, int] = {}
        ids = np.array([vocab.setdefault(t, len(vocab) + 1) for t in tokens], dtype=np.uint64)
        self.chars = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int64)
        self._hashes = {1: ids}
        self._unrepeated_from = len(tokens) + 1  # no n-gram of this size or longer occurs twice

    def hashes(self, n: int) -> np.ndarray:
        """Hashes of the n-grams at every start position: h(n) = h(n - 1) * BASE + id of the n-th word."""
        if n not in self._hashes:
            shorter, ids = self.hashes(n - 1), self._hashes[1]
            with np.errstate(over="ignore"):
                self._hashes[n] = shorter[:-1] * self.BASE + ids[n - 1:] if len(shorter) else shorter
        return self._hashes[n]

    def gram_chars(self, start: np.ndarray | int, n: int):
        """Characters of the n-grams starting at `start`, without separators."""
        return self.chars[start + n] - self.chars[start]

    def top_chars(self, n: int) -> int:
        """Most frequent n-gram's length with spaces x its count (ties: the one seen first)."""
        hashes = self.hashes(n)
        if not len(hashes):
            return 0
        _, first, counts = np.unique(hashes, return_index=True, return_counts=True)
        best = counts.max()
        start = int(first[counts == best].min())
        return int(self.gram_chars(start, n) + n - 1) * int(best)

    def repeated_chars(self, n: int) -> int:
        """The greedy scan (a repeat skips n words) visits only n-grams that occur more than once:
        at the others it would just step one word, and they can never be repeats."""
        hashes = self.hashes(n)
        if not len(hashes) or n >= self._unrepeated_from:
            return 0  # a repeated n-gram would contain a repeated shorter one
        _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
        candidates = np.flatnonzero(counts[inverse] > 1).tolist()
        if not candidates:
            self._unrepeated_from = min(self._unrepeated_from, n)
            return 0
        seen, total, i, values = set(), 0, 0, hashes.tolist()
        for p in candidates:
            if p < i:
                continue  # inside a repeat already counted
            if values[p] in seen:
                total, i = total + int(self.chars[p + n] - self.chars[p]), p + n
            else:
                seen.add(values[p])
                i = p + 1
        return total


class GopherRepetition(Rule):
    """Repeated lines, paragraphs and n-grams (Gopher, table A1)."""

    name = "gopher_repetition"
    Config = GopherRepetitionConfig

    def check(self, view: TextView) -> tuple[str, str] | None:
        if not view.text:
            return "gopher_rep_empty", ""
        return self._blocks(view.text) or self._ngrams(view)

    def _blocks(self, text: str) -> tuple[str, str] | None:
        c = self.config
        for kind, parts, frac, char_frac in (
                ("para", PARAGRAPH_BREAK.split(text.strip()), c.dup_para_frac, c.dup_para_char_frac),
                ("line", LINE_BREAK.split(text), c.dup_line_frac, c.dup_line_char_frac)):
            count, chars = duplicates(parts)
            if frac and count / len(parts) > frac:
                return f"gopher_rep_dup_{kind}_frac", f"{count / len(parts):.3f}"
            if char_frac and chars / len(text) > char_frac:
                return f"gopher_rep_dup_{kind}_char_frac", f"{chars / len(text):.3f}"
        return None

    def _ngrams(self, view: TextView) -> tuple[str, str] | None:
        c, grams, size = self.config, view.grams, len(view.text)
        for n, limit in (TOP_NGRAMS if c.top_ngrams is None else c.top_ngrams).items():
            if (share := grams.top_chars(int(n)) / size) > limit:
                return f"gopher_rep_top_{n}_gram", f"{share:.3f}"
        for n, limit in (DUP_NGRAMS if c.dup_ngrams is None else c.dup_ngrams).items():
            if (share := grams.repeated_chars(int(n)) / size) > limit:
                return f"gopher_rep_dup_{n}_gram", f"{share:.3f}"
        return None


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
    """Line filtering plus page rules of C4; `kept_lines` is the text C4 keeps."""

    name = "c4_quality"
    Config = C4Config

    def check(self, view: TextView) -> tuple[str, str] | None:
        verdict, _ = self.judge(view)
        return verdict

    def judge(self, view: TextView) -> tuple[tuple[str, str] | None, list[str]]:
        """(verdict, kept lines): a page verdict stops at the first line that condemns the page."""
        c, kept, sentences = self.config, [], 0
        for raw in view.text.splitlines():
            line, verdict = self._line(raw.strip())
            if verdict:
                return verdict, kept
            if line is not None:
                kept.append(line)
                sentences += sentence_count(words(line, view.lang)) if c.min_sentences else 0
        if c.min_sentences and sentences < c.min_sentences:
            return ("c4_too_few_sentences", str(sentences)), kept
        return None, kept

    def _line(self, line: str) -> tuple[str | None, tuple[str, str] | None]:
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
            return None, ("c4_lorem_ipsum", "")
        if c.javascript_lines and "javascript" in lower:
            return None, None
        if c.curly_bracket and "{" in line:
            return None, ("c4_curly_bracket", "")
        if c.policy_lines and any(p in lower for p in POLICY):
            return None, None
        return line, None


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

    def check(self, view: TextView) -> tuple[str, str] | None:
        c, text = self.config, view.text
        lines = [l for l in text.split("\n") if l.strip()]
        if not lines:
            return "fineweb_empty", ""
        punct = sum(bool(l) and l[-1] in TERMINAL for l in lines) / len(lines)
        if punct < c.min_line_punct_ratio and not (punct == 0 and c.line_punct_exclude_zero):
            return "fineweb_line_punct_ratio", f"{punct:.3f}"
        short = sum(len(l) <= c.short_line_chars for l in lines) / len(lines)
        if short > c.max_short_line_ratio:
            return "fineweb_short_line_ratio", f"{short:.3f}"
        dup = _ratio(duplicates(lines)[1], len(text) - text.count("\n"))
        if dup > c.max_char_dup_ratio:
            return "fineweb_char_dup_ratio", f"{dup:.3f}"
        newlines = _ratio(text.count("\n"), len(view.words))
        if newlines > c.max_newline_ratio:
            return "fineweb_list_ratio", f"{newlines:.3f}"
        return None


RULES: dict[str, type[Rule]] = {"gopher_repetition": GopherRepetition, "gopher_quality": GopherQuality,
                                "c4_quality": C4Quality, "fineweb_quality": FineWebQuality}


@dataclass(frozen=True)
class RulesConfig:
    """Which heuristic rules run, in order (FineWeb's order), and with which thresholds."""

    rules: tuple[str, ...] = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
    c4_quality: C4Config = C4Config()
    fineweb_quality: FineWebConfig = FineWebConfig()


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
        "dup_line_char_ratio": _ratio(duplicates(lines)[1], non_newline),
        "line_punct_ratio": _ratio(sum(l[-1] in TERMINAL for l in lines), len(lines)),
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
        self.rules = [RULES[name](getattr(config, name)) for name in config.rules]

    def map(self, doc: Doc) -> Doc:
        view = TextView(doc.get("text") or "", doc.get("lang"))
        out = {**doc, **signals(view, self.config.gopher_quality.stop_words)}
        for rule in self.rules:
            if isinstance(rule, C4Quality) and rule.config.remove_lines:
                verdict, kept = rule.judge(view)
                if verdict is None:
                    out["text"] = "\n".join(kept)
                    view = TextView(out["text"], view.lang)
            else:
                verdict = rule.check(view)
            if verdict:
                return reject(out, *verdict)
        return reject(out, None)
