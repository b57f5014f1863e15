"""Shard files written by the tasks themselves with pyarrow (`tokenize.writer = "arrow"`, the default).

    write_packed(ordered_docs, tmp, TokenizeConfig())   # -> <tmp>/train/*.parquet, <tmp>/valid/*.parquet

Each task tokenizes its sorted partition of texts, packs it and writes the full rows straight to Parquet
with pyarrow (zstd, row groups of `row_group_rows`, files of at most `file_rows`), then hands back only
the names of its files, its short rows and how many of its documents had no tokens. The driver
re-packs the short rows, writes them the same way and deletes any file no successful task reported (a failed attempt's). Spark never converts the token lists into its
own rows or encodes them through its Parquet writer, which took most of the job's JVM time, and the
token lists never cross from Python to the JVM and back (the shuffle before moves the texts).

It all happens inside the stage's hidden temporary folder, so the commit stays the usual one (see
pipeline/io.py). pyarrow reaches local paths, `hdfs://` (libhdfs), `s3://` / `s3a://` and `gs://`; for
other file systems set `tokenize.writer = "spark"` (Spark's writer, slower).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schemas
from stages.tokenize.packing import SHARD_SCHEMA, DocEncoder, TokenizeConfig, pack_batches

SPLITS = ("train", "valid")
# a task's rows: a short row, a written file's name (`file`), or its counts of documents with no tokens
# (`empty`) and of documents the encoder failed on (`encode_error`)
RESULT_SCHEMA = pa.schema([*SHARD_SCHEMA, pa.field("file", pa.string()), pa.field("empty", pa.int64()),
                           pa.field("encode_error", pa.int64())])
SCHEMES = {"hdfs": "hdfs", "viewfs": "viewfs", "s3": "s3", "s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs"}


def arrow_filesystem(path: str):
    """(pyarrow file system, path inside it) for a local path or a URI pyarrow can write."""
    from common import fs

    scheme = path.split("://", 1)[0] if "://" in path else ""
    if scheme and scheme not in SCHEMES:
        raise ValueError(f"tokenize.writer = 'arrow' cannot write {scheme}:// paths ({path}); "
                         "set tokenize.writer = 'spark' to use Spark's Parquet writer")
    return fs.filesystem(path)   # the one place URIs become pyarrow file systems (S3 endpoint from the env)


class ShardWriter:
    """Rows of SHARD_SCHEMA into `<root>/<split>/<prefix>-NNN.zstd.parquet`: row groups of exactly
    `row_group_rows` rows (the last of a file may be shorter), at most `file_rows` rows a file."""

    def __init__(self, filesystem, root: str, prefix: str, config: TokenizeConfig):
        self.fs, self.root, self.prefix, self.config = filesystem, root, prefix, config
        self.pending: dict[str, list[pa.RecordBatch]] = {}
        self.open: dict[str, tuple[pq.ParquetWriter, int]] = {}  # split -> (writer, rows in the file)
        self.names: list[str] = []

    def write(self, batch: pa.RecordBatch) -> None:
        """Adds rows of one split (what `pack_batches` yields: one (split, source) group a batch)."""
        if batch.num_rows:
            split = batch.column("split")[0].as_py()
            self.pending.setdefault(split, []).append(batch)
            if sum(b.num_rows for b in self.pending[split]) >= self.config.row_group_rows:
                self._flush(split, final=False)

    def close(self) -> list[str]:
        """Writes what is pending, closes the files; returns their names relative to the root."""
        for split in list(self.pending):
            self._flush(split, final=True)
        for writer, _ in self.open.values():
            writer.close()
        self.open = {}
        return self.names

    def _flush(self, split: str, final: bool) -> None:
        """Writes whole row groups of the pending rows (and, when final, the rest)."""
        table, start, size = pa.Table.from_batches(self.pending.pop(split), SHARD_SCHEMA), 0, self.config.row_group_rows
        while table.num_rows - start >= size or (final and start < table.num_rows):
            writer, rows = self._writer(split)
            n = min(size, table.num_rows - start, self.config.file_rows - rows)
            writer.write_table(table.slice(start, n), row_group_size=n)
            self.open[split], start = (writer, rows + n), start + n
        if start < table.num_rows:
            self.pending[split] = table.slice(start).to_batches()

    def _writer(self, split: str) -> tuple[pq.ParquetWriter, int]:
        writer, rows = self.open.get(split, (None, 0))
        if writer is not None and rows < self.config.file_rows:
            return writer, rows
        if writer is not None:
            writer.close()
        name = f"{split}/{self.prefix}-{sum(n.startswith(split + '/') for n in self.names):03d}.zstd.parquet"
        self.names.append(name)
        writer = pq.ParquetWriter(f"{self.root}/{name}", SHARD_SCHEMA, filesystem=self.fs, compression="zstd",
                                  use_dictionary=["split", "source"])  # token ids: dictionaries only cost time
        return writer, 0


def _task_packer(config: TokenizeConfig, tmp: str):
    """The mapInArrow function: tokenizes and packs a sorted partition of texts, writes its full rows,
    returns the file names, the short rows and the count of empty documents."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx, encoder = TaskContext.get(), DocEncoder(config)
        prefix = f"part-{ctx.partitionId():05d}-t{ctx.taskAttemptId()}"   # unique per attempt
        writer = ShardWriter(*arrow_filesystem(tmp), prefix, config)
        for batch in pack_batches(encoder.encoded(batches), config.seq_len):
            if batch.num_rows and not batch.column("partial")[0].as_py():
                writer.write(batch)
            elif batch.num_rows:
                yield _short_rows(batch)
        names = writer.close()
        report = [*({"split": n.split("/")[0], "file": n} for n in names),
                  {"empty": encoder.empty, "encode_error": encoder.encode_errors}]
        yield pa.RecordBatch.from_pylist(report, RESULT_SCHEMA)
    return run


