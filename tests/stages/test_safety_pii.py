"""PII redaction (stages/safety/pii.py, patterns.py): recall on generated PII (faker, eight locales) planted
in real article text, false redactions on the untouched gold articles, what is not PII, the recipe keys."""

from __future__ import annotations

import ipaddress
import random
import re

import pytest

from bench.data import article_pages
from stages.safety.patterns import KINDS, iban_checksum, luhn
from stages.safety.pii import PiiConfig, PiiRedactor, find_pii

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "it_IT", "es_ES", "nl_NL", "pt_BR")
PLANTS_PER_LOCALE = 40  # per kind: 320 planted values of each kind
SENTENCE_END = re.compile(r"[.!?]\s+")
CONTEXTS = ("{}", "Contact: {}.", "call {} today", "({})", "at {},", "- {};", "Tel. {}", "{} 11")

# Gold articles whose bodies hold real contact details (reviewed by hand): file name -> kinds found there.
REAL_CONTACTS = {"0ec95c7261": {"email": 1}, "30b771a40a": {"phone": 1}, "5211188428": {"phone": 1},
                 "8cad00dc22": {"phone": 1}, "9da36ae471": {"email": 1}, "ac3c035520": {"email": 1},
                 "d48aeb9cf2": {"email": 1, "phone": 1}}


def article_texts(shared_data) -> list[tuple[str, str]]:
    """(file name, gold article body) of the 181 extraction-benchmark pages."""
    return [(name, gold) for name, _, _, gold in article_pages(shared_data)]


def printed(kind: str, value: str, rng: random.Random) -> str:
    """Cards and IBANs also as they are printed: IBANs in fours, cards in fours (16 and 19 digits),
    Amex 4-6-5, Diners 4-6-4 (12- and 13-digit cards stay unbroken)."""
    if kind not in ("credit_card", "iban") or rng.random() < 0.5 or (kind == "credit_card" and len(value) < 14):
        return value
    sep = rng.choice(" -") if kind == "credit_card" else " "
    cuts = (0, 4, 10, len(value)) if kind == "credit_card" and len(value) in (14, 15) else (*range(0, len(value), 4), len(value))
    return sep.join(value[a:b] for a, b in zip(cuts, cuts[1:]))


def generated(kind: str, fake) -> str:
    if kind == "ipv6":  # a public address: private and reserved ones are kept by default (tested below)
        return next(v for v in iter(fake.ipv6, None) if ipaddress.ip_address(v).is_global)
    makers = {"email": lambda: fake.random_element([fake.email, fake.free_email, fake.company_email])(),
              "ipv4": fake.ipv4_public, "phone": fake.phone_number, "credit_card": fake.credit_card_number,
              "iban": fake.iban}
    return makers[kind]()


@pytest.fixture(scope="module")
def articles(shared_data):
    return article_texts(shared_data)


@pytest.fixture(scope="module")
def planted(articles):
    """(kind, text, start, end, locale): one value planted at a sentence boundary of a real article."""
    from faker import Faker

    rng, rows = random.Random(25), []
    for i, locale in enumerate(LOCALES * PLANTS_PER_LOCALE):
        fake = Faker(locale)
        fake.seed_instance(i)
        _, gold = articles[i % len(articles)]
        cuts = [m.end() for m in SENTENCE_END.finditer(gold)] or [0]
        for kind in KINDS:
            value = printed(kind, generated(kind, fake), rng)
            context = rng.choice(CONTEXTS)
            at = rng.choice(cuts)
            text = f"{gold[:at]}{context.format(value)} {gold[at:]}"
            start = at + context.index("{}")
            rows.append((kind, text, start, start + len(value), locale))
    return rows


def test_recall_per_kind_on_generated_pii_in_real_articles(planted):
    found, missed = {k: 0 for k in KINDS}, {k: [] for k in KINDS}
    for kind, text, start, end, locale in planted:
        hit = any(k == kind and s <= start and e >= end for s, e, k in find_pii(text))
        found[kind] += hit
        if not hit:
            missed[kind].append((locale, text[start:end]))
    total = len(planted) // len(KINDS)
    recall = {kind: round(found[kind] / total, 4) for kind in KINDS}
    print(f"\nPII recall on {total} planted values per kind ({len(LOCALES)} locales): {recall}")
    print({k: v[:5] for k, v in missed.items() if v})
    assert all(r >= 0.98 for r in recall.values()), {k: v[:5] for k, v in missed.items() if v}


def test_false_redactions_on_gold_articles_under_one_per_10k_words(articles):
    words, real, false = 0, 0, []
    for name, gold in articles:
        words += len(gold.split())
        expected = dict(REAL_CONTACTS.get(name[:10], {}))
        for start, end, kind in find_pii(gold):
            if expected.get(kind, 0) > 0:
                expected[kind] -= 1
                real += 1
            else:
                false.append((name[:10], kind, gold[start:end]))
    per_10k = len(false) / words * 10_000
    print(f"\nGold articles: {words} words, {real} real contact details redacted, {len(false)} false "
          f"redactions = {per_10k:.2f} per 10,000 words")
    assert real == sum(sum(kinds.values()) for kinds in REAL_CONTACTS.values())
    assert per_10k < 1.0, false


