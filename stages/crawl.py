"""The crawl's per-task work: fetch the frontier URLs of a group of hosts, politely, into WARC + log.

    summary = crawl_group(rows, CrawlConfig(), seed_hosts, out="runs/crawl", round_no=0, bucket=3)

Used inside one Spark task of `jobs.crawl` (one task owns each host, so politeness holds on a cluster).
Hosts run concurrently on threads (`threads_per_task`); inside a host, a `HostGate` spaces request
starts by the host's delay (the recipe's `delay`, or robots.txt `Crawl-delay` when larger, capped at
`max_crawl_delay`) and at most `concurrency_per_host` requests are in flight. robots.txt is
fetched first, through the same gate, and asked before every request, redirect hops included.

A task writes three files and commits them in this order, each under a temporary name then renamed:
`warc/r<round>-b<bucket>.warc.gz`, `links/r<round>-b<bucket>.parquet` and last
`log/r<round>-b<bucket>.parquet`, the task's completion marker. A retried or resumed task rewrites
the same names, so a WARC record is never written twice. Pure Python (threads, pyarrow): no Spark.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stages.crawlwarc import CrawlWarcSink
from stages.fetch import FetchResult, Fetcher
from stages.frontier import Scope, extract_links, host_of
from stages.robots import Robots, robots_url


@dataclass(frozen=True)
class CrawlConfig:
    seeds: tuple[str, ...] = ()  # seed URLs besides --seeds FILE
    user_agent: str = "qwenforge-crawler/0.1 (research crawler for LLM pretraining data)"
    obey_robots: bool = True
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
    allow_private_networks: bool = False
    warc_software: str = "qwenforge crawler"

    @property
    def robots_agent(self) -> str:
        """The product token robots.txt groups are matched against (`qwenforge-crawler`)."""
        return self.user_agent.split("/")[0].split()[0]


LOG_SCHEMA = pa.schema([
    ("url", pa.string()), ("final_url", pa.string()), ("host", pa.string()), ("depth", pa.int32()),
    ("status", pa.int32()), ("bytes", pa.int64()), ("content_bytes", pa.int64()), ("fetch_time", pa.string()),
    ("started", pa.float64()), ("seconds", pa.float64()), ("attempts", pa.int32()), ("outcome", pa.string()),
    ("error", pa.string()), ("ip", pa.string()), ("links", pa.int32()), ("round", pa.int32()),
    ("warc_file", pa.string()),
])
LINK_SCHEMA = pa.schema([("url", pa.string()), ("host", pa.string()), ("depth", pa.int32()),
                         ("parent", pa.string()), ("round", pa.int32())])
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


class LazySink:
    """Opens the WARC file on the first record, so a task that fetched nothing leaves no file."""

    def __init__(self, path: Path, software: str):
        self.path, self.software, self.sink, self._lock = path, software, None, threading.Lock()

    def exchange(self, result: FetchResult) -> None:
        with self._lock:
            self.sink = self.sink or CrawlWarcSink(self.path, self.software)
        self.sink.exchange(result)

    def close(self, ok: bool) -> None:
        if self.sink is not None:
            self.sink.__exit__(None if ok else RuntimeError, None, None)


class HostCrawl:
    """Fetches one host's URLs of this round: robots.txt first, then pages through the gate."""

    def __init__(self, host: str, config: CrawlConfig, fetcher: Fetcher, sink: LazySink, scope: Scope, round_no: int):
        self.host, self.config, self.fetcher, self.sink, self.scope = host, config, fetcher, sink, scope
        self.round_no, self.gate = round_no, HostGate(config.delay)
        self.logs, self.links, self.dropped = [], [], Counter()
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
        """Fetches robots.txt; returns a result to log for every URL when the host must not be crawled."""
        if not self.config.obey_robots:
            return None
        result = self.fetcher.fetch(robots_url(any_url), self.gate.wait, any_type=True)
        if result.outcome == "address":
            return result
        status = result.status if result.outcome in ("ok", "http_status", "content_type") else None
        self.robots = Robots.from_response(status, result.content, self.config.robots_agent)
        self.gate.set_delay(self.robots.delay(self.config.delay, self.config.max_crawl_delay))
        if self.robots.status == "unavailable":
            return FetchResult(any_url, any_url, outcome="robots_unavailable", error=result.error or str(result.status))
        return None

    def fetch(self, row: dict) -> None:
        url = row["url"]
        if not self.robots.allowed(url):
            self._log(row, FetchResult(url, url, outcome="robots", error="disallowed by robots.txt"))
            return
        result = self.fetcher.fetch(url, self.gate.wait, self.robots.allowed)
        if result.outcome in WRITTEN:
            self.sink.exchange(result)
        found = self._links(result, row["depth"]) if result.outcome == "ok" else 0
        self._log(row, result, found)

    def _links(self, result: FetchResult, depth: int) -> int:
        urls = list(extract_links(result.content, result.final_url))
        for url in dict.fromkeys(urls):
            reason = self.scope.reject_reason(url, depth + 1)
            if reason:
                self.dropped[reason] += 1
            else:
                self.links.append({"url": url, "host": host_of(url), "depth": depth + 1,
                                   "parent": result.final_url, "round": self.round_no})
        return len(urls)

    def _log(self, row: dict, result: FetchResult, links: int = 0) -> None:
        if result.outcome == "redirect_offsite" and self.scope.reject_reason(result.redirect, row["depth"]) is None:
            self.links.append({"url": result.redirect, "host": host_of(result.redirect), "depth": row["depth"],
                               "parent": row["url"], "round": self.round_no})
        self.logs.append({
            "url": row["url"], "final_url": result.final_url, "host": self.host, "depth": row["depth"],
            "status": result.status, "bytes": len(result.body), "content_bytes": len(result.content),
            "fetch_time": result.fetch_time if result.started else None, "started": result.started or None,
            "seconds": result.seconds, "attempts": result.attempts, "outcome": result.outcome,
            "error": result.error, "ip": result.ip, "links": links, "round": self.round_no,
            "warc_file": self.sink.path.name if result.outcome in WRITTEN else None,
        })


