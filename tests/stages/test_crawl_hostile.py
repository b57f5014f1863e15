"""Hostile input for the crawler: the address policy, DNS rebinding, pinned connections, fuzzed URLs.

Nothing here leaves the machine. A module-wide guard answers name lookups only for the names a test
lists (numeric hosts resolve as themselves, any other name fails) and refuses connections to anything
outside loopback, so a fetch that would reach the internet fails instead of sending a packet. Its
`nat` table lets a test give a loopback `Site` a public-looking address.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.crawl.task import CrawlConfig
from stages.crawl.fetch import Fetcher
from stages.crawl.frontier import address_check, host_of, normalize, unsafe_address
from tests.stages.test_fetch import Site, page, redirect

PUBLIC_V4 = "93.184.215.14"  # example.com's former address: globally routable, never contacted here
REAL_GETADDRINFO, REAL_CONNECT = socket.getaddrinfo, socket.socket.connect


def info(ip: str, port=None) -> tuple:
    """One getaddrinfo entry for `ip`."""
    if ":" in ip:
        return socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port or 0), 0, 0)
    return socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port or 0))


class Net:
    """The test machine's whole network: `names` (name -> answers, one per lookup, the last repeating)
    and loopback; `calls` counts lookups per name, `blocked` lists refused connection targets."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.names, self.calls, self.nat, self.blocked = {}, Counter(), {}, []

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        host = host.decode() if isinstance(host, bytes) else host
        if host in self.names:
            answers = self.names[host]
            self.calls[host] += 1
            return [info(answers[min(self.calls[host], len(answers)) - 1], port)]
        return REAL_GETADDRINFO(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)  # never DNS

    def connect(self, sock, address):
        address = self.nat.get(tuple(address[:2]), address)
        if not ipaddress.ip_address(address[0].split("%")[0]).is_loopback:
            self.blocked.append(tuple(address[:2]))
            raise ConnectionRefusedError(f"test network: {address[0]} is not loopback")
        return REAL_CONNECT(sock, address)


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    net = Net()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", net.getaddrinfo)
        patch.setattr(socket.socket, "connect", lambda sock, address: net.connect(sock, address))
        yield net


@pytest.fixture
def net(loopback_only):
    loopback_only.reset()
    yield loopback_only
    loopback_only.reset()


@pytest.fixture
def site():
    server = Site("127.0.0.1")
    yield server
    server.close()


def names(table: dict[str, list[str]]):
    """An injected resolver (getaddrinfo-shaped) that knows only `table`; it counts its calls."""
    calls = Counter()

    def resolver(host, port, *args, **kwargs):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown name")
        calls[host] += 1
        return [info(table[host][min(calls[host], len(table[host])) - 1], port)]

    resolver.calls = calls
    return resolver


CONFIG = CrawlConfig(allow_private_networks=False, max_retries=0, backoff_base=0.01, connect_timeout=2.0,
                     read_timeout=2.0, delay=0.0)
PRIVATE_OK = replace(CONFIG, allow_private_networks=True)


# --- the policy (pure) ---

@pytest.mark.parametrize("ip,reason", [
    ("100.100.100.200", "shared"), ("100.64.0.1", "shared"), ("2002:7f00:1::1", "6to4:loopback"),
    ("::ffff:127.0.0.1", "ipv4_mapped"), ("::ffff:8.8.8.8", "ipv4_mapped"), ("64:ff9b::7f00:1", "nat64:loopback"),
    ("64:ff9b::a00:1", "nat64:private"), ("64:ff9b:1::1", "nat64_local"), ("::127.0.0.1", "ipv4_compatible"),
    ("169.254.169.254", "link_local"), ("fd00::1", "private"), ("fe80::1", "link_local"), ("0.0.0.0", "unspecified"),
    ("::", "unspecified"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("ff0e::1", "multicast"),
    ("192.0.2.1", "documentation"), ("2001:db8::1", "documentation"), ("3fff::1", "documentation"),
    ("198.18.0.1", "benchmark"), ("2001:2::1", "benchmark"), ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"),
    ("192.88.99.1", "6to4_relay"), ("255.255.255.255", "reserved"), ("5f00::1", "srv6"), ("4000::1", "reserved"),
    ("2002:c000:201::1", "6to4:documentation"), ("fe80::1%eth0", "scoped"), ("not an ip", "bad_address"),
])
def test_non_public_addresses_are_refused(ip, reason):
    assert unsafe_address(ip) == reason


@pytest.mark.parametrize("ip", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:c9e1", "8.8.8.8",
                                "2002:5db8:d70e::1", "64:ff9b::5db8:d70e"])
def test_public_addresses_are_allowed(ip):
    """6to4 and NAT64 carrying a public IPv4 address pass the tunnel check; whether 2002::/16 itself counts
    as global depends on the Python version's `ipaddress`, which has the last word."""
    assert unsafe_address(ip) == (None if ipaddress.ip_address(ip).is_global else "not_global")