NOT_PII = [
    "Update to version 1.2.3.4 now.", "Firmware v 10.2.0.1 fixes it.", "See section 1.2.3.4 of the rules.",
    "The value 1.2.3.4.5 is a version.", "It opened on 2020-01-15 and closed on 15.01.2021.", "Between 1990-2000.",
    "Open 10.30-11.45 daily.", "At 12:30:45 the race began.", "It cost $1,234,567.89 in 2019.",
    "A city of 1 234 567 people.", "Es kostet 1.234.567 Euro.", "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2.",
    "Your order no. 123456789 shipped.", "Order #1234567890 is late.", "Invoice 2019-0012345 is paid.",
    "Pi is 3.14159265358979.", "Use std::vector or a::b here.", "MAC 00:1A:2B:3C:4D:5E on the box.",
    "Windows 10.0.19041.1 is out.", "Kyle Busch 5040 5 1 17 27", "The logo@2x.png file.", "The score was 6-4, 6-3.",
    "Ships to 10.0.0.1 and 192.168.1.1 and 127.0.0.1 only.", "The card 4111 1111 1111 1112 fails Luhn.",
    "DE89 3704 0044 0532 0130 01 has a wrong check.", "Population: 12,345,678 (2020).", "Ticket 0612345678 is valid.",
    "SNDCTL_COPR_HALT = 3222553351 SNDCTL_COPR_LOAD = 3484435201",   # constants as pydoc lists them
]


@pytest.mark.parametrize("text", NOT_PII)
def test_versions_dates_prices_isbns_and_order_numbers_are_not_pii(text):
    assert [text[s:e] for s, e, _ in find_pii(text)] == []


@pytest.mark.parametrize("text, kind", [
    ("Write to jane.doe+news@mail.example.co.uk today.", "email"), ("Server 8.8.8.8 answered.", "ipv4"),
    ("Host 2a00:1450:4001:82b::200e is up.", "ipv6"), ("Call (555) 123-4567 now.", "phone"),
    ("Call +33 1 23 45 67 89.", "phone"), ("Phone: 2125551234", "phone"), ("Tel. 030 1234567", "phone"), ("Call 555.123.4567 x123", "phone"),
    ("Pay with 4111 1111 1111 1111.", "credit_card"), ("Amex 3782 822463 10005 works.", "credit_card"),
    ("IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX", "iban"), ("IBAN GB82WEST12345698765432.", "iban"),
])
def test_written_pii_is_found(text, kind):
    assert [k for _, _, k in find_pii(text)] == [kind]


def test_checksums():
    assert luhn("4111111111111111") and not luhn("4111111111111112") and luhn("79927398713")
    assert iban_checksum("GB82WEST12345698765432") and not iban_checksum("GB83WEST12345698765432")


def test_private_addresses_are_kept_by_default_and_redacted_on_request():
    text = "Hosts 10.0.0.1, 192.168.1.1, fd12:3456:789a:1::1 and 8.8.8.8."
    kept = PiiRedactor().map({"text": text})
    assert kept["text"] == "Hosts 10.0.0.1, 192.168.1.1, fd12:3456:789a:1::1 and <IP_ADDRESS>."
    every = PiiRedactor(PiiConfig(pii_private_ips=True)).map({"text": text})
    assert every["text"].count("<IP_ADDRESS>") == 4 and (every["pii_ipv4"], every["pii_ipv6"]) == (3, 1)


def test_placeholders_kinds_counts_and_max_pii():
    text = "Mail a@b.org, c@d.org or call +44 20 7946 0958; card 4111 1111 1111 1111."
    row = PiiRedactor(PiiConfig(pii_placeholders={"email": "email@example.com"})).map({"id": "1", "text": text})
    assert row["text"] == "Mail email@example.com, email@example.com or call <PHONE_NUMBER>; card <CREDIT_CARD>."
    assert (row["pii_email"], row["pii_phone"], row["pii_credit_card"], row["pii_iban"]) == (2, 1, 1, 0)
    assert row["drop_reason"] is None
    only = PiiRedactor(PiiConfig(pii_kinds=("phone",))).map({"text": text})
    assert only["text"].startswith("Mail a@b.org, c@d.org or call <PHONE_NUMBER>") and only["pii_email"] == 0
    dropped = PiiRedactor(PiiConfig(max_pii=3)).map({"text": text})
    assert dropped["drop_reason"] == "pii" and dropped["drop_detail"] == "4 > 3: email=2, credit_card=1, phone=1"
    assert "<EMAIL>" in dropped["text"]  # a rejected row is redacted too
    assert PiiRedactor().map({"text": None})["text"] is None


@pytest.mark.parametrize("values, key", [({"pii_kinds": ("ssn",)}, "pii_kinds"), ({"max_pii": -1}, "max_pii"),
                                         ({"pii_placeholders": {"name": "<N>"}}, "pii_placeholders")])
def test_config_is_checked(values, key):
    with pytest.raises(ValueError, match=key):
        PiiConfig(**values)
