"""Decontamination: 13-gram overlap between documents and evaluation sets (GSM8K, HumanEval, MMLU, JSONL).

Rule: a document (web page or instruction sample) that shares any normalised 13-gram of words with a
test item is contaminated (Qwen, Bai et al. 2023, sec. 3.1: "exclude any instruction samples that have
a 13-gram overlap with any test data"; the 13-gram window is GPT-3's, Brown et al. 2020, app. C).
By recipe the document is dropped (`drop_reason` = `contam_<benchmark>`) or the overlapping span is
cut out with a margin, GPT-3 style (200 characters each side; pieces under 200 characters are dropped,
and a document cut into more than 10 pieces is dropped whole).

Normalisation: words are maximal runs of Unicode letters/digits (`\\w+`), case-folded, so whitespace,
punctuation, quotes and capitalisation edits do not hide an overlap. An n-gram is a 64-bit polynomial
hash of 64-bit word hashes (blake2b), computed with numpy; the benchmark index is a sorted uint64 array
(about 1M n-grams, 12 MB for GSM8K test + HumanEval + MMLU test), small enough to broadcast.
Test items shorter than n words contribute their whole word sequence if it has at least
`min_short_words` words.

    index = build_index({"gsm8k": "../shared/data/gsm8k/test.jsonl", "mmlu": "../shared/data/mmlu/test"})
    stage = Decontaminate(DecontamConfig(), index)         # or an object with `.value` (Spark broadcast)
    rows = stage.run([{"id": "1", "text": "..."}])
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from stages.base import Doc, Mapper, drop, keep
from common.recipe import require, require_positive

WORD = re.compile(r"\w+")
PRIME = np.uint64(0x100000001B3)  # FNV-64 prime: odd, so the polynomial hash mixes every word


@dataclass(frozen=True)
class DecontamConfig:
    benchmarks: dict[str, str] = field(default_factory=dict)  # name -> path ("path#field" for any JSONL)
    ngram: int = 13  # Qwen 2023 sec. 3.1 / GPT-3 app. C
    min_short_words: int = 8  # test items shorter than `ngram` words: matched whole if at least this long
    mode: str = "drop"  # "drop" the document, or "cut" the overlapping spans out
    cut_margin_chars: int = 200  # GPT-3 app. C: 200 characters removed around each overlap
    min_piece_chars: int = 200  # GPT-3 app. C: pieces shorter than this are discarded
    max_pieces: int = 10  # GPT-3 app. C: documents split into more pieces are dropped
    max_items_reported: int = 8  # item ids listed per document in `contam_items`

    def __post_init__(self):
        require_positive(self, "ngram", "max_pieces")
        require(self.mode in ("drop", "cut"), "mode", self.mode, "'drop' or 'cut'")


# ---------------------------------------------------------------- normalisation and hashing


def word_spans(text: str) -> list[tuple[str, int, int]]:
    """(case-folded word, start, end) for each word of `text`; offsets index the original string."""
    return [(m.group().casefold(), m.start(), m.end()) for m in WORD.finditer(text or "")]


def word_hashes(tokens: Iterable[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
                     for t in tokens], dtype=np.uint64)


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of `n` word hashes (uint64, wrapping): shape (len - n + 1,)."""
    if len(hashes) < n:
        return np.zeros(0, dtype=np.uint64)
    count = len(hashes) - n + 1
    out = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            out = out * PRIME + hashes[i:i + count]
    return out


# ---------------------------------------------------------------- benchmark readers


def read_gsm8k(path: Path) -> Iterator[tuple[str, list[str]]]:
    for i, rec in enumerate(_jsonl(path)):
        yield f"{path.stem}/{i}", [rec["question"], rec["answer"]]


def read_humaneval(path: Path) -> Iterator[tuple[str, list[str]]]:
    for rec in _jsonl(path):
        yield rec["task_id"], [rec["prompt"] + rec["canonical_solution"]]


def read_mmlu(path: Path) -> Iterator[tuple[str, list[str]]]:
    """MMLU csv files (header question,choice0..3,answer), one file or a folder of them."""
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    for file in files:
        with file.open(newline="", encoding="utf-8") as handle:
            for i, row in enumerate(csv.DictReader(handle)):
                choices = [row[k] for k in ("choice0", "choice1", "choice2", "choice3") if row.get(k)]
                yield f"{file.stem}/{i}", [row["question"] + "\n" + "\n".join(choices)]


def read_jsonl_field(path: Path, name: str = "text") -> Iterator[tuple[str, list[str]]]:
    for i, rec in enumerate(_jsonl(path)):
        yield str(rec.get("id", i)), [rec[name]]


def _jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def read_benchmark(spec: str) -> Iterator[tuple[str, list[str]]]:
    """Items of one benchmark file or folder; the format is recognised from the data (see README)."""
    spec = os.path.expandvars(spec)
    path_text, _, text_field = spec.partition("#")
    path = Path(path_text)
    if not path.exists():
        raise FileNotFoundError(f"benchmark not found: {path}")
    if path.is_dir() or path.suffix == ".csv":
        return read_mmlu(path)
    if text_field:
        return read_jsonl_field(path, text_field)
    first = next(_jsonl(path))
    if {"question", "answer"} <= first.keys():
        return read_gsm8k(path)
    if {"prompt", "canonical_solution"} <= first.keys():
        return read_humaneval(path)
    return read_jsonl_field(path, "text")


# ---------------------------------------------------------------- the index


