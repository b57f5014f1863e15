"""HTML -> main text with trafilatura, after decoding the bytes with the right charset; title and date.

Charset order: bytes that are UTF-8 (valid, or but for a few broken sequences) are UTF-8, whatever
the page declares (a wrong legacy declaration on a UTF-8 page is common; a legacy page that happens
to be valid UTF-8 is not); then the
charset declared by the HTTP header (ingest's `charset` column), then a `<meta charset>` / `http-equiv`
declaration in the first 4 KiB, then charset-normalizer's guess, then UTF-8 with replacement
characters. Latin-1 and ASCII labels decode as windows-1252, as browsers do. Only the encodings of the
WHATWG Encoding Standard (what browsers honour) are accepted from a page: a declared `rot13`, `base64`,
`hex`, `zlib`, `undefined`, `idna` or an unknown name is ignored, as a browser would ignore it, and the
next candidate is tried. Text is NFC-normalised. The `charset` column is set to the encoding actually used.

Defaults follow FineWeb's use of trafilatura (Penedo et al. 2024: favor_precision, no comments);
trafilatura's cross-document `deduplicate` is off because its cache makes output depend on the
order pages meet a worker. Rows that already carry text and no HTML (WET conversions) pass through.
Drop reasons: `no_text` (nothing extracted), `extract_error` (trafilatura raised; detail: the error).

Title and date (`metadata` in the recipe; the columns are the same in every mode):
- "cheap" (default): trafilatura runs without its metadata pass (the same main text on the 181
  benchmark pages, for about 3/4 of the CPU: 22 vs 30 ms a page). `title` is the page's `og:title`
  meta, else its first `<title>`, looked for in the first TITLE_SCAN_CHARS characters only
  (`cheap_title`: linear time and bounded memory for any bytes). `date` is the day the page was
  fetched (`YYYY-MM-DD` of ingest's `fetch_time`, the WARC-Date; WET rows too), as in FineWeb;
  ingest keeps no Last-Modified header.
- "trafilatura": trafilatura's metadata pass: its title heuristics, and the publication date that
  htmldate finds in the page (null when none).
- "none": title and date null.
`host` is the URL's host name (in "trafilatura" mode, else the page's own, e.g. its canonical link).

    Extractor().run([{"html": b"<html>...</html>", "url": "https://example.org/"}])
"""

from __future__ import annotations

import codecs
import html as html_entities
import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlsplit

import pyarrow as pa

from stages.base import Doc, Mapper, drop, keep
from common.recipe import require