def test_one_non_public_answer_refuses_the_name():
    resolver = lambda host, port, **kw: [info(PUBLIC_V4), info("10.0.0.7")]
    assert address_check("http://mixed.test/", False, resolver) == (("10.0.0.7",), "private_address:private")
    assert address_check("http://mixed.test/", True, resolver) == ((PUBLIC_V4, "10.0.0.7"), None)


# --- rebinding and pinning, against real servers on loopback ---

def test_dns_rebinding_never_reaches_loopback(net, site):
    """Public at the check, loopback at the connect: the connection goes to the checked (public) address,
    which the test network refuses; the retry re-resolves, sees loopback and stops."""
    site.routes["/"] = page("secret")
    net.names["rebind.test"] = [PUBLIC_V4, "127.0.0.1"]
    result = Fetcher(replace(CONFIG, max_retries=1)).fetch(f"http://rebind.test:{site.port}/")
    assert site.log == []
    assert net.blocked == [(PUBLIC_V4, site.port)]
    assert (result.outcome, result.error, result.ip) == ("address", "private_address:loopback", "127.0.0.1")


def test_one_lookup_per_attempt(net, site):
    """The name is resolved once and the connection reuses that answer (urllib3 does not look it up again)."""
    site.routes["/"] = page()
    net.names["once.test"] = ["127.0.0.1"]
    result = Fetcher(PRIVATE_OK).fetch(f"http://once.test:{site.port}/")
    assert result.outcome == "ok" and net.calls["once.test"] == 1


def test_connection_is_pinned_and_keeps_the_host_header(site):
    """`pinned.test` exists only in the injected resolver: reaching the server proves the connection went
    to the resolved address; the server still sees the name in Host."""
    site.routes["/p"] = page("pinned")
    resolver = names({"pinned.test": ["127.0.0.1"]})
    result = Fetcher(PRIVATE_OK, resolver=resolver).fetch(f"http://pinned.test:{site.port}/p")
    assert (result.outcome, result.content, result.ip) == ("ok", b"pinned", "127.0.0.1")
    assert site.headers[0]["Host"] == f"pinned.test:{site.port}" and resolver.calls["pinned.test"] == 1


def test_redirect_hop_is_checked_again(net, site):
    """The first hop is public (the test network forwards it to the loopback site); the name then moves
    to loopback and the redirect hop is refused before any request."""
    site.routes.update({"/start": redirect("/next"), "/next": page("should not be served")})
    net.names["hop.test"] = [PUBLIC_V4, "127.0.0.1"]
    net.nat[(PUBLIC_V4, site.port)] = ("127.0.0.1", site.port)
    result = Fetcher(CONFIG).fetch(f"http://hop.test:{site.port}/start")
    assert site.paths() == ["/start"]
    assert (result.outcome, result.error, result.status) == ("address", "private_address:loopback", None)


def test_pools_follow_the_address_not_the_name():
    """A name that moves to another address gets a new connection there, not the kept-alive old one."""
    first = Site("127.0.0.2", {"/": page("first")})
    second = Site("127.0.0.3", {"/": page("second")}, port=first.port)
    try:
        fetcher = Fetcher(PRIVATE_OK, resolver=names({"moving.test": ["127.0.0.2", "127.0.0.3"]}))
        url = f"http://moving.test:{first.port}/"
        assert [fetcher.fetch(url).content for _ in range(2)] == [b"first", b"second"]
        assert (len(first.log), len(second.log)) == (1, 1)
    finally:
        first.close()
        second.close()


def test_next_checked_address_when_one_refuses(site):
    """Like getaddrinfo's list in urllib3: a refused connection moves on to the next checked address."""
    site.routes["/"] = page("second address")
    fetcher = Fetcher(PRIVATE_OK, resolver=lambda host, port, **kw: [info("127.0.0.9"), info("127.0.0.1")])
    result = fetcher.fetch(f"http://two.test:{site.port}/")  # nothing listens on 127.0.0.9
    assert (result.outcome, result.content, result.ip, result.attempts) == ("ok", b"second address", "127.0.0.1", 1)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for `pinned.test` (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=pinned.test",
                    "-addext", "subjectAltName=DNS:pinned.test"], check=True, capture_output=True)
    return cert, key


