"""Words for the heuristic quality rules, the per-document view they share, and `Rule`, their base class.

    word_tokens("It's well-known.", "en")    # ['It', "'s", 'well', '-', 'known', '.']  (spaCy's split)
    sentences("One here. Two there!", "en")  # 2  (spaCy's sentencizer, as datatrove's C4 filter counts)
    view = TextView(text, "en")              # words, counted words, n-grams: computed once, on first use
    GopherQuality().check(view)              # a Rule's answer: Drop(reason, detail) or None (keep)

`word_tokens(text, lang)` is datatrove's word split, the one its Gopher, C4 and FineWeb filters count
with, by the same tokenizer: `spacy.blank(code)` (spaCy's rule-based tokenizer, no model), tokens
stripped and empty ones dropped as datatrove does, for every language datatrove gives a blank spaCy
tokenizer that needs no other package (`SPACY_LANGS`, from its `tokenizer_assignment.csv`); a document
without a language is English, as datatrove's filters default. `sentences` counts a line's sentences as
datatrove's C4 filter does (spaCy's sentencizer rule on those tokens). A tokenizer loads lazily, once per
language and process. spaCy cuts text at whitespace and splits each chunk on its own (but for special
cases matched across a space: `SpacyWords`), so chunks are split once and kept in a bounded cache (most
chunks of a page were seen before); new ones go to spaCy in one call, inside a memory zone so spaCy's
vocabulary does not grow with the web. Equality with datatrove is tested on real pages, hand cases and
generated text (tests/stages/test_quality.py) and measured by bench/bench_quality.py.

Our own split, `fast_word_tokens`, serves the other languages (datatrove needs jieba, SudachiPy, pyvi,
pythainlp, Stanza, ... there) and perplexity's KenLM lines: every CJK character is a word for Chinese and
Japanese; elsewhere whitespace chunks lose their punctuation, clitics and hyphens, a look-alike of spaCy's
English rules. It also takes the chunks that could need more than `MAX_AFFIX_SPLITS` prefix / suffix
splits (spaCy's cost is splits x chunk length; such chunks are hostile input or CJK spam, none in the
non-CJK benchmark pages), so any text is split in linear time.
The rule sets (`gopher.py`, `c4.py`, `fineweb.py`) subclass `Rule`; `filter.py` runs them in order.
"""

from __future__ import annotations

import functools
import re
from collections import ChainMap
from collections.abc import Mapping
from functools import cached_property
from itertools import chain, compress

from stages.base import Doc, Filter, Verdict
from stages.quality.ngrams import TokenNgrams

# datatrove's blank spaCy tokenizer per language: spaCy code -> the language codes (ISO 639-1 and the
# fastText lid.176 labels) datatrove assigns it, its WhitespaceTokenizer's `xx` included. Left out:
# zh, wuu, yue (jieba), ja (SudachiPy), vi (pyvi). tests/stages/test_quality.py checks it against datatrove.
SPACY_LANGS = {
    "af": "af", "am": "am", "ar": "arz", "az": "ay", "bg": "bg", "ca": "ca", "cs": "cs", "da": "da",
    "de": "bar de", "dsb": "dsb", "el": "el", "en": "en frr fy sco", "es": "an ast co es mwl oc sc",
    "et": "et", "eu": "eu", "fa": "azb fa", "fi": "fi vep", "fo": "fo", "fr": "fr rm wa", "ga": "ga",
    "he": "he", "hr": "hr", "hsb": "hsb", "hu": "hu", "hy": "hy", "id": "id", "is": "is",
    "it": "it nap scn", "ky": "ky", "la": "la", "lb": "lb pfl", "lg": "lg rn rw", "lij": "lmo pms vec",
    "lt": "lt", "lv": "lv", "mk": "mk", "ms": "ch fj ilo jv mg mh mi min pam sm su to ty",
    "nb": "nb nn no", "nl": "li nds nl vls", "pl": "pl", "pt": "pt", "ro": "ro", "ru": "ru rue",
    "sk": "sk", "sl": "sl", "sq": "als sa sq", "sr": "bs sr", "sv": "sv", "ti": "ti", "tl": "bcl ceb war",
    "tn": "ee hz ig kg ki kj ln lu nd ng nr ny sn ss st sw tn ts ve xh zu", "tr": "tk tr", "tt": "ba",
    "uk": "uk", "yo": "yo",
    "xx": "ab ak ar av az bm cbk ce cr cv dv eml eo ff gn ha ho ht ia ie ik io iu jbo ka kl kn kr kv lez "
          "mhr mrj nah nv oj om os qu sah sg sh so tg tt tw tyv ug uz vo xmf yi za",
}
SPACY_OF = {lang: code for code, langs in SPACY_LANGS.items() for lang in langs.split()}
DEFAULT_LANG = "en"  # documents without a language: datatrove's filters default to English
MAX_AFFIX_SPLITS = 48  # a chunk with more possible affix splits takes the look-alike split (bounded time)
CACHE_CHUNKS = 1 << 17  # split chunks kept per language and process (cleared when full)
CACHE_CHARS = 64  # longer chunks (rare: URLs, junk) are split each time, not kept
SPACY_BATCH = 10_000  # new chunks per spaCy call (bounds its memory on huge texts)
SPACE_RUN = re.compile(r"(\s+)")
SENTENCE_STARTS = re.compile("2[12]*0")  # a sentence end, then the token that starts the next sentence

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


