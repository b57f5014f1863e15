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
| `too_large`        | payload over `max_payload_bytes`; a file row: the file inflates past |
|                    | `max_file_bytes` (detail: the cap and where)                         |
| `truncated_record` | the file ends before the record's declared Content-Length            |
| `broken_file`      | warcio cannot go on reading the file (detail: the error), or a       |
|                    | header line or block over its cap (detail: the cap and where)        |
| `empty_file`       | the file holds no record at all (0 bytes, a gzip of nothing)         |
| `unreadable_file`  | the file cannot be opened                                            |

A file row (`too_large`, `broken_file`, `empty_file`) comes after the rows of the records read
before it; its `warc_offset` is where the record being read starts (0 before the first).

Hostile files cost bounded time and memory (tests/stages/test_warc_hostile.py measures them). warcio
reads headers line by line and inflates a gzip block by block, so the reader it is given counts both:
`max_file_bytes` caps the decompressed bytes of one file (a gzip of 16 GiB of anything is ~16 MB),
`max_line_bytes` one header line (stock warcio builds a long line by repeated concatenation:
quadratic) and `max_header_bytes` one record's header block with the blank lines before it (many
short lines cost a Python object each). Past a header cap no parser can find the next record, so
the file ends there. No single read buffers more than `max_payload_bytes` + 1 bytes, 1 MiB at least (an HTTP
chunk would): that record is rejected as `too_large` and the file goes on.

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
from warcio.bufferedreaders import DecompressingBufferedReader
from warcio.recordloader import ArcWarcRecord
from warcio.utils import BUFF_SIZE

from stages.base import Doc, Drop, Stage, Verdict, drop, judged
from common.fs import open_binary
from common.recipe import require_positive

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
    # Bounds on one file (module docstring). A Common Crawl WARC inflates to ~5 GiB (~1 GiB gzipped):
    # 16 GiB leaves 3x headroom and still ends a gzip bomb after ~45 s (inflating 1 GiB: ~3 s).
    max_file_bytes: int = 16 << 30
    # One WARC or HTTP header line: Python's http.client refuses longer ones (its _MAXLINE), so our
    # crawler (urllib3) cannot have fetched a page that has one.
    max_line_bytes: int = 64 << 10
    # One record's WARC + HTTP header block: real ones are a few KiB (servers and proxies cap
    # response headers at 8-64 KiB); 256 KiB of 3-byte lines still parses in ~0.2 s.
    max_header_bytes: int = 256 << 10

    def __post_init__(self):
        require_positive(self, "max_payload_bytes", "max_file_bytes", "max_line_bytes", "max_header_bytes")


