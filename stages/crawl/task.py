"""The crawl's per-task work: fetch the frontier URLs of a group of hosts, politely, into WARC + log.

    summary = crawl_group(rows, CrawlConfig(), seed_hosts, out="runs/crawl", round_no=0, bucket=3)

Used inside one Spark task of `jobs.crawl` (one task owns each host, so politeness holds on a cluster).
Hosts run concurrently on threads (`threads_per_task`); inside a host, a `HostGate` spaces request
starts by the host's delay (the recipe's `delay`, or robots.txt `Crawl-delay` when larger, capped at
`max_crawl_delay`) and at most `concurrency_per_host` requests are in flight. robots.txt is
fetched first, through the same gate (or reused from an earlier round, for at most `robots_max_age`),
archived in `robotstxt/`, and asked before every request, redirect hops included.

A task's WARC records, new links and log rows are committed in segments
(`warc/`, `links/`, `log/` `r<round>-b<bucket>-s<segment>`, see stages/crawl/segments.py) every
`checkpoint_pages` pages or `checkpoint_seconds`: a rerun after a kill skips the URLs of committed
segments and drops the files of an uncommitted one, so no page is archived twice and at most one
segment per task is refetched. Pure Python (threads, pyarrow): no Spark.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from stages.base import EXITS, STAGE_ERROR, error_detail
from stages.crawl.segments import SegmentWriter, robots_cache
from stages.crawl.fetch import FetchResult, Fetcher
from stages.crawl.frontier import Scope, extract_links, host_of
from stages.crawl.robots import Robots, robots_url


@dataclass(frozen=True)
class CrawlConfig:
    seeds: tuple[str, ...] = ()  # seed URLs besides --seeds FILE
    user_agent: str = "qwenforge-crawler/0.1 (research crawler for LLM pretraining data)"
    obey_robots: bool = True
    robots_max_age: float = 86_400.0  # a host's robots.txt answer is reused by later rounds this long (RFC 9309 2.4: 24 h)
    delay: float = 1.0  # seconds between request starts on one host (Heritrix/Nutch default order)
    max_crawl_delay: float = 30.0  # robots.txt Crawl-delay is honoured up to this many seconds
    concurrency_per_host: int = 1  # requests in flight per host
    threads_per_task: int = 64  # hosts fetched at the same time by one Spark task
    host_groups: int = 0  # Spark tasks per round; 0: Spark's default parallelism
    max_rounds: int = 10
    max_pages: int = 10_000
    max_pages_per_host: int = 1_000  # trap bound
    max_depth: int = 5  # seeds are depth 0
    scope: str = "host"  # host (seed hosts only) | domain (their registered domains) | open
    allowed_hosts: tuple[str, ...] = ()  # regexes on host[:port]; empty: all
    denied_hosts: tuple[str, ...] = ()
    allowed_paths: tuple[str, ...] = ()  # regexes on path?query; empty: all
    denied_paths: tuple[str, ...] = ()
    skip_extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".gif", ".svg", ".ico", ".webp", ".css", ".js",
                                        ".pdf", ".zip", ".gz", ".tar", ".mp3", ".mp4", ".avi", ".woff", ".woff2")
    max_url_length: int = 2048  # common browser/crawler limit (IE/sitemaps.org: 2,048)
    max_query_params: int = 10
    max_path_segments: int = 32
    max_repeated_segments: int = 3
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 120.0  # whole body, so a trickling server cannot hold a thread
    max_retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 120.0
    max_redirects: int = 5
    max_bytes: int = 8_000_000  # as ingest.max_payload_bytes
    content_types: tuple[str, ...] = ("text/html", "application/xhtml+xml")
    checkpoint_pages: int = 100  # a task commits its WARC/links/log segment every N pages...
    checkpoint_seconds: float = 60.0  # ...or every N seconds: a killed crawl refetches at most that much
    allow_private_networks: bool = False
    warc_software: str = "qwenforge crawler"

    @property
    def robots_agent(self) -> str:
        """The product token robots.txt groups are matched against (`qwenforge-crawler`)."""
        return self.user_agent.split("/")[0].split()[0]


WRITTEN = ("ok", "http_status", "decode_error")  # outcomes with a complete HTTP response in the WARC


class HostGate:
    """Spaces request starts on one host by at least `delay` seconds (thread-safe)."""

    def __init__(self, delay: float):
        self.delay, self._next, self._lock = delay, 0.0, threading.Lock()

    def wait(self) -> None:
        """Returns when a request may start; the lock is held while sleeping, so waiters queue and
        the delay counts from the previous caller's actual start, not from when it was booked."""
        with self._lock:
            pause = self._next - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self._next = time.monotonic() + self.delay

    def set_delay(self, delay: float) -> None:
        """Changes the spacing, including for the request already booked (robots.txt Crawl-delay)."""
        with self._lock:
            self._next += delay - self.delay
            self.delay = delay