def split_chunk(chunk: str) -> tuple[str, ...]:
    """One whitespace-free chunk -> tokens (prefix marks, core pieces, clitic, suffix marks); short chunks
    cached, since the same punctuated words ("said," "it.") recur in every document."""
    return _split_chunk_cached(chunk) if len(chunk) <= CACHE_CHARS else _split_chunk(chunk)


def _split_chunk(chunk: str) -> tuple[str, ...]:
    if chunk.isalnum():  # most words: nothing to split
        return (chunk,)
    core, last = chunk[:-1], chunk[-1]
    if core.isalnum() and last not in ".'’" and not last.isalnum():  # "word," "word)" "word?"
        return core, last
    i = 0  # leading marks, at most MAX_AFFIX_SPLITS of them (linear time on any chunk)
    while (i < MAX_AFFIX_SPLITS and i < len(chunk) - 1 and not chunk[i].isalnum()
           and not chunk.startswith("...", i)):
        i += 1
    head, chunk = chunk[:i], chunk[i:]
    tail = []
    for _ in range(MAX_AFFIX_SPLITS):
        if len(chunk) <= 1:
            break
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


_split_chunk_cached = functools.lru_cache(maxsize=1 << 16)(_split_chunk)


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
    """Word tokens of `text` as datatrove splits `lang` (spaCy), or our own split where it does not."""
    words = spacy_words(lang)
    return words.words(text) if words is not None else fast_word_tokens(text, lang)


def sentences(line: str, lang: str | None = None) -> int:
    """Sentences in one line as datatrove's C4 filter counts them (spaCy's sentencizer), or our own count."""
    words = spacy_words(lang)
    return words.sentences(line) if words is not None else sentence_count(fast_word_tokens(line, lang))


def spacy_words(lang: str | None) -> SpacyWords | None:
    """The spaCy split of `lang` (None: our own split), loaded once per process on first use."""
    code = SPACY_OF.get(lang or DEFAULT_LANG)
    if code is None:
        return None
    if code not in _LOADED:
        _LOADED[code] = SpacyWords(code)
    return _LOADED[code]


_LOADED: dict[str, SpacyWords] = {}


def forget_chunks() -> None:
    """Empties every cache of split chunks (a cold start, for benchmarks)."""
    _split_chunk_cached.cache_clear()
    for words in _LOADED.values():
        words.forget()


def affix_splits(chunk: str) -> int:
    """An upper bound on the affixes spaCy's tokenizer can split off `chunk`: every prefix or suffix it
    strips holds a mark that is not a letter or digit, but for a unit after a number ('5km')."""
    if len(chunk) <= MAX_AFFIX_SPLITS:
        return len(chunk)
    return min(len(chunk), 2 * sum(1 for ch in chunk if not ch.isalnum()) + 2)


