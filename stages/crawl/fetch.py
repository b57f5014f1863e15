"""Fetching one URL over HTTP(S) with `urllib3`: timeouts, retries, redirects, size cap, content types.

    fetcher = Fetcher(CrawlConfig())
    result = fetcher.fetch("https://example.com/", before_request=gate.wait, allowed=robots.allowed)
    result.outcome, result.status, result.content     # "ok", 200, decoded bytes

- Retries: 429, 5xx (500, 502, 503, 504) and connection errors are retried `max_retries` times with
  exponential backoff (`backoff_base * 2**attempt`, at most `backoff_max` seconds), or after the
  server's `Retry-After` (seconds or an HTTP date, RFC 9110 section 10.2.3) when it sends one; a
  `Retry-After` longer than `max_retry_after` ends the fetch instead of stalling the host.
- Redirects (301, 302, 303, 307, 308) on the same host are followed up to `max_redirects` (RFC 9110
  section 15.4 suggests detecting loops; 5 is Chrome's and RFC 9309's robots.txt figure, curl's
  default is 50), each hop going through `before_request` (politeness) and `allowed` (robots.txt);
  a URL seen twice in one chain is a loop. A redirect to another host is not followed: its target
  is returned as a link for that host's own task, so politeness still holds per host.
- Bodies: the raw bytes are kept as sent (for the WARC record); `content` is the decoded body
  (gzip, deflate; brotli and zstd when their modules are installed). A body whose raw or decoded size
  passes `max_bytes`, or that takes longer than `total_timeout` to arrive, is dropped.
- Only `content_types` are downloaded for 2xx answers; other types are closed after the headers.
- Addresses: before every attempt and every redirect hop the name is resolved once (`resolver`,
  getaddrinfo-shaped, default `socket.getaddrinfo`) and every address must be public unless
  `allow_private_networks`: refused are shared 100.64.0.0/10 (cloud metadata), private, loopback,
  link-local, multicast, reserved, documentation and benchmarking ranges, IPv4-mapped and
  IPv4-compatible IPv6, Teredo, 6to4 and NAT64 carrying a refused IPv4 address, and the rest listed
  in stages/crawl/frontier.py. The connection is then pinned: it goes to those checked addresses (in order,
  the next one on a connection failure), never to a second lookup, while the URL, the `Host` header
  and TLS (SNI and the certificate's name) keep the original name. Connection pools are keyed by the
  address connected to, so a name that moves never reuses a connection to its old address.
"""

from __future__ import annotations

import email.utils
import time
import zlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import urllib3

from stages.crawl.frontier import address_check, host_of, normalize

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024


