"""A crawl task's output in committed segments, so a killed crawl loses at most one segment of work.

    writer = SegmentWriter(Path("runs/crawl"), "r0000-b00003", software="qwenforge crawler", pages=100)
    done = writer.done_urls()                     # URLs already committed by an earlier attempt
    writer.record(log_row, links, result)         # thread-safe; result: a FetchResult to archive, or None
    writer.close(ok=True)                         # commits the last segment

A segment is up to five files named `<task>-sNNNN`: `warc/….warc.gz` (response + request records),
`robotstxt/….warc.gz` and `robots/….parquet` (the robots.txt answers fetched, kept apart from the
pages as Common Crawl does, and reused by later rounds: `robots_cache`), `links/….parquet` and
`log/….parquet`, each written under a temporary name and renamed, the log last: the log file is the
segment's commit marker. A segment is committed every `pages` logged
URLs or `seconds` seconds. On start, the writer removes the WARC and links files of any segment
whose log is missing (an attempt killed mid-commit), so a page is archived at most once, and
`done_urls()` lists what the committed segments hold, which the task then skips: rerunning a
killed crawl refetches only the pages of its last, uncommitted segment.

`out` may be a URI (`s3://`, `s3a://`, `gs://`, `hdfs://`: common/fs.py). The segment is then written
in a local temporary folder the same way and uploaded at its commit, file by file, the log last, so the
log stays the marker on a store without rename.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from common import fs
from stages.crawl.warc_exchange import CrawlWarcSink

LOG_SCHEMA = pa.schema([
    ("url", pa.string()), ("final_url", pa.string()), ("host", pa.string()), ("depth", pa.int32()),
    ("status", pa.int32()), ("bytes", pa.int64()), ("content_bytes", pa.int64()), ("fetch_time", pa.string()),
    ("started", pa.float64()), ("seconds", pa.float64()), ("attempts", pa.int32()), ("outcome", pa.string()),
    ("error", pa.string()), ("ip", pa.string()), ("links", pa.int32()), ("round", pa.int32()),
    ("warc_file", pa.string()),
])
ROBOTS_SCHEMA = pa.schema([("host", pa.string()), ("url", pa.string()), ("status", pa.int32()),
                           ("body", pa.binary()), ("fetched_at", pa.float64()), ("error", pa.string())])
LINK_SCHEMA = pa.schema([("url", pa.string()), ("host", pa.string()), ("depth", pa.int32()),
                         ("parent", pa.string()), ("round", pa.int32())])


UNCOMMITTED = (("warc", ".warc.gz"), ("robotstxt", ".warc.gz"), ("robots", ".parquet"), ("links", ".parquet"))
SEGMENT = UNCOMMITTED + (("log", ".parquet"),)   # a segment's files in commit order: the log, its marker, last


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    """Writes under a temporary name, then renames (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp, compression="zstd")
    os.replace(tmp, path)