@dataclass
class BenchmarkIndex:
    """Sorted n-gram hashes of the test items, each with the item it came from."""

    ngram: int
    hashes: np.ndarray  # uint64, sorted
    items: np.ndarray  # int32 index into `item_names`, aligned with `hashes`
    item_names: list[str]  # "benchmark:item id"
    short_lengths: tuple[int, ...]  # word counts of whole short items in the index
    counts: dict[str, dict[str, int]]  # per benchmark: items, ngrams

    def lookup(self, grams: np.ndarray) -> np.ndarray:
        """Positions in `grams` that are in the index, and the item index of each (two arrays)."""
        where = np.searchsorted(self.hashes, grams)
        where[where == len(self.hashes)] = 0
        hit = self.hashes[where] == grams if len(self.hashes) else np.zeros(len(grams), bool)
        return np.nonzero(hit)[0], self.items[where[hit]]


def build_index(benchmarks: dict[str, str], ngram: int = 13, min_short_words: int = 8) -> BenchmarkIndex:
    """Reads every benchmark and hashes its items' n-grams (run once, on the driver)."""
    all_hashes, all_items, names, counts, short = [], [], [], {}, set()
    for bench, spec in sorted(benchmarks.items()):
        n_items = n_grams = 0
        for item_id, texts in read_benchmark(spec):
            names.append(f"{bench}:{item_id}")
            for text in texts:
                grams, length = item_ngrams(text, ngram, min_short_words)
                if length:
                    short.add(length)
                all_hashes.append(grams)
                all_items.append(np.full(len(grams), len(names) - 1, dtype=np.int32))
                n_grams += len(grams)
            n_items += 1
        counts[bench] = {"items": n_items, "ngrams": n_grams}
    hashes = np.concatenate(all_hashes) if all_hashes else np.zeros(0, np.uint64)
    items = np.concatenate(all_items) if all_items else np.zeros(0, np.int32)
    order = np.argsort(hashes, kind="stable")
    return BenchmarkIndex(ngram, hashes[order], items[order], names, tuple(sorted(short)), counts)


def item_ngrams(text: str, n: int, min_short: int) -> tuple[np.ndarray, int]:
    """A test text's n-gram hashes; a short text (min_short <= words < n) gives its whole length."""
    hashes = word_hashes(w for w, _, _ in word_spans(text))
    if len(hashes) >= n:
        return np.unique(ngram_hashes(hashes, n)), 0
    if len(hashes) >= min_short:
        return ngram_hashes(hashes, len(hashes)), len(hashes)
    return np.zeros(0, np.uint64), 0


# ---------------------------------------------------------------- matching and cutting


def find_overlaps(text: str, index: BenchmarkIndex) -> tuple[list[tuple[int, int]], list[str]]:
    """Character spans of `text` covered by indexed n-grams, and the matched item names (sorted)."""
    toks = word_spans(text)
    hashes = word_hashes(w for w, _, _ in toks)
    spans, items = [], set()
    for n in (index.ngram, *index.short_lengths):
        positions, item_ids = index.lookup(ngram_hashes(hashes, n))
        spans += [(toks[p][1], toks[p + n - 1][2]) for p in positions]
        items.update(index.item_names[i] for i in item_ids)
    return merge_spans(spans), sorted(items)


def merge_spans(spans: list[tuple[int, int]], margin: int = 0) -> list[tuple[int, int]]:
    """Sorted, merged spans, each widened by `margin` characters (not clipped)."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        start, end = start - margin, end + margin
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def cut_spans(text: str, spans: list[tuple[int, int]], config: DecontamConfig) -> list[str] | None:
    """GPT-3 style cut: the pieces left after removing spans (+ margin); None when the document is dropped."""
    pieces, pos = [], 0
    for start, end in merge_spans(spans, config.cut_margin_chars):
        pieces.append(text[pos:max(pos, start)])
        pos = max(pos, end)
    pieces.append(text[pos:])
    kept = [p.strip() for p in pieces if len(p.strip()) >= config.min_piece_chars]
    if len(pieces) > config.max_pieces or not kept:
        return None
    return kept


# ---------------------------------------------------------------- the stage


class Decontaminate(Mapper):
    """Adds `contam_benchmark`, `contam_items`, `contam_ngrams`; drops or cuts contaminated documents."""

    name = "decontam"
    adds = (pa.field("contam_benchmark", pa.string()), pa.field("contam_items", pa.list_(pa.string())),
            pa.field("contam_spans", pa.int32()))

    def __init__(self, config: DecontamConfig = DecontamConfig(), index=None):
        if config.mode not in ("drop", "cut"):
            raise ValueError(f"decontam.mode must be 'drop' or 'cut', got {config.mode!r}")
        self.config = config
        self._index = index  # a BenchmarkIndex, or a Spark broadcast of one (anything with `.value`)

    @property
    def index(self) -> BenchmarkIndex:
        if self._index is None:
            self._index = build_index(self.config.benchmarks, self.config.ngram, self.config.min_short_words)
        return getattr(self._index, "value", self._index)

    def map(self, doc: Doc) -> Doc:
        text = doc.get("text") or ""
        spans, items = find_overlaps(text, self.index)
        if not spans:
            return keep({**doc, "contam_benchmark": None, "contam_items": None, "contam_spans": 0})
        bench = min(items).split(":", 1)[0]  # the first benchmark by name, for a stable reason
        out = {**doc, "contam_benchmark": bench, "contam_items": items[:self.config.max_items_reported],
               "contam_spans": len(spans)}
        detail = f"{len(items)} test items, {len(spans)} spans: {', '.join(items[:3])}"
        if self.config.mode == "cut":
            pieces = cut_spans(text, spans, self.config)
            if pieces is not None:
                return keep({**out, "text": "\n\n".join(pieces)})
        return drop(out, f"contam_{bench}", detail)