@dataclass
class FetchResult:
    url: str                       # the URL asked for
    final_url: str                 # after same-host redirects
    outcome: str = "ok"            # ok | http_status | content_type | too_large | timeout | error | address |
    status: int | None = None      # redirect_offsite | redirect_loop | too_many_redirects | robots | decode_error
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""              # raw bytes as sent (content-encoded)
    content: bytes = b""           # decoded body
    ip: str | None = None
    error: str | None = None
    redirect: str | None = None    # offsite redirect target, crawled later by its own host's task
    started: float = 0.0           # epoch seconds of the first request
    seconds: float = 0.0
    attempts: int = 0

    @property
    def fetch_time(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class Fetcher:
    """Fetches URLs with one connection pool per checked address (thread-safe; share one per task).

    `resolver` stands in for `socket.getaddrinfo`; `ca_certs` is a CA bundle to trust instead of the system's.
    """

    def __init__(self, config, pool_size: int = 4, resolver=None, ca_certs: str | None = None):
        self.config, self.resolver = config, resolver
        tls = {"ca_certs": ca_certs} if ca_certs else {}
        self.pool = urllib3.PoolManager(num_pools=256, maxsize=pool_size, block=False, retries=False, **tls)
        self.timeout = urllib3.Timeout(connect=config.connect_timeout, read=config.read_timeout)

    def fetch(self, url: str, before_request=None, allowed=None, any_type: bool = False) -> FetchResult:
        """Fetches `url`, following same-host redirects; never raises for network or HTTP trouble.

        `any_type` downloads any content type (robots.txt is text/plain).
        """
        chain, current, started = [url], url, time.time()
        for _ in range(self.config.max_redirects + 1):
            result = self.fetch_once(current, before_request, any_type)
            result.url, result.started = url, started
            result.seconds = round(time.time() - started, 4)
            if result.status not in REDIRECT_STATUSES or result.outcome != "http_status":
                return result
            target = normalize(result.header("Location") or "", current)
            if target is None:
                return _finish(result, "error", "redirect without a usable Location")
            if host_of(target) != host_of(url):
                result.redirect = target
                return _finish(result, "redirect_offsite", target)
            if target in chain:
                return _finish(result, "redirect_loop", " -> ".join(chain + [target]))
            if allowed is not None and not allowed(target):
                return _finish(result, "robots", f"redirect target {target} disallowed")
            chain.append(target)
            current = target
        return _finish(result, "too_many_redirects", " -> ".join(chain))

    def fetch_once(self, url: str, before_request=None, any_type: bool = False) -> FetchResult:
        """One URL without following redirects, with retries (see the module docstring)."""
        result = FetchResult(url, url)
        for attempt in range(self.config.max_retries + 1):
            ips, refused = address_check(url, self.config.allow_private_networks, self.resolver)
            if refused:
                return _finish(FetchResult(url, url, ip=next(iter(ips), None)), "address", refused)
            if before_request is not None:
                before_request()
            result = self.request(url, ips, any_type)
            result.attempts = attempt + 1
            wait = self._retry_wait(result, attempt)
            if wait is None or attempt == self.config.max_retries:
                return result
            if wait > self.config.max_retry_after:
                return _finish(result, result.outcome, f"Retry-After {wait:.0f} s > max_retry_after")
            time.sleep(wait)
        return result

    def _retry_wait(self, result: FetchResult, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when the answer is final."""
        if result.outcome not in ("error", "timeout") and result.status not in RETRY_STATUSES:
            return None
        backoff = min(self.config.backoff_max, self.config.backoff_base * 2 ** attempt)
        after = retry_after(result.header("Retry-After")) if result.status else None
        return backoff if after is None else after

    def request(self, url: str, ips: tuple[str, ...], any_type: bool = False) -> FetchResult:
        """One GET to the checked `ips`; the body is read only for wanted content types and within the size cap."""
        headers = {"Host": urlsplit(url).netloc.rpartition("@")[2], "User-Agent": self.config.user_agent,
                   "Accept-Encoding": ", ".join(ENCODINGS), "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"}
        result = FetchResult(url, url, ip=ips[0], started=time.time(), request_headers=list(headers.items()))
        try:
            resp = self._open(url, ips, headers)
        except urllib3.exceptions.HTTPError as err:
            return _finish(result, _error_kind(err), f"{type(err).__name__}: {err}"[:500])
        complete = False
        try:
            complete = self._read(resp, result, any_type)
        except urllib3.exceptions.HTTPError as err:
            _finish(result, _error_kind(err), f"{type(err).__name__}: {err}"[:500])
        finally:
            resp.release_conn() if complete else resp.close()  # an unread body spoils the connection
        result.seconds = round(time.time() - result.started, 4)
        return result

    def _open(self, url: str, ips: tuple[str, ...], headers: dict):
        """GET over a connection to the first of `ips` that accepts one, as urllib3 tries getaddrinfo's answers.

        The pool's host is the address itself, so urllib3 never looks the name up; the name travels in
        `Host` and, for https, as `server_hostname` (SNI, and what the certificate is checked against).
        """
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        tls = {"server_hostname": parts.hostname} if parts.scheme == "https" else {}
        target = urllib3.util.parse_url(url).request_uri

        def get(ip: str):
            pool = self.pool.connection_from_host(ip, port, parts.scheme, pool_kwargs=tls)
            return pool.urlopen("GET", target, headers=headers, redirect=False, retries=False, assert_same_host=False,
                                preload_content=False, decode_content=False, timeout=self.timeout)

        for ip in ips[:-1]:
            try:
                return get(ip)
            except urllib3.exceptions.ConnectTimeoutError:  # NewConnectionError too: the next address
                continue
        return get(ips[-1])

    def _read(self, resp, result: FetchResult, any_type: bool = False) -> bool:
        """Fills `result` from the response; True when the body was read to its end."""
        result.status, result.reason = resp.status, resp.reason or ""
        result.headers = list(resp.headers.items())
        result.ip = _peer_ip(resp) or result.ip
        result.outcome = "ok" if resp.status == 200 else "http_status"
        mime = (result.header("Content-Type") or "").split(";")[0].strip().lower()
        if 200 <= resp.status < 300 and not any_type and mime not in self.config.content_types:
            _finish(result, "content_type", mime or "missing")
            return False
        length = result.header("Content-Length") or "0"
        if length.isdigit() and int(length) > self.config.max_bytes:
            _finish(result, "too_large", f"Content-Length {length}")
            return False
        body, why = self._read_body(resp, result.started)
        if why:
            _finish(result, "too_large" if why.startswith(">") else "timeout", why)
            return False
        result.body = body
        content, why = decode(body, result.header("Content-Encoding"), self.config.max_bytes)
        if why:
            _finish(result, "too_large" if why.startswith(">") else "decode_error", why)
        result.content = content
        return True

    def _read_body(self, resp, started: float) -> tuple[bytes, str | None]:
        parts, size = [], 0
        for chunk in resp.stream(CHUNK, decode_content=False):
            parts.append(chunk)
            size += len(chunk)
            if size > self.config.max_bytes:
                return b"", f">{self.config.max_bytes} bytes"
            if time.time() - started > self.config.total_timeout:
                return b"", f"body took over {self.config.total_timeout} s"
        return b"".join(parts), None


def _finish(result: FetchResult, outcome: str, error: str | None) -> FetchResult:
    result.outcome, result.error = outcome, error
    return result


def _error_kind(err: Exception) -> str:
    if isinstance(err, urllib3.exceptions.NewConnectionError):  # a subclass of ConnectTimeoutError
        return "error"
    timeouts = (urllib3.exceptions.TimeoutError, urllib3.exceptions.ReadTimeoutError)
    if isinstance(err, timeouts) or isinstance(getattr(err, "reason", None), timeouts):
        return "timeout"
    return "error"


def _peer_ip(resp) -> str | None:
    try:
        return resp.connection.sock.getpeername()[0]
    except (AttributeError, OSError, TypeError):
        return None


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _decoders() -> dict:
    found = {"gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), "x-gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
             "deflate": lambda: zlib.decompressobj()}
    try:
        import brotli  # optional
        found["br"] = brotli.Decompressor
    except ImportError:
        pass
    return found


DECODERS = _decoders()
ENCODINGS = tuple(name for name in DECODERS if name != "x-gzip")


def decode(body: bytes, encoding: str | None, limit: int) -> tuple[bytes, str | None]:
    """Decodes a content-encoded body; stops past `limit` bytes (decompression bombs)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return body, None
    if encoding not in DECODERS:
        return b"", f"unsupported Content-Encoding {encoding}"
    try:
        if encoding == "deflate" and body[:1] and (body[0] & 0x0F) != 8:
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, limit + 1)  # raw deflate
        elif encoding == "br":
            data = DECODERS["br"]().process(body)
        else:
            data = DECODERS[encoding]().decompress(body, limit + 1)
    except Exception as err:  # zlib.error, brotli.error
        return b"", f"{encoding}: {err}"
    return (b"", f">{limit} bytes decoded") if len(data) > limit else (data, None)
