"""The crawl frontier's pure rules: URL normalisation, scope, trap bounds, link extraction, address safety.

    scope = Scope(config, seed_hosts={"example.com"})
    for link in extract_links(html, base_url):
        url = normalize(link)
        if url and scope.reject_reason(url, depth + 1) is None:
            ...  # goes to the next round's frontier

Normalisation uses `courlan` (lower-case scheme and host, default port dropped, tracking parameters
removed, query sorted) plus RFC 3986 dot-segment removal and fragment stripping, so one page has one
key in the seen-set. Trap bounds follow common crawler practice (Heritrix's `TooManyPathSegments`
and URL length limits, Nutch's `urlfilter-regex` repeated-segment rule): URLs longer than
`max_url_length`, with more than `max_query_params` query parameters, more than `max_path_segments`
segments, or one path segment repeated `max_repeated_segments` times are dropped. Pure Python, no Spark.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit, urlunsplit

import courlan
from lxml import html as lxml_html

SCHEMES = ("http", "https")


def normalize(url: str, base: str | None = None) -> str | None:
    """Absolute, normalised http(s) URL without fragment, or None when it is not one."""
    try:
        url = urljoin(base, courlan.scrub_url(url)) if base else courlan.scrub_url(url)
        parts = urlsplit(url)
        if parts.scheme.lower() not in SCHEMES or not parts.hostname:
            return None
        path = urljoin("/", parts.path or "/")  # resolves ./ and ../ segments
        url = courlan.normalize_url(urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")))
    except ValueError:  # malformed port, IPv6 literal, ...
        return None
    return url.split("#", 1)[0]


def host_of(url: str) -> str:
    """The politeness key: `host[:port]` as written in the normalised URL (one robots.txt per key)."""
    return urlsplit(url).netloc.lower()


def extract_links(html: bytes | str, base_url: str) -> Iterator[str]:
    """Absolute URLs of `<a href>` / `<area href>` in a page, honouring `<base href>` and `rel=nofollow`."""
    try:
        tree = lxml_html.document_fromstring(html)
    except (ValueError, lxml_html.etree.ParserError):
        return
    base = next(iter(tree.xpath("//base/@href")), None)
    base_url = urljoin(base_url, base) if base else base_url
    if _meta_nofollow(tree):
        return
    for element in tree.xpath("//a[@href] | //area[@href]"):
        if "nofollow" in (element.get("rel") or "").lower().split():
            continue
        url = normalize(element.get("href").strip(), base_url)
        if url:
            yield url


def _meta_nofollow(tree) -> bool:
    content = " ".join(tree.xpath("//meta[translate(@name, 'ROBTS', 'robts')='robots']/@content")).lower()
    return "nofollow" in content or "none" in content.replace(",", " ").split()


def trap_reason(url: str, config) -> str | None:
    """Why `url` looks like a crawler trap (see the module docstring for the bounds), or None."""
    if len(url) > config.max_url_length:
        return "url_too_long"
    parts = urlsplit(url)
    if parts.query and len(parts.query.split("&")) > config.max_query_params:
        return "too_many_query_params"
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) > config.max_path_segments:
        return "too_many_path_segments"
    if segments and max(Counter(segments).values()) >= config.max_repeated_segments:
        return "repeated_path_segment"
    return None


class Scope:
    """Which URLs a crawl may fetch: depth, host mode, allow/deny patterns, file extensions, traps."""

    def __init__(self, config, seed_hosts: set[str] | frozenset[str] = frozenset()):
        self.config = config
        self.seed_hosts = {h.lower() for h in seed_hosts}
        self.seed_domains = {_domain(h) for h in self.seed_hosts}
        compile_all = lambda patterns: [re.compile(p) for p in patterns]
        self.allow_hosts, self.deny_hosts = compile_all(config.allowed_hosts), compile_all(config.denied_hosts)
        self.allow_paths, self.deny_paths = compile_all(config.allowed_paths), compile_all(config.denied_paths)

    def reject_reason(self, url: str, depth: int) -> str | None:
        """None when `url` (already normalised) at `depth` is in scope, else a short reason."""
        if depth > self.config.max_depth:
            return "max_depth"
        parts = urlsplit(url)
        host, path = parts.netloc.lower(), urlunsplit(("", "", parts.path, parts.query, ""))
        if not self._host_in_scope(host):
            return "out_of_scope_host"
        if not _matches(self.allow_hosts, host, True) or _matches(self.deny_hosts, host, False):
            return "host_pattern"
        if not _matches(self.allow_paths, path, True) or _matches(self.deny_paths, path, False):
            return "path_pattern"
        if parts.path.lower().endswith(tuple(self.config.skip_extensions)):
            return "file_extension"
        return trap_reason(url, self.config)

    def _host_in_scope(self, host: str) -> bool:
        mode = self.config.scope
        if mode == "open" or not self.seed_hosts:
            return True
        if mode == "domain":
            return _domain(host) in self.seed_domains
        return host in self.seed_hosts  # "host"


def _matches(patterns: list[re.Pattern], text: str, empty: bool) -> bool:
    return any(p.search(text) for p in patterns) if patterns else empty


def _domain(host: str) -> str:
    """Registered domain of a host (`a.b.example.co.uk` -> `example.co.uk`); IPs and unknowns as they are."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return courlan.extract_domain(f"http://{name}/") or name


@functools.lru_cache(maxsize=4096)
def resolve(host: str) -> tuple[str, ...]:
    """IP addresses of a host name (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return ()
    return tuple(dict.fromkeys(info[4][0] for info in infos))


def unsafe_address(ip: str) -> str | None:
    """Why an address must not be crawled by default (private, loopback, ...), or None for public ones."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "bad_address"
    if getattr(addr, "ipv4_mapped", None):
        addr = addr.ipv4_mapped
    for name in ("is_loopback", "is_link_local", "is_multicast", "is_unspecified", "is_reserved", "is_private"):
        if getattr(addr, name):
            return name[3:]
    return None


def address_check(url: str, allow_private: bool) -> tuple[str | None, str | None]:
    """(ip, reason): the address to record and why the URL is refused (None when it is allowed).

    Every resolved address must be public unless `allow_private`: a name with one private address
    could be steered to it (DNS rebinding), so one is enough to refuse.
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        return None, "scheme"
    ips = resolve(parts.hostname)
    if not ips:
        return None, "dns"
    if not allow_private:
        for ip in ips:
            if reason := unsafe_address(ip):
                return ip, f"private_address:{reason}"
    return ips[0], None
