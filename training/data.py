"""Shard loader for pretraining: packed Parquet rows in, [B, T] tensors with document ids out.

    data = ShardData("runs/demo/shards", "train")          # reads manifest.json and the Parquet footers
    loader = StepLoader(data, micro_batch=2, grad_accum=4, rank=0, world=1, seed=0)
    loader.load_state_dict({"rows_seen": 64, ...})          # resume: the next row is row 64 of the stream
    for micro in loader.next_step():                        # grad_accum micro-batches of one global step
        micro.input_ids, micro.targets, micro.doc_ids       # [B, T] each; targets are -100 on padding

The stream is world-size invariant: epoch e visits the row groups of every file in an order shuffled
by (seed, e), rows inside a row group in order. Global step s takes stream rows
[s * G, (s + 1) * G) with G = micro_batch * grad_accum * world; rank r takes the r-th contiguous
slice of G / world rows and cuts it into micro-batches. So the position is one integer (rows seen),
resume is exact (nothing repeated or skipped), N processes see exactly the rows one process would,
and a run may resume on another world size. Each rank decodes only the row groups that hold its rows
(one row group cached at a time). Rows shorter than `row_width` (the `partial` row per source) are
padded and their padding is ignored by the loss. The folder may be a URI (`s3://`, `s3a://`, `gs://`,
`hdfs://`: common/fs.py), read row group by row group like a local one.

Bad shards are user errors (`ShardError`, one line naming the file): a missing or malformed
manifest, a file that is not Parquet, a row group that cannot be decoded, token ids outside the
model's vocabulary (checked per row group as it is read, when `vocab_size` is set).
"""
from __future__ import annotations

import bisect
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from common import fs
from common.errors import UserError

IGNORE = -100   # target id that cross_entropy(ignore_index=-100) skips


@dataclass
class Batch:
    input_ids: torch.Tensor   # [B, T] int64, row[:-1] (0 on padding)
    targets: torch.Tensor     # [B, T] int64, row[1:], IGNORE on padding
    doc_ids: torch.Tensor     # [B, T] int64, document index inside the row (-1 on padding)

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in (self.input_ids, self.targets, self.doc_ids)))

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())

    def attention_doc_ids(self) -> torch.Tensor | None:
        """doc_ids, or None when no row holds two documents: plain causal attention (and positions
        0..T-1) is then the same on every position that has a target, and takes SDPA's fast path."""
        real = self.targets != IGNORE
        big = torch.iinfo(self.doc_ids.dtype).max
        lo = torch.where(real, self.doc_ids, big).amin(1)
        hi = torch.where(real, self.doc_ids, -big).amax(1)
        return self.doc_ids if bool((real.any(1) & (lo != hi)).any()) else None


class ShardError(UserError, ValueError):
    """A shards folder or file the trainer cannot use; the message names it."""


class ShardData:
    """One split of a shards folder: the manifest, and every row group as (file, index, rows)."""

    def __init__(self, root: str | Path, split: str, vocab_size: int | None = None):
        self.root, self.vocab_size = fs.as_path(root), vocab_size
        self.manifest = read_manifest(self.root)
        self.row_width = int(self.manifest["row_width"])
        self.files = split_files(self.root, split)
        self.groups = [(f, i, meta.row_group(i).num_rows) for f in self.files
                       for meta in [_footer(f)] for i in range(meta.num_row_groups)]
        self.groups = [g for g in self.groups if g[2] > 0]
        self.rows = sum(g[2] for g in self.groups)
        if not self.rows:
            raise ShardError(f"no rows in {fs.join(self.root, split)}")
        self._cached: tuple | None = None

    def read_group(self, g: int) -> tuple[list, list]:
        """(input_ids, doc_starts) lists of row group g; the last one read is kept."""
        if self._cached is None or self._cached[0] != g:
            path, index, _ = self.groups[g]
            try:
                table = _parquet(path).read_row_group(index, columns=["input_ids", "doc_starts"])
            except (OSError, pa.ArrowException, KeyError) as err:
                raise ShardError(f"{path}: row group {index} cannot be read ({type(err).__name__}: {err})") from None
            self._check_ids(table.column("input_ids"), f"{path} row group {index}")
            self._cached = (g, table.column("input_ids").to_pylist(), table.column("doc_starts").to_pylist())
        return self._cached[1], self._cached[2]

    def _check_ids(self, ids: pa.ChunkedArray, where: str) -> None:
        if self.vocab_size is None:
            return
        bounds = pc.min_max(pc.list_flatten(ids))
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        if lo is not None and (lo < 0 or hi >= self.vocab_size):
            bad = lo if lo < 0 else hi
            raise ShardError(f"{where}: token id {bad} is outside the model's vocabulary "
                             f"(vocab_size {self.vocab_size}): shards and model do not match")


def read_rows(root: str | Path, split: str, columns: list[str] | None = None, limit: int = 0) -> list[dict]:
    """The rows of `<root>/<split>/*.parquet` as dicts (none when the split has no files); a missing
    `root` or a file that cannot be read is a `ShardError` naming it."""
    if not fs.is_dir(root):
        raise ShardError(f"{root} is not a shards folder (no such folder)")
    rows = []
    for path in split_files(root, split):
        try:
            rows += fs.read_table(path, columns=columns).to_pylist()
        except (OSError, pa.ArrowException, KeyError) as err:
            raise ShardError(f"{path} cannot be read ({type(err).__name__}: {err})") from None
    return rows[:limit] if limit else rows


