"""A crawl task killed midway: rerun, it fetches only what its committed segments do not hold, and
no page is archived twice. Real HTTP server on 127.0.0.1, the task function called directly; the segment
writer on a real S3-compatible server (moto, on 127.0.0.1)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator

from common import fs
from stages.crawl import task as crawl
from stages.crawl.fetch import FetchResult
from stages.crawl.task import CrawlConfig, crawl_group
from stages.crawl.segments import SegmentWriter, robots_cache
from tests.stages.test_fetch import Site, page

PAGES = [f"/p{i:02d}" for i in range(12)]


@pytest.fixture
def site():
    s = Site("127.0.0.1", {p: page(f"<html><body>{p}</body></html>") for p in PAGES})
    s.routes["/robots.txt"] = page("User-agent: *\nDisallow: /private/\n", ctype="text/plain")
    yield s
    s.close()


def config(**kw) -> CrawlConfig:
    return CrawlConfig(allow_private_networks=True, delay=0.0, checkpoint_pages=3, max_retries=0, **kw)


def rows(site) -> list[dict]:
    return [{"url": site.base + p, "host": site.host, "depth": 1, "parent": None} for p in PAGES]


def warc_uris(folder):
    uris = []
    for path in sorted(folder.glob("*.warc.gz")):
        with open(path, "rb") as f:
            uris += [r.rec_headers.get_header("WARC-Target-URI") for r in ArchiveIterator(f) if r.rec_type == "response"]
    return uris


def test_killed_task_reruns_only_its_uncommitted_segment(site, tmp_path, monkeypatch):
    real, calls = crawl.HostCrawl.fetch, []

    def killed_at_the_eighth_page(self, row):
        calls.append(row["url"])
        if len(calls) == 8:
            raise KeyboardInterrupt("killed")
        return real(self, row)

    monkeypatch.setattr(crawl.HostCrawl, "fetch", killed_at_the_eighth_page)
    with pytest.raises(KeyboardInterrupt):
        crawl_group(rows(site), config(), {site.host}, str(tmp_path), 0, 7)
    first = [p for p in site.paths() if p != "/robots.txt"]
    assert first == PAGES[:7]  # pages 1-6 in two committed segments, page 7 in the open one
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["r0000-b00007-s0000.parquet",
                                                                     "r0000-b00007-s0001.parquet"]
    monkeypatch.setattr(crawl.HostCrawl, "fetch", real)
    summary = crawl_group(rows(site), config(), {site.host}, str(tmp_path), 0, 7)
    assert summary["skipped_done"] == 6 and summary["fetched"] == 6
    assert [p for p in site.paths() if p != "/robots.txt"] == PAGES[:7] + PAGES[6:]  # only p06 twice
    log = pq.read_table(tmp_path / "log").to_pylist()
    assert sorted(r["url"] for r in log) == sorted(site.base + p for p in PAGES)
    uris = warc_uris(tmp_path / "warc")
    assert sorted(uris) == sorted(site.base + p for p in PAGES)  # each page archived exactly once
    assert not list(tmp_path.rglob("*.partial"))


def test_robots_answer_is_reused_and_archived_once(site, tmp_path):
    crawl_group(rows(site)[:2], config(), {site.host}, str(tmp_path), 0, 3)
    crawl_group(rows(site)[2:4], config(), {site.host}, str(tmp_path), 1, 3)
    assert site.paths().count("/robots.txt") == 1
    assert warc_uris(tmp_path / "robotstxt") == [site.base + "/robots.txt"]
    assert robots_cache(tmp_path, "-b00003", max_age=3600)[site.host]["status"] == 200
    assert robots_cache(tmp_path, "-b00003", max_age=0) == {}  # too old: fetched again
    crawl_group(rows(site)[4:5], config(robots_max_age=0.0), {site.host}, str(tmp_path), 2, 3)
    assert site.paths().count("/robots.txt") == 2


def test_an_error_on_one_url_is_logged_and_the_task_goes_on(site, tmp_path, monkeypatch):
    """A page whose link extraction raises (even a BaseException such as a Rust panic) is one log row
    with outcome `error`, not a failed task."""
    real = crawl.extract_links

    class Panic(BaseException):
        pass

    def fragile(content, base):
        if base.endswith(("/p03", "/p05")):
            raise Panic("hostile page") if base.endswith("/p05") else ValueError("hostile page")
        return real(content, base)

    monkeypatch.setattr(crawl, "extract_links", fragile)
    summary = crawl_group(rows(site), config(), {site.host}, str(tmp_path), 0, 1)
    log = {r["url"].rsplit("/", 1)[1]: r for r in pq.read_table(tmp_path / "log").to_pylist()}
    assert summary["fetched"] == len(PAGES) and len(log) == len(PAGES)
    assert log["p03"]["outcome"] == "error" and log["p03"]["error"] == "stage_error: crawl: ValueError: hostile page"
    assert log["p05"]["error"] == "stage_error: crawl: Panic: hostile page"
    assert all(r["outcome"] == "ok" for name, r in log.items() if name not in ("p03", "p05"))


def fetched(url: str) -> FetchResult:
    return FetchResult(url, url, status=200, reason="OK", headers=[("Content-Type", "text/html")],
                       body=b"<html>" + url.encode() + b"</html>", ip="127.0.0.1", started=1.0, attempts=1)


def log_row(url: str) -> dict:
    return {"url": url, "final_url": url, "host": "h", "outcome": "ok", "round": 0}


def test_segments_commit_to_s3_and_a_killed_attempt_resumes(s3):
    """`out` as an S3 URI: segments are uploaded at their commit, the log last; a rerun sees only what the
    committed logs name and deletes what a killed upload left without its log."""
    out, urls = f"{s3}/crawl", [f"http://h/p{i}" for i in range(5)]
    writer = SegmentWriter(out, "r0000-b00001", "test", pages=2)
    for url in urls[:3]:
        writer.record(log_row(url), [{"url": url + "/next", "host": "h", "depth": 1, "parent": url, "round": 0}],
                      fetched(url))
    staged = writer.local
    # killed here: page 3 is in the open (local) segment; a later upload of segment 1 died before its log
    (staged / "stray.warc.gz").write_bytes(b"not a segment")
    fs.put_file(staged / "stray.warc.gz", f"{out}/warc/r0000-b00001-s0001.warc.gz")
    again = SegmentWriter(out, "r0000-b00001", "test", pages=2)
    assert again.done_urls() == set(urls[:2])
    assert fs.glob(f"{out}/warc", "*") == [f"{out}/warc/r0000-b00001-s0000.warc.gz"]   # the stray one deleted
    for url in urls[2:]:
        again.record(log_row(url), [], fetched(url))
    again.close(ok=True)
    assert not again.local.exists()
    assert [p.rsplit("/", 1)[1] for p in fs.glob(f"{out}/log", "*")] == [
        f"r0000-b00001-s{i:04d}.parquet" for i in range(3)]
    logged = [u for p in fs.glob(f"{out}/log", "*") for u in fs.read_table(p).column("url").to_pylist()]
    assert sorted(logged) == urls
    archived = []
    for path in fs.glob(f"{out}/warc", "*.warc.gz"):
        with fs.open_binary(path) as f:
            archived += [r.rec_headers.get_header("WARC-Target-URI") for r in ArchiveIterator(f)
                         if r.rec_type == "response"]
    assert sorted(archived) == urls   # each page archived once
    writer.close(ok=False)   # the killed attempt's local files
    assert not staged.exists()