class SpacyWords:
    """One language's blank spaCy tokenizer (datatrove's word split) behind a bounded cache of chunks.

    spaCy cuts text at whitespace and splits each whitespace-free chunk on its own (special cases, prefixes,
    suffixes, URLs, infixes), except in its last pass: special cases with affixes ("''", ":-)", "Jan.") are
    found over the tokens, also across a single space. Such a match across chunks never applies (its text
    holds a space), but it can shadow one inside a chunk ('x\'\' \'\'x'). So chunks are split alone (and
    cached), and where such a crossing match is possible next to a chunk in which spaCy may match a
    special case (`_crossing`, from the chunks' end tokens: 12 of the 757 benchmark pages), the runs of
    chunks it may cross are split again in one piece (`_in_context`).
    """

    def __init__(self, code: str):
        import spacy
        from spacy.attrs import IS_PUNCT, ORTH
        from spacy.pipeline import Sentencizer
        from spacy.tokenizer import Tokenizer

        self.nlp = spacy.blank(code)
        self.tokenizer = tokenizer = self.nlp.tokenizer
        self.is_punct = self.nlp.vocab.lex_attr_getters[IS_PUNCT]
        self.nlp.vocab.lex_attr_getters = {}  # no lexical attributes (the tokens are the same, 2x faster)
        self.punct_chars = frozenset(Sentencizer.default_punct_chars)
        # The special cases spaCy also matches over tokens, as the token sequences it matches.
        affixes = Tokenizer(self.nlp.vocab, {}, tokenizer.prefix_search, tokenizer.suffix_search,
                            tokenizer.infix_finditer, tokenizer.token_match, tokenizer.url_match)
        matched = [case for case in tokenizer.rules if not tokenizer.faster_heuristics or " " in case or
                   tokenizer.find_prefix(case) or tokenizer.find_suffix(case) or tokenizer.find_infix(case)]
        with self.nlp.memory_zone():
            patterns = [tuple(token.text for token in affixes(case)) for case in matched]
        self.pairs = {pattern[i:i + 2] for pattern in patterns for i in range(len(pattern) - 1)}
        self.lefts = {left for left, _ in self.pairs}
        self.rights = {right for _, right in self.pairs}
        self.left_strings, self.right_strings = tuple(self.lefts), tuple(self.rights)
        self.replaced = {tuple(sub[ORTH] for sub in tokenizer.rules[case]) for case in matched}
        self.in_chunk = self.replaced | set(patterns)  # tokens of a chunk in which spaCy may match one
        self.longest = max(map(len, self.in_chunk), default=0)
        self.cache: dict[str, tuple[str, ...]] = {}
        self.edges: dict[str, tuple[frozenset, frozenset, bool]] = {}  # see `_edge`
        self.inside: set[str] = set()  # the chunks with an edge where spaCy may match a special case
        self.marks: dict[str, str] = {}  # chunk -> its tokens' kinds for the sentencizer (see `sentences`)

    def words(self, text: str) -> list[str]:
        if "IS_ALPHA" in text:
            text = self._without_is_alpha(text)
        chunks = text.split()
        tokens, edges = self.split(chunks)
        if self._crossing(chunks, edges):
            return [token for token in self._in_context(text) if not token.isspace()]
        return list(chain.from_iterable(map(tokens.__getitem__, chunks)))

    def sentences(self, line: str) -> int:
        """spaCy's sentencizer: after a token of its `punct_chars` ('2'), the next token that is neither
        punctuation ('1') nor such a mark ('0') starts a sentence. A run of whitespace is a token ('0')
        unless it is one space after a chunk."""
        if "IS_ALPHA" in line:
            line = self._without_is_alpha(line)
        chunks = line.split()
        marks, edges = self._marks(chunks)
        if self._crossing(chunks, edges):
            kinds = "".join([self._kind(token) for token in self._in_context(line)])
        elif " ".join(chunks) == line:  # single spaces only: no whitespace token
            kinds = "".join([marks[chunk] for chunk in chunks])
        else:
            parts = SPACE_RUN.split(line)  # chunk, whitespace, ..., chunk (the first or last may be '')
            kinds = "".join([(marks[part] if part else "") if i % 2 == 0 else
                             "0" if part != " " or (i == 1 and not parts[0]) else ""
                             for i, part in enumerate(parts)])
        return len(SENTENCE_STARTS.findall(kinds)) + 1  # one without tokens too, as datatrove counts

    def _without_is_alpha(self, text: str) -> str:
        """spaCy fails on the token IS_ALPHA (a symbol's name) from its second time in a process on, and
        datatrove then splits the text without 'IS_ALPHA': the text it splits, always as from then on."""
        for chunk in {chunk for chunk in text.split() if "IS_ALPHA" in chunk}:
            if affix_splits(chunk) > MAX_AFFIX_SPLITS:
                found = "IS_ALPHA" in split_chunk(chunk)
            else:
                try:
                    with self.nlp.memory_zone():
                        found = any(token.text == "IS_ALPHA" for token in self.tokenizer(chunk))
                except AssertionError:  # spaCy's failure on that token
                    found = True
            if found:
                return text.replace("IS_ALPHA", "")
        return text

    def split(self, chunks: list[str]) -> tuple[Mapping[str, tuple[str, ...]], Mapping[str, tuple]]:
        """(chunk -> its tokens, chunk -> its `_edge` where it has one), for every chunk in `chunks`: the
        caches, and the new chunks too long to keep."""
        cache = self.cache
        if all(map(cache.__contains__, chunks)):
            return cache, self.edges
        new = {chunk for chunk in chunks if chunk not in cache}
        if len(cache) + len(new) > CACHE_CHUNKS:
            self.forget()
            new = set(chunks)
        tokens, edges = {}, {}
        for chunk, (split, edge) in zip(new, map(self._edge, new, self._tokenize(list(new)))):
            tokens[chunk] = split
            if edge is not None:
                edges[chunk] = edge
        long = [chunk for chunk in new if len(chunk) > CACHE_CHARS]
        long_tokens = {chunk: tokens.pop(chunk) for chunk in long}
        long_edges = {chunk: edges.pop(chunk) for chunk in long if chunk in edges}
        cache.update(tokens)
        self.edges.update(edges)
        if not long:
            return cache, self.edges
        return ChainMap(long_tokens, cache), ChainMap(long_edges, self.edges)

    def forget(self) -> None:
        self.cache.clear()
        self.edges.clear()
        self.inside.clear()
        self.marks.clear()

    def _tokenize(self, chunks: list[str]) -> list[tuple[str, ...] | None]:
        """Tokens of each chunk alone: spaCy on up to `SPACY_BATCH` of them at once (one per line), inside a
        memory zone so the words of the web do not stay in spaCy's vocabulary; None for affix-heavy ones."""
        out: list[list[str] | None] = [None if affix_splits(chunk) > MAX_AFFIX_SPLITS else [] for chunk in chunks]
        spacy_chunks = [i for i, tokens in enumerate(out) if tokens is not None]
        for start in range(0, len(spacy_chunks), SPACY_BATCH):
            batch = spacy_chunks[start:start + SPACY_BATCH]
            with self.nlp.memory_zone():
                tokens = [(token.idx, token.text) for token in self.tokenizer("\n".join(chunks[i] for i in batch))]
            k, end = 0, len(chunks[batch[0]])
            for idx, token in tokens:
                if token.isspace():  # the newlines between chunks
                    continue
                while idx >= end:
                    k += 1
                    end += 1 + len(chunks[batch[k]])
                out[batch[k]].append(token)
        return [None if tokens is None else tuple(tokens) for tokens in out]

    def _edge(self, chunk: str, tokens: tuple[str, ...] | None) -> tuple[tuple[str, ...], tuple | None]:
        """(tokens, edge): the look-alike's tokens for an affix-heavy chunk (edge None: never split in
        context), else spaCy's and, where a special-case match across a space could use the chunk, its edge:
        (the tokens its last token could be in that match, those its first could be, whether spaCy may have
        matched a special case inside it). Its own end tokens, or, where a special case may have replaced
        them, any of the match's tokens the chunk ends / starts with."""
        if tokens is None:
            return split_chunk(chunk), None
        ends = {tokens[-1]} if tokens[-1] in self.lefts else set()
        starts = {tokens[0]} if tokens[0] in self.rights else set()
        if not chunk.isalnum():
            reach = range(1, min(self.longest, len(tokens)) + 1)
            if chunk.endswith(self.left_strings) and any(tokens[-n:] in self.replaced for n in reach):
                ends |= {left for left in self.lefts if chunk.endswith(left)}
            if chunk.startswith(self.right_strings) and any(tokens[:n] in self.replaced for n in reach):
                starts |= {right for right in self.rights if chunk.startswith(right)}
        if not ends and not starts:
            return tokens, None
        inside = any(tokens[i:i + n] in self.in_chunk for n in range(1, min(self.longest, len(tokens)) + 1)
                     for i in range(len(tokens) - n + 1))
        if inside and len(chunk) <= CACHE_CHARS:  # (longer ones are not kept: see `_crossing`)
            self.inside.add(chunk)
        return tokens, (frozenset(ends), frozenset(starts), inside)

    def _joins(self, left: tuple | None, right: tuple | None) -> bool:
        """Whether a special-case match may cross the space between chunks with these edges."""
        return (left is not None and right is not None and bool(left[0]) and bool(right[1])
                and any((a, b) in self.pairs for a in left[0] for b in right[1]))

    def _crossing(self, chunks: list[str], edges: Mapping[str, tuple]) -> bool:
        """Whether a special-case match crossing a space may shadow one inside a chunk: a chunk where spaCy
        may match one, next to a chunk the match may join (whitespace between taken as one space)."""
        if edges is self.edges:  # (no new long chunk, which `inside` does not keep)
            if self.inside.isdisjoint(chunks):
                return False
            hot = compress(range(len(chunks)), map(self.inside.__contains__, chunks))
        else:
            hot = (i for i, chunk in enumerate(chunks) if chunk in edges and edges[chunk][2])
        for i in hot:
            edge = edges[chunks[i]]
            if (i and self._joins(edges.get(chunks[i - 1]), edge)) or (
                    i + 1 < len(chunks) and self._joins(edge, edges.get(chunks[i + 1]))):
                return True
        return False

    def _in_context(self, text: str) -> list[str]:
        """spaCy's tokens of `text`, whitespace tokens included: chunks alone from the cache, but runs of
        chunks a special-case match may cross (one space apart) split in one piece."""
        parts = SPACE_RUN.split(text)  # chunk, whitespace, ..., chunk (the first or last may be '')
        tokens, edges = self.split([part for part in parts[0::2] if part])
        out, i = [], 0
        while i < len(parts):
            part = parts[i]
            if i % 2:
                if part != " " or (i == 1 and not parts[0]):  # spaCy's whitespace token
                    out.append(part)
                i += 1
                continue
            j = i
            while j + 2 < len(parts) and parts[j + 1] == " " and self._joins(edges.get(parts[j]),
                                                                            edges.get(parts[j + 2])):
                j += 2
            if j > i:
                with self.nlp.memory_zone():
                    out += [token.text for token in self.tokenizer("".join(parts[i:j + 1]))]
            elif part:
                out += tokens[part]
            i = j + 1
        return out

    def _marks(self, chunks: list[str]) -> tuple[Mapping[str, str], Mapping[str, tuple]]:
        """(chunk -> the sentencizer's kind of each of its tokens, chunk -> its edge), for `chunks`."""
        (tokens, edges), marks, long = self.split(chunks), self.marks, {}
        for chunk in chunks:
            if chunk not in marks and chunk not in long:
                kinds = "".join([self._kind(token) for token in tokens[chunk]])
                (marks if len(chunk) <= CACHE_CHARS else long)[chunk] = kinds
        return (ChainMap(long, marks) if long else marks), edges

    def _kind(self, token: str) -> str:
        return "2" if token in self.punct_chars else "1" if self.is_punct(token) else "0"


def fast_word_tokens(text: str, lang: str | None = None) -> list[str]:
    """Our own split: CJK characters are one word each for Chinese and Japanese; elsewhere whitespace
    chunks lose their punctuation, clitics and hyphens (a look-alike of spaCy's English rules)."""
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
