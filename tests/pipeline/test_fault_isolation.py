"""Per-record fault isolation: a record whose stage raises becomes a `stage_error` row, never a failed
task; the job fails (before committing) only above `spark.max_error_fraction`."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from common.errors import JobFailed
from pipeline import io, runner, schemas
from stages.base import STAGE_ERROR, BatchStage, Filter, Mapper, Stage


class Panic(BaseException):
    """Like pyo3's PanicException (a Rust panic inside tiktoken): a BaseException, not an Exception."""


class Fragile(Mapper):
    """Raises on every n % 10 == 3 (a Python error) and n % 10 == 7 (a 'Rust panic')."""

    name = "fragile"
    adds = (pa.field("double", pa.int64()),)

    def map(self, doc):
        if doc["n"] % 10 == 3:
            raise ValueError(f"bad record {doc['n']}")
        if doc["n"] % 10 == 7:
            raise Panic("called `Option::unwrap()` on a `None` value")
        return {**doc, "double": 2 * doc["n"]}


class Exploding(Filter):
    name = "exploding"

    def __init__(self, exc: BaseException):
        self.exc = exc

    def verdict(self, doc):
        raise self.exc


class FanOut(Stage):
    """One row -> n rows, raising after the third when n > 3 (an archive broken in the middle)."""

    name = "fanout"
    fans_out = True
    adds = (pa.field("k", pa.int64()),)

    def process(self, docs):
        for doc in docs:
            for k in range(doc["n"]):
                if k == 3:
                    raise OSError("archive ends here")
                yield {**doc, "k": k}


class Vectorised(BatchStage):
    name = "vectorised"
    adds = (pa.field("inverse", pa.float64()),)

    def process_batch(self, batch):
        n = batch.column("n")
        if pc.any(pc.equal(n, 0)).as_py():
            raise ZeroDivisionError("division by zero")
        none = pa.nulls(batch.num_rows, pa.string())
        return self.with_columns(batch, {"inverse": pc.divide(1.0, pc.cast(n, pa.float64())),
                                         "drop_reason": none, "drop_detail": none})


def docs(count):
    return [{"id": str(i), "n": i} for i in range(count)]


def test_a_raising_record_becomes_a_rejected_row_and_the_others_go_on():
    rows = Fragile().run(docs(20))
    assert [r["id"] for r in rows] == [str(i) for i in range(20)]   # every record, in order
    errors = {int(r["id"]): r["drop_detail"] for r in rows if r["drop_reason"] == STAGE_ERROR}
    assert sorted(errors) == [3, 7, 13, 17]
    assert errors[3] == "fragile: ValueError: bad record 3" and errors[7].startswith("fragile: Panic: called")
    assert all(r["double"] == 2 * r["n"] for r in rows if r["drop_reason"] is None)
    assert all(r["double"] is None for r in rows if r["drop_reason"])


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()])
def test_process_exits_and_interrupts_are_not_swallowed(exc):
    with pytest.raises(type(exc)):
        Exploding(exc).run(docs(2))


def test_a_fan_out_stage_keeps_the_rows_before_the_error():
    rows = FanOut().run([{"id": "a", "n": 2}, {"id": "b", "n": 5}, {"id": "c", "n": 1}])
    assert [(r["id"], r["k"], r["drop_reason"]) for r in rows] == [
        ("a", 0, None), ("a", 1, None), ("b", 0, None), ("b", 1, None), ("b", 2, None),
        ("b", None, STAGE_ERROR), ("c", 0, None)]


def test_a_batch_stage_isolates_the_bad_row():
    rows = Vectorised().run(docs(5))
    assert [r["drop_reason"] for r in rows] == [STAGE_ERROR, None, None, None, None]
    assert [r["inverse"] for r in rows[1:]] == [1.0, 0.5, 1 / 3, 0.25]


# ---------------------------------------------------------------- through Spark


def numbers(spark, count: int):
    schema = pa.schema([pa.field("id", pa.string()), pa.field("n", pa.int64())])
    return spark.createDataFrame([(str(i), i) for i in range(count)], schemas.spark(schema))


def limit(fraction: float) -> dict:
    return {"config": {"spark": {"max_error_fraction": fraction}}}


@pytest.mark.spark
def test_errors_below_the_limit_are_counted_rows(spark, tmp_path):
    out = str(tmp_path / "fragile")
    stats = io.write_split(runner.apply(numbers(spark, 100), Fragile(), batch_rows=7), out, stage="fragile",
                           config=limit(0.25))
    assert stats["kept"] == 80 and stats["by_reason"] == {STAGE_ERROR: 20}
    details = {r["drop_detail"] for r in io.read_stage(spark, out, "rejected").collect()}
    assert "fragile: ValueError: bad record 93" in details and any("Panic" in d for d in details)
    rows = Fragile().run(docs(100))   # the list path gives the same rows
    assert sum(r["drop_reason"] == STAGE_ERROR for r in rows) == 20


@pytest.mark.spark
def test_errors_above_the_limit_fail_the_job_and_commit_nothing(spark, tmp_path):
    out = tmp_path / "fragile"
    with pytest.raises(JobFailed, match=r"20 of 100 records raised errors .*max_error_fraction = 0.1.*ValueError"):
        io.write_split(runner.apply(numbers(spark, 100), Fragile()), str(out), stage="fragile", config=limit(0.1))
    assert not (out / "_SUCCESS").exists() and not list(tmp_path.glob(".fragile.tmp-*"))
    with pytest.raises(io.StageNotReady):
        io.read_stage(spark, str(out))
