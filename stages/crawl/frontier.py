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
segments, or one path segment repeated `max_repeated_segments` times are dropped. `normalize` also
drops userinfo (no credentials are sent, and `user@host` must not be a second politeness key) and
refuses hosts that cannot be looked up (invalid IDNA labels, over 253 characters, control
characters, percent signs, zone ids) and ports outside 1-65535.

Address safety (`address_check`, asked by stages/crawl/fetch.py before every request and redirect hop):
an address is public only if `ipaddress` calls it global and it is in none of these ranges, whatever
the Python version says about them: shared 100.64.0.0/10 (carrier NAT, cloud metadata such as
100.100.100.200), private, loopback, link-local, unspecified, multicast, reserved, documentation,
benchmarking and IETF protocol ranges, the 6to4 relay anycast 192.88.99.0/24, IPv4-mapped and
IPv4-compatible IPv6, Teredo, local-use NAT64 64:ff9b:1::/48, SRv6 5f00::/16, unique-local,
site-local, zone-scoped addresses and any IPv6 outside 2000::/3. 6to4 (2002::/16) and NAT64
(64:ff9b::/96) addresses are judged by the IPv4 address they carry. A name is refused when any of its
addresses is not public: the answer set is the attacker's to choose, and refusing it whole keeps the
verdict independent of which record a connection would try first. Pure Python, no Spark.
"""

from __future__ import annotations

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
    """Absolute, normalised http(s) URL without fragment or userinfo, or None when it is not one."""
    try:
        url = urljoin(base, courlan.scrub_url(url)) if base else courlan.scrub_url(url)
        parts = urlsplit(url)
        if parts.scheme.lower() not in SCHEMES or not valid_host(parts.hostname) or parts.port == 0:
            return None  # .port raises ValueError past 65535 or when it is not a number
        netloc = parts.netloc.rpartition("@")[2]
        path = urljoin("/", parts.path or "/")  # resolves ./ and ../ segments
        url = courlan.normalize_url(urlunsplit((parts.scheme, netloc, path, parts.query, "")))
    except ValueError:  # malformed port, IPv6 literal, ...
        return None
    return url.split("#", 1)[0]


def valid_host(host: str | None) -> bool:
    """Whether a URL's (lower-case, unbracketed) host can be looked up: an IP address without a zone id, or
    a name whose IDNA form has labels of letters, digits, `-` and `_` (at most 63 each, 253 in all)."""
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.ip_address(host)
        return "%" not in host
    except ValueError:
        pass
    try:
        name = host.encode("idna").decode("ascii")  # the form getaddrinfo would look up
    except UnicodeError:
        return False
    return len(name) <= 253 and HOST_NAME.fullmatch(name) is not None


HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")


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


def resolve(host: str, resolver=None) -> tuple[str, ...]:
    """Distinct addresses of `host`, in the resolver's order (empty when it does not resolve).

    `resolver` is shaped like `socket.getaddrinfo` (the default, looked up at each call). Nothing is
    cached here: the fetcher connects to exactly the addresses this returned, so a lookup per request
    is what makes a later, different answer harmless. A failed lookup, or an answer of the wrong shape
    from a stand-in resolver, means "does not resolve".
    """
    try:
        infos = (resolver or socket.getaddrinfo)(host, None, proto=socket.IPPROTO_TCP)
        return tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    except (OSError, ValueError, TypeError, LookupError):  # gaierror, IDNA UnicodeError, junk answers
        return ()


_V4, _V6 = ipaddress.IPv4Network, ipaddress.IPv6Network
# (range, reason), most specific first; refused whatever `is_global` says (it changed across Pythons).
REFUSED = tuple((net(cidr), why) for net, cidr, why in [
    (_V4, "0.0.0.0/8", "unspecified"), (_V4, "10.0.0.0/8", "private"), (_V4, "100.64.0.0/10", "shared"),
    (_V4, "127.0.0.0/8", "loopback"), (_V4, "169.254.0.0/16", "link_local"), (_V4, "172.16.0.0/12", "private"),
    (_V4, "192.0.0.0/24", "ietf_protocol"), (_V4, "192.0.2.0/24", "documentation"),
    (_V4, "192.88.99.0/24", "6to4_relay"), (_V4, "192.168.0.0/16", "private"), (_V4, "198.18.0.0/15", "benchmark"),
    (_V4, "198.51.100.0/24", "documentation"), (_V4, "203.0.113.0/24", "documentation"),
    (_V4, "224.0.0.0/4", "multicast"), (_V4, "240.0.0.0/4", "reserved"),
    (_V6, "::/128", "unspecified"), (_V6, "::1/128", "loopback"), (_V6, "::ffff:0:0/96", "ipv4_mapped"),
    (_V6, "::/96", "ipv4_compatible"), (_V6, "64:ff9b:1::/48", "nat64_local"), (_V6, "100::/64", "discard"),
    (_V6, "2001::/32", "teredo"), (_V6, "2001:2::/48", "benchmark"), (_V6, "2001:db8::/32", "documentation"),
    (_V6, "2001::/23", "ietf_protocol"), (_V6, "3fff::/20", "documentation"), (_V6, "5f00::/16", "srv6"),
    (_V6, "fc00::/7", "private"), (_V6, "fe80::/10", "link_local"), (_V6, "fec0::/10", "site_local"),
    (_V6, "ff00::/8", "multicast"),
])
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def unsafe_address(ip: str) -> str | None:
    """Why an address must not be crawled by default (see the module docstring), or None for public ones."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "bad_address"
    return _refusal(addr)


def _refusal(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if getattr(addr, "scope_id", None):
        return "scoped"  # a zone id only means something on a link
    for network, why in REFUSED:
        if addr.version == network.version and addr in network:
            return why
    tunnel = _carried_ipv4(addr)
    if tunnel is not None:
        name, inner = tunnel
        if why := _refusal(inner):
            return f"{name}:{why}"  # reaching it may end at that IPv4 address
    elif addr.version == 6 and addr not in GLOBAL_UNICAST:
        return "reserved"
    return None if addr.is_global else "not_global"


def _carried_ipv4(addr) -> tuple[str, ipaddress.IPv4Address] | None:
    """("6to4" | "nat64", the IPv4 address) for an IPv6 address that carries one, else None."""
    if addr.version != 6:
        return None
    if addr.sixtofour is not None:
        return "6to4", addr.sixtofour
    if addr in NAT64:
        return "nat64", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def address_check(url: str, allow_private: bool, resolver=None) -> tuple[tuple[str, ...], str | None]:
    """(addresses, reason): where `url` may be fetched from, or why it is refused (reason None: allowed).

    The caller must connect only to the returned addresses (stages/crawl/fetch.py pins them), never look the
    name up again. Unless `allow_private`, every address must be public (see the module docstring);
    a refusal returns the offending address. Reasons: `bad_url`, `scheme`, `dns`, `bad_address`
    (the resolver answered something that is not an address) and `private_address:<why>`.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return (), "bad_url"
    if parts.scheme not in SCHEMES or not parts.hostname:
        return (), "scheme"
    if port == 0 or not valid_host(parts.hostname):
        return (), "bad_url"
    ips = resolve(parts.hostname, resolver)
    if not ips:
        return (), "dns"
    refused = [(ip, why) for ip in ips if (why := unsafe_address(ip))]
    for ip, why in refused:
        if why == "bad_address":
            return (ip,), why
    if refused and not allow_private:
        ip, why = refused[0]
        return (ip,), f"private_address:{why}"
    return ips, None
