"""PII redaction (datatrove's PIIFormatter, Dolma's PII tagger): e-mail addresses, IPv4 and IPv6 addresses,
phone numbers, credit-card numbers and IBANs replaced by placeholders, counted per kind.

    PiiRedactor(PiiConfig()).map({"text": "Mail jane@example.org or call +44 20 7946 0958."})
    # text "Mail <EMAIL> or call <PHONE_NUMBER>.", pii_email 1, pii_phone 1, ...
    find_pii(text, ("email", "phone"))     # [(start, end, kind), ...] in text order

What counts as each kind, and what does not (versions, dates, prices, ISBNs, order numbers): `patterns.py`.
Where two kinds overlap, the one first in `KINDS` wins (an IBAN's digits are not also a phone number).
A document with more than `max_pii` findings is rejected as `pii` (its text redacted all the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import regex

from common.recipe import require
from stages.base import Doc, Mapper, drop, keep
from stages.safety.patterns import KINDS, NEEDS, PATTERNS, VALIDATORS

# datatrove replaces with look-alike values (email@example.com); named placeholders show what was there.
PLACEHOLDERS = {"email": "<EMAIL>", "ipv4": "<IP_ADDRESS>", "ipv6": "<IP_ADDRESS>", "phone": "<PHONE_NUMBER>",
                "credit_card": "<CREDIT_CARD>", "iban": "<IBAN>"}
MIN_CHARS = {"phone": 7, "credit_card": 12, "iban": 15}  # the kinds re-tried without an end group, their least size
_SEPARATORS = str.maketrans("", "", " .-()+")
COUNT_FIELDS = tuple(pa.field(f"pii_{kind}", pa.int32()) for kind in KINDS)


@dataclass(frozen=True)
class PiiConfig:
    """PII redaction (`[safety]` keys)."""

    pii_kinds: tuple[str, ...] = KINDS  # what is redacted; counts of the others stay 0
    pii_placeholders: dict[str, str] = field(default_factory=dict)  # kind -> text; missing kinds: PLACEHOLDERS
    pii_private_ips: bool = False  # also redact private, loopback, reserved and documentation addresses
    max_pii: int | None = None  # reject a document with more findings than this (None: redact only)

    def __post_init__(self):
        for kinds, key in ((self.pii_kinds, "pii_kinds"), (tuple(self.pii_placeholders), "pii_placeholders")):
            require(set(kinds) <= set(KINDS), key, list(kinds), f"kinds among {list(KINDS)}")
        require(self.max_pii is None or self.max_pii >= 0, "max_pii", self.max_pii, ">= 0 (or none)")

    def placeholder(self, kind: str) -> str:
        return self.pii_placeholders.get(kind, PLACEHOLDERS[kind])


def find_pii(text: str, kinds: tuple[str, ...] = KINDS, private_ips: bool = False) -> list[tuple[int, int, str]]:
    """Non-overlapping findings (start, end, kind) in text order; on an overlap the earlier kind of
    `KINDS` wins. Linear: the characters taken so far are marked in a byte mask."""
    taken = bytearray(len(text))
    found: list[tuple[int, int, str]] = []
    for kind in (k for k in KINDS if k in kinds):
        if NEEDS.get(kind, "") not in text:
            continue
        check = VALIDATORS[kind]
        for match in PATTERNS[kind].finditer(text):
            m = match if check(match, text, private_ips) else _inner(kind, match, text, check, private_ips)
            if m and taken.find(1, m.start(), m.end()) < 0:
                taken[m.start():m.end()] = b"\x01" * (m.end() - m.start())
                found.append((m.start(), m.end(), kind))
    return sorted(found)


def _inner(kind: str, match: regex.Match, text: str, check, private_ips: bool) -> regex.Match | None:
    """For numbers (phones, cards, IBANs) that failed: the match without a short group (up to three digits) at
    its end or start, so a number beside a day or a counter (`Nov. 5 0612345678`, `0612345678 11`) is
    still found. At most two more tries."""
    number = match.group()
    if kind not in MIN_CHARS or " " not in number:
        return None
    start, end, pattern = match.start(), match.end(), PATTERNS[kind]
    last, first = number.rindex(" "), number.index(" ")
    for lo, hi, dropped in ((start, start + last, number[last + 1:]), (start + first + 1, end, number[:first])):
        if len(dropped) <= 3 and len(text[lo:hi].translate(_SEPARATORS)) >= MIN_CHARS[kind]:
            m = pattern.fullmatch(text, lo, hi)
            if m and check(m, text, private_ips):
                return m
    return None


def redact(text: str, findings: list[tuple[int, int, str]], config: PiiConfig) -> str:
    parts, last = [], 0
    for start, end, kind in findings:
        parts += [text[last:start], config.placeholder(kind)]
        last = end
    return "".join(parts) + text[last:]


class PiiRedactor(Mapper):
    """Replaces PII with placeholders and counts it per kind (`pii_<kind>` columns); rejects a document
    with more than `max_pii` findings as `pii`."""

    name = "pii"
    adds = COUNT_FIELDS

    def __init__(self, config: PiiConfig = PiiConfig()):
        self.config = config

    def map(self, doc: Doc) -> Doc:
        text = doc.get("text") or ""
        findings = find_pii(text, self.config.pii_kinds, self.config.pii_private_ips)
        counts = {f"pii_{kind}": 0 for kind in KINDS}
        for _, _, kind in findings:
            counts[f"pii_{kind}"] += 1
        out = {**doc, **counts, "text": redact(text, findings, self.config) if findings else doc.get("text")}
        limit = self.config.max_pii
        if limit is not None and len(findings) > limit:
            detail = ", ".join(f"{k.removeprefix('pii_')}={n}" for k, n in counts.items() if n)
            return drop(out, "pii", f"{len(findings)} > {limit}: {detail}")
        return keep(out)
