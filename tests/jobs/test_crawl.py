"""The crawl job end to end against real HTTP servers on 127.0.0.2-4, checked from the server side.

Host A has robots.txt rules with a Crawl-delay, redirects and a loop, 404/500/429 answers, a slow,
a huge, a binary, a gzip and a Latin-1 page and an infinite link trap; host B has no robots.txt;
host C answers robots.txt with 500 (so nothing else may be asked of it). The WARC files then go
through the ingest and extract jobs, which must see the same number of pages.
"""

from __future__ import annotations

import gzip
import json
import re

import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator

from jobs import crawl, extract, ingest
from stages.crawl.task import CrawlConfig
from tests.stages.test_fetch import Site, page, redirect

pytestmark = [pytest.mark.spark, pytest.mark.slow]

DELAY_A = 0.3  # robots.txt Crawl-delay on host A, larger than the recipe's delay
DELAY = 0.1


def links(*paths: str) -> str:
    return "<html><body><p>" + "Some text. " * 20 + "</p>" + "".join(f'<a href="{p}">{p}</a> ' for p in paths) + "</body></html>"


def trap(hit: int):  # every /trap/ page links one level deeper and to a fresh session: infinite unbounded
    return page(links("x/", f"?p={hit}&q=1"))(hit)


@pytest.fixture
def sites():
    a, b, c = Site("127.0.0.2"), Site("127.0.0.3"), Site("127.0.0.4")
    a.routes.update({
        "/robots.txt": page(f"User-agent: *\nDisallow: /private/\nCrawl-delay: {DELAY_A}\n", ctype="text/plain"),
        "/": page(links("/a", "/a?utm_source=x", "/a#frag", "/private/secret", "/moved", "/loop1", "/missing",
                        "/error", "/busy", "/slow", "/huge", "/image", "/latin", "/gz", "/trap/0", b.base + "/",
                        c.base + "/", "mailto:x@y.z")),
        "/a": page(links("/", "/b", "/private/also")),
        "/b": page(links("/a")),
        "/moved": redirect("/target"), "/target": page(links("/b")),
        "/loop1": redirect("/loop2"), "/loop2": redirect("/loop1"),
        "/error": page("oops", status=500),
        "/busy": lambda hit: (429, [("Retry-After", "1")], b"", 0, True) if hit == 0 else page(links("/b"))(hit),
        "/slow": page(links(), delay=3.0),
        "/huge": page(b"<html>" + b"x" * 400_000 + b"</html>"),
        "/image": page(bytes(range(256)) * 10, ctype="image/png"),
        "/latin": page(links("/b").replace("Some text", "Caf\xe9 cr\xe8me").encode("latin-1"),
                       ctype="text/html; charset=iso-8859-1"),
        "/gz": page(gzip.compress(links("/b", "/gz-only").encode()), headers=(("Content-Encoding", "gzip"),)),
        "/gz-only": page(links()),
        "/trap/*": trap,
        "/private/*": page(links()),
    })
    b.routes.update({"/": page(links("/p1", a.base + "/b")), "/p1": page(links("/p2")), "/p2": page(links("/p1"))})
    c.routes.update({"/robots.txt": page("down", status=500), "/": page(links())})
    yield a, b, c
    for s in (a, b, c):
        s.close()


def run_crawl(tmp_path, seeds, extra=()):
    (tmp_path / "seeds.txt").write_text("\n".join(seeds) + "\n")
    settings = ["crawl.allow_private_networks=true", f"crawl.delay={DELAY}", "crawl.max_depth=4",
                "crawl.max_rounds=8", "crawl.max_pages_per_host=40", "crawl.max_bytes=200000",
                "crawl.read_timeout=1.0", "crawl.max_retries=1", "crawl.backoff_base=0.05", *extra]
    argv = ["--seeds", str(tmp_path / "seeds.txt"), "--output", str(tmp_path / "crawl"), "--recipe", recipe(tmp_path)]
    for item in settings:
        argv += ["--set", item]
    return crawl.main(argv)


def recipe(tmp_path) -> str:
    """An empty recipe (all defaults), so the test does not depend on the shipped recipes."""
    (tmp_path / "recipe.toml").write_text("# defaults\n")
    return str(tmp_path / "recipe.toml")


def read_log(out):
    return pq.read_table(out / "log").to_pylist()


