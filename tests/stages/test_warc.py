"""WarcReader on every archive in ../shared/data, checked against warcio's own record count."""

from __future__ import annotations

import collections
import gzip
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import DecompressingBufferedReader

from stages.warc import BoundedReader, IngestConfig, WarcReader, clean_uri, parse_content_type
from stages.crawl.warc_writer import WarcSink

FOLDERS = ("cc-whirlwind", "resiliparse-test-warcs", "dolma-samples", "warcio-test-warcs")


def all_archives(shared_data):
    files = []
    for folder in FOLDERS:
        files += sorted(p for p in (shared_data / folder).iterdir() if "arc" in p.name or p.name.endswith(".bad"))
    return files


def warcio_count(path) -> tuple[int, bool]:
    """Records warcio yields, and whether it stopped on an error (independent of our code)."""
    n = 0
    with open(path, "rb") as fh:
        try:
            for record in ArchiveIterator(fh, arc2warc=True):
                record.content_stream().read()
                n += 1
        except Exception:
            return n, True
    return n, False


def test_every_record_is_kept_or_rejected_with_a_reason(shared_data):
    archives = all_archives(shared_data)
    assert len(archives) >= 22
    for path in archives:
        rows = WarcReader().run([{"path": str(path)}])
        records, broken = warcio_count(path)
        file_errors = [r for r in rows if r["drop_reason"] == "broken_file"]
        assert len(rows) - len(file_errors) == records, path.name
        assert len(file_errors) == int(broken), path.name
        for row in rows:
            assert (row["drop_reason"] is None) == (row["html"] is not None or row["text"] is not None)
        assert len({r["id"] for r in rows}) == len(rows), f"ids not unique in {path.name}"


def test_kept_pages_of_the_dolma_samples(shared_data):
    rows = WarcReader().run([{"path": str(p)} for p in sorted((shared_data / "dolma-samples").glob("*.warc.gz"))])
    kept = [r for r in rows if r["drop_reason"] is None]
    assert len(kept) == 37
    assert all(r["url"].startswith("http") and not r["url"].startswith("<") for r in kept)
    assert all(r["status"] == 200 and r["content_type"] == "text/html" and r["html"] for r in kept)
    # exact duplicate pages (same URL and bytes) are in the sample; their ids agree
    by_url = collections.defaultdict(set)
    for r in kept:
        by_url[r["url"]].add(r["html"])
    assert len(by_url) < len(kept)


def test_truncated_and_broken_inputs_are_recorded(shared_data):
    clipped = WarcReader().run([{"path": str(shared_data / "resiliparse-test-warcs" / "clipped.warc.gz")}])
    assert [r["drop_reason"] for r in clipped] == ["truncated_record"]
    bad = WarcReader().run([{"path": str(shared_data / "warcio-test-warcs" / "example-bad-non-chunked.warc.gz")}])
    assert [r["drop_reason"] for r in bad] == ["record_type", "broken_file"]
    assert "non-chunked gzip" in bad[-1]["drop_detail"] and bad[-1]["warc_file"].endswith("non-chunked.warc.gz")
    missing = WarcReader().run([{"path": "/nonexistent/x.warc.gz"}])
    assert [r["drop_reason"] for r in missing] == ["unreadable_file"]


def test_wet_conversion_records_are_text_rows(shared_data):
    rows = WarcReader().run([{"path": str(shared_data / "cc-whirlwind" / "whirlwind.warc.wet.gz")}])
    kept = [r for r in rows if r["drop_reason"] is None]
    assert len(kept) == 1 and kept[0]["html"] is None and "Escopete" in kept[0]["text"]
    assert kept[0]["url"] == "https://an.wikipedia.org/wiki/Escopete"


def test_written_warc_round_trips_and_ids_are_stable(tmp_path):
    path = tmp_path / "x.warc.gz"
    with WarcSink(path) as sink:
        sink.response("http://a.test/", 200, [("Content-Type", "text/html; charset=ISO-8859-1")], b"<p>caf\xe9</p>",
                      fetch_time="2024-01-01T00:00:00Z")
        sink.response("http://a.test/missing", 404, [("Content-Type", "text/html")], b"no")
        sink.response("http://a.test/img", 200, [("Content-Type", "image/png")], b"\x89PNG")
    rows = WarcReader().run([{"path": str(path)}])
    assert [r["drop_reason"] for r in rows] == ["record_type", None, "http_status", "content_type"]
    page = rows[1]
    assert page["charset"] == "iso-8859-1" and page["html"] == b"<p>caf\xe9</p>" and page["status"] == 200
    assert page["fetch_time"] == "2024-01-01T00:00:00Z"
    assert WarcReader().run([{"path": str(path)}])[1]["id"] == page["id"]


def test_oversized_payloads_are_rejected(tmp_path):
    path = tmp_path / "big.warc"
    with WarcSink(path) as sink:
        sink.response("http://a.test/", 200, [("Content-Type", "text/html")], b"x" * 5000)
    rows = WarcReader(IngestConfig(max_payload_bytes=1000)).run([{"path": str(path)}])
    assert rows[1]["drop_reason"] == "too_large" and rows[1]["html"] is None


@pytest.mark.parametrize("value,expected", [
    ("text/html; charset=UTF-8", ("text/html", "utf-8")),
    ('Text/HTML;Charset="windows-1251"', ("text/html", "windows-1251")),
    ("application/xhtml+xml", ("application/xhtml+xml", None)),
    (None, (None, None)),
])
def test_parse_content_type(value, expected):
    assert parse_content_type(value) == expected


def test_clean_uri():
    assert clean_uri("<https://a.test/x>") == "https://a.test/x"
    assert clean_uri(" https://a.test/ ") == "https://a.test/"
    assert clean_uri(None) is None


@settings(max_examples=100, deadline=None, database=None)
@given(lines=st.lists(st.binary(max_size=3000), max_size=40),
       lengths=st.lists(st.none() | st.integers(0, 5000), min_size=1), gzipped=st.booleans())
def test_bounded_readline_reads_what_warcio_reads(lines, lengths, gzipped):
    """Under its caps, BoundedReader.readline returns what warcio's own readline does, across blocks."""
    content = b"\n".join(lines)
    content = gzip.compress(content) if gzipped else content
    ours = BoundedReader(io.BytesIO(content), IngestConfig(max_line_bytes=1 << 30, max_header_bytes=1 << 30))
    theirs = DecompressingBufferedReader(io.BytesIO(content))
    for length in lengths * 3:
        assert ours.readline(length) == theirs.readline(length)
    assert ours.read(1 << 20) == theirs.read(1 << 20)
