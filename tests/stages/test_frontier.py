"""URL normalisation, link extraction, scope and trap bounds (pure; expected values written by hand)."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from stages.crawl.task import CrawlConfig
from stages.crawl.frontier import Scope, address_check, extract_links, host_of, normalize, trap_reason


@pytest.mark.parametrize("raw,expected", [
    ("HTTP://Example.COM:80/a/./b/../c?b=2&a=1#frag", "http://example.com/a/c?a=1&b=2"),
    ("https://example.com:443", "https://example.com/"),
    ("http://example.com/p?utm_source=news&id=3", "http://example.com/p?id=3"),
    ("http://127.0.0.2:8080/x/../y", "http://127.0.0.2:8080/y"),
    ("mailto:someone@example.com", None),
    ("javascript:void(0)", None),
    ("ftp://example.com/file", None),
    ("http:///nohost", None),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_normalize_relative_against_base():
    assert normalize("../d?q=1#x", "http://h.example/a/b/c") == "http://h.example/a/d?q=1"
    assert host_of("http://127.0.0.2:8080/y") == "127.0.0.2:8080"


def test_extract_links_base_nofollow_and_junk():
    html = b"""<html><head><base href="http://h.example/dir/"></head><body>
      <a href="page.html">rel</a> <a href="/root#top">abs</a> <a href="http://other.example/">other</a>
      <a rel="nofollow" href="/secret">no</a> <a href="mailto:a@b.c">mail</a> <a href="javascript:x()">js</a>
      <map><area href="area.html"></map> <a>no href</a></body></html>"""
    assert list(extract_links(html, "http://h.example/ignored/by/base")) == [
        "http://h.example/dir/page.html", "http://h.example/root", "http://other.example/",
        "http://h.example/dir/area.html"]


def test_meta_robots_nofollow_and_broken_html():
    assert list(extract_links(b'<meta name="ROBOTS" content="noindex, nofollow"><a href="/x">x</a>', "http://h/")) == []
    assert list(extract_links(b"", "http://h/")) == []
    assert list(extract_links("<a href='/\u00e9t\u00e9'>x</a>", "http://h/")) == ["http://h/%C3%A9t%C3%A9"]


CONFIG = CrawlConfig(max_url_length=60, max_query_params=3, max_path_segments=5, max_repeated_segments=3)


@pytest.mark.parametrize("url,reason", [
    ("http://h/" + "a" * 80, "url_too_long"),
    ("http://h/p?a=1&b=2&c=3&d=4", "too_many_query_params"),
    ("http://h/p?a=1&b=2&c=3", None),
    ("http://h/1/2/3/4/5/6", "too_many_path_segments"),
    ("http://h/cal/x/cal/y/cal", "repeated_path_segment"),
    ("http://h/cal/x/cal", None),
])
def test_trap_reason(url, reason):
    assert trap_reason(url, CONFIG) == reason


def test_scope_modes_patterns_depth_and_extensions():
    seeds = {"www.example.com", "127.0.0.2:8000"}
    host = Scope(CONFIG, seeds)
    assert host.reject_reason("http://www.example.com/a", 1) is None
    assert host.reject_reason("http://blog.example.com/a", 1) == "out_of_scope_host"
    assert host.reject_reason("http://127.0.0.2:8001/", 1) == "out_of_scope_host"
    assert host.reject_reason("http://www.example.com/a", CONFIG.max_depth + 1) == "max_depth"
    assert host.reject_reason("http://www.example.com/photo.JPG", 1) == "file_extension"
    domain = Scope(replace(CONFIG, scope="domain"), seeds)
    assert domain.reject_reason("http://blog.example.com/a", 1) is None
    assert domain.reject_reason("http://example.org/a", 1) == "out_of_scope_host"
    assert Scope(replace(CONFIG, scope="open"), seeds).reject_reason("http://example.org/a", 1) is None
    patterns = Scope(replace(CONFIG, denied_paths=(r"^/private/",), allowed_hosts=(r"example\.com$",)), seeds)
    assert patterns.reject_reason("http://www.example.com/private/x", 1) == "path_pattern"
    assert patterns.reject_reason("http://127.0.0.2:8000/x", 1) == "host_pattern"
    allowed = Scope(replace(CONFIG, allowed_paths=(r"^/docs/",)), seeds)
    assert allowed.reject_reason("http://www.example.com/docs/a", 1) is None
    assert allowed.reject_reason("http://www.example.com/blog/a", 1) == "path_pattern"


def test_address_check():
    assert address_check("http://127.0.0.1:5/", allow_private=False) == (("127.0.0.1",), "private_address:loopback")
    assert address_check("http://127.0.0.1:5/", allow_private=True) == (("127.0.0.1",), None)
    assert address_check("http://10.0.0.8/", allow_private=False)[1] == "private_address:private"
    assert address_check("http://100.100.100.200/", allow_private=False)[1] == "private_address:shared"
    assert address_check("file:///etc/passwd", allow_private=True) == ((), "scheme")
    assert address_check("http://h:99999/", allow_private=True) == ((), "bad_url")
    no_dns = lambda *args, **kwargs: (_ for _ in ()).throw(socket.gaierror(socket.EAI_NONAME, "unknown"))
    assert address_check("http://no-such-host.invalid/", True, no_dns) == ((), "dns")


@pytest.mark.parametrize("raw,expected", [
    ("http://user:pw@Example.com/a", "http://example.com/a"),
    ("http://a@b@c.example/", "http://c.example/"),
    ("http://h.example:99999/", None), ("http://h.example:0/", None), ("http://h.example:-1/", None),
    ("http://a..b/", None), ("http://ex%41mple.com/", None), ("http://" + "a" * 64 + ".com/", None),
    ("http://\x00.example/", None), ("https://[fe80::1%25eth0]/", None),
    ("http://\u4f8b\u3048.\u30c6\u30b9\u30c8/", "http://\u4f8b\u3048.\u30c6\u30b9\u30c8/"),
])
def test_normalize_hostile_authorities(raw, expected):
    assert normalize(raw) == expected
