"""WARC records for a crawl: a response and its request, linked, with the server's IP and digests.

    with CrawlWarcSink("out/warc/r0000-b00001.warc.gz") as sink:
        sink.exchange(result)          # a stages.crawl.fetch.FetchResult

Extends `stages.crawl.warc_writer.WarcSink` (same temporary-name-then-rename commit) with what a crawl
records (WARC/1.1 spec, sections 6.3-6.4): the `request` record is `WARC-Concurrent-To` its
`response`, both carry `WARC-IP-Address`, and warcio adds `WARC-Block-Digest` and
`WARC-Payload-Digest` (sha1). The body is stored as the server sent it (still content-encoded);
`Transfer-Encoding` is dropped because urllib3 has already removed the chunking.
"""

from __future__ import annotations

import io
import threading
from urllib.parse import urlsplit

from warcio.statusandheaders import StatusAndHeaders

from stages.crawl.warc_writer import WarcSink

HOP_BY_HOP = {"transfer-encoding"}


class CrawlWarcSink(WarcSink):
    """A WarcSink that writes request/response pairs; `exchange` is safe to call from many threads."""

    def __init__(self, path, software: str = "qwenforge crawler"):
        super().__init__(path, software=software)
        self._lock = threading.Lock()

    def exchange(self, result) -> None:
        warc_headers = {"WARC-Date": result.fetch_time}
        if result.ip:
            warc_headers["WARC-IP-Address"] = result.ip
        headers = [(k, v) for k, v in result.headers if k.lower() not in HOP_BY_HOP]
        http = StatusAndHeaders(f"{result.status} {result.reason}".strip(), headers, protocol="HTTP/1.1")
        response = self._writer.create_warc_record(result.final_url, "response", payload=io.BytesIO(result.body),
                                                   http_headers=http, warc_headers_dict=dict(warc_headers))
        parts = urlsplit(result.final_url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request_http = StatusAndHeaders(f"GET {target} HTTP/1.1", list(result.request_headers), is_http_request=True)
        warc_headers["WARC-Concurrent-To"] = response.rec_headers.get_header("WARC-Record-ID")
        request = self._writer.create_warc_record(result.final_url, "request", payload=io.BytesIO(b""),
                                                  http_headers=request_http, warc_headers_dict=warc_headers)
        with self._lock:
            self._writer.write_record(response)
            self._writer.write_record(request)
            self.count += 1
