"""User lists of the safety stages (words, domains, URL prefixes): read once per process, on first use.

    words("lists/en.txt")                # ('anal', 'two girls one cup', ...): lower-cased, '#' comments out
    "sub.example.com" in HashedSet(["example.com"])   # False: exact entries; see `host_suffixes`
    trie_pattern(["cat", "car"])         # 'ca(?:t|r)': one alternation branch per prefix, not per word

Lists are files named in the recipe (local, `hdfs://`, `s3a://`; a local file shipped with a cluster job is
found by `common.fs.shipped`), never downloaded. They may be large (UT1's `adult/domains` has millions of
lines): a set of domains or URLs is kept as a sorted array of 64-bit hashes (8 bytes an entry, instead of
~80 for a Python string in a set); Python's string hash is per process, as is the array.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from common import fs


def read_lines(path: str) -> list[str]:
    """The non-empty lines of a UTF-8 file (undecodable bytes replaced), without `#` comments."""
    text = fs.read_bytes(fs.shipped(path)).decode("utf-8", errors="replace")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


@functools.cache
def words(path: str) -> tuple[str, ...]:
    """A word list, lower-cased, without duplicates, in file order."""
    return tuple(dict.fromkeys(line.lower() for line in read_lines(path)))


@functools.cache
def word_set(path: str) -> frozenset[str]:
    return frozenset(words(path))


class HashedSet:
    """Membership of strings by their hash in a sorted int64 array (no false negatives; a false positive
    needs a 64-bit hash collision)."""

    def __init__(self, items):
        self.hashes = np.unique(np.fromiter((hash(item) for item in items), dtype=np.int64))

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, item: str) -> bool:
        at = int(np.searchsorted(self.hashes, hash(item)))
        return at < len(self.hashes) and int(self.hashes[at]) == hash(item)


def normalise_host(host: str) -> str:
    """Lower-case, without a trailing dot, `www.` kept, non-ASCII labels in their IDNA (xn--) form."""
    host = host.strip().lower().rstrip(".")
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:  # not a valid IDNA name: compared as written
        return host


def domain_entry(line: str) -> str:
    """A blocklist line as a host: `*.example.com`, `.example.com`, `https://example.com/x` -> example.com."""
    entry = line.split("://", 1)[-1].split("/", 1)[0].rpartition("@")[2]
    if not entry.startswith("["):
        entry = entry.split(":", 1)[0]
    return normalise_host(entry.lstrip("*").lstrip("."))


def host_suffixes(host: str, max_labels: int = 32) -> list[str]:
    """The host and every parent domain (`a.b.example.com`, `b.example.com`, `example.com`, `com`): a
    listed domain blocks itself and all its subdomains, whatever the public suffix (`co.uk` blocks only
    when listed). An IP address is its own only suffix."""
    labels = host.split(".")
    if host.startswith("[") or labels[-1].isdigit():
        return [host]
    labels = labels[-max_labels:]
    return [".".join(labels[i:]) for i in range(len(labels))]


@functools.cache
def domain_set(path: str) -> HashedSet:
    return HashedSet(domain_entry(line) for line in read_lines(path))


@functools.cache
def url_set(path: str) -> HashedSet:
    """URL entries (`url_key`): UT1's `urls` files."""
    return HashedSet(url_key(line) for line in read_lines(path))


def url_key(url: str) -> str:
    """`host/path` without scheme, `www.` or a trailing slash: how UT1 URL entries and URLs are compared."""
    rest = url.split("://", 1)[-1]
    host, _, path = rest.partition("/")
    return f"{domain_entry(host).removeprefix('www.')}/{path}".rstrip("/")


def trie_pattern(items) -> str:
    """A regex alternation of `items` (escaped) built as a trie: at each position the engine follows
    one branch per distinct next character instead of trying every word, and never backtracks further
    than the longest word."""
    trie: dict = {}
    for item in items:
        node = trie
        for ch in item:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _branches(trie)


def _branches(node: dict) -> str:
    ends = "" in node
    parts = [re.escape(ch) + _branches(child) for ch, child in node.items() if ch]
    if not parts:
        return ""
    body = parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
    if ends:  # a word ends here and longer ones go on: the longer first (greedy), the end optional
        body = f"(?:{body})?"
    return body
