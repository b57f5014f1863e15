"""Writing fetched HTTP responses as WARC/1.1 (gzip per record) with warcio, for crawls and demos.

    with WarcSink("out/pages.warc.gz", software="qwenforge") as sink:
        sink.response(url, 200, [("Content-Type", "text/html")], body)

The file is written under a temporary name and renamed on close, so a killed writer never leaves a
file that looks complete.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


class WarcSink:
    def __init__(self, path: str | Path, software: str = "qwenforge"):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.partial, "wb")
        self._writer = WARCWriter(self._file, gzip=self.path.suffix == ".gz")
        info = self._writer.create_warcinfo_record(self.path.name, {"software": software, "format": "WARC/1.1"})
        self._writer.write_record(info)
        self.count = 0

    def response(self, url: str, status: int, headers: list[tuple[str, str]], body: bytes,
                 reason: str = "OK", fetch_time: str | None = None) -> None:
        http = StatusAndHeaders(f"{status} {reason}", headers, protocol="HTTP/1.1")
        extra = {"WARC-Date": fetch_time} if fetch_time else None
        record = self._writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                 http_headers=http, warc_headers_dict=extra)
        self._writer.write_record(record)
        self.count += 1

    def close(self) -> None:
        self._file.close()
        os.replace(self.partial, self.path)

    def __enter__(self) -> WarcSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()
            self.partial.unlink(missing_ok=True)