class HostCrawl:
    """Fetches one host's URLs of this round: robots.txt first, then pages through the gate."""

    def __init__(self, host: str, config: CrawlConfig, fetcher: Fetcher, writer: SegmentWriter, scope: Scope,
                 round_no: int):
        self.host, self.config, self.fetcher, self.writer, self.scope = host, config, fetcher, writer, scope
        self.round_no, self.gate = round_no, HostGate(config.delay)
        self.fetched, self.dropped, self.cached = 0, Counter(), None
        self.robots = Robots.ignored(config.robots_agent)

    def run(self, rows: list[dict]) -> HostCrawl:
        rows = sorted(rows, key=lambda r: (r["depth"], r["url"]))
        refused = self._load_robots(rows[0]["url"])
        if refused is not None:
            for row in rows:
                self._log(row, FetchResult(row["url"], row["url"], outcome=refused.outcome, error=refused.error))
            return self
        workers = max(1, self.config.concurrency_per_host)
        if workers == 1:
            for row in rows:
                self.fetch(row)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(self.fetch, rows))
        return self

    def _load_robots(self, any_url: str) -> FetchResult | None:
        """robots.txt from an earlier round's answer (`cached`, RFC 9309 2.4: at most `robots_max_age`) or
        fetched; returns a result to log for every URL when the host must not be crawled."""
        if not self.config.obey_robots:
            return None
        answer = self.cached or self._fetch_robots(robots_url(any_url))
        if isinstance(answer, FetchResult):
            return answer
        self.robots = Robots.from_response(answer["status"], answer["body"], self.config.robots_agent)
        self.gate.set_delay(self.robots.delay(self.config.delay, self.config.max_crawl_delay))
        if self.robots.status == "unavailable":
            return FetchResult(any_url, any_url, outcome="robots_unavailable", error=answer["error"] or str(answer["status"]))
        return None

    def _fetch_robots(self, url: str) -> dict | FetchResult:
        """Fetches robots.txt and records the answer (and its WARC records) with the task's segment."""
        result = self.fetcher.fetch(url, self.gate.wait, any_type=True)
        if result.outcome == "address":
            return result
        status = result.status if result.outcome in ("ok", "http_status", "content_type") else None
        row = {"host": self.host, "url": url, "status": status, "body": result.content, "fetched_at": time.time(),
               "error": result.error}
        self.writer.robots(row, result if result.outcome in WRITTEN + ("content_type",) else None)
        return row

    def fetch(self, row: dict) -> None:
        """Fetches one URL and logs it; an unexpected error on this URL is logged as its outcome
        (`error`, detail `stage_error: ...`) and the host's other URLs go on."""
        url = row["url"]
        try:
            if not self.robots.allowed(url):
                self._log(row, FetchResult(url, url, outcome="robots", error="disallowed by robots.txt"))
                return
            result = self.fetcher.fetch(url, self.gate.wait, self.robots.allowed)
            found = self._links(result, row["depth"]) if result.outcome == "ok" else (0, [])
        except EXITS:
            raise
        except BaseException as err:  # noqa: BLE001 - one hostile page or URL must not end the task
            detail = f"{STAGE_ERROR}: {error_detail('crawl', err)}"
            result, found = FetchResult(url, url, outcome="error", error=detail), (0, [])
        self._log(row, result, *found)

    def _links(self, result: FetchResult, depth: int) -> tuple[int, list[dict]]:
        """(links on the page, the in-scope ones as frontier rows)."""
        urls, kept = list(extract_links(result.content, result.final_url)), []
        for url in dict.fromkeys(urls):
            reason = self.scope.reject_reason(url, depth + 1)
            if reason:
                self.dropped[reason] += 1
            else:
                kept.append({"url": url, "host": host_of(url), "depth": depth + 1,
                             "parent": result.final_url, "round": self.round_no})
        return len(urls), kept

    def _log(self, row: dict, result: FetchResult, links: int = 0, found: list[dict] = ()) -> None:
        found = list(found)
        if result.outcome == "redirect_offsite" and self.scope.reject_reason(result.redirect, row["depth"]) is None:
            found.append({"url": result.redirect, "host": host_of(result.redirect), "depth": row["depth"],
                          "parent": row["url"], "round": self.round_no})
        self.fetched += 1
        self.writer.record({
            "url": row["url"], "final_url": result.final_url, "host": self.host, "depth": row["depth"],
            "status": result.status, "bytes": len(result.body), "content_bytes": len(result.content),
            "fetch_time": result.fetch_time if result.started else None, "started": result.started or None,
            "seconds": result.seconds, "attempts": result.attempts, "outcome": result.outcome,
            "error": result.error, "ip": result.ip, "links": links, "round": self.round_no, "warc_file": None,
        }, found, result if result.outcome in WRITTEN else None)


def part_name(round_no: int, bucket: int) -> str:
    return f"r{round_no:04d}-b{bucket:05d}"


def crawl_group(rows: list[dict], config: CrawlConfig, seed_hosts: set[str], out: str, round_no: int,
                bucket: int) -> dict:
    """Crawls the frontier rows of one host group into committed segments (stages/crawl/segments.py),
    skipping the URLs an earlier, killed attempt already committed."""
    writer = SegmentWriter(out, part_name(round_no, bucket), config.warc_software,
                           config.checkpoint_pages, config.checkpoint_seconds)
    done = writer.done_urls()
    by_host = defaultdict(list)
    for row in rows:
        if row["url"] not in done:
            by_host[row["host"]].append(row)
    fetcher, scope = Fetcher(config, pool_size=max(1, config.concurrency_per_host)), Scope(config, seed_hosts)
    crawls = [HostCrawl(host, config, fetcher, writer, scope, round_no) for host in sorted(by_host)]
    cache = robots_cache(out, f"-b{bucket:05d}", config.robots_max_age)
    for c in crawls:
        c.cached = cache.get(c.host)
    ok = False
    try:
        with ThreadPoolExecutor(max(1, min(config.threads_per_task, len(crawls) or 1))) as pool:
            list(pool.map(lambda c: c.run(by_host[c.host]), crawls))
        ok = True
    finally:
        writer.close(ok)
    dropped = sum((c.dropped for c in crawls), Counter())
    return {"bucket": bucket, "hosts": len(crawls), "fetched": sum(c.fetched for c in crawls),
            "skipped_done": len(done), "dropped_links": dict(dropped), "warc_records": writer.records,
            "segments": writer.segments, "robots_cached": sum(c.cached is not None for c in crawls)}
