from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline import schemas
from stages.extract import Extractor
from stages.warc import WarcReader


def test_stage_schemas_derive_from_their_input():
    assert WarcReader().output_schema(schemas.PATHS) == schemas.PAGE
    doc = schemas.DOC
    assert "html" not in doc.names and doc.field("text").type == pa.string()
    assert doc.names[-2:] == ["drop_reason", "drop_detail"]
    assert Extractor().output_schema(pa.schema([pa.field("id", pa.string()), pa.field("extra", pa.int8())])).names == [
        "id", "extra", "text", "title", "date", "host", "charset", "drop_reason", "drop_detail"]


@pytest.mark.parametrize("schema", [schemas.PATHS, schemas.PAGE, schemas.DOC])
def test_spark_and_arrow_twins_round_trip(schema):
    assert schemas.arrow(schemas.spark(schema)) == schema
