"""URL filtering (RefinedWeb, Penedo et al. 2023, appendix G.1; FineWeb and datatrove's URLFilter; Dolma):
a document whose `url` is blocked is rejected as `url_blocked`, the rule that matched in `drop_detail`.

    UrlFilter(UrlConfig(url_blocklist="lists/domains.txt")).verdict({"url": "https://cdn.bad.example/x"})
    # Drop('url_blocked', 'domain:bad.example')

Rules, in order (all lists are user files named in the recipe, never downloaded):
- `url_blocklist`: domains, one a line (`#` comments; `*.`, a scheme or a path around one are ignored). A
  listed domain blocks itself and every subdomain: the URL's host and each parent domain are looked up
  (a suffix walk, which needs no public-suffix list: `bad.example` blocks `cdn.bad.example`, and a
  registered domain such as `bad.co.uk` blocks its subdomains without blocking `co.uk`).
- `ut1_dir`: the UT1 blacklist layout (Université Toulouse 1): `<category>/domains` (as above) and
  `<category>/urls` (`host/path` entries, which block that path and below), for `ut1_categories`.
  Read from its folder on every node (a shared or `hdfs://` path on a cluster), not shipped.
- `url_substrings`: strings that block a URL containing them (lower-cased URL).
- RefinedWeb's word score on the URL split into lower-case ASCII words: any of `url_hard_words` blocks;
  `url_soft_min` distinct `url_soft_words` block (datatrove's `soft_word_threshold` = 2).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from common import fs
from common.recipe import require
from stages.base import Doc, Drop, Filter, Verdict
from stages.safety.lists import (HashedSet, domain_entry, domain_set, host_suffixes, trie_pattern, url_key,
                                 url_set, word_set, words)

MAX_URL_CHARS = 4096  # a longer URL is judged on its first 4 KiB: time per record stays bounded
MAX_PATH_SEGMENTS = 8  # UT1 URL entries are looked up for the first path segments only
URL_WORD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class UrlConfig:
    """URL filtering (`[safety]` keys; empty: the rule is off)."""

    url_blocklist: str = ""  # file of domains, one a line: each blocks itself and its subdomains
    ut1_dir: str = ""  # folder in the UT1 layout: <category>/domains, <category>/urls
    ut1_categories: tuple[str, ...] = ("adult",)  # UT1 categories that block
    url_substrings: str = ""  # file of substrings of the lower-cased URL that block it
    url_hard_words: str = ""  # file of words: one in the URL's words blocks it (RefinedWeb hard violations)
    url_soft_words: str = ""  # file of words: `url_soft_min` distinct ones block (RefinedWeb soft violations)
    url_soft_min: int = 2  # datatrove's URLFilter soft_word_threshold

    def __post_init__(self):
        require(self.url_soft_min >= 1, "url_soft_min", self.url_soft_min, ">= 1")
        for category in self.ut1_categories:
            require(bool(re.fullmatch(r"[\w.-]+", category)) and ".." not in category, "ut1_categories",
                    category, "a UT1 category folder name")


def split_url(url: str) -> tuple[str, list[str]]:
    """(normalised host, path segments) of a URL with or without a scheme; ('', []) when unparsable."""
    try:
        parts = urlsplit(url if "//" in url else "//" + url)
        host = domain_entry(parts.netloc)
    except ValueError:  # a malformed IPv6 literal, for one
        return "", []
    return host, [s for s in parts.path.split("/") if s][:MAX_PATH_SEGMENTS]


@functools.cache
def _ut1(folder: str, category: str) -> tuple[HashedSet, HashedSet]:
    """A UT1 category's domains and URLs (a category without one of the files has an empty set)."""
    def read(name: str, load) -> HashedSet:
        path = fs.join(folder, category, name)
        return load(path) if fs.exists(path) else HashedSet([])

    return read("domains", domain_set), read("urls", url_set)


@functools.cache
def _substrings(path: str) -> re.Pattern:
    return re.compile(trie_pattern(words(path)))


class UrlFilter(Filter):
    """Rejects documents whose `url` a blocklist, UT1 category, substring or word rule blocks."""

    name = "url_filter"

    def __init__(self, config: UrlConfig = UrlConfig()):
        self.config = config
        c = config
        self.active = any((c.url_blocklist, c.ut1_dir, c.url_substrings, c.url_hard_words, c.url_soft_words))

    def model_files(self) -> tuple[str, ...]:
        c = self.config
        return tuple(p for p in (c.url_blocklist, c.url_substrings, c.url_hard_words, c.url_soft_words) if p)

    def verdict(self, doc: Doc) -> Verdict:
        url = doc.get("url")
        if not url or not self.active:
            return None
        rule = self.blocked_by(url[:MAX_URL_CHARS])
        return Drop("url_blocked", rule) if rule else None

    def blocked_by(self, url: str) -> str | None:
        """The rule that blocks `url` (`domain:...`, `ut1:<category>:...`, `substring:...`,
        `hard_word:...`, `soft_words:...`), or None."""
        host, segments = split_url(url)
        lowered = url.lower()
        return (self._domain(host) or self._ut1(host, segments) or self._substring(lowered)
                or self._words(set(URL_WORD.split(lowered))))

    def _domain(self, host: str) -> str | None:
        if not (host and self.config.url_blocklist):
            return None
        listed = domain_set(self.config.url_blocklist)
        return next((f"domain:{h}" for h in host_suffixes(host) if h in listed), None)

    def _ut1(self, host: str, segments: list[str]) -> str | None:
        if not (host and self.config.ut1_dir):
            return None
        paths = [url_key(f"{host}/{'/'.join(segments[:k])}") for k in range(1, len(segments) + 1)]
        for category in self.config.ut1_categories:
            domains, urls = _ut1(self.config.ut1_dir, category)
            hit = next((h for h in host_suffixes(host) if h in domains), None) or next(
                (p for p in paths if p in urls), None)
            if hit:
                return f"ut1:{category}:{hit}"
        return None

    def _substring(self, url: str) -> str | None:
        if not self.config.url_substrings:
            return None
        found = _substrings(self.config.url_substrings).search(url) if words(self.config.url_substrings) else None
        return f"substring:{found.group()}" if found else None

    def _words(self, url_words: set[str]) -> str | None:
        c = self.config
        hard = sorted(url_words & word_set(c.url_hard_words)) if c.url_hard_words else []
        if hard:
            return f"hard_word:{hard[0]}"
        soft = sorted(url_words & word_set(c.url_soft_words)) if c.url_soft_words else []
        return f"soft_words:{','.join(soft)}" if len(soft) >= c.url_soft_min else None