def test_https_pinned_connection_keeps_sni_and_certificate_name(certificate):
    cert, key = certificate
    context, sni = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), []
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: sni.append(name)
    server = Site("127.0.0.1", {"/": page("tls")}, tls=context)
    try:
        resolver = names({"pinned.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        fetcher = Fetcher(PRIVATE_OK, resolver=resolver, ca_certs=str(cert))
        ok = fetcher.fetch(f"https://pinned.test:{server.port}/")
        assert (ok.outcome, ok.content) == ("ok", b"tls") and sni == ["pinned.test"]
        assert server.headers[0]["Host"] == f"pinned.test:{server.port}"
        wrong = fetcher.fetch(f"https://other.test:{server.port}/")  # same address, certificate for another name
        assert wrong.outcome == "error" and "CERTIFICATE_VERIFY_FAILED" in wrong.error and len(server.log) == 1
        assert sni == ["pinned.test", "other.test"]
    finally:
        server.close()


# --- fuzzing: every input ends in a value or a documented refusal ---

REASONS = {"scheme", "bad_url", "dns", "bad_address"}
SCHEMES = st.sampled_from(["http", "https", "HTTP", "hTtPs", "ftp", "javascript", "file", "data", "h+t", ""])
HOSTS = st.one_of(
    st.from_regex(r"[a-z0-9_-]{0,70}(\.[a-z0-9_-]{0,70}){0,4}\.?", fullmatch=True),
    st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
    st.from_regex(r"\[[0-9a-fA-F:.%a-z]{0,45}\]?", fullmatch=True),
    st.from_regex(r"(xn--[a-z0-9-]{0,70}|[a-z]{1,5}|%[0-9a-fA-F]{0,2}|[\u00e9\u00df\u4e00\u0661\u200d])"
                  r"(\.(xn--[a-z0-9-]{0,70}|[a-z]{1,5}|[\u00e9\u4e00\u0627]{1,3})){0,3}", fullmatch=True),
    st.integers(0, 2 ** 33).map(str),
    st.text(alphabet="ab.", min_size=200, max_size=400),
    st.text(max_size=20),
)
PORTS = st.one_of(st.just(""), st.just(":"), st.integers(-5, 100_000).map(lambda p: f":{p}"), st.just(":http"))
USERINFO = st.one_of(st.just(""), st.from_regex(r"[a-z%:@\\]{0,10}@", fullmatch=True))
PATHS = st.one_of(st.from_regex(r"(/[a-zA-Z0-9%.\-_~!$&'()*+,;=:@]{0,12}){0,4}", fullmatch=True), st.text(max_size=20))
URLS = st.one_of(
    st.builds("{}{}{}{}{}{}{}".format, SCHEMES, st.sampled_from(["://", ":", ":///", ":\\\\", "//"]), USERINFO,
              HOSTS, PORTS, PATHS, st.one_of(st.just(""), st.text(max_size=10).map("?{}".format))),
    st.text(),
)


def junk(answer):
    """A resolver stub: raises `answer` when it is an exception, else returns it as it is."""
    def resolver(host, port, *args, **kwargs):
        if isinstance(answer, BaseException):
            raise answer
        return answer
    return resolver


RESOLVERS = st.sampled_from([
    junk(socket.gaierror(socket.EAI_NONAME, "no")), junk(UnicodeError("label too long")), junk(OSError("down")),
    junk(ValueError("embedded null")), junk([]), junk(None), junk(42), junk([None]), junk(["garbage"]),
    junk([(2, 1, 6, "", ("not-an-ip", 0))]), junk([(2, 1, 6, "", (b"\x7f\x00\x00\x01", 0))]),
    junk([(2, 1, 6, "")]), junk([info("127.0.0.1")]), junk([info("fe80::1%1")]), junk([info(PUBLIC_V4), info("::1")]),
    junk([info("::ffff:10.0.0.1")]), junk([info("64:ff9b::a9fe:a9fe")]),
])
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(URLS, st.one_of(st.none(), URLS))
def test_normalize_never_raises(url, base):
    out = normalize(url, base)
    assert out is None or (out.startswith(("http://", "https://")) and "#" not in out)
    if out is not None:
        assert isinstance(host_of(out), str) and "@" not in host_of(out)
        assert normalize(out) is not None


@FUZZ
@given(URLS, st.booleans(), RESOLVERS)
def test_address_check_never_raises(url, allow_private, resolver):
    ips, reason = address_check(url, allow_private, resolver)
    assert reason is None or reason in REASONS or reason.startswith("private_address:")
    if reason is None:
        assert ips and all(unsafe_address(ip) != "bad_address" for ip in ips)
        assert allow_private or all(unsafe_address(ip) is None for ip in ips)


@FUZZ
@given(URLS, RESOLVERS)
def test_fetch_of_any_url_ends_in_a_refusal(url, resolver):
    """No resolver here answers only public addresses, so every fetch stops at the address check."""
    result = Fetcher(CONFIG, resolver=resolver).fetch(url)
    assert result.outcome == "address" and result.error


@FUZZ
@given(st.one_of(st.ip_addresses().map(str), st.text(max_size=45)))
def test_unsafe_address_never_raises_and_allows_only_global(ip):
    reason = unsafe_address(ip)
    assert reason is None or isinstance(reason, str)
    if reason is None:
        addr = ipaddress.ip_address(ip)
        assert addr.is_global and not addr.is_multicast and addr not in ipaddress.ip_network("100.64.0.0/10")
        embedded = addr.sixtofour if addr.version == 6 else None
        assert embedded is None or unsafe_address(str(embedded)) is None
