"""PII patterns: one bounded regex per kind plus a validator that turns candidates into findings.

    [(m.start(), m.end()) for m in PATTERNS["email"].finditer(text) if VALIDATORS["email"](m, text, False)]

Every regex is linear in the text: quantifiers are bounded, a match may only start where the lookbehind
says a token starts (so a long run of candidate characters is tried from its first character only), and
group boundaries are fixed by separators, so backtracking never multiplies. The validators carry the
precision (the Dolma PII tagger and datatrove's PIIFormatter rely on regexes alone; these add checks):

- e-mail: RFC 5321 lengths (local part <= 64, labels <= 63); an image name such as `logo@2x.png` is not one.
- IPv4: dotted quads without leading zeros, not inside a longer dotted number (`1.2.3.4.5`); after a version
  word (`version 1.2.3.4`, `build 10.0.1.1`) the quad is a version string, not an address. IPv6: what
  `ipaddress` accepts, with at least three non-empty groups (`a::b` in code is not redacted).
  Private, loopback, reserved and documentation addresses are not personal: kept unless the recipe says.
- credit cards: 12-19 digits, unbroken or grouped as cards are printed (4-4-4-4, 4-4-4-4-3, Amex 4-6-5,
  Diners 4-6-4), an issuer's first digit (2-6; JCB 1800, Maestro 0604), the Luhn checksum.
- IBAN: country letters, check digits, the country's length (the SWIFT registry) and ISO 13616 mod-97.
- phone numbers: 7-15 digits (E.164). With a `+`/`00` prefix or an area code in parentheses, any grouping;
  otherwise not a date (2020-01-15, 15.01.2020), years (1990-2000), a number grouped in thousands
  (1 234 567, 1.234.567), a decimal (300.5849), a version or time range (10.0.19041.1, 10.30-11.45), a round
  number or an arithmetic expression (200000-130000 = ...), a hyphenated ISBN, a table row of numbers
  (space-separated groups need a trunk 0 as in `030 1234567`, or the NANP 3-3-4), nor a number after an
  identifier word (`ISBN`, `order no.`, `#`: also for cards); an unbroken run needs 9-12 digits and is not
  a value assigned with `=` (constants in code: `SNDCTL_COPR_HALT = 3222553351`).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from bisect import bisect_right
from collections.abc import Callable

import regex

KINDS = ("email", "iban", "credit_card", "ipv6", "ipv4", "phone")  # also the order of precedence on overlaps

_LOCAL = r"[\w!#$%&'*+/=?^`{|}~.-]"
PATTERNS: dict[str, regex.Pattern] = {  # the `regex` module: the same syntax, ~10x faster here than `re`
    "email": regex.compile(rf"(?<!{_LOCAL}){_LOCAL}{{1,64}}@(?:[^\W_][\w-]{{0,62}}\.){{1,8}}[^\W\d_]{{2,24}}(?![\w-])"),
    "iban": regex.compile(r"(?<![\w-])[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)(?!\w)"),
    "credit_card": regex.compile(  # as cards are printed: unbroken, 4-4-4-4(-3), Amex 4-6-5, Diners 4-6-4
        r"(?<![\w.,/+=<>*-])(?:\d{12,19}|\d{4}([ -])(?:\d{6}\1\d{4,5}|\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?))"
        r"(?![\w]|[.,/-]\d)"),
    "ipv6": regex.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\d)"),
    "ipv4": regex.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                       r"(?![\w]|\.\d)"),
    "phone": regex.compile(
        r"(?<![\w+#/$€£¥.,:@=<>*×-])"
        r"(?:(?:\+|\b00)[1-9]\d{0,2}[ .-]?(?:\(0\)[ .-]?)?)?"  # country code, then the trunk "(0)" some print
        r"(?:\(\d{1,5}\)[ .-]?)?"  # area code in parentheses
        r"\d{1,12}(?:[ .-]\d{1,10}){0,6}"  # digit groups, one separator between them
        r"(?:[ ]?(?:x|ext\.?|extension)[ ]?\d{1,6})?"  # extension
        r"(?![\w@%=*×]|[.,:/-]?\d| ?[=+*/×<>])"),
}

# Words right before a number that make it a version or a reference (for addresses), or an identifier
# (for phone and card numbers), never PII. "No." counts capitalised only (a sentence may end in "no.").
BEFORE = {
    "version": frozenset("version ver v release build firmware update patch rev revision section chapter art "
                         "article rule table figure fig".split()),
    "id": frozenset("isbn isbn-10 isbn-13 issn doi pmid arxiv order invoice ticket patent serial sku ref "
                    "reference nr id tracking receipt customer".split()),
}
# Words that take a dot as abbreviations; after any other word a dot ends a sentence and the rule is off.
_ABBREVIATIONS = frozenset("ver v rev art fig ref nr no".split())
_NUMBER_WORDS = frozenset({"no", "nr", "number"})
_SIGNS = "#§№"
_IMAGE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "avif"})
# ISO 13616 lengths by country (SWIFT IBAN registry); countries not listed need 15-34 characters.
IBAN_LENGTHS = {c[:2]: int(c[2:]) for c in (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 DO28 EE20 EG29 ES24 "
    "FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 "
    "LI21 LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 "
    "SC31 SE24 SI19 SK24 SM27 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20").split()}


def word_before(kind: str, text: str, start: int) -> bool:
    """Whether the text before `start` ends with a `BEFORE[kind]` word, maybe followed by "no." and up to
    three of ` :.-` (`version 1.2.3.4`, `ISBN: 978-...`, `order no. 0612345678`, `# 0612345678`)."""
    window = text[max(0, start - 24):start]
    stripped = window.rstrip(" \t\n:.-")
    if not stripped or len(window) - len(stripped) > 3 or not (stripped[-1].isalpha() or stripped[-1] in _SIGNS):
        return False
    words = window.split()[-2:]
    if words[-1][-1] in _SIGNS:
        return True
    last = _word(words[-1])
    if last == "No":
        return kind == "id"
    if last.lower() in _NUMBER_WORDS and len(words) == 2:
        last = _word(words[0])
    return last.lower() in BEFORE[kind]


def _word(token: str) -> str:
    """`token` without trailing `:` or `-`, and without a dot where it is an abbreviation's; '' where a
    dot ends a sentence."""
    token = token.rstrip(":-")
    if token.endswith("."):
        token = token.rstrip(".")
        return token if token.lower() in _ABBREVIATIONS or token == "No" else ""
    return token


_DOUBLED = tuple((2 * d) % 9 if d != 9 else 9 for d in range(10))  # Luhn: a doubled digit's digit sum


def luhn(digits: str) -> bool:
    odd, even = digits[-1::-2], digits[-2::-2]
    return (sum(map(int, odd)) + sum(_DOUBLED[int(d)] for d in even)) % 10 == 0


def iban_checksum(iban: str) -> bool:
    """ISO 13616: the country and check digits moved to the end, letters as 10..35, the number mod 97 is 1."""
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _email(m: regex.Match, text: str, private: bool) -> bool:
    local, _, domain = m.group().rpartition("@")
    return domain.rpartition(".")[2].lower() not in _IMAGE_TLDS and not (local.startswith(".") or ".." in local)


def _iban(m: regex.Match, text: str, private: bool) -> bool:
    iban = m.group().replace(" ", "")
    expected = IBAN_LENGTHS.get(iban[:2])
    return (len(iban) == expected if expected else 15 <= len(iban) <= 34) and iban_checksum(iban)


def _card(m: regex.Match, text: str, private: bool) -> bool:
    digits = m.group().replace(" ", "").replace("-", "")
    return ((digits[0] in "23456" or digits[:4] in ("1800", "0604")) and luhn(digits) and len(set(digits)) > 1
            and not word_before("id", text, m.start()))


def _ipv4(m: regex.Match, text: str, private: bool) -> bool:
    """The regex allows only valid quads; public unless in a non-global block (integer ranges: fast)."""
    if not private:
        a, b, c, d = map(int, m.group().split("."))
        value = a << 24 | b << 16 | c << 8 | d
        at = bisect_right(_V4_STARTS, value) - 1
        if at >= 0 and value <= _V4_BLOCKS[at][1]:
            return False
    return not word_before("version", text, m.start())


def _ipv6(m: regex.Match, text: str, private: bool) -> bool:
    try:
        address = ipaddress.IPv6Address(m.group())
    except ValueError:
        return False
    groups = [g for g in m.group().split(":") if g]
    return len(groups) >= 3 and (private or address.is_global) and not word_before("version", text, m.start())


# IPv4 blocks that are not global (IANA special-purpose registry: private, shared, loopback, link-local,
# documentation, benchmarking, reserved; and multicast, which `ipaddress` counts as global), as integer ranges.
_V4_BLOCKS = sorted((int(n.network_address), int(n.broadcast_address)) for n in map(ipaddress.ip_network, (
    "0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 192.0.0.0/24 192.0.2.0/24 "
    "192.88.99.0/24 192.168.0.0/16 198.18.0.0/15 198.51.100.0/24 203.0.113.0/24 224.0.0.0/4 240.0.0.0/4").split()))
_V4_STARTS = [start for start, _ in _V4_BLOCKS]


def _phone(m: regex.Match, text: str, private: bool) -> bool:
    return phone_shape(m.group()) and not word_before("id", text, m.start()) and not _assigned(m, text)


def _assigned(m: regex.Match, text: str) -> bool:
    """An unbroken digit run right after `=`: a constant in code or a table (`SNDCTL_COPR_HALT = 3222553351`,
    as pydoc pages list them), not a phone number."""
    return m.group().isdigit() and text[max(0, m.start() - 4):m.start()].rstrip().endswith("=")


@functools.lru_cache(maxsize=1 << 16)
def phone_shape(number: str) -> bool:
    """Whether a candidate reads as a phone number, its context aside (cached: tables repeat numbers)."""
    main = _EXTENSION.sub("", number) if "x" in number else number
    groups = _DIGITS.findall(main)
    digits = "".join(groups)
    if not 7 <= len(digits) <= 15:
        return False
    if number[0] == "+" or number.startswith("00") or "(" in number:
        return True  # an international prefix or an area code in parentheses: written as a phone number
    if len(groups) == 1:
        return 9 <= len(digits) <= 12 and not digits.endswith("0000")  # else a round number (145000000)
    return _plain_number_ok(groups, set(main.translate(_NO_DIGITS)))


def _plain_number_ok(groups: list[str], seps: set[str]) -> bool:
    """Digit groups with no prefix nor parentheses: a phone number unless they read as something else."""
    lengths = [len(g) for g in groups]
    trunk = groups[0][0] == "0" and lengths[0] >= 2  # a trunk 0 and an area code: 030, 0161, 04
    if seps == {" "} and not (trunk or lengths == [3, 3, 4]):
        return False  # space-separated: a European national form or NANP 3-3-4; else a table row
    if len(groups) == 2 and (seps == {"."} or not (trunk or lengths == [3, 4])):
        return False  # two groups: a national form (076-6143554), a NANP local number (555-1234); not 300.5849
    if any(len(g) >= 5 and g.endswith("000") for g in groups):
        return False  # round numbers: arithmetic or quantities (200000-130000)
    return not (_looks_like_quantity(groups, seps) or _looks_like_date(groups) or _isbn(groups, seps))


def _looks_like_quantity(groups: list[str], seps: set[str]) -> bool:
    """A number grouped in thousands, a time range or version ('.' mixed with other separators, or
    beside a one-digit group: 10.30-11.45, 10.0.19041.1), or a run of one-digit groups."""
    lengths = [len(g) for g in groups]
    thousands = seps <= {".", " "} and len(seps) == 1 and lengths[0] <= 3 and set(lengths[1:]) == {3}
    dotted = "." in seps and (len(seps) > 1 or min(lengths) == 1)
    return thousands or dotted or lengths.count(1) > 2 or max(lengths) < 2


def _looks_like_date(groups: list[str]) -> bool:
    """A date (2020-01-15, 15.01.2020) or years (1990-2000, 1749-1945 1052-1616)."""
    def year(g: str) -> bool:
        return len(g) == 4 and 1000 <= int(g) <= 2999

    small = [g for g in groups if not year(g)]
    if not small:
        return True
    if len(groups) == 3 and len(small) == 2 and any(year(g) for g in (groups[0], groups[2])):
        return all(len(g) <= 2 and int(g) <= 31 for g in small)
    return False


def _isbn(groups: list[str], seps: set[str]) -> bool:
    """A hyphenated ISBN: 4 or 5 parts, a one-digit check part, a valid checksum."""
    digits = "".join(groups)
    if seps != {"-"} or len(digits) not in (10, 13) or len(groups) < 4 or len(groups[-1]) != 1:
        return False
    if len(digits) == 13:
        return digits[:3] in ("978", "979") and sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10 == 0
    return sum((10 - i) * int(d) for i, d in enumerate(digits)) % 11 == 0


_DIGITS = re.compile(r"\d+")
_EXTENSION = re.compile(r" ?(?:x|ext\.?|extension) ?\d+$")
_NO_DIGITS = str.maketrans("", "", "0123456789")
VALIDATORS: dict[str, Callable[[regex.Match, str, bool], bool]] = {
    "email": _email, "iban": _iban, "credit_card": _card, "ipv6": _ipv6, "ipv4": _ipv4, "phone": _phone}
# A character a text must contain for the kind's regex to be worth running.
NEEDS = {"email": "@", "ipv6": ":"}
