"""Tokenization and packing of documents into fixed-length training rows, with document boundaries.

Documents are encoded with the Qwen tokenizer (web text literally: a "<|endoftext|>" typed on a page
is text, not the special token), each followed by <|endoftext|>, and concatenated into rows of
`seq_len + 1` tokens (inputs are row[:-1], targets row[1:]). `doc_starts` lists the offsets inside
the row where a document (or the continuation of one cut by the previous row) begins, so training
can restart positions and mask attention per document. Rows never mix sources or splits.

The packer consumes segments `(tokens, starts)`: a document is one segment with starts [0]; a partial
row left at the end of a Spark partition is a segment with its own starts, re-packed once more with
the other partitions' tails, so at most one short row per (split, source) remains.

    packer = Packer(seq_len=8)
    rows = list(packer.pack([([1, 2, 3], [0]), ([4, 5, 6, 7, 8, 9, 10], [0])]))
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from stages.base import Doc, Mapper, reject
from stages.tokenizer import ENDOFTEXT_ID, QwenTokenizer

SHARD_SCHEMA = pa.schema([
    pa.field("split", pa.string()),
    pa.field("source", pa.string()),
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("doc_starts", pa.list_(pa.int32())),
    pa.field("n_tokens", pa.int32()),
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


class Tokenize(Mapper):
    """Adds `input_ids` (document tokens + <|endoftext|>), `split` and `shuffle_key`; drops `text`."""

    name = "tokenize"
    adds = (pa.field("input_ids", pa.list_(pa.int32())), pa.field("n_tokens", pa.int32()),
            pa.field("split", pa.string()), pa.field("shuffle_key", pa.string()))
    drops = ("text",)

    def __init__(self, config: TokenizeConfig = TokenizeConfig()):
        self.config = config
        self.tokenizer = QwenTokenizer(config.tokenizer or None)

    def map(self, doc: Doc) -> Doc:
        out = {k: v for k, v in doc.items() if k != "text"}
        ids = self.tokenizer.encoding.encode_ordinary(doc["text"] or "")
        if not ids:
            return reject({**out, "input_ids": None, "n_tokens": 0}, "empty", "no tokens")
        key = hashlib.sha1(f"{self.config.seed}\0{doc['id']}".encode()).hexdigest()
        split = "valid" if int(key[:8], 16) < self.config.valid_fraction * 0x1_0000_0000 else "train"
        ids.append(ENDOFTEXT_ID)
        return reject({**out, "input_ids": ids, "n_tokens": len(ids), "split": split, "shuffle_key": key}, None)


class Packer:
    """Greedy packing of segments into rows of `seq_len + 1` tokens (see the module docstring)."""

    def __init__(self, seq_len: int):
        self.width = seq_len + 1

    def pack(self, segments: Iterable[tuple[list[int], list[int]]]) -> Iterator[dict]:
        tokens, starts = [], []
        for seg_tokens, seg_starts in segments:
            pos = 0
            while pos < len(seg_tokens):
                if pos in seg_starts or not tokens:
                    starts.append(len(tokens))
                take = min(self._next_cut(seg_starts, pos, len(seg_tokens)), self.width - len(tokens))
                tokens += seg_tokens[pos:pos + take]
                pos += take
                if len(tokens) == self.width:
                    yield self._row(tokens, starts, partial=False)
                    tokens, starts = [], []
        if tokens:
            yield self._row(tokens, starts, partial=True)

    @staticmethod
    def _next_cut(starts: list[int], pos: int, end: int) -> int:
        """Tokens from `pos` to the next document start inside the segment (or its end)."""
        return min([s for s in starts if s > pos] + [end]) - pos

    @staticmethod
    def _row(tokens: list[int], starts: list[int], partial: bool) -> dict:
        return {"input_ids": tokens, "doc_starts": sorted(set(starts)), "n_tokens": len(tokens), "partial": partial}


def pack_groups(rows: Iterable[Doc], seq_len: int) -> Iterator[Doc]:
    """Packs rows sorted by (split, source): documents (`input_ids`) or partial rows (+ `doc_starts`).

    Streams: memory is one row of tokens, whatever the size of the partition.
    """
    packer = Packer(seq_len)
    for group, members in itertools.groupby(rows, key=lambda r: (r["split"], r["source"])):
        segments = ((r["input_ids"], r.get("doc_starts") or [0]) for r in members)
        yield from _label(packer.pack(segments), group)


def _label(rows: Iterator[dict], group: tuple[str, str]) -> Iterator[dict]:
    for row in rows:
        yield {"split": group[0], "source": group[1], **row}
