"""Row schemas as Arrow / Spark twins. Arrow is the source of truth; Spark types are derived.

Stages declare the Arrow fields they add (`stages/*.py`); the schemas of the stage folders on disk
are built here from them, and `spark(schema)` gives the Spark `StructType` twin for `mapInArrow`
and `createDataFrame`.
"""

from __future__ import annotations

import pyarrow as pa

from stages.base import VERDICT_FIELDS
from stages.extract import Extractor
from stages.warc import PAGE_FIELDS

PATHS = pa.schema([pa.field("path", pa.string())])
PAGE = pa.schema([*PAGE_FIELDS, *VERDICT_FIELDS])  # ingest/kept and ingest/rejected
DOC = Extractor().output_schema(PAGE)  # extract/kept: text documents


def spark(schema: pa.Schema):
    """The Spark `StructType` twin of an Arrow schema."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def arrow(struct) -> pa.Schema:
    """The Arrow twin of a Spark `StructType`."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(struct)
