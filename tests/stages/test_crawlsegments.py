"""A crawl task killed midway: rerun, it fetches only what its committed segments do not hold, and
no page is archived twice. Real HTTP server on 127.0.0.1, the task function called directly."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator

from stages.crawl import task as crawl
from stages.crawl.task import CrawlConfig, crawl_group
from stages.crawl.segments import robots_cache
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