class SegmentWriter:
    """WARC records, links and log rows of one crawl task, committed segment by segment."""

    def __init__(self, out: str | Path, task: str, software: str, pages: int = 100, seconds: float = 60.0):
        self.out, self.task, self.software = fs.as_path(out), task, software
        self.pages, self.seconds = max(1, pages), seconds
        # where a segment's files are written: `out` itself, or a local folder uploaded at each commit
        self.local = Path(tempfile.mkdtemp(prefix=f"{task}-")) if fs.is_remote(self.out) else self.out
        self._lock = threading.Lock()
        self.committed = self._committed_segments()
        self._remove_uncommitted()
        self.index = max(self.committed, default=-1) + 1
        self.records = self.segments = 0
        self._open()

    def _path(self, folder: str, index: int, suffix: str) -> Path:
        """The local file a segment writes (under `out`, or the local folder when `out` is a URI)."""
        return self.local / folder / f"{self.task}-s{index:04d}{suffix}"

    def _committed_segments(self) -> list[int]:
        pattern = re.compile(re.escape(self.task) + r"-s(\d{4})\.parquet$")
        logs = fs.glob(fs.join(self.out, "log"), f"{self.task}-s*.parquet")
        found = (pattern.match(os.path.basename(p)) for p in logs)
        return sorted(int(m.group(1)) for m in found if m)

    def _remove_uncommitted(self) -> None:
        for folder, suffix in UNCOMMITTED:
            for path in fs.glob(fs.join(self.out, folder), f"{self.task}-s*{suffix}*"):
                name = os.path.basename(path)
                index = re.search(r"-s(\d{4})", name)
                if index and (int(index.group(1)) not in self.committed or name.endswith(".partial")):
                    fs.remove(path)

    def done_urls(self) -> set[str]:
        """The frontier URLs the committed segments of this task already logged."""
        paths = [fs.join(self.out, "log", f"{self.task}-s{i:04d}.parquet") for i in self.committed]
        return {u for p in paths for u in fs.read_table(p, columns=["url"]).column("url").to_pylist()}

    def _open(self) -> None:
        self.sink, self.logs, self.links, self.opened = None, [], [], time.monotonic()
        self.robots_sink, self.robots_rows = None, []

    def robots(self, row: dict, result=None) -> None:
        """Adds one robots.txt answer (ROBOTS_SCHEMA row; `result` archived in robotstxt/ when given)."""
        with self._lock:
            if result is not None:
                path = self._path("robotstxt", self.index, ".warc.gz")
                self.robots_sink = self.robots_sink or CrawlWarcSink(path, self.software)
                self.robots_sink.exchange(result)
            self.robots_rows.append(row)

    def record(self, log: dict, links: list[dict], result=None) -> None:
        """Adds one URL's outcome (and its WARC records when `result` is given); commits when due."""
        with self._lock:
            if result is not None:
                self.sink = self.sink or CrawlWarcSink(self._path("warc", self.index, ".warc.gz"), self.software)
                self.sink.exchange(result)
                self.records += 1
                log = {**log, "warc_file": self.sink.path.name}
            self.logs.append(log)
            self.links.extend(links)
            if len(self.logs) >= self.pages or time.monotonic() - self.opened >= self.seconds:
                self._commit()

    def _commit(self) -> None:
        for sink in (self.sink, self.robots_sink):
            if sink is not None:
                sink.close()
        if self.robots_rows:
            write_parquet(self._path("robots", self.index, ".parquet"), self.robots_rows, ROBOTS_SCHEMA)
        write_parquet(self._path("links", self.index, ".parquet"), self.links, LINK_SCHEMA)
        write_parquet(self._path("log", self.index, ".parquet"), self.logs, LOG_SCHEMA)
        if self.local != self.out:
            self._upload(self.index)
        self.committed.append(self.index)
        self.index, self.segments = self.index + 1, self.segments + 1
        self._open()

    def _upload(self, index: int) -> None:
        """Copies segment `index`'s local files to `out`, the log last, and deletes them here."""
        for folder, suffix in SEGMENT:
            local = self._path(folder, index, suffix)
            if local.exists():
                fs.put_file(local, fs.join(self.out, folder, local.name))
                local.unlink()

    def close(self, ok: bool) -> None:
        """Commits the open segment (when it holds anything and the task did not fail)."""
        with self._lock:
            try:
                if ok and (self.logs or self.robots_rows):
                    self._commit()
                    return
                for sink in (self.sink, self.robots_sink):
                    if sink is not None:
                        sink.__exit__(RuntimeError, None, None)
            finally:
                if self.local != self.out:
                    shutil.rmtree(self.local, ignore_errors=True)


def robots_cache(out: str | Path, bucket_suffix: str, max_age: float) -> dict[str, dict]:
    """The newest committed robots.txt answer per host among tasks named `*<bucket_suffix>-s*` (the same
    host group in earlier rounds), when younger than `max_age` seconds and definitive (2xx or 4xx)."""
    newest: dict[str, dict] = {}
    for path in fs.glob(fs.join(out, "robots"), f"r*{bucket_suffix}-s*.parquet"):
        for row in fs.read_table(path).to_pylist():
            if row["host"] not in newest or row["fetched_at"] > newest[row["host"]]["fetched_at"]:
                newest[row["host"]] = row
    now = time.time()
    return {h: r for h, r in newest.items()
            if r["status"] is not None and r["status"] < 500 and r["status"] != 429 and now - r["fetched_at"] < max_age}
