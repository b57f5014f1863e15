"""Line-level dedup across a corpus: units (lines, paragraphs, three-sentence spans) that repeat are cut out.

The boilerplate pass of C4 (three-sentence spans; Raffel et al. 2020, sec. 2.2), CCNet, FineWeb-2 and
Dolma (paragraphs). Pure logic: cutting a document into units, normalising and hashing them, removing
the units the Spark job (`jobs/line_dedup.py`) found to repeat, and judging what is left.

- Units (`unit`): "line" splits on "\\n"; "paragraph" on blank lines ("\\n", then one or more lines of
  only spaces); "sentences3" splits sentences (after . ! ? or … followed by spaces, optionally behind a
  closing quote or bracket, and at every line break) and makes one unit of each window of three
  consecutive non-empty sentences (C4; a document of fewer than three sentences has no unit).
- Normalisation before hashing: whitespace runs collapsed to one space and the ends stripped; case
  folded (`lowercase`, default on) and every digit mapped to 0 (`digits`, default on; CCNet does the
  same), so "© 2023 Foo" and "© 2024 foo" are one unit. A unit whose normalised text is shorter than
  `min_chars` (or empty) is never counted nor removed.
- Hash: the 128-bit BLAKE2b of the normalised unit salted with `seed` (`stages.bloom.digests`); its
  first 64 bits, as a signed long, are the exact key Spark counts; the Bloom filter uses both halves.
- Mode "count": a unit that occurs in more than `min_docs` documents (documents, not occurrences:
  each unit counts once per document) is removed from every document. Mode "bloom" (Dolma): a unit
  seen before is removed and its first occurrence kept; "before" means in an earlier dump (the filter
  at `bloom_path`, false positives at its rate) or earlier in this dump, documents ordered by `id` and
  units by position (found exactly, no false positives within a dump).
- A removed unit takes its piece of text with it; the remaining pieces are joined by the separator
  that preceded each of them, and a changed text is stripped at both ends. A document that lost
  something is rejected as `line_dedup_empty` when its remaining text is empty, shorter than
  `min_remaining_chars`, or below `min_remaining_fraction` of its original length; the rejected row
  keeps its original text. An unchanged document is always kept (length rules belong to quality).

Rows gain `line_dedup_removed_chars` (code points cut from the text), `line_dedup_removed_bytes` (its
UTF-8 bytes) and `line_dedup_removed_lines` (pieces cut: lines, paragraphs or sentences).

    units = split_units(text, config)                    # Units(pieces, seps, spans, keys)
    LineDedup(config, BloomPlan(prior)).run(mark_repeats(docs, config))   # one process, no Spark
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from common.recipe import require, require_fraction
from stages.base import Doc, Drop, Mapper, judged, too_little_left
from stages.bloom import BloomFilter, digests

UNITS = ("line", "paragraph", "sentences3")
MODES = ("count", "bloom")
REASON = "line_dedup_empty"
REMOVED_CHARS, REMOVED_LINES = "line_dedup_removed_chars", "line_dedup_removed_lines"
REMOVED_BYTES = "line_dedup_removed_bytes"
REMOVE = "_remove"  # per-document list of keys to remove, joined in by the job
SEPARATORS = {
    "line": re.compile(r"(\n)"),
    "paragraph": re.compile(r"(\n(?:[^\S\n]*\n)+)"),
    "sentences3": re.compile(r"(\s*\n\s*|(?<=[.!?…])[^\S\n]+|(?<=[.!?…][\"'”’»)\]])[^\S\n]+)"),
}
SPAN = 3  # sentences per unit in "sentences3" (C4)
SPACES, DIGITS = re.compile(r"\s+"), re.compile(r"\d")


@dataclass(frozen=True)
class LineDedupConfig:
    unit: str = "line"  # "line", "paragraph" or "sentences3" (C4's three-sentence spans)
    mode: str = "count"  # "count": more than min_docs documents; "bloom": seen before (Dolma)
    min_docs: int = 1  # count mode: removed when in more than this many documents (1: any repeat, as CCNet)
    lowercase: bool = True
    digits: bool = True  # every digit -> 0 before hashing (CCNet)
    min_chars: int = 0  # units shorter than this (normalised) are never removed
    min_remaining_chars: int = 50  # a changed document with less text left is dropped
    min_remaining_fraction: float = 0.0  # ... or with less than this fraction of its text left
    seed: int = 0  # hash salt; a Bloom filter from another seed is refused
    bloom_path: str = ""  # bloom mode: an earlier dump's filter (file, or its line_dedup folder); "" none
    expected_items: int = 100_000_000  # bloom mode: n the filter is sized for (distinct units, all dumps)
    fp_rate: float = 0.001  # bloom mode: the filter's false-positive rate at expected_items
    fpr_probes: int = 100_000  # distinct never-inserted items probed to measure the rate for _stats.json

    def __post_init__(self):
        require(self.unit in UNITS, "unit", self.unit, " or ".join(repr(u) for u in UNITS))
        require(self.mode in MODES, "mode", self.mode, " or ".join(repr(m) for m in MODES))
        for key in ("min_docs", "min_chars", "min_remaining_chars", "fpr_probes"):
            require(getattr(self, key) >= 0, key, getattr(self, key), ">= 0")
        require(self.expected_items > 0, "expected_items", self.expected_items, "> 0")
        require(0 < self.fp_rate < 1, "fp_rate", self.fp_rate, "between 0 and 1 (exclusive)")
        require_fraction(self, "min_remaining_fraction")

    def key_settings(self) -> dict:
        """What must match for keys of two runs (a saved Bloom filter and this run) to be comparable."""
        return {"unit": self.unit, "lowercase": self.lowercase, "digits": self.digits,
                "min_chars": self.min_chars, "seed": self.seed}


class Units(NamedTuple):
    """A text cut into `pieces` and the `seps` between them (text = p0 s0 p1 s1 ... pn); `spans[i]` are
    the piece indexes unit i covers and `keys[i]` its (2,) uint64 digest."""

    pieces: list[str]
    seps: list[str]
    spans: list[tuple[int, ...]]
    keys: np.ndarray


def normalize(piece: str, config: LineDedupConfig) -> str:
    text = SPACES.sub(" ", piece).strip()
    text = text.lower() if config.lowercase else text
    return DIGITS.sub("0", text) if config.digits else text


def split_units(text: str, config: LineDedupConfig) -> Units:
    """The pieces of `text` and its units (see the module docstring), with their digests."""
    parts = SEPARATORS[config.unit].split(text or "")
    pieces, seps = parts[0::2], parts[1::2]
    norms = [normalize(p, config) for p in pieces]
    if config.unit == "sentences3":
        full = [j for j, n in enumerate(norms) if n]
        spans = [tuple(full[i:i + SPAN]) for i in range(len(full) - SPAN + 1)]
        texts = [" ".join(norms[j] for j in span) for span in spans]
    else:
        spans, texts = [(j,) for j in range(len(pieces))], norms
    wanted = [i for i, t in enumerate(texts) if t and len(t) >= config.min_chars]
    return Units(pieces, seps, [spans[i] for i in wanted], digests([texts[i] for i in wanted], config.seed))


def exact_keys(keys: np.ndarray) -> np.ndarray:
    """The signed 64-bit key Spark counts: the first half of each digest."""
    return np.ascontiguousarray(keys[:, 0]).view(np.int64)


def rebuild(units: Units, removed: set[int]) -> str:
    """The text without the `removed` pieces, each kept piece behind the separator that preceded it."""
    out: list[str] = []
    for j, piece in enumerate(units.pieces):
        if j in removed:
            continue
        if out:
            out.append(units.seps[j - 1])
        out.append(piece)
    return "".join(out).strip() if removed else "".join(out)


class BloomPlan(NamedTuple):
    """Bloom mode's extra knowledge on executors: the earlier dumps' filter (None for the first dump)."""

    prior: BloomFilter | None


class LineDedup(Mapper):
    """Cuts the units the job marked (`_remove`: exact keys), plus in bloom mode repeats within the
    document and units the prior filter holds; judges what is left (module docstring)."""

    name = "line_dedup"
    adds = (pa.field(REMOVED_CHARS, pa.int64()), pa.field(REMOVED_BYTES, pa.int64()), pa.field(REMOVED_LINES, pa.int64()))
    drops = (REMOVE,)

    def __init__(self, config: LineDedupConfig = LineDedupConfig(), plan=None):
        self.config, self.plan = config, plan  # plan: a BloomPlan, or a Spark broadcast of one

    def removed_units(self, units: Units, marked) -> list[int]:
        """Indexes of the units to remove."""
        keys = exact_keys(units.keys)
        hit = np.isin(keys, np.asarray(marked or [], dtype=np.int64))
        if self.config.mode == "bloom":
            plan = getattr(self.plan, "value", self.plan)
            if plan is not None and plan.prior is not None:
                hit |= plan.prior.contains(units.keys)
            hit |= repeats_within(keys)
        return np.flatnonzero(hit).tolist()

    def map(self, doc: Doc) -> Doc:
        text = doc.get("text") or ""
        units = split_units(text, self.config)
        cut = {j for i in self.removed_units(units, doc.get(REMOVE)) for j in units.spans[i]}
        rest = rebuild(units, cut)
        row = {k: v for k, v in doc.items() if k != REMOVE}
        row.update({"text": rest if cut else doc.get("text"), REMOVED_CHARS: len(text) - len(rest),
                    REMOVED_BYTES: utf8_length(text) - utf8_length(rest), REMOVED_LINES: len(cut)})
        verdict = self.verdict(text, rest) if cut else None
        return judged({**row, "text": doc.get("text")} if verdict else row, verdict)

    def verdict(self, text: str, rest: str) -> Drop | None:
        return too_little_left(REASON, text, rest, self.config.min_remaining_chars, self.config.min_remaining_fraction)


def utf8_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def repeats_within(keys: np.ndarray) -> np.ndarray:
    """True for every occurrence of a key after its first in this array."""
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return ~first


def mark_repeats(docs: list[Doc], config: LineDedupConfig) -> list[Doc]:
    """The job's counting step on a Python list: each document with `_remove`, the keys to cut from it
    (what `jobs.line_dedup.marked_keys` computes in Spark and joins in)."""
    keys = {d["id"]: np.unique(exact_keys(split_units(d.get("text"), config).keys)).tolist() for d in docs}
    count: Counter = Counter()
    first: dict[int, str] = {}
    for doc_id in sorted(keys):
        count.update(keys[doc_id])
        for key in keys[doc_id]:
            first.setdefault(key, doc_id)
    limit = config.min_docs if config.mode == "count" else 1

    def cut(doc_id: str) -> list[int]:
        return [k for k in keys[doc_id] if count[k] > limit and (config.mode == "count" or first[k] != doc_id)]

    return [{**d, REMOVE: cut(d["id"])} for d in docs]
