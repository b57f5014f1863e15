"""Exact substring dedup: spans of >= k tokens seen earlier in the corpus are cut out (Lee et al. 2022).

"Deduplicating Training Data Makes Language Models Better" (ExactSubstr), as text-dedup and
datatrove run it: the corpus is one sequence of Qwen BPE tokens, a suffix array over it
(libdivsufsort through `pydivsufsort`) and its LCP array (Kasai) find every window of `min_tokens`
(k, 50 by default) tokens that occurs more than once, and every occurrence but the first is removed.

The rule, exactly: documents are ordered by `id`, tokens by position; a window is k consecutive tokens
inside one document (windows never cross documents); a token is removed when it lies in a window whose
token sequence occurred at an earlier position. The union of those windows covers every repeated span
of >= k tokens except its first occurrence; shorter repeats are never touched. `tests/` checks this
against a brute-force dictionary of windows.

How: suffixes that share their first k tokens are neighbours in the suffix array, with LCP >= k
between them; in each such run the smallest position that starts a whole window keeps its window and
every other one is marked; marked windows are painted onto the token mask with a difference array.
Everything is numpy over the whole corpus: 4 bytes per token for the sequence, ~5x that while the
suffix array and LCP exist (one machine holds the corpus's tokens, as in Lee et al.; `max_tokens`
refuses a bigger one with a clear error).

Removal is done on the text, in code points: token byte offsets (each token's byte length from the
ranks) give byte ranges in the document's UTF-8; a character is cut when its first byte is inside a
range. Rows gain `substring_dedup_removed_chars`, `_bytes` and `_spans`; a changed document keeps
what is left (stripped at both ends) unless too little is left (`substring_dedup_empty`, with its
original text, as line dedup).

    marked = mark_substrings(docs, SubstringDedupConfig(min_tokens=50))   # one process, no Spark
    SubstringDedup(config).run(marked)
    mask = repeat_mask(tokens, doc_starts, k)                             # the core, on token ids
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa

from common.errors import UserError
from common.recipe import require, require_fraction
from stages.base import Doc, Drop, Mapper, judged, too_little_left

REASON = "substring_dedup_empty"
CUT = "_cut"  # per-document flat list of byte offsets [start0, end0, start1, end1, ...], joined in by the job
REMOVED_CHARS, REMOVED_BYTES, REMOVED_SPANS = ("substring_dedup_removed_chars", "substring_dedup_removed_bytes",
                                               "substring_dedup_removed_spans")


@dataclass(frozen=True)
class SubstringDedupConfig:
    min_tokens: int = 50  # k: shortest repeated span removed, in Qwen tokens (Lee et al.: 50 BPE tokens)
    tokenizer: str = ""  # Qwen ranks file; "" = the repository's assets/qwen.tiktoken
    min_remaining_chars: int = 50  # a changed document with less text left is dropped
    min_remaining_fraction: float = 0.0  # ... or with less than this fraction of its text left
    max_tokens: int = 1_000_000_000  # the corpus must fit the driver: ~20 bytes per token while sorting

    def __post_init__(self):
        require(self.min_tokens >= 2, "min_tokens", self.min_tokens, ">= 2")
        require(self.min_remaining_chars >= 0, "min_remaining_chars", self.min_remaining_chars, ">= 0")
        require(self.max_tokens > 0, "max_tokens", self.max_tokens, "> 0")
        require_fraction(self, "min_remaining_fraction")


# ---------------------------------------------------------------- tokens and the suffix array


@cache
def _encoder(tokenizer: str):
    from stages.tokenize.fast_bpe import fast_encoder
    from stages.tokenize.tokenizer import ranks_path

    return fast_encoder(str(ranks_path(tokenizer or None)))


@cache
def token_bytes(tokenizer: str = "") -> np.ndarray:
    """Byte length of every token id (int64; special ids, never produced here, get 0)."""
    from stages.tokenize.fast_bpe import rank_tokens
    from stages.tokenize.tokenizer import ranks_path

    tokens = rank_tokens(str(ranks_path(tokenizer or None)))
    return np.array([len(t) for t in tokens], dtype=np.int64)


def encode(text: str | None, tokenizer: str = "") -> np.ndarray:
    """The document's token ids (int32), as the tokenize stage encodes web text."""
    return _encoder(tokenizer).encode(text or "")


def repeat_mask(tokens: np.ndarray, doc_starts: np.ndarray, k: int) -> np.ndarray:
    """True for each token of the concatenated corpus that lies in a window of k tokens (inside one
    document) whose sequence occurred at an earlier position. `doc_starts`: each document's first
    index, then the total length."""
    n = len(tokens)
    if n < k:
        return np.zeros(n, dtype=bool)
    sa, lcp = suffix_array(tokens)
    ends = np.repeat(doc_starts[1:], np.diff(doc_starts))  # each position's document end
    whole = np.arange(n) + k <= ends  # the window starting here stays inside its document
    first_of_run = np.concatenate(([True], lcp[:-1] < k))  # lcp[i]: common prefix of sa[i] and sa[i+1]
    run = np.cumsum(first_of_run) - 1
    starts = np.flatnonzero(first_of_run)
    candidate = np.where(whole[sa], sa, n)  # a run's earliest whole window keeps its occurrence
    earliest = np.minimum.reduceat(candidate, starts)[run]
    marked = sa[whole[sa] & (sa != earliest)]
    paint = np.zeros(n + 1, dtype=np.int64)
    np.add.at(paint, marked, 1)
    np.add.at(paint, marked + k, -1)
    return np.cumsum(paint[:n]) > 0