def split_files(root: str | Path, split: str) -> list[str]:
    """The Parquet files of `<root>/<split>` (a folder or a URI), sorted; none when there is no such split."""
    return fs.glob(fs.join(root, split), "*.parquet")


def read_manifest(root: str | Path) -> dict:
    manifest = fs.join(root, "manifest.json")
    if not fs.is_file(manifest):
        raise ShardError(f"{manifest} not found: is {root} a shards folder (jobs.tokenize)?")
    try:
        data = json.loads(fs.read_bytes(manifest).decode("utf-8"))
        int(data["row_width"])
    except (ValueError, KeyError, TypeError) as err:
        raise ShardError(f"{manifest} is not a shards manifest ({type(err).__name__}: {err})") from None
    return data


def _parquet(path: str) -> pq.ParquetFile:
    where, inner = fs.filesystem(path)
    return pq.ParquetFile(inner, filesystem=where)


def _footer(path: str) -> pq.FileMetaData:
    try:
        return _parquet(path).metadata
    except (OSError, pa.ArrowException) as err:
        raise ShardError(f"{path} is not a readable Parquet file ({err})") from None


def encode_rows(rows: list[tuple[list[int], list[int]]], row_width: int) -> Batch:
    """Packed rows (ids, doc_starts) -> Batch of T = row_width - 1 positions."""
    T = row_width - 1
    ids = np.zeros((len(rows), row_width), dtype=np.int64)
    doc = np.full((len(rows), T), -1, dtype=np.int64)
    targets = np.full((len(rows), T), IGNORE, dtype=np.int64)
    for b, (row, starts) in enumerate(rows):
        n = len(row)
        ids[b, :n] = row
        targets[b, :n - 1] = ids[b, 1:n]
        # document index of position t = number of doc starts <= t (0 before the first start)
        doc[b, :n - 1] = np.searchsorted(np.asarray(starts, dtype=np.int64), np.arange(n - 1), side="right")
    return Batch(torch.from_numpy(ids[:, :-1].copy()), torch.from_numpy(targets), torch.from_numpy(doc))


class StepLoader:
    """Micro-batches of the global training stream for one rank; state = rows seen (see module doc)."""

    def __init__(self, data: ShardData, micro_batch: int, grad_accum: int, rank: int = 0, world: int = 1,
                 seed: int = 0, shuffle: bool = True):
        self.data, self.micro, self.accum = data, micro_batch, grad_accum
        self.rank, self.world, self.seed, self.shuffle = rank, world, seed, shuffle
        self.global_batch = micro_batch * grad_accum * world
        self.rows_seen = 0
        self._epoch_cache: tuple[int, list[int], list[int]] | None = None

    def state_dict(self) -> dict:
        return {"rows_seen": self.rows_seen, "seed": self.seed, "shuffle": self.shuffle,
                "rows_per_epoch": self.data.rows, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        if state["rows_per_epoch"] != self.data.rows or state["seed"] != self.seed:
            raise ValueError(f"data changed since the checkpoint: {state} vs rows={self.data.rows} seed={self.seed}")
        self.rows_seen = int(state["rows_seen"])

    @property
    def epoch(self) -> float:
        return self.rows_seen / self.data.rows

    def next_step(self) -> list[Batch]:
        """The grad_accum micro-batches of this rank for the next global step; advances the position."""
        start = self.rows_seen + self.rank * self.micro * self.accum
        micro = [encode_rows([self.row(start + m * self.micro + i) for i in range(self.micro)], self.data.row_width)
                 for m in range(self.accum)]
        self.rows_seen += self.global_batch
        return micro

    def row(self, i: int) -> tuple[list[int], list[int]]:
        """Row i of the infinite stream (epochs concatenated)."""
        epoch, pos = divmod(i, self.data.rows)
        order, offsets = self._epoch_order(epoch)
        k = bisect.bisect_right(offsets, pos) - 1
        ids, starts = self.data.read_group(order[k])
        return ids[pos - offsets[k]], starts[pos - offsets[k]]

    def _epoch_order(self, epoch: int) -> tuple[list[int], list[int]]:
        """Row-group order of an epoch and the stream offset where each group begins."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            order = list(range(len(self.data.groups)))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            offsets = np.cumsum([0] + [self.data.groups[g][2] for g in order[:-1]]).tolist()
            self._epoch_cache = (epoch, order, offsets)
        return self._epoch_cache[1], self._epoch_cache[2]


def eval_batches(data: ShardData, batch: int, max_rows: int, rank: int = 0, world: int = 1):
    """Validation rows r, r + world, ... (in file order, at most max_rows in all; 0 = all) in batches."""
    n = data.rows if max_rows <= 0 else min(max_rows, data.rows)
    mine, rows = list(range(rank, n, world)), []
    offsets = np.cumsum([0] + [g[2] for g in data.groups[:-1]]).tolist()
    for i in mine:
        k = bisect.bisect_right(offsets, i) - 1
        ids, starts = data.read_group(k)
        rows.append((ids[i - offsets[k]], starts[i - offsets[k]]))
        if len(rows) == batch:
            yield encode_rows(rows, data.row_width)
            rows = []
    if rows:
        yield encode_rows(rows, data.row_width)
