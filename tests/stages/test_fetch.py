"""Fetching, robots.txt and the host gate against real HTTP servers on 127.0.0.x (server-side logs).

`Site` is also used by tests/jobs/test_crawl.py and tests/stages/test_crawl_hostile.py: a
ThreadingHTTPServer in a thread (plain or TLS) whose routes return (status, headers, body, delay) and
which logs every request with its arrival time and request headers.
"""

from __future__ import annotations

import email.utils
import gzip
import ssl
import threading
import time
import urllib.robotparser
import zlib
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stages.crawl.task import CrawlConfig, HostGate
from stages.crawl.fetch import Fetcher, decode, retry_after
from stages.crawl.frontier import unsafe_address
from stages.crawl.robots import Robots, robots_url


def page(body: bytes | str = b"<html><body>ok</body></html>", status: int = 200, ctype: str = "text/html; charset=utf-8",
         headers: tuple = (), delay: float = 0.0, length: bool = True):
    body = body.encode() if isinstance(body, str) else body
    return lambda hit: (status, [("Content-Type", ctype), *headers], body, delay, length)


def redirect(location: str, status: int = 301):
    return page(b"", status=status, headers=(("Location", location),))


class Site:
    """A real HTTP/1.1 server on (ip, free port) in a daemon thread, with a server-side request log."""

    def __init__(self, ip: str = "127.0.0.1", routes: dict | None = None, port: int = 0,
                 tls: ssl.SSLContext | None = None):
        self.routes, self.log, self.headers, self.lock = dict(routes or {}), [], [], threading.Lock()
        self.server = ThreadingHTTPServer((ip, port), _handler(self))
        self.server.daemon_threads = True
        if tls is not None:  # the handshake runs on accept, in the serving thread
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_port
        self.host = f"{ip}:{self.port}"
        self.base = f"{'https' if tls else 'http'}://{self.host}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hits(self, path: str) -> list[float]:
        """Arrival times (epoch seconds) of the requests for `path`."""
        return [t for t, p, _ in self.log if p == path]

    def paths(self) -> list[str]:
        return [p for _, p, _ in self.log]

    def answer(self, path: str):
        route = self.routes.get(path) or self.routes.get(path.split("?")[0])
        if route is None:
            prefix = next((k for k in self.routes if k.endswith("*") and path.startswith(k[:-1])), None)
            route = self.routes[prefix] if prefix else page(b"not found", status=404)
        return route(len(self.hits(path)) - 1)  # 0 for the first request of this path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(site: Site):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            with site.lock:
                site.log.append((time.time(), self.path, self.headers.get("User-Agent")))
                site.headers.append(dict(self.headers.items()))
                status, headers, body, delay, length = site.answer(self.path)
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body))) if length else self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = not length
            time.sleep(delay)
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def site():
    server = Site("127.0.0.2")
    yield server
    server.close()


CONFIG = CrawlConfig(allow_private_networks=True, max_retries=2, backoff_base=0.1, backoff_max=1.0,
                     connect_timeout=2.0, read_timeout=2.0, max_bytes=100_000)


def test_ok_page_and_user_agent(site):
    site.routes["/"] = page("<a href='/x'>x</a>")
    result = Fetcher(CONFIG).fetch(site.base + "/")
    assert (result.outcome, result.status, result.content) == ("ok", 200, b"<a href='/x'>x</a>")
    assert result.ip == "127.0.0.2" and site.log[0][2] == CONFIG.user_agent


def test_retry_after_is_honoured(site):
    site.routes["/busy"] = lambda hit: (429, [("Retry-After", "1")], b"", 0, True) if hit == 0 else page()(hit)
    result = Fetcher(CONFIG).fetch(site.base + "/busy")
    first, second = site.hits("/busy")
    assert (result.outcome, result.attempts) == ("ok", 2)
    assert second - first >= 1.0 - 0.02  # Retry-After: 1, not backoff_base (0.1)


def test_5xx_exponential_backoff_then_gives_up(site):
    site.routes["/down"] = page(b"down", status=503)
    result = Fetcher(CONFIG).fetch(site.base + "/down")
    times = site.hits("/down")
    assert (result.outcome, result.status, len(times)) == ("http_status", 503, CONFIG.max_retries + 1)
    for attempt, (a, b) in enumerate(zip(times, times[1:])):
        assert b - a >= CONFIG.backoff_base * 2 ** attempt - 0.02


def test_retry_after_over_the_cap_ends_the_fetch(site):
    site.routes["/later"] = page(b"", status=503, headers=(("Retry-After", "3600"),))
    result = Fetcher(CONFIG).fetch(site.base + "/later")
    assert result.outcome == "http_status" and "max_retry_after" in result.error and len(site.hits("/later")) == 1


def test_connection_error_is_retried():
    config = replace(CONFIG, backoff_base=0.01)
    result = Fetcher(config).fetch("http://127.0.0.2:9/")  # discard port: nothing listens
    assert result.outcome == "error" and result.attempts == config.max_retries + 1