def part_name(round_no: int, bucket: int) -> str:
    return f"r{round_no:04d}-b{bucket:05d}"


def crawl_group(rows: list[dict], config: CrawlConfig, seed_hosts: set[str], out: str, round_no: int,
                bucket: int) -> dict:
    """Crawls the frontier rows of one host group and commits its WARC, links and log (module docstring)."""
    name, out = part_name(round_no, bucket), Path(out)
    by_host = defaultdict(list)
    for row in rows:
        by_host[row["host"]].append(row)
    fetcher = Fetcher(config, pool_size=max(1, config.concurrency_per_host))
    sink, scope = LazySink(out / "warc" / f"{name}.warc.gz", config.warc_software), Scope(config, seed_hosts)
    crawls = [HostCrawl(host, config, fetcher, sink, scope, round_no) for host in sorted(by_host)]
    ok = False
    try:
        with ThreadPoolExecutor(max(1, min(config.threads_per_task, len(crawls)))) as pool:
            list(pool.map(lambda c: c.run(by_host[c.host]), crawls))
        ok = True
    finally:
        sink.close(ok)
    logs = [log for c in crawls for log in c.logs]
    write_parquet(out / "links" / f"{name}.parquet", [link for c in crawls for link in c.links], LINK_SCHEMA)
    write_parquet(out / "log" / f"{name}.parquet", logs, LOG_SCHEMA)
    dropped = sum((c.dropped for c in crawls), Counter())
    return {"bucket": bucket, "hosts": len(crawls), "fetched": len(logs), "dropped_links": dict(dropped),
            "warc_records": sink.sink.count if sink.sink else 0}


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    """Writes under a temporary name, then renames (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp, compression="zstd")
    os.replace(tmp, path)
