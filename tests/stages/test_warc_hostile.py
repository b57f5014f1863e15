"""Hostile archives: bombs end fast in a row with a reason, and no bytes make ingest raise.

The bounded cases run in a child process, so its peak RSS (`ru_maxrss`) measures that one read, and a
child that runs away (as the unbounded reader did: ~55 s and 6 GB on the 1 GiB gzip bomb, minutes on
the 100 MB header line) fails at the timeout instead of stalling the suite. The bombs are built without compressing them: a
deflate block made once after a full flush (which empties the window) is written many times.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.warc import IngestConfig, WarcReader
from stages.crawl.warc_writer import WarcSink

ROOT = Path(__file__).resolve().parents[2]
GiB, MiB = 1 << 30, 1 << 20
SECONDS, RSS_MB = 10, 150  # the bounds every bomb must stay under
REASONS = {"record_type", "http_status", "content_type", "too_large", "truncated_record", "broken_file",
           "empty_file", "unreadable_file"}

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from stages.warc import IngestConfig, WarcReader
    reader = WarcReader(IngestConfig(**json.loads(sys.argv[2])))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    rows = reader.run([{"path": sys.argv[1]}])
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
                      "rows": [[r["drop_reason"], r["drop_detail"], r["warc_offset"]] for r in rows]}))
""")


def measured(path: Path, **config) -> dict:
    """WarcReader on `path` in a fresh interpreter: its rows, wall seconds and peak RSS growth (MB)."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), json.dumps(config)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["seconds"] < SECONDS and result["rss_mb"] < RSS_MB, result
    return result


def gzip_member(fh, head: bytes, unit: bytes, total: int, tail: bytes = b"") -> None:
    """Writes one gzip member of head + unit * (about total bytes) + tail, compressed once per MiB."""
    block = unit * max(1, MiB // len(unit))
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the gzip header and trailer are ours
    fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH))
    body = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(head)
    for _ in range(total // len(block)):
        fh.write(body)
        crc = zlib.crc32(block, crc)
    fh.write(comp.compress(tail) + comp.flush())
    size = len(head) + total // len(block) * len(block) + len(tail)
    fh.write(struct.pack("<II", zlib.crc32(tail, crc), size & 0xFFFFFFFF))


def warc_head(rec_type: str, length: int, http: bytes = b"") -> bytes:
    """A WARC record's header block (and the start of its content, `http`), declaring `length`."""
    return (f"WARC/1.0\r\nWARC-Type: {rec_type}\r\nWARC-Target-URI: http://a.test/{rec_type}\r\n"
            f"WARC-Date: 2024-01-01T00:00:00Z\r\nContent-Length: {length}\r\n\r\n").encode() + http


def page_member(body: bytes = b"<p>hello</p>") -> bytes:
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body
    return gzip.compress(warc_head("response", len(http), http) + b"\r\n\r\n")


def test_gzip_bomb_without_a_newline_ends_at_the_line_cap(tmp_path):
    path = tmp_path / "bomb.warc.gz"
    with open(path, "wb") as fh:
        gzip_member(fh, b"", b"A", GiB)
    assert path.stat().st_size < 1.5 * MiB
    result = measured(path)
    [(reason, detail, offset)] = result["rows"]
    assert reason == "broken_file" and offset == 0
    assert "max_line_bytes=65536 at decompressed byte 0" in detail and "offset 0" in detail


def test_100_mb_header_line_in_a_plain_warc_ends_at_the_line_cap(tmp_path):
    path = tmp_path / "long.warc"
    with open(path, "wb") as fh:
        fh.write(b"WARC/1.0\r\nWARC-Target-URI: ")
        fh.truncate(100 * MiB)  # sparse: 100 MB of NUL bytes, no newline, no disk
    [(reason, detail, _)] = measured(path)["rows"]
    assert reason == "broken_file" and "max_line_bytes=65536 at decompressed byte 10" in detail


def test_endless_header_block_and_blank_lines_end_at_the_header_cap(tmp_path):
    lines = tmp_path / "lines.warc.gz"
    with open(lines, "wb") as fh:
        gzip_member(fh, b"WARC/1.0\r\n", b"a: b\r\n", 400 * MiB)
    [(reason, detail, _)] = measured(lines)["rows"]
    assert reason == "broken_file" and "max_header_bytes=262144" in detail
    blank = tmp_path / "blank.warc.gz"
    with open(blank, "wb") as fh:  # warcio skips blank lines after a record line by line
        gzip_member(fh, gzip.decompress(page_member()), b"\r\n", GiB)
    rows = measured(blank)["rows"]
    assert [r[0] for r in rows] == [None, "broken_file"] and "max_header_bytes" in rows[1][1]


def test_file_over_the_decompressed_cap_keeps_the_records_before_it(tmp_path):
    path = tmp_path / "big.warc.gz"
    first = page_member()
    with open(path, "wb") as fh:
        fh.write(first)
        gzip_member(fh, warc_head("resource", GiB + 4), b"A", GiB, b"\r\n\r\n")
    rows = measured(path, max_file_bytes=32 * MiB)["rows"]
    assert [r[0] for r in rows] == [None, "content_type", "too_large"]  # the bomb's headers, then the file row
    reason, detail, offset = rows[2]
    assert offset == rows[1][2] == len(first)
    assert f"max_file_bytes={32 * MiB}" in detail and f"offset {len(first)}" in detail


