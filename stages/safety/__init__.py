"""Safety filters of production pretraining pipelines (RefinedWeb, C4, FineWeb, Dolma, datatrove), as
pure stages run in order by `jobs/safety.py`:

    urls.py      URL blocklists (domains + subdomains, UT1 categories, substrings, RefinedWeb's word score) -> url_blocked
    badwords.py  C4's bad-words rule, one user list per language (substrings where there are no spaces) -> badwords
    toxicity.py  a fastText toxicity classifier (trained with `make train-quality`) -> toxicity_score, toxic
    pii.py       PII redaction (e-mail, IPv4/IPv6, phone, credit card, IBAN) -> placeholders, pii_<kind>, pii
    patterns.py  the PII regexes and validators; lists.py: reading the user lists

    Safety(SafetyConfig(url_blocklist="domains.txt", badwords={"en": "en.txt"}, max_pii=20)).run(docs)

The recipe's `[safety]` table holds every step's keys (`SafetyConfig` is the union of each step's frozen
config: `UrlConfig`, `BadwordsConfig`, `ToxicityConfig`, `PiiConfig`, each validated where it is defined)
and `steps`, the order they run in. A step without its lists or model keeps every document.
"""

from stages.safety.stage import STEPS, Safety, SafetyConfig

__all__ = ["STEPS", "Safety", "SafetyConfig"]