def test_redirect_chain_loop_limit_and_offsite(site):
    other = Site("127.0.0.3")
    try:
        site.routes.update({"/r1": redirect("/r2"), "/r2": redirect("/final", 302), "/final": page("done"),
                            "/l1": redirect("/l2"), "/l2": redirect("/l1"), "/off": redirect(other.base + "/x")})
        for i in range(8):
            site.routes[f"/c{i}"] = redirect(f"/c{i + 1}", 307)
        fetcher = Fetcher(CONFIG)
        ok = fetcher.fetch(site.base + "/r1")
        assert (ok.outcome, ok.final_url, ok.content) == ("ok", site.base + "/final", b"done")
        assert fetcher.fetch(site.base + "/l1").outcome == "redirect_loop"
        assert site.paths().count("/l1") == 1 and site.paths().count("/l2") == 1
        assert fetcher.fetch(site.base + "/c0").outcome == "too_many_redirects"
        assert sum(p.startswith("/c") for p in site.paths()) == CONFIG.max_redirects + 1
        off = fetcher.fetch(site.base + "/off")
        assert (off.outcome, off.redirect, other.log) == ("redirect_offsite", other.base + "/x", [])
        blocked = fetcher.fetch(site.base + "/r1", allowed=lambda url: not url.endswith("/r2"))
        assert blocked.outcome == "robots" and "/r2" not in site.paths()[-1:]
    finally:
        other.close()


def test_size_cap_with_and_without_content_length(site):
    big = b"<p>" + b"x" * 300_000
    site.routes.update({"/big": page(big), "/stream": page(big, length=False)})
    fetcher = Fetcher(CONFIG)
    assert fetcher.fetch(site.base + "/big").outcome == "too_large"
    assert fetcher.fetch(site.base + "/stream").outcome == "too_large"


def test_gzip_page_and_gzip_bomb(site):
    html = "<html><body>" + "café " * 100 + "</body></html>"
    site.routes["/gz"] = page(gzip.compress(html.encode()), headers=(("Content-Encoding", "gzip"),))
    site.routes["/bomb"] = page(gzip.compress(b"\0" * 5_000_000), headers=(("Content-Encoding", "gzip"),))
    fetcher = Fetcher(CONFIG)
    result = fetcher.fetch(site.base + "/gz")
    assert result.content == html.encode() and gzip.decompress(result.body) == result.content
    bomb = fetcher.fetch(site.base + "/bomb")
    assert bomb.outcome == "too_large" and len(gzip.compress(b"\0" * 5_000_000)) < CONFIG.max_bytes


def test_deflate_both_framings():
    text = b"<p>deflated</p>" * 10
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode(zlib.compress(text), "deflate", 10_000) == (text, None)
    assert decode(raw.compress(text) + raw.flush(), "deflate", 10_000) == (text, None)


def test_binary_content_type_is_not_downloaded(site):
    site.routes["/img"] = page(b"\x89PNG" + bytes(range(256)) * 100, ctype="image/png")
    result = Fetcher(CONFIG).fetch(site.base + "/img")
    assert (result.outcome, result.body, result.error) == ("content_type", b"", "image/png")


def test_slow_page_times_out(site):
    site.routes["/slow"] = page(delay=3.0)
    config = replace(CONFIG, read_timeout=0.5, max_retries=0)
    started = time.time()
    result = Fetcher(config).fetch(site.base + "/slow")
    assert result.outcome == "timeout" and time.time() - started < 2.0


def test_private_addresses_are_refused_by_default(site):
    site.routes["/"] = page()
    result = Fetcher(replace(CONFIG, allow_private_networks=False)).fetch(site.base + "/")
    assert result.outcome == "address" and "loopback" in result.error and site.log == []


@pytest.mark.parametrize("ip,reason", [("10.1.2.3", "private"), ("192.168.0.1", "private"), ("127.0.0.5", "loopback"),
                                       ("169.254.0.9", "link_local"), ("224.0.0.1", "multicast"), ("::1", "loopback"),
                                       ("::ffff:127.0.0.1", "ipv4_mapped"), ("0.0.0.0", "unspecified"),
                                       ("8.8.8.8", None), ("2606:4700:4700::1111", None)])
def test_unsafe_address(ip, reason):
    assert unsafe_address(ip) == reason


def test_retry_after_http_date():
    now = time.time()
    assert retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert retry_after("7") == 7.0 and retry_after("soon") is None


ROBOTS = b"""User-agent: *
Disallow: /private/
Crawl-delay: 2

User-agent: qwenforge-crawler
Disallow: /no-bots/
Allow: /no-bots/but-this
Crawl-delay: 1
"""


@pytest.mark.parametrize("path", ["/", "/private/x", "/no-bots/", "/no-bots/page", "/other"])
def test_robots_agrees_with_stdlib_parser(path):
    """Protego through Robots against urllib.robotparser on rules both read the same way."""
    reference = urllib.robotparser.RobotFileParser()
    reference.parse(ROBOTS.decode().splitlines())
    robots = Robots.from_response(200, ROBOTS, "qwenforge-crawler")
    url = "http://example.com" + path
    assert robots.allowed(url) == reference.can_fetch("qwenforge-crawler", url)
    assert robots.crawl_delay() == float(reference.crawl_delay("qwenforge-crawler"))


def test_robots_status_rules():
    assert Robots.from_response(404, b"", "a").allowed("http://h/x")  # RFC 9309: unavailable -> allow
    assert not Robots.from_response(503, b"", "a").allowed("http://h/x")  # unreachable -> disallow
    assert not Robots.from_response(None, b"", "a").allowed("http://h/x")
    assert Robots.from_response(200, ROBOTS, "qwenforge-crawler").delay(0.1, cap=0.5) == 0.5
    assert robots_url("http://h:8/a/b?c") == "http://h:8/robots.txt"


def test_host_gate_spaces_starts_across_threads():
    gate, starts = HostGate(0.15), []
    threads = [threading.Thread(target=lambda: (gate.wait(), starts.append(time.monotonic()))) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts.sort()
    assert all(b - a >= 0.15 - 0.01 for a, b in zip(starts, starts[1:]))
