"""The one runner: applies a pure stage (`stages.base.Stage`) to a DataFrame through Arrow batches.

    judged = runner.apply(df, Extractor(config))   # kept and rejected rows, with drop_reason

The output schema is the stage's `output_schema(input schema)`, so columns a stage does not know
are carried through. Output rows are re-batched to `batch_rows` so a stage that fans out (one WARC
file -> thousands of pages) never holds a whole file's rows in memory.

Per-record fault isolation (`stages.base`): an exception on one record becomes a rejected row
(`stage_error`), never a failed task; `pipeline.io.write_split` fails the job, before anything is
committed, when such rows pass `spark.max_error_fraction` of the input.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import pyarrow as pa

from pipeline import schemas
from pipeline.spark import ship_files
from stages.base import BatchStage, Stage


def apply(df, stage: Stage, batch_rows: int = 256, min_partitions: int | None = None):
    """Returns `df` transformed by `stage` (lazy; nothing runs until the output is written).

    Inputs with fewer partitions than `min_partitions` (default: twice Spark's default parallelism,
    so one slow partition does not leave a core idle) are spread first; a stage over the pages of one
    big WARC then uses every core.
    """
    ship_files(df.sparkSession, stage.model_files())
    out_arrow = stage.output_schema(schemas.arrow(df.schema))
    wanted = min_partitions or 2 * df.sparkSession.sparkContext.defaultParallelism
    if df.rdd.getNumPartitions() < wanted:
        df = df.repartition(wanted)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        if isinstance(stage, BatchStage):
            yield from (out for batch in batches for out in stage.isolated_batches(batch))
            return
        rows = stage.stream((doc for batch in batches for doc in batch.to_pylist()), batch_rows)
        while chunk := list(islice(rows, batch_rows)):
            yield pa.RecordBatch.from_pylist(chunk, schema=out_arrow)

    return df.mapInArrow(run, schemas.spark(out_arrow))