class WarcReader(Stage):
    """Reads archive files named by `path` rows into page rows (see the module docstring)."""

    name = "ingest"
    adds = PAGE_FIELDS
    drops = ("path",)
    fans_out = True  # one archive, up to ~100k rows: stream them, never a chunk of archives in memory

    def __init__(self, config: IngestConfig = IngestConfig()):
        self.config = config

    def process(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        for doc in docs:
            yield from self.read_file(doc["path"])

    def read_file(self, path: str) -> Iterator[Doc]:
        try:
            stream = open_binary(path)
        except OSError as err:
            yield _file_error(path, 0, "unreadable_file", _error_text(err))
            return
        with stream:
            yield from self._records(path, stream)

    def _records(self, path: str, stream: IO[bytes]) -> Iterator[Doc]:
        records = BoundedArchiveIterator(stream, self.config)
        reader, count = records.reader, 0  # warcio drops its reader at the end; its count is wanted then
        try:
            for record in records:
                reader.next_record()
                row = self.to_row(record, path)
                # where the record starts, as get_record_offset() would say, but without reading on past
                # the record first: a bomb after it must not cost the record its row
                row["warc_offset"] = records.offset
                row["id"] = _row_id(row, path, row["warc_offset"])
                count += 1
                yield row
        except ReadLimit as err:
            yield _file_error(path, records.offset, err.reason, f"{err}, in the record at offset {records.offset}")
        except Exception as err:  # warcio raises several types for corrupt input
            log.warning("broken archive %s at offset %d: %s", path, records.offset, err)
            yield _file_error(path, records.offset, "broken_file", _error_text(err))
        else:
            if count == 0:
                yield _file_error(path, 0, "empty_file", f"no records in {reader.num_read} decompressed bytes")

    def to_row(self, record: ArcWarcRecord, path: str) -> Doc:
        """Turns one record into a kept page row or a rejected row with a reason (no id, offset yet)."""
        row = _metadata(record, path, self.config.source)
        verdict = self._judge(record, row)
        if verdict is None:
            try:
                payload, complete = _read_payload(record, self.config.max_payload_bytes)
            except RecordTooLarge as err:
                return drop(row, "too_large", str(err))
            verdict = _payload_verdict(payload, complete, self.config.max_payload_bytes)
            if verdict is None:
                _set_payload(row, record.rec_type, payload)
        return judged(row, verdict)

    def _judge(self, record: ArcWarcRecord, row: Doc) -> Verdict:
        if record.rec_type == "conversion" and self.config.keep_wet:
            return None
        if record.rec_type not in ("response", "resource"):
            return Drop("record_type", record.rec_type or "missing")
        if record.rec_type == "response" and row["status"] not in self.config.keep_statuses:
            return Drop("http_status", "missing" if row["status"] is None else str(row["status"]))
        if row["content_type"] not in self.config.content_types:
            return Drop("content_type", row["content_type"] or "missing")
        return None


class ReadLimit(Exception):
    """A bound of IngestConfig reached while reading a file: the file ends in a row with `reason`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


class RecordTooLarge(ReadLimit):
    """One read asked for more than a payload may hold: its record is rejected, the file goes on."""

    def __init__(self, detail: str):
        super().__init__("too_large", detail)


class BoundedReader(DecompressingBufferedReader):
    """warcio's decompressing line reader with the bounds of IngestConfig (see the module docstring).

    Every inflated block passes through `_process_read` (at most ~1032 x 16 KiB: deflate's best
    ratio times warcio's block size), every header line through `readline`, every payload read
    through `read`: counting there bounds the whole file, whatever warcio does with the bytes.
    """

    def __init__(self, stream, config: IngestConfig):
        super().__init__(stream)
        self.config = config
        self.max_read = max(config.max_payload_bytes + 1, 1 << 20)  # warcio itself drains in 16 KiB reads
        self.header_bytes = 0  # read by readline since the last record or read(): one header block

    def next_record(self) -> None:
        """A record's headers are parsed: the next header block starts counting (needed where no
        read() came between, as after a record with no content)."""
        self.header_bytes = 0

    def _process_read(self, data: bytes) -> None:
        super()._process_read(data)
        if self.num_read > self.config.max_file_bytes:
            raise ReadLimit("too_large", f"the file inflates past ingest.max_file_bytes={self.config.max_file_bytes}")

    def read(self, length: int | None = None) -> bytes:
        if length is None or length > self.max_read:  # a whole HTTP chunk, or "the rest of the file"
            raise RecordTooLarge(f">{self.config.max_payload_bytes} bytes in one read (an HTTP chunk of {length})")
        self.header_bytes = 0  # payload: the header block is over
        return super().read(length)

    def readline(self, length: int | None = None) -> bytes:
        """warcio's readline, linear and bounded: at most max_line_bytes + 1 bytes are looked at."""
        cap = self.config.max_line_bytes
        want = cap + 1 if length is None else min(length, cap + 1)
        start, parts, size = self.position(), [], 0
        while size < want:
            self._fillbuff()
            if self.empty():
                break
            part = self.buff.readline(want - size)
            parts.append(part)
            size += len(part)
            if part.endswith(b"\n"):
                break
        if size > cap:
            raise ReadLimit("broken_file", f"a header line over ingest.max_line_bytes={cap}"
                                           f" at decompressed byte {start}")
        self.header_bytes += size
        if self.header_bytes > self.config.max_header_bytes:
            raise ReadLimit("broken_file", f"a header block over ingest.max_header_bytes={self.config.max_header_bytes}"
                                           f" at decompressed byte {start}")
        return b"".join(parts)

    def position(self) -> int:
        """Decompressed bytes consumed so far (read from the file minus those still buffered)."""
        return self.num_read - (self.buff_size - self.buff.tell() if self.buff else 0)


class BoundedArchiveIterator(ArchiveIterator):
    """warcio's ArchiveIterator (ARC records converted to WARC) reading through a BoundedReader."""

    def __init__(self, stream: IO[bytes], config: IngestConfig):
        super().__init__(stream, arc2warc=True)
        # replaces the reader warcio just made, before anything was read; self.fh is the stream as
        # warcio wraps it for tell(), which its record offsets come from
        self.reader = BoundedReader(self.fh, config)


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
        while record.raw_stream.read(BUFF_SIZE):  # drain so the declared length can be checked
            pass
    remaining = getattr(record.raw_stream, "limit", 0)
    return payload, len(payload) > limit or remaining == 0


def _payload_verdict(payload: bytes, complete: bool, limit: int) -> Verdict:
    if len(payload) > limit:
        return Drop("too_large", f">{limit} bytes")
    if not complete:
        return Drop("truncated_record", f"file ends inside the record after {len(payload)} payload bytes")
    return None


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


def _file_error(path: str, offset: int, reason: str, detail: str) -> Doc:
    row = {f.name: None for f in PAGE_FIELDS}
    row.update(warc_file=path, warc_offset=offset)
    row["id"] = hashlib.sha1(f"{path}\0{offset}\0{reason}".encode()).hexdigest()[:24]
    return drop(row, reason, detail)


def _error_text(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).strip()[:500]}"


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
