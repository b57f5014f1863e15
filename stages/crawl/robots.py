"""robots.txt per host: fetched once, parsed with `protego`, asked before every request.

    policy = Robots.from_response(status, body, user_agent="qwenforge-crawler")
    policy.allowed("http://host/path"), policy.delay(default=1.0, cap=30.0)

What an answer means follows RFC 9309 (Robots Exclusion Protocol, 2022), section 2.3.1: a 4xx
answer (no robots.txt) allows everything; a 5xx answer or an unreachable server disallows everything
("complete disallow"), since the site may be overloaded; a file over 500 KiB is parsed only up to
that size (section 2.5). `Crawl-delay` is not in the RFC but is honoured as most crawlers do, capped
by the recipe so a huge value cannot stall a crawl.
"""

from __future__ import annotations

from dataclasses import dataclass

from protego import Protego

MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309 section 2.5: parse at least 500 kibibytes


@dataclass
class Robots:
    """The robots.txt rules of one host for one user agent."""

    user_agent: str
    parser: Protego | None = None
    allow_all: bool = True
    status: str = "missing"  # missing (4xx) | ok | unavailable (5xx, network error) | ignored

    @classmethod
    def from_response(cls, status: int | None, body: bytes, user_agent: str) -> Robots:
        """Builds the policy from the robots.txt answer (`status` None: the server could not be reached)."""
        if status is None or status >= 500 or status == 429:
            return cls(user_agent, allow_all=False, status="unavailable")
        if not 200 <= status < 300:  # 4xx, or a redirect chain that never ended (RFC 9309 2.3.1.2)
            return cls(user_agent, status="missing")
        text = body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
        return cls(user_agent, Protego.parse(text), allow_all=False, status="ok")

    @classmethod
    def ignored(cls, user_agent: str) -> Robots:
        return cls(user_agent, status="ignored")

    def allowed(self, url: str) -> bool:
        if self.parser is None:
            return self.allow_all
        return self.parser.can_fetch(url, self.user_agent)

    def crawl_delay(self) -> float | None:
        """The `Crawl-delay` (seconds) for this agent, or None."""
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(self.user_agent)
        return float(delay) if delay is not None else None

    def delay(self, default: float, cap: float) -> float:
        """Seconds between requests: the larger of the recipe's delay and Crawl-delay (at most `cap`)."""
        return max(default, min(self.crawl_delay() or 0.0, cap))


def robots_url(url_or_origin: str) -> str:
    """`http://host:port/any/page` -> `http://host:port/robots.txt`."""
    scheme, _, rest = url_or_origin.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/robots.txt"