def test_huge_http_chunk_rejects_its_record_only(tmp_path):
    path = tmp_path / "chunk.warc.gz"
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n7fffffff\r\n"
    with open(path, "wb") as fh:
        gzip_member(fh, warc_head("response", len(http) + 256 * MiB, http), b"A", 256 * MiB, b"\r\n\r\n")
        fh.write(page_member())
    rows = measured(path)["rows"]  # warcio would read the whole chunk (2 GiB declared) into memory
    assert [r[0] for r in rows] == ["too_large", None] and "HTTP chunk" in rows[0][1]


@pytest.mark.parametrize("content", [b"", gzip.compress(b""), gzip.compress(b"") * 3],
                         ids=["0-bytes", "gzip", "3-gzips"])
def test_an_empty_file_is_one_row(tmp_path, content):
    path = tmp_path / "empty.warc.gz"
    path.write_bytes(content)
    rows = WarcReader().run([{"path": str(path)}])
    assert [(r["drop_reason"], r["warc_file"], r["warc_offset"]) for r in rows] == [("empty_file", str(path), 0)]


@pytest.mark.parametrize("key", ["max_file_bytes", "max_line_bytes", "max_header_bytes", "max_payload_bytes"])
def test_bounds_must_be_positive(key):
    with pytest.raises(ValueError, match=f"{key} must be > 0, got 0"):
        IngestConfig(**{key: 0})


# Property-based: whatever the bytes, every file ends in rows with a verdict, never an exception.

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_CAPS = IngestConfig(max_line_bytes=1024, max_header_bytes=4096)  # so that fuzzed inputs reach them


@pytest.fixture(scope="session")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("warc-fuzz")


@pytest.fixture(scope="session")
def samples(scratch) -> list[bytes]:
    """Small real archives to mutate: written here (gzip and plain), and warcio's own when present."""
    out = []
    for name in ("s.warc.gz", "s.warc"):
        with WarcSink(scratch / name) as sink:
            sink.response("http://a.test/", 200, [("Content-Type", "text/html")], b"<p>one</p>")
            sink.response("http://a.test/c", 200, [("Content-Type", "text/html"), ("Transfer-Encoding", "chunked")],
                          b"4\r\n<p>t\r\n5\r\nwo</p>\r\n0\r\n\r\n")
            sink.response("http://a.test/z", 200, [("Content-Type", "text/html"), ("Content-Encoding", "gzip")],
                          gzip.compress(b"<p>three</p>"))
        out.append((scratch / name).read_bytes())
    shared = ROOT.parent / "shared" / "data" / "warcio-test-warcs"
    for name in ("example.arc", "example-iana.org-chunked.warc", "example.warc.gz"):
        if (shared / name).is_file():
            out.append((shared / name).read_bytes())
    return out


def rows_of(scratch: Path, content: bytes, name: str = "x.warc.gz") -> list[dict]:
    """Ingest of `content` as a file: process() directly, so an exception is raised, not a row."""
    path = scratch / name
    path.write_bytes(content)
    rows = list(WarcReader(SMALL_CAPS).process([{"path": str(path)}]))
    assert rows, "every file gives at least one row"
    for row in rows:
        assert row["warc_file"] == str(path) and isinstance(row["warc_offset"], int)
        kept = row["html"] is not None or row["text"] is not None
        assert row["drop_reason"] in REASONS if not kept else row["drop_reason"] is None
    assert len({r["id"] for r in rows}) == len(rows)
    return rows


WARC_HEAD = st.sampled_from([
    b"WARC/1.0\r\n",
    b"WARC/1.1\r\nWARC-Type: response\r\n",
    b"WARC/1.0\r\nContent-Length: 5\r\n\r\n",
    b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://a.test/\r\nContent-Length: 40\r\n\r\n"
    b"HTTP/1.1 200 OK\r\n",
    b"http://a.test/ 1.2.3.4 20240101000000 text/html 9\n",  # an ARC header line
])


@FUZZ
@given(content=st.binary(max_size=4096))
def test_arbitrary_bytes(scratch, content):
    rows_of(scratch, content, "x.warc")


@FUZZ
@given(head=WARC_HEAD, garbage=st.binary(max_size=2048), unit=st.binary(min_size=1, max_size=8),
       repeat=st.integers(0, 3000), gzipped=st.booleans())
def test_a_record_header_then_garbage(scratch, head, garbage, unit, repeat, gzipped):
    content = head + garbage + unit * repeat  # a repeated unit reaches the line and header caps
    rows_of(scratch, gzip.compress(content) if gzipped else content)


@FUZZ
@given(members=st.lists(st.binary(max_size=512) | WARC_HEAD, max_size=5), trailer=st.binary(max_size=64))
def test_gzip_members_of_random_bytes(scratch, members, trailer):
    rows_of(scratch, b"".join(gzip.compress(m) for m in members) + trailer)


@FUZZ
@given(data=st.data())
def test_truncated_and_bit_flipped_real_archives(scratch, samples, data):
    content = bytearray(data.draw(st.sampled_from(samples)))
    for _ in range(data.draw(st.integers(0, 8))):
        content[data.draw(st.integers(0, len(content) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    rows_of(scratch, bytes(content[:data.draw(st.integers(0, len(content)))]))


def test_the_samples_give_pages(scratch, samples):
    """The fuzzed samples are real archives: unmutated, each gives pages."""
    for content in samples:
        assert any(r["drop_reason"] is None for r in rows_of(scratch, content))
