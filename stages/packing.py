"""Tokenization and packing of documents into fixed-length training rows, with document boundaries.

Documents are encoded with the Qwen tokenizer (web text literally: a "<|endoftext|>" typed on a page
is text, not the special token), each followed by <|endoftext|>, and concatenated into rows of
`seq_len + 1` tokens (inputs are row[:-1], targets row[1:]). `doc_starts` lists the offsets inside
the row where a document (or the continuation of one cut by the previous row) begins, so training
can restart positions and mask attention per document. Rows never mix sources or splits.

Both steps work on whole Arrow batches with numpy (no Python loop over tokens): `Tokenize` is a
batch stage, and `pack_batches` streams the token values of a sorted partition through a buffer,
cutting rows of `seq_len + 1` and locating document starts with `searchsorted`. Its input rows are
documents (`input_ids`, one document each) or partial rows (`input_ids` + `doc_starts`): the short row
each Spark partition leaves per (split, source) is re-packed once more with the other partitions'
tails, so at most one short row per (split, source) remains.

    batches = pack_batches([record_batch_sorted_by_split_and_source], seq_len=2048)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from stages.base import BatchStage
from stages.tokenizer import ENDOFTEXT_ID, IM_END, IM_START, QwenTokenizer

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

    def __post_init__(self):
        if self.writer not in ("arrow", "spark"):
            raise ValueError(f"tokenize.writer must be 'arrow' or 'spark', not {self.writer!r}")


class Tokenize(BatchStage):
    """Adds `input_ids` (document tokens + <|endoftext|>), `n_tokens`, `split` and `shuffle_key`; drops
    `text`. Documents with no tokens are rejected as `empty`. Web text is encoded literally; documents of
    `chatml_sources` (instruction data mixed into pretraining) keep <|im_start|> / <|im_end|> special."""

    name = "tokenize"
    adds = (pa.field("input_ids", pa.list_(pa.int32())), pa.field("n_tokens", pa.int32()),
            pa.field("split", pa.string()), pa.field("shuffle_key", pa.string()))
    drops = ("text",)

    def __init__(self, config: TokenizeConfig = TokenizeConfig()):
        self.config = config
        self.tokenizer = QwenTokenizer(config.tokenizer or None)

    def model_files(self) -> tuple[str, ...]:
        return (self.tokenizer.path,)

    def process_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        sources = batch.column("source").to_pylist() if "source" in batch.schema.names else [None] * batch.num_rows
        docs = [self.encode(text or "", source) for text, source in zip(batch.column("text").to_pylist(), sources)]
        lengths = np.array([len(x) + 1 if len(x) else 0 for x in docs], dtype=np.int32)
        ends = np.cumsum(lengths)
        eos = np.array([ENDOFTEXT_ID], np.int32)
        values = np.concatenate([part for doc in docs if len(doc) for part in (doc, eos)] or [np.empty(0, np.int32)])
        offsets = pa.array(np.concatenate([[0], ends]).astype(np.int32), pa.int32())
        empty = lengths == 0
        keys = [self.key(i) for i in batch.column("id").to_pylist()]
        originals = batch.column("orig_id").to_pylist() if "orig_id" in batch.schema.names else [None] * len(keys)
        split = [self.split(self.key(o) if o else k) for o, k in zip(originals, keys)]
        added = {
            "input_ids": pa.ListArray.from_arrays(offsets, pa.array(values), mask=pa.array(empty)),
            "n_tokens": pa.array(lengths, pa.int32()),
            "split": pa.array(split, pa.string()), "shuffle_key": pa.array(keys, pa.string()),
            "drop_reason": pa.array(np.where(empty, "empty", None).tolist(), pa.string()),
            "drop_detail": pa.array(np.where(empty, "no tokens", None).tolist(), pa.string()),
        }
        return self.with_columns(batch, added)

    def encode(self, text: str, source: str | None) -> np.ndarray:
        """Token ids as int32. Web text literally; ChatML documents (the recipe's `chatml_sources`) with their
        special tokens. tiktoken's `encode_to_numpy` skips the Python list (ids < 2**31, so the view is exact)."""
        allowed = {IM_START, IM_END} if source in self.config.chatml_sources else set()
        return self.tokenizer.encoding.encode_to_numpy(text, allowed_special=allowed, disallowed_special=()).view(np.int32)

    def key(self, doc_id: str) -> str:
        return hashlib.sha1(f"{self.config.seed}\0{doc_id}".encode()).hexdigest()

    def split(self, key: str) -> str:
        """train or valid by the hash; upsampled copies use their original's (`orig_id`), so a document
        and its copies never straddle the split."""
        return "valid" if int(key[:8], 16) < self.config.valid_fraction * 0x1_0000_0000 else "train"


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
