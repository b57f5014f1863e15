"""WARC / WARC.gz / WET / ARC reading: one row per archive record, kept or rejected with a reason.

`WarcReader` is a stage whose input rows are `{"path": ...}` (local path, `file:`, `hdfs://`,
`s3a://`); it yields one row per record that warcio sees, plus one row per broken or unreadable
file. Kept rows are HTML pages (WARC `response` with status 200 and an HTML content type, or an HTML
`resource` record) and WET `conversion` records (plain text, no HTML). Everything else is rejected
with a stable `drop_reason`:

| reason             | what                                                                 |
|--------------------|----------------------------------------------------------------------|
| `record_type`      | warcinfo, request, metadata, revisit, ... (detail: the type)         |
| `http_status`      | status not in `keep_statuses` (detail: the status, or `missing`)     |
| `content_type`     | not an accepted content type (detail: the type)                      |
| `too_large`        | payload over `max_payload_bytes`                                     |
| `truncated_record` | the file ends before the record's declared Content-Length            |
| `broken_file`      | warcio cannot go on reading the file (detail: the error)             |
| `unreadable_file`  | the file cannot be opened                                            |

Run on local files: `WarcReader().run([{"path": "x.warc.gz"}])`; the Spark job is `jobs/ingest.py`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import pyarrow as pa
from warcio.archiveiterator import ArchiveIterator
from warcio.recordloader import ArcWarcRecord

from stages.base import Doc, Stage, reject
from stages.fs import open_binary

log = logging.getLogger(__name__)

PAGE_FIELDS = (
    pa.field("id", pa.string()),
    pa.field("url", pa.string()),
    pa.field("fetch_time", pa.string()),
    pa.field("status", pa.int32()),
    pa.field("content_type", pa.string()),
    pa.field("charset", pa.string()),
    pa.field("html", pa.binary()),
    pa.field("text", pa.string()),
    pa.field("source", pa.string()),
    pa.field("warc_file", pa.string()),
    pa.field("warc_offset", pa.int64()),
)


@dataclass(frozen=True)
class IngestConfig:
    source: str = "web"  # value of the `source` column (upsampling weights key on it)
    content_types: tuple[str, ...] = ("text/html", "application/xhtml+xml")
    keep_statuses: tuple[int, ...] = (200,)
    max_payload_bytes: int = 8_000_000  # larger pages are rejected as `too_large`
    keep_wet: bool = True  # keep WET `conversion` records as text rows
    manifest_prefix: str = ""  # prepended to relative paths listed in a manifest file


class WarcReader(Stage):
    """Reads archive files named by `path` rows into page rows (see the module docstring)."""

    name = "ingest"
    adds = PAGE_FIELDS
    drops = ("path",)

    def __init__(self, config: IngestConfig = IngestConfig()):
        self.config = config

    def process(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        for doc in docs:
            yield from self.read_file(doc["path"])

    def read_file(self, path: str) -> Iterator[Doc]:
        try:
            stream = open_binary(path)
        except OSError as err:
            yield _file_error(path, 0, "unreadable_file", err)
            return
        with stream:
            yield from self._records(path, stream)

    def _records(self, path: str, stream: IO[bytes]) -> Iterator[Doc]:
        records = ArchiveIterator(stream, arc2warc=True)
        offset = 0
        try:
            for record in records:
                row = self.to_row(record, path)  # reads the payload first: warcio's offset call skips it
                offset = row["warc_offset"] = records.get_record_offset()
                row["id"] = _row_id(row, path, offset)
                yield row
        except Exception as err:  # warcio raises several types for corrupt input
            log.warning("broken archive %s after offset %d: %s", path, offset, err)
            yield _file_error(path, offset, "broken_file", err)  # offset: the last good record

    def to_row(self, record: ArcWarcRecord, path: str) -> Doc:
        """Turns one record into a kept page row or a rejected row with a reason (no id, offset yet)."""
        row = _metadata(record, path, self.config.source)
        reason, detail = self._judge(record, row)
        if reason is None:
            payload, complete = _read_payload(record, self.config.max_payload_bytes)
            reason, detail = _payload_verdict(payload, complete, self.config.max_payload_bytes)
            if reason is None:
                _set_payload(row, record.rec_type, payload)
        return reject(row, reason, detail)

    def _judge(self, record: ArcWarcRecord, row: Doc) -> tuple[str | None, str | None]:
        if record.rec_type == "conversion" and self.config.keep_wet:
            return None, None
        if record.rec_type not in ("response", "resource"):
            return "record_type", record.rec_type
        if record.rec_type == "response" and row["status"] not in self.config.keep_statuses:
            return "http_status", "missing" if row["status"] is None else str(row["status"])
        if row["content_type"] not in self.config.content_types:
            return "content_type", row["content_type"] or "missing"
        return None, None


def _metadata(record: ArcWarcRecord, path: str, source: str) -> Doc:
    headers = record.http_headers if record.rec_type == "response" else None
    mime = headers.get_header("Content-Type") if headers else record.rec_headers.get_header("Content-Type")
    content_type, charset = parse_content_type(mime)
    return {
        "url": clean_uri(record.rec_headers.get_header("WARC-Target-URI")),
        "fetch_time": record.rec_headers.get_header("WARC-Date"),
        "status": _status(headers),
        "content_type": content_type,
        "charset": charset,
        "html": None,
        "text": None,
        "source": source,
        "warc_file": path,
        "warc_offset": None,
    }


def _status(headers) -> int | None:
    code = headers.get_statuscode() if headers else None
    return int(code) if code and code.strip().isdigit() else None


def _read_payload(record: ArcWarcRecord, limit: int) -> tuple[bytes, bool]:
    """Reads at most limit + 1 bytes; `complete` is False when the file ends inside the record."""
    payload = record.content_stream().read(limit + 1)
    if len(payload) <= limit:
        record.raw_stream.read()  # drain so the declared length can be checked
    remaining = getattr(record.raw_stream, "limit", 0)
    return payload, len(payload) > limit or remaining == 0


def _payload_verdict(payload: bytes, complete: bool, limit: int) -> tuple[str | None, str | None]:
    if len(payload) > limit:
        return "too_large", f">{limit} bytes"
    if not complete:
        return "truncated_record", f"file ends inside the record after {len(payload)} payload bytes"
    return None, None


def _set_payload(row: Doc, rec_type: str, payload: bytes) -> None:
    if rec_type == "conversion":
        row["text"] = payload.decode("utf-8", errors="replace")
    else:
        row["html"] = payload


def _row_id(row: Doc, path: str, offset: int) -> str:
    """Stable id: a hash of URL, fetch time and payload for pages, of file and offset otherwise."""
    h = hashlib.sha1()
    if row["html"] is not None or row["text"] is not None:
        for part in (row["url"] or "", row["fetch_time"] or ""):
            h.update(part.encode() + b"\0")
        h.update(row["html"] if row["html"] is not None else row["text"].encode())
    else:
        h.update(f"{path}\0{offset}".encode())
    return h.hexdigest()[:24]


def _file_error(path: str, offset: int, reason: str, err: Exception) -> Doc:
    row = {f.name: None for f in PAGE_FIELDS}
    row.update(warc_file=path, warc_offset=offset)
    row["id"] = hashlib.sha1(f"{path}\0{offset}\0{reason}".encode()).hexdigest()[:24]
    return reject(row, reason, f"{type(err).__name__}: {str(err).strip()[:500]}")


def parse_content_type(value: str | None) -> tuple[str | None, str | None]:
    """`'text/html; charset=UTF-8'` -> `('text/html', 'utf-8')`."""
    if not value:
        return None, None
    mime, *params = value.split(";")
    charset = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip():
            charset = val.strip().strip("\"'").lower()
    return mime.strip().lower() or None, charset


def clean_uri(uri: str | None) -> str | None:
    """Strips the `<...>` some writers put around WARC-Target-URI (WARC 1.0 grammar)."""
    if uri is None:
        return None
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri or None