def test_crawl_end_to_end(spark, sites, tmp_path):
    a, b, c = sites
    stats = run_crawl(tmp_path, [a.base + "/", b.base + "/", c.base + "/"])
    out, log = tmp_path / "crawl", read_log(tmp_path / "crawl")
    by_url = {row["url"]: row for row in log}
    assert len(by_url) == len(log)  # every URL is fetched in one round only

    # robots.txt: disallowed paths never requested; host C (robots 500) asked for robots.txt only
    assert not [p for p in a.paths() if p.startswith("/private/")]
    assert by_url[a.base + "/private/secret"]["outcome"] == "robots"
    assert set(c.paths()) == {"/robots.txt"} and by_url[c.base + "/"]["outcome"] == "robots_unavailable"

    # politeness: request arrivals on a host are spaced by its delay (Crawl-delay on A); the client
    # spaces its starts exactly, arrival times add network/scheduling jitter on a loaded machine
    for site, delay in ((a, DELAY_A), (b, DELAY)):
        times = sorted(t for t, _, _ in site.log)
        gaps = sorted(y - x for x, y in zip(times, times[1:]))
        assert gaps[0] >= delay - 0.075 and gaps[len(gaps) // 2] >= delay - 0.01
    assert {ua for _, _, ua in a.log} == {CrawlConfig().user_agent}

    # every in-scope page fetched once (the 429 page twice: one retry); none outside the scope
    pages_a = [p for p in a.paths() if p != "/robots.txt" and not p.startswith("/trap/")]
    retried = {"/busy": 2, "/error": 2, "/slow": 2}
    assert {p: pages_a.count(p) for p in set(pages_a)} == {p: retried.get(p, 1) for p in [
        "/", "/a", "/b", "/moved", "/target", "/loop1", "/loop2", "/missing", "/error", "/busy", "/slow",
        "/huge", "/image", "/latin", "/gz", "/gz-only"]}
    assert sorted(p for p in b.paths() if p != "/robots.txt") == ["/", "/p1", "/p2"]
    # robots.txt: asked once per host for the whole crawl (later rounds reuse the answer), archived apart
    assert a.paths().count("/robots.txt") == b.paths().count("/robots.txt") == 1 < stats["rounds"]
    robots_uris = [u for path in (out / "robotstxt").glob("*.warc.gz") for u in warc_uris(path)]
    assert sorted(robots_uris) == sorted(s.base + "/robots.txt" for s in (a, b, c))  # C's 500 as well

    outcomes = {path: by_url[a.base + path]["outcome"] for path in
                ["/moved", "/loop1", "/missing", "/error", "/busy", "/slow", "/huge", "/image", "/latin", "/gz"]}
    assert outcomes == {"/moved": "ok", "/loop1": "redirect_loop", "/missing": "http_status", "/error": "http_status",
                        "/busy": "ok", "/slow": "timeout", "/huge": "too_large", "/image": "content_type",
                        "/latin": "ok", "/gz": "ok"}
    assert by_url[a.base + "/moved"]["final_url"] == a.base + "/target"

    # the trap is bounded: depth at most 4, no path segment three times, under the per-host cap
    trap_rows = [r for r in log if "/trap/" in r["url"]]
    assert max(r["depth"] for r in log) <= 4 and not [p for p in a.paths() if "x/x/x/" in p]
    assert 3 < len(trap_rows) and sum(r["host"] == a.host for r in log) <= 40
    assert stats["rounds"] <= 8 and stats["docs_in"] == len(log)
    assert stats["by_outcome"] == {k: sum(r["outcome"] == k for r in log) for k in {r["outcome"] for r in log}}
    check_warc(out, log)
    check_ingest_extract(tmp_path, out, log)


def check_warc(out, log):
    """Request + response pairs with IP and digests; one response per written log row."""
    records = []
    for path in sorted((out / "warc").glob("*.warc.gz")):
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                records.append((record.rec_type, dict(record.rec_headers.headers)))
    responses = [h for t, h in records if t == "response"]
    requests = [h for t, h in records if t == "request"]
    assert len(responses) == len(requests) == sum(r["warc_file"] is not None for r in log)
    by_id = {h["WARC-Record-ID"]: h for h in responses}
    for request in requests:
        response = by_id[request["WARC-Concurrent-To"]]
        assert request["WARC-Target-URI"] == response["WARC-Target-URI"]
        assert re.match(r"127\.0\.0\.[234]$", response["WARC-IP-Address"])
        assert response["WARC-Payload-Digest"].startswith("sha1:") and "WARC-Block-Digest" in response


def check_ingest_extract(tmp_path, out, log):
    ok = sum(r["outcome"] == "ok" and r["status"] == 200 for r in log)
    ingested = ingest.main(["--input", str(out / "warc"), "--output", str(tmp_path / "ingest"),
                             "--recipe", recipe(tmp_path)])
    assert ingested["kept"] == ok
    extracted = extract.main(["--input", str(tmp_path / "ingest"), "--output", str(tmp_path / "extract"),
                             "--recipe", recipe(tmp_path)])
    assert extracted["docs_in"] == ok
    texts = " ".join(r["text"] or "" for r in pq.read_table(tmp_path / "extract" / "kept").to_pylist())
    assert "Café crème" in texts  # the Latin-1 page decoded by its charset


def test_resume_after_a_kill(spark, sites, tmp_path, monkeypatch):
    """A crawl killed after round 0 continues: no page fetched twice, no duplicate WARC record."""
    a, b, _ = sites
    seeds = [a.base + "/a", b.base + "/"]
    real = crawl.fetch_round

    def killed_in_round_1(spark, out, round_no, *args):
        if round_no == 1:
            raise KeyboardInterrupt("killed")
        return real(spark, out, round_no, *args)

    monkeypatch.setattr(crawl, "fetch_round", killed_in_round_1)
    with pytest.raises(KeyboardInterrupt):
        run_crawl(tmp_path, seeds, ["crawl.max_depth=1"])
    assert not (tmp_path / "crawl" / "_SUCCESS").exists()
    before = len(a.log) + len(b.log)
    monkeypatch.setattr(crawl, "fetch_round", real)
    stats = run_crawl(tmp_path, seeds, ["crawl.max_depth=1"])
    out, log = tmp_path / "crawl", read_log(tmp_path / "crawl")
    for site in (a, b):
        fetched = [p for p in site.paths() if p != "/robots.txt"]
        assert sorted(fetched) == sorted(set(fetched))
    assert sorted(p for p in a.paths() if p != "/robots.txt") == ["/", "/a", "/b"] and len(a.log) + len(b.log) > before
    uris = [h for path in (out / "warc").glob("*.warc.gz") for h in warc_uris(path)]
    assert sorted(uris) == sorted(set(uris)) and len(uris) == stats["kept"] == len(log) - 1  # /private/also
    assert json.loads((out / "_stats.json").read_text())["kept"] == stats["kept"]


def warc_uris(path):
    with open(path, "rb") as f:
        return [r.rec_headers.get_header("WARC-Target-URI") for r in ArchiveIterator(f) if r.rec_type == "response"]
