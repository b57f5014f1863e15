"""Words for the heuristic quality rules, the per-document view they share, and `Rule`, their base class.

    word_tokens("It's well-known.")          # ['It', "'s", 'well', '-', 'known', '.']
    view = TextView(text, "en")              # words, counted words, n-grams: computed once, on first use
    GopherQuality().check(view)              # a Rule's answer: Drop(reason, detail) or None (keep)

`word_tokens(text, lang)` splits like a rule-based tokenizer (punctuation, clitics and hyphens are
their own tokens), so counts match the spaCy-based reference implementation (datatrove) on English;
for Chinese and Japanese, where whitespace does not separate words, every CJK character is a word.
The rule sets (`gopher.py`, `c4.py`, `fineweb.py`) subclass `Rule`; `filter.py` runs them in order.
"""

from __future__ import annotations

import functools
import re
from functools import cached_property

from stages.base import Doc, Filter, Verdict
from stages.quality.ngrams import TokenNgrams

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


def word_tokens(text: str, lang: str | None = None) -> list[str]:
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


def ratio(num: float, den: float) -> float:
    """num / den, 0 for an empty denominator (an empty page has no share of anything)."""
    return num / den if den else 0.0


class TextView:
    """One document's text with its word split computed once, shared by the rules."""

    def __init__(self, text: str, lang: str | None = None):
        self.text, self.lang = text or "", lang

    @cached_property
    def words(self) -> list[str]:
        return word_tokens(self.text, self.lang)

    @cached_property
    def counted(self) -> list[str]:
        """Words with a letter or digit (Gopher counts these)."""
        return [w for w in self.words if w.isalnum() or not is_symbol(w)]

    @cached_property
    def alpha_ratio(self) -> float:
        """Share of words with at least one letter."""
        return ratio(sum(1 for w in self.words if has_alpha(w)), len(self.words))

    @cached_property
    def word_set(self) -> set[str]:
        return set(self.words)

    @cached_property
    def grams(self) -> TokenNgrams:
        return TokenNgrams(self.words)


class Rule(Filter):
    """A heuristic filter over a TextView: `check` returns Drop(reason, detail), or None to keep.

    Subclasses set `name` (the rule's name in `quality.rules` and its recipe section) and `Config`
    (its frozen thresholds dataclass).
    """

    Config: type

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    def check(self, view: TextView) -> Verdict:
        raise NotImplementedError

    def apply(self, view: TextView) -> tuple[Verdict, TextView]:
        """The verdict and the view the next rule sees (a rule that rewrites the text returns a new one)."""
        return self.check(view), view

    def verdict(self, doc: Doc) -> Verdict:
        return self.check(TextView(doc.get("text") or "", doc.get("lang")))
