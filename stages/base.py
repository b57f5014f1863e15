"""The stage contract: pure per-record logic that runs on a Python list or through Spark.

A stage turns an iterable of document dicts into an iterable of document dicts. It declares the
columns it adds (`adds`, Arrow fields) and the columns it removes (`drops`), so the runner in
`pipeline/runner.py` can derive the output schema from the input schema. Every output row carries
`drop_reason` (None when kept) and `drop_detail` (free text for humans, e.g. an error message):
rejected documents are data, never silently lost.

Verdicts, one convention for every stage and check: a check (a `Filter`'s `verdict`, a quality rule's
`check`, any helper that judges) returns `Drop(reason, detail)` to reject the record, or None to keep
it. A stage that builds its rows itself marks each one with `keep(row)` or `drop(row, reason, detail)`,
or `judged(row, verdict)` to apply a check's answer; `reason` is a stable string (what `_stats.json`
counts), `detail` free text (the measured value, the error message).

Fault isolation: an exception raised while a stage handles one record (any `BaseException` but a
process exit or an interrupt, so a Rust panic counts) becomes that record's rejected row with
`drop_reason = "stage_error"` and the exception in `drop_detail`; the other records go on. Stages run
on chunks of records; when a chunk raises, its records are run again one by one so only the bad one
is rejected. A stage whose one input fans out into many rows (`fans_out`, an archive -> its pages)
runs record by record, keeping the rows it yielded before the error. The job fails only when errors
pass the recipe's `spark.max_error_fraction` (`pipeline/io.py`), so a real bug still stops a run.

    >>> from stages.base import Drop, Filter
    >>> class Short(Filter):
    ...     name = "short"
    ...     def verdict(self, doc):
    ...         return Drop("too_short", str(len(doc["text"]))) if len(doc["text"]) < 3 else None
    >>> [d["drop_reason"] for d in Short().run([{"text": "hello"}, {"text": "hi"}])]
    [None, 'too_short']
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, ClassVar, NamedTuple

import pyarrow as pa

Doc = dict[str, Any]


class Drop(NamedTuple):
    """A rejection: `reason` becomes the row's `drop_reason`, `detail` its `drop_detail`."""

    reason: str
    detail: str | None = None


# What every check answers: a Drop rejects the record, None keeps it.
Verdict = Drop | None

DROP_REASON, DROP_DETAIL = "drop_reason", "drop_detail"
VERDICT_FIELDS = (pa.field(DROP_REASON, pa.string()), pa.field(DROP_DETAIL, pa.string()))
STAGE_ERROR = "stage_error"
# Exceptions that end the process rather than describe a record: never turned into rows.
EXITS = (KeyboardInterrupt, SystemExit, GeneratorExit)
CHUNK_ROWS = 256