def suffix_array(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(suffix array, LCP of each suffix with the next in it; the last is 0) of an integer sequence."""
    from pydivsufsort import divsufsort, kasai

    sa = np.asarray(divsufsort(np.ascontiguousarray(tokens, dtype=np.uint32)), dtype=np.int64)
    lcp = np.asarray(kasai(np.ascontiguousarray(tokens, dtype=np.uint32), sa), dtype=np.int64)
    return sa, lcp


def cut_ranges(mask: np.ndarray, doc_starts: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Per document, the flat byte ranges [s0, e0, s1, e1, ...] (offsets in its UTF-8) of its marked runs.
    `lengths`: each token's byte length."""
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    begins = np.zeros(len(mask) + 1, dtype=bool)
    begins[doc_starts[:-1]] = True  # a run never continues into the next document
    previous = np.concatenate(([False], mask[:-1])) & ~begins[:-1]
    following = np.concatenate((mask[1:], [False])) & ~begins[1:]
    run_starts, run_ends = np.flatnonzero(mask & ~previous), np.flatnonzero(mask & ~following) + 1
    doc = np.searchsorted(doc_starts, run_starts, side="right") - 1
    base = offsets[doc_starts[doc]]
    out: list[list[int]] = [[] for _ in range(len(doc_starts) - 1)]
    for d, start, end in zip(doc.tolist(), (offsets[run_starts] - base).tolist(), (offsets[run_ends] - base).tolist()):
        out[d] += [start, end]
    return out


def corpus_cuts(token_lists: list[np.ndarray], config: SubstringDedupConfig) -> list[list[int]]:
    """Byte ranges to cut from each document, given every document's tokens in corpus order."""
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    total = int(lengths.sum())
    if total > config.max_tokens:
        raise UserError(f"substring_dedup.max_tokens: the corpus has {total:,} tokens, more than {config.max_tokens:,}; "
                        "split it (e.g. by source) or raise the limit if the driver has ~20 bytes per token")
    tokens = np.concatenate(token_lists) if total else np.zeros(0, np.int32)
    doc_starts = np.concatenate(([0], np.cumsum(lengths)))
    mask = repeat_mask(tokens, doc_starts, config.min_tokens)
    return cut_ranges(mask, doc_starts, token_bytes(config.tokenizer)[tokens])


def mark_substrings(docs: list[Doc], config: SubstringDedupConfig) -> list[Doc]:
    """The job's marking step on a Python list: each document with `_cut` (what `jobs.substring_dedup`
    computes on the driver and joins in)."""
    order = sorted(range(len(docs)), key=lambda i: docs[i]["id"])
    cuts = corpus_cuts([encode(docs[i].get("text"), config.tokenizer) for i in order], config)
    by_doc = dict(zip(order, cuts))
    return [{**doc, CUT: by_doc[i]} for i, doc in enumerate(docs)]


# ---------------------------------------------------------------- the removal, per document


def utf8_text(text: str) -> str:
    """`text` as the tokenizer saw it: lone surrogates (not UTF-8) become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        from stages.tokenize.fast_bpe import without_surrogates

        return without_surrogates(text)


def cut_text(text: str, cut: list[int]) -> str:
    """`text` without the characters whose first UTF-8 byte lies in a cut range [start, end)."""
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    chars_before = np.concatenate(([0], np.cumsum((raw & 0xC0) != 0x80)))  # characters starting before byte b
    spans = np.clip(np.asarray(cut, dtype=np.int64).reshape(-1, 2), 0, len(raw))
    pieces, at = [], 0
    for c0, c1 in chars_before[spans[np.argsort(spans[:, 0], kind="stable")]].tolist():
        pieces.append(text[at:max(at, c0)])
        at = max(at, c1)
    pieces.append(text[at:])
    return "".join(pieces)


class SubstringDedup(Mapper):
    """Cuts the byte ranges the job marked (`_cut`) and judges what is left (module docstring)."""

    name = "substring_dedup"
    adds = (pa.field(REMOVED_CHARS, pa.int64()), pa.field(REMOVED_BYTES, pa.int64()),
            pa.field(REMOVED_SPANS, pa.int64()))
    drops = (CUT,)

    def __init__(self, config: SubstringDedupConfig = SubstringDedupConfig()):
        self.config = config

    def map(self, doc: Doc) -> Doc:
        cut = doc.get(CUT) or []
        row = {k: v for k, v in doc.items() if k != CUT}
        if not cut:
            return judged({**row, REMOVED_CHARS: 0, REMOVED_BYTES: 0, REMOVED_SPANS: 0}, None)
        text = utf8_text(doc.get("text") or "")
        rest = cut_text(text, cut).strip()
        n_bytes = len(text.encode("utf-8")) - len(rest.encode("utf-8"))
        row.update({"text": rest, REMOVED_CHARS: len(text) - len(rest), REMOVED_BYTES: n_bytes,
                    REMOVED_SPANS: len(cut) // 2})
        verdict: Drop | None = too_little_left(REASON, text, rest, self.config.min_remaining_chars,
                                               self.config.min_remaining_fraction)
        return judged({**row, "text": doc.get("text")} if verdict else row, verdict)
