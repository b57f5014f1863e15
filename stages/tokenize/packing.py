"""Tokenization and packing of documents into fixed-length training rows, with document boundaries.

Documents are encoded with the Qwen tokenizer (web text literally: a "<|endoftext|>" typed on a page
is text, not the special token), each followed by <|endoftext|>, and concatenated into rows of
`seq_len + 1` tokens (inputs are row[:-1], targets row[1:]). `doc_starts` lists the offsets inside
the row where a document (or the continuation of one cut by the previous row) begins, so training
can restart positions and mask attention per document. Rows never mix sources or splits.

Both steps work on whole Arrow batches with numpy (no Python loop over tokens): `DocEncoder` encodes
a sorted batch of texts, and `pack_batches` streams the token values of a sorted partition through a buffer,
cutting rows of `seq_len + 1` and locating document starts with `searchsorted`. Its input rows are
documents (`input_ids`, one document each) or partial rows (`input_ids` + `doc_starts`): the short row
each Spark partition leaves per (split, source) is re-packed once more with the other partitions'
tails, so at most one short row per (split, source) remains.

    batches = pack_batches([record_batch_sorted_by_split_and_source], seq_len=2048)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from stages.base import EXITS
from stages.chatml import hash_key, split_of
from stages.tokenize.fast_bpe import fast_encoder, without_surrogates
from common.recipe import require, require_fraction, require_positive
from stages.tokenize.tokenizer import ENDOFTEXT_ID, IM_END, IM_START, QwenTokenizer

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema([
    pa.field("split", pa.string()),
    pa.field("source", pa.string()),
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("doc_starts", pa.list_(pa.int32())),
    pa.field("n_tokens", pa.int32()),
    pa.field("n_docs", pa.int32()),  # documents that end in the row (its <|endoftext|> tokens)
    pa.field("partial", pa.bool_()),
])


@dataclass(frozen=True)
class TokenizeConfig:
    seq_len: int = 2048  # rows hold seq_len + 1 tokens
    valid_fraction: float = 0.01  # documents sent to shards/valid, chosen by a hash of id and seed
    seed: int = 0  # shuffle and split seed
    tokenizer: str = ""  # ranks file; empty: $QWEN_TIKTOKEN or assets/qwen.tiktoken
    row_group_rows: int = 512  # rows per Parquet row group (several per file)
    file_rows: int = 8192  # rows per shard file at most
    chatml_sources: tuple[str, ...] = ("instruct",)  # sources whose ChatML markers are special tokens
    writer: str = "arrow"  # "arrow": tasks write shards with pyarrow; "spark": Spark's Parquet writer (any FS)
    encoder: str = "fast"  # "fast": stages/tokenize/fast_bpe.py (same ids, ~2x faster); "tiktoken": tiktoken itself

    def __post_init__(self):
        require_positive(self, "seq_len", "row_group_rows", "file_rows")
        require_fraction(self, "valid_fraction")
        require(self.writer in ("arrow", "spark"), "writer", self.writer, "'arrow' or 'spark'")
        require(self.encoder in ("fast", "tiktoken"), "encoder", self.encoder, "'fast' or 'tiktoken'")


class DocEncoder:
    """Sorted documents (`split`, `source`, `text`) -> (`split`, `source`, `input_ids`): each document's tokens
    followed by <|endoftext|>, in the same order; documents with no tokens are left out and counted in
    `empty`, documents the encoder fails on (an exception or a tiktoken panic) in `encode_errors`. Web
    text is encoded literally; documents of `chatml_sources` (instruction data mixed into pretraining)
    keep <|im_start|> / <|im_end|> special. Picklable (the tokenizer loads once per process)."""

    def __init__(self, config: TokenizeConfig = TokenizeConfig()):
        self.config, self.tokenizer, self.empty = config, QwenTokenizer(config.tokenizer or None), 0
        self.encode_errors = 0

    def encode(self, text: str, source: str | None) -> np.ndarray:
        """Token ids as int32: web text with `tokenize.encoder` (stages/tokenize/fast_bpe.py), ChatML documents
        with tiktoken and their markers special (`encode_to_numpy`: ids < 2**31, so the view is exact;
        lone surrogates become U+FFFD first, as in tiktoken's `encode`, which that method skips)."""
        if source in self.config.chatml_sources:
            try:
                return self._chatml(text)
            except UnicodeEncodeError:
                return self._chatml(without_surrogates(text))
        return fast_encoder(self.tokenizer.path, self.config.encoder == "fast").encode(text)

    def _chatml(self, text: str) -> np.ndarray:
        return self.tokenizer.encoding.encode_to_numpy(text, allowed_special={IM_START, IM_END},
                                                      disallowed_special=()).view(np.int32)

    def encode_or_none(self, text: str, source: str | None) -> np.ndarray | None:
        """`encode`, or None (counted in `encode_errors`) when it raises: one hostile document must not
        fail the task."""
        try:
            return self.encode(text, source)
        except EXITS:
            raise
        except BaseException as error:  # noqa: BLE001 - pyo3's PanicException (tiktoken on ~1 MB of spaces)
            self.encode_errors += 1
            log.warning("dropping a document of %d characters (source %s): %s: %.200s", len(text), source,
                        type(error).__name__, error)
            return None

    def encode_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        sources = batch.column("source").to_pylist()
        encoded = [self.encode_or_none(text or "", source)
                   for text, source in zip(batch.column("text").to_pylist(), sources)]
        docs = [d for d in encoded if d is not None and len(d)]
        keep = np.array([d is not None and len(d) > 0 for d in encoded], bool)
        self.empty += sum(d is not None and not len(d) for d in encoded)
        lengths = np.array([len(d) + 1 for d in docs], np.int64)
        eos = np.array([ENDOFTEXT_ID], np.int32)
        values = np.concatenate([part for doc in docs for part in (doc, eos)] or [np.empty(0, np.int32)])
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32), pa.int32())
        mask = pa.array(keep)
        return pa.RecordBatch.from_arrays([batch.column("split").filter(mask), batch.column("source").filter(mask),
                                           pa.ListArray.from_arrays(offsets, pa.array(values, pa.int32()))],
                                          names=["split", "source", "input_ids"])

    def encoded(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield self.encode_batch(batch)


def split_of_doc(config: TokenizeConfig, doc_id: str, orig_id: str | None = None) -> str:
    """train or valid by the seeded hash of the id (pipeline/shards.py computes the same in Spark SQL);
    upsampled copies use their original's (`orig_id`), so a document and its copies never straddle the split."""
    return split_of(hash_key(config.seed, orig_id or doc_id), config.valid_fraction)


class StreamPacker:
    """Packs a stream of token segments of one (split, source) group into rows of `width` tokens."""

    def __init__(self, width: int):
        self.width = width
        self.tokens = np.empty(0, np.int32)
        self.starts = np.empty(0, np.int64)  # document starts inside `tokens`

    def feed(self, values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Appends tokens (with their document starts) and returns the full rows that are ready."""
        starts = np.concatenate([self.starts, starts + len(self.tokens)])
        tokens = np.concatenate([self.tokens, values])
        full = len(tokens) // self.width * self.width
        rows, row_starts = tokens[:full].reshape(-1, self.width), self._row_starts(starts, full)
        self.tokens, self.starts = tokens[full:], starts[starts >= full] - full
        return rows, row_starts

    def flush(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """The short last row, if any (as a list of one row)."""
        if not len(self.tokens):
            return np.empty((0, self.width), np.int32), []
        row, starts = self.tokens, self._row_starts(self.starts, len(self.tokens), len(self.tokens))
        self.tokens, self.starts = np.empty(0, np.int32), np.empty(0, np.int64)
        return row, starts

    def _row_starts(self, starts: np.ndarray, end: int, width: int | None = None) -> list[np.ndarray]:
        """Per row of `width` up to `end`: the document starts inside it, always beginning with 0."""
        width = width or self.width
        bounds = np.arange(0, end + 1, width)
        cuts = np.searchsorted(starts, bounds)
        out = []
        for k in range(len(bounds) - 1):
            inside = starts[cuts[k]:cuts[k + 1]] - bounds[k]
            out.append(inside if len(inside) and inside[0] == 0 else np.concatenate([[0], inside]))
        return out


def pack_batches(batches: Iterable[pa.RecordBatch], seq_len: int) -> Iterator[pa.RecordBatch]:
    """Packs batches sorted by (split, source): documents, or partial rows that carry `doc_starts`."""
    packer, group = StreamPacker(seq_len + 1), None
    for batch in batches:
        for key, sub in _runs(batch):
            if key != group and group is not None:
                yield _shard_batch(group, *packer.flush(), partial=True)
            group = key
            yield _shard_batch(group, *packer.feed(*_segments(sub)), partial=False)
    if group is not None:
        yield _shard_batch(group, *packer.flush(), partial=True)


def _runs(batch: pa.RecordBatch) -> Iterator[tuple[tuple[str, str], pa.RecordBatch]]:
    """Contiguous runs of equal (split, source) in a sorted batch."""
    keys = list(zip(batch.column("split").to_pylist(), batch.column("source").to_pylist()))
    begin = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[begin]:
            yield keys[begin], batch.slice(begin, i - begin)
            begin = i


def _segments(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """The flat token values of a batch and the absolute document starts in them."""
    ids = batch.column("input_ids")
    offsets = ids.offsets.to_numpy().astype(np.int64)
    values = ids.values.to_numpy()[offsets[0]:offsets[-1]].astype(np.int32)
    offsets = offsets - offsets[0]
    if "doc_starts" not in batch.schema.names:
        return values, offsets[:-1]
    starts = batch.column("doc_starts").to_pylist()
    return values, np.concatenate([np.asarray(s, np.int64) + o for s, o in zip(starts, offsets[:-1])] or [[]]).astype(np.int64)


def _shard_batch(group: tuple[str, str], rows: np.ndarray, starts: list[np.ndarray], partial: bool) -> pa.RecordBatch:
    rows = rows.reshape(len(starts), -1) if len(starts) else rows.reshape(0, 0)
    n = len(starts)
    width = rows.shape[1] if n else 0
    ids = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * width), pa.array(rows.ravel(), pa.int32()))
    start_offsets = np.concatenate([[0], np.cumsum([len(s) for s in starts])]).astype(np.int32)
    flat_starts = np.concatenate(starts).astype(np.int32) if n else np.empty(0, np.int32)
    return pa.RecordBatch.from_arrays([
        pa.array([group[0]] * n, pa.string()), pa.array([group[1]] * n, pa.string()), ids,
        pa.ListArray.from_arrays(pa.array(start_offsets), pa.array(flat_starts, pa.int32())),
        pa.array([width] * n, pa.int32()), pa.array(np.count_nonzero(rows == ENDOFTEXT_ID, axis=1), pa.int32()),
        pa.array([partial] * n, pa.bool_())], schema=SHARD_SCHEMA)