class Stage:
    """Base class: subclasses set `name`, `adds`, `drops` and override `process`."""

    name: ClassVar[str] = "stage"
    adds: ClassVar[tuple[pa.Field, ...]] = ()
    drops: ClassVar[tuple[str, ...]] = ()
    fans_out: ClassVar[bool] = False  # one input row may yield very many rows: isolate record by record

    def process(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        raise NotImplementedError

    def model_files(self) -> tuple[str, ...]:
        """Local files the stage opens inside tasks (models, tokenizer ranks): the runner ships them
        to cluster nodes, where `common.fs.shipped` finds them."""
        return ()

    def stream(self, docs: Iterable[Doc], chunk_rows: int = CHUNK_ROWS) -> Iterator[Doc]:
        """`process` with fault isolation and the verdict columns always present: what the Spark
        runner consumes. `chunk_rows` records are handed to `process` at a time."""
        if self.fans_out:
            rows = (row for doc in docs for row in self._isolated_stream(doc))
        else:
            rows = (row for chunk in chunked(docs, chunk_rows) for row in self._isolated(chunk))
        for row in rows:
            yield _with_verdict(row)

    def _isolated(self, chunk: list[Doc]) -> list[Doc]:
        """The chunk's output; when it raises, each record again alone (the bad ones as error rows)."""
        try:
            return list(self.process(chunk))
        except EXITS:
            raise
        except BaseException as err:  # noqa: BLE001 - any record error, Rust panics included
            if len(chunk) == 1:
                return [self.error_row(chunk[0], err)]
        return [row for doc in chunk for row in self._isolated([doc])]

    def _isolated_stream(self, doc: Doc) -> Iterator[Doc]:
        """One fan-out record's rows as they come; an error ends them with an error row."""
        try:
            yield from self.process([doc])
        except EXITS:
            raise
        except BaseException as err:  # noqa: BLE001
            yield self.error_row(doc, err)

    def error_row(self, doc: Doc, err: BaseException) -> Doc:
        """`doc` shaped like an output row of this stage, rejected as `stage_error`."""
        row = {k: v for k, v in doc.items() if k not in self.drops}
        row.update({f.name: doc.get(f.name) for f in self.adds})
        return drop(row, STAGE_ERROR, error_detail(self.name, err))

    def run(self, docs: Iterable[Doc]) -> list[Doc]:
        """Runs the stage on plain dicts and returns rows shaped like the Spark output."""
        return list(self.stream(docs))

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        """Input schema minus `drops`, with `adds` and the verdict columns replacing same-named fields."""
        added = [*self.adds, *VERDICT_FIELDS]
        replaced = set(self.drops) | {f.name for f in added}
        kept = [f for f in input_schema if f.name not in replaced]
        return pa.schema(kept + added)


class Mapper(Stage):
    """One document in, one document out; `map` returns it marked with `keep` or `drop`."""

    def map(self, doc: Doc) -> Doc:
        raise NotImplementedError

    def process(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        for doc in docs:
            yield self.map(doc)


class Filter(Stage):
    """Keeps or rejects each document unchanged: `verdict` returns a `Drop`, or None to keep."""

    def verdict(self, doc: Doc) -> Verdict:
        raise NotImplementedError

    def process(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        for doc in docs:
            yield judged(doc, self.verdict(doc))


class Identity(Filter):
    """Keeps every document: turns any table into a stage folder (see `pipeline.io.write_docs`)."""

    name = "identity"

    def verdict(self, doc: Doc) -> Verdict:
        return None


class BatchStage(Stage):
    """A stage vectorised over Arrow batches: `process_batch` returns the batch with its new columns
    (the verdict columns included). The runner calls it directly; `process` goes through it, so the
    list path gives the same rows."""

    def process_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        raise NotImplementedError

    def isolated_batches(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """`process_batch` with fault isolation: on an error each row again alone, bad rows rejected."""
        try:
            return [self.process_batch(batch)]
        except EXITS:
            raise
        except BaseException as err:  # noqa: BLE001
            if batch.num_rows == 1:
                row = self.error_row(batch.to_pylist()[0], err)
                return [pa.RecordBatch.from_pylist([row], schema=self.output_schema(batch.schema))]
        return [out for i in range(batch.num_rows) for out in self.isolated_batches(batch.slice(i, 1))]

    def process(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        docs = list(docs)
        if docs:
            yield from self.process_batch(pa.RecordBatch.from_pylist(docs)).to_pylist()

    def stream(self, docs: Iterable[Doc], chunk_rows: int = CHUNK_ROWS) -> Iterator[Doc]:
        for chunk in chunked(docs, chunk_rows):
            for out in self.isolated_batches(pa.RecordBatch.from_pylist(chunk)):
                yield from out.to_pylist()

    def with_columns(self, batch: pa.RecordBatch, added: dict[str, pa.Array]) -> pa.RecordBatch:
        """`batch` shaped to `output_schema`: dropped columns removed, `added` ones set."""
        schema = self.output_schema(batch.schema)
        columns = [added[f.name] if f.name in added else batch.column(f.name) for f in schema]
        return pa.RecordBatch.from_arrays(columns, schema=schema)


def keep(doc: Doc) -> Doc:
    """`doc` marked as kept (a copy: no `drop_reason`, no `drop_detail`)."""
    return {**doc, DROP_REASON: None, DROP_DETAIL: None}


def drop(doc: Doc, reason: str, detail: str | None = None) -> Doc:
    """`doc` marked as rejected (a copy) with a stable `reason` and free-text `detail`."""
    if not reason:
        raise ValueError("drop() needs a reason; use keep() to keep a record")
    return {**doc, DROP_REASON: reason, DROP_DETAIL: detail}


def judged(doc: Doc, verdict: Verdict) -> Doc:
    """`doc` marked with a check's answer: kept for None, rejected for a `Drop`."""
    return keep(doc) if verdict is None else drop(doc, *verdict)


def too_little_left(reason: str, text: str, rest: str, min_chars: int, min_fraction: float) -> Verdict:
    """The check of the stages that cut text out of a document (line and substring dedup): `reason` when
    `rest` is empty, shorter than `min_chars`, or below `min_fraction` of `text`'s length."""
    if len(rest) < max(min_chars, min_fraction * len(text), 1):
        return Drop(reason, f"{len(rest)} of {len(text)} chars left")
    return None


def chunked(docs: Iterable[Doc], size: int) -> Iterator[list[Doc]]:
    it = iter(docs)
    while chunk := list(islice(it, size)):
        yield chunk


def error_detail(stage: str, err: BaseException) -> str:
    """What a `stage_error` row says: the stage, the exception type and its message (bounded)."""
    return f"{stage}: {type(err).__name__}: {err}"[:500]


def _with_verdict(doc: Doc) -> Doc:
    """A row a stage left unmarked is kept: the verdict columns are always present."""
    doc.setdefault(DROP_REASON, None)
    doc.setdefault(DROP_DETAIL, None)
    return doc