def _short_rows(batch: pa.RecordBatch) -> pa.RecordBatch:
    nulls = [pa.nulls(batch.num_rows, pa.string()), *[pa.nulls(batch.num_rows, pa.int64())] * 2]   # no file, counts
    return pa.RecordBatch.from_arrays([*batch.columns, *nulls], schema=RESULT_SCHEMA)


def write_packed(ordered, tmp: str, config: TokenizeConfig) -> tuple[list[dict], dict[str, int], dict[str, int]]:
    """Sorted texts (split, source, text) -> `<tmp>/{train,valid}/`: the tasks tokenize and write the full
    rows, the driver the re-packed short rows; files of failed attempts are removed. Returns the rows,
    tokens and documents per (split, source), read back from the files, the files per split and the
    dropped documents per reason (`empty`, `encode_error`)."""
    filesystem, root = arrow_filesystem(tmp)
    for split in SPLITS:
        filesystem.create_dir(f"{root}/{split}")
    result = ordered.mapInArrow(_task_packer(config, tmp), schemas.spark(RESULT_SCHEMA)).toArrow()
    written = {n for n in result.column("file").to_pylist() if n}
    written |= _write_tails(filesystem, root, result.drop_columns(["file", "empty", "encode_error"]), config)
    for split in SPLITS:   # an empty split still gets a file with the schema
        if not any(n.startswith(split + "/") for n in written):
            written.add(f"{split}/part-empty.zstd.parquet")
            pq.write_table(SHARD_SCHEMA.empty_table(), f"{root}/{split}/part-empty.zstd.parquet",
                           filesystem=filesystem, compression="zstd")
    _remove_unreported(filesystem, root, written)
    files = {split: sum(n.startswith(split + "/") for n in written) for split in SPLITS}
    dropped = {reason: int(pc.sum(result.column(reason)).as_py() or 0) for reason in ("empty", "encode_error")}
    return read_counts(filesystem, root, sorted(written)), files, dropped


def read_counts(filesystem, root: str, names: list[str]) -> list[dict]:
    """split, source, rows, tokens, documents per group of the given shard files (small columns only)."""
    columns = ["split", "source", "n_tokens", "n_docs"]
    table = pa.concat_tables([pq.read_table(f"{root}/{n}", columns=columns, filesystem=filesystem) for n in names])
    groups = table.group_by(["split", "source"]).aggregate([("n_tokens", "count"), ("n_tokens", "sum"),
                                                            ("n_docs", "sum")])
    renamed = {"n_tokens_count": "rows", "n_tokens_sum": "tokens", "n_docs_sum": "documents"}
    return [{renamed.get(k, k): v for k, v in row.items()} for row in groups.to_pylist()]


def _write_tails(filesystem, root: str, rows: pa.Table, config: TokenizeConfig) -> set[str]:
    """The tasks' short rows re-packed in a fixed order (at most one short row per (split, source) stays)
    and written as `part-tails-*`; returns the file names."""
    tails = sorted((r for r in rows.to_pylist() if r["input_ids"] is not None),
                   key=lambda r: (r["split"], r["source"], r["n_tokens"], r["input_ids"]))
    writer = ShardWriter(filesystem, root, "part-tails", config)
    if tails:
        for batch in pack_batches([pa.RecordBatch.from_pylist(tails, SHARD_SCHEMA)], config.seq_len):
            writer.write(batch)
    return set(writer.close())


def _remove_unreported(filesystem, root: str, kept: set[str]) -> None:
    """Deletes shard files no successful task attempt reported (left by failed or killed attempts)."""
    from pyarrow import fs

    for split in SPLITS:
        for info in filesystem.get_file_info(fs.FileSelector(f"{root}/{split}")):
            if info.type == fs.FileType.File and f"{split}/{info.base_name}" not in kept:
                filesystem.delete_file(info.path)
