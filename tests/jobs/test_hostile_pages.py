"""The ingest + extract jobs over an archive with hostile pages: the jobs finish, every hostile page
is a rejected row with a reason, and the good pages' rows are identical to a run without them."""

from __future__ import annotations

import random

import pytest

from bench.data import article_pages
from jobs import extract, ingest
from pipeline import io
from stages.crawl.warc_writer import WarcSink

pytestmark = pytest.mark.spark

JUNK = "<html><head>{meta}</head><body><p>tiny</p></body></html>"


def hostile_pages() -> list[tuple[str, str, bytes]]:
    """(name, Content-Type header, body): charsets Python knows but that are no text encodings,
    bogus ones, binary junk, NUL bytes, deep nesting, one huge word, lone surrogates."""
    rng = random.Random(7)
    pages = [(f"header-{cs}", f"text/html; charset={cs}", JUNK.format(meta="").encode())
             for cs in ("rot13", "base64", "hex", "zlib", "undefined", "idna", "x-bogus", "utf-8\u0000")]
    pages += [(f"meta-{cs}", "text/html", JUNK.format(meta=f'<meta charset="{cs}">').encode())
              for cs in ("rot13", "base64", "undefined", "uu")]
    pages += [
        ("binary", "text/html", bytes(rng.randrange(256) for _ in range(20_000))),
        ("nul", "text/html; charset=utf-16", b"\x00" * 10_000),
        ("nesting", "text/html", b"<div>" * 20_000 + b"x" + b"</div>" * 20_000),
        ("one-word", "text/html", b"<p>" + b"a" * 1_000_000 + b"</p>"),
        ("surrogates", "text/html; charset=utf-8", "<p>\ud800\udfff</p>".encode("utf-8", "surrogatepass")),
    ]
    return pages


def write_archive(path, good, hostile) -> None:
    with WarcSink(path) as sink:
        for url, html in good:
            sink.response(url, 200, [("Content-Type", "text/html")], html, fetch_time="2020-01-01T00:00:00Z")
        for name, content_type, body in hostile:
            sink.response(f"https://hostile.test/{name}", 200, [("Content-Type", content_type)], body,
                          fetch_time="2020-01-01T00:00:00Z")


def run(tmp, warc) -> tuple[dict, dict]:
    ingest.main(["--input", str(warc), "--output", str(tmp / "ingest")])
    return extract.main(["--input", str(tmp / "ingest"), "--output", str(tmp / "extract"),
                         "--set", "extract.min_text_chars=200"])


def rows(spark, folder, part) -> dict:
    return {r["url"]: r.asDict() for r in io.read_stage(spark, str(folder), part).collect()}


def test_hostile_pages_are_rejected_and_the_rest_is_unchanged(spark, tmp_path, shared_data):
    good = [(url, html) for _, url, html, _ in article_pages(shared_data, 12)]
    hostile = hostile_pages()
    write_archive(tmp_path / "clean" / "in.warc.gz", good, [])
    write_archive(tmp_path / "hostile" / "in.warc.gz", good, hostile)
    clean_stats = run(tmp_path / "clean", tmp_path / "clean" / "in.warc.gz")
    stats = run(tmp_path / "hostile", tmp_path / "hostile" / "in.warc.gz")
    assert stats["docs_in"] == clean_stats["docs_in"] + len(hostile)
    rejected = rows(spark, tmp_path / "hostile" / "extract", "rejected")
    assert {f"https://hostile.test/{name}" for name, _, _ in hostile} <= set(rejected)
    assert all(r["drop_reason"] in ("no_text", "extract_error") for r in rejected.values())
    strip = lambda d: {k: v for k, v in d.items() if k not in ("warc_file", "warc_offset")}  # noqa: E731
    kept, clean = rows(spark, tmp_path / "hostile" / "extract", "kept"), rows(spark, tmp_path / "clean" / "extract", "kept")
    assert {u: strip(d) for u, d in kept.items()} == {u: strip(d) for u, d in clean.items()} and len(kept) >= 10