META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_:.\-]+)""", re.I)
NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Python's names for the encodings of the WHATWG Encoding Standard (section 4, "Names and labels");
# x-user-defined and the "replacement" encoding have no Python codec and are ignored.
WHATWG_CODECS = frozenset({
    "utf-8", "utf-16-le", "utf-16-be", "utf-16", "cp866", "iso8859-2", "iso8859-3", "iso8859-4", "iso8859-5",
    "iso8859-6", "iso8859-7", "iso8859-8", "iso8859-10", "iso8859-13", "iso8859-14", "iso8859-15",
    "iso8859-16", "koi8-r", "koi8-u", "mac-roman", "mac-cyrillic", "cp874", "cp1250", "cp1251", "cp1252",
    "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "gbk", "gb2312", "gb18030", "big5",
    "big5hkscs", "euc_jp", "iso2022_jp", "shift_jis", "cp932", "euc_kr", "cp949", "tis-620",
})
AS_WINDOWS_1252 = {"iso8859-1": "cp1252", "ascii": "cp1252"}  # browsers decode both as windows-1252

METADATA_MODES = ("cheap", "trafilatura", "none")
TITLE_SCAN_CHARS = 262_144  # og:title / <title> are looked for in the page's first 256 Ki characters
                            # (inline scripts put the <title> of 7 of the 181 benchmark pages past 64 Ki)
MAX_TITLE_CHARS = 300       # longer titles are cut
TITLE_OPEN = re.compile(r"<title(?=[\s/>])", re.I)
TITLE_CLOSE = re.compile(r"</title", re.I)
# a <meta> tag of at most 512 characters; no '<' inside, so scans from two starts never overlap (linear)
META_TAG = re.compile(r"<meta\s[^<>]{0,512}>", re.I)
OG_TITLE = re.compile(r"""(?:property|name)\s*=\s*["']?og:title["'\s/>]""", re.I)
CONTENT = re.compile(r"""(?<![\w-])content\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.I)
ISO_DAY = re.compile(r"\s*([0-9]{4})-([0-9]{2})-([0-9]{2})")   # ASCII digits only


@dataclass(frozen=True)
class ExtractConfig:
    favor_precision: bool = True  # trafilatura's precision mode (FineWeb); favor_recall is the other
    favor_recall: bool = False
    include_comments: bool = False
    include_tables: bool = True
    include_links: bool = False
    fast: bool = False  # trafilatura's fast mode: no fallback extractors
    metadata: str = "cheap"  # title/date: "cheap", "trafilatura" (its pass: htmldate) or "none" (see above)
    min_text_chars: int = 1  # shorter extractions are rejected as `no_text`

    def __post_init__(self):
        require(self.min_text_chars >= 0, "min_text_chars", self.min_text_chars, ">= 0")
        require(self.metadata in METADATA_MODES, "metadata", self.metadata, "'cheap', 'trafilatura' or 'none'")


class Extractor(Mapper):
    """Turns an ingested page row into a text row (see the module docstring)."""

    name = "extract"
    adds = (
        pa.field("text", pa.string()),
        pa.field("title", pa.string()),
        pa.field("date", pa.string()),
        pa.field("host", pa.string()),
        pa.field("charset", pa.string()),
    )
    drops = ("html",)

    def __init__(self, config: ExtractConfig = ExtractConfig()):
        self.config = config

    def map(self, doc: Doc) -> Doc:
        out = {k: v for k, v in doc.items() if k != "html"}
        cheap = self.config.metadata == "cheap"
        out.update(title=None, date=day_of(doc.get("fetch_time")) if cheap else None,
                   host=host_of(doc.get("url")))
        html = doc.get("html")
        if html is None:
            return keep(out) if doc.get("text") else drop(out, "no_text", "no html and no text")
        try:
            out["text"], out["charset"] = decode_html(html, doc.get("charset"))
            if cheap:
                out["title"] = cheap_title(out["text"])
            self._extract(out, doc.get("url"))
        except Exception as err:  # trafilatura and lxml raise many types on hostile HTML
            out["text"] = None
            return drop(out, "extract_error", f"{type(err).__name__}: {err}"[:500])
        if not out["text"] or len(out["text"]) < self.config.min_text_chars:
            return drop(out, "no_text", "trafilatura found no main text")
        return keep(out)

    def _extract(self, out: Doc, url: str | None) -> None:
        result = self.bare_extraction(out["text"], url)
        out["text"] = joined_text(result)
        if result is not None and self.config.metadata == "trafilatura":
            out["title"] = result.title
            out["date"] = result.date
            out["host"] = out["host"] or result.hostname

    def bare_extraction(self, html: str, url: str | None):
        import trafilatura

        c = self.config
        return trafilatura.bare_extraction(
            html, url=url, fast=c.fast, favor_precision=c.favor_precision, favor_recall=c.favor_recall,
            include_comments=c.include_comments, include_tables=c.include_tables,
            include_links=c.include_links, with_metadata=c.metadata == "trafilatura", deduplicate=False)

    def extract_text(self, html: bytes, charset: str | None = None, url: str | None = None) -> str | None:
        """The text `map` would keep for one page (what the benchmark scores)."""
        return self.map({"html": html, "charset": charset, "url": url})["text"]


def joined_text(result) -> str | None:
    """Main text plus comments, as `trafilatura.extract(output_format='txt')` returns them."""
    if result is None:
        return None
    parts = [p for p in (result.text, result.comments) if p]
    return "\n".join(parts).strip() or None


def decode_html(html: bytes, declared: str | None) -> tuple[str, str]:
    """Decodes page bytes; returns (NFC text, encoding used)."""
    text, encoding = _decode(html, declared)
    return unicodedata.normalize("NFC", text), encoding


def _decode(html: bytes, declared: str | None) -> tuple[str, str]:
    mostly = _mostly_utf8(html)
    if mostly is not None:
        return mostly, "utf-8"
    for candidate in (declared, sniff_meta_charset(html)):
        encoding = normalise_encoding(candidate)
        if encoding:
            try:
                return html.decode("utf-8-sig" if encoding == "utf-8" else encoding), encoding
            except UnicodeError:  # bytes not valid in the declared encoding
                continue
    guess = _guess(html)
    if guess:
        return html.decode(guess, errors="replace"), guess
    return html.decode("utf-8", errors="replace"), "utf-8"


def _mostly_utf8(html: bytes) -> str | None:
    """The UTF-8 text when the bytes are UTF-8 but for a few broken sequences (at most 2% of the
    non-ASCII characters), else None."""
    text = html.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    if not bad:
        return text.removeprefix("\ufeff")
    non_ascii = len(NON_ASCII.findall(text))
    return text if non_ascii >= 50 and bad <= 0.02 * non_ascii else None


def sniff_meta_charset(html: bytes) -> str | None:
    match = META_CHARSET.search(html[:4096])
    return match.group(1).decode("ascii", errors="ignore") if match else None


def normalise_encoding(label: str | None) -> str | None:
    """A Python codec name for an HTML charset label, or None when unknown or not a WHATWG encoding."""
    if not label or len(label) > 64:
        return None
    try:
        name = codecs.lookup(label.strip().lower()).name
    except (LookupError, ValueError):  # ValueError: a label with NUL characters
        return None
    name = AS_WINDOWS_1252.get(name, name)
    return name if name in WHATWG_CODECS else None


def _guess(html: bytes) -> str | None:
    from charset_normalizer import from_bytes

    # the likeliest guess that a browser could decode (charset-normalizer also proposes e.g. hp-roman8)
    guesses = (normalise_encoding(match.encoding) for match in from_bytes(html[:200_000]))
    return next((g for g in guesses if g), None)


def host_of(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def cheap_title(page: str) -> str | None:
    """The page's title without trafilatura: the first `og:title` meta's content (the headline, usually
    without the site's name: what trafilatura's title is most often), else the first `<title>`'s text,
    found in the first TITLE_SCAN_CHARS characters of the decoded page; entities unescaped, whitespace
    collapsed, cut at MAX_TITLE_CHARS; None when there is neither or both are blank. Linear in
    TITLE_SCAN_CHARS whatever the page holds."""
    head = page[:TITLE_SCAN_CHARS]
    return _og_title(head) or _title_element(head)


def _og_title(head: str) -> str | None:
    for tag in META_TAG.finditer(head):
        if OG_TITLE.search(tag.group()):
            content = CONTENT.search(tag.group())
            title = _clean_title(next(g for g in content.groups() if g is not None)) if content else None
            if title:
                return title
    return None


def _title_element(head: str) -> str | None:
    """Like a browser's, the title runs to `</title` (unclosed: to the end of what is scanned)."""
    opening = TITLE_OPEN.search(head)
    start = head.find(">", opening.end()) + 1 if opening else 0
    if not start:
        return None
    closing = TITLE_CLOSE.search(head, start)
    return _clean_title(head[start:closing.start() if closing else len(head)])


def _clean_title(raw: str) -> str | None:
    raw = raw[:16 * MAX_TITLE_CHARS]   # room for entities and runs of whitespace, not for a whole page
    text = " ".join(html_entities.unescape(raw).split())[:MAX_TITLE_CHARS].rstrip()
    return text or None


def day_of(timestamp: str | None) -> str | None:
    """`YYYY-MM-DD` of an ISO 8601 timestamp such as a WARC-Date (`2024-01-31T12:00:00Z`), else None."""
    match = ISO_DAY.match(timestamp) if isinstance(timestamp, str) else None
    if not match:
        return None
    try:
        return date(*map(int, match.groups())).isoformat()
    except ValueError:  # month 13, day 32
        return None
