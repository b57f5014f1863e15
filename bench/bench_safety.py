"""Safety benchmarks: PII redaction against datatrove's PIIFormatter, the URL filter, C4 bad words, and
the PII patterns on hostile input, all in one run on one core.

    python -m bench.bench_safety --out runs/bench        # also run by `make bench`

1. PII: documents per second on one core (a plain loop in one process; the contenders take turns every
   20 documents, so the load of a shared machine weighs on all alike), CPU seconds beside wall seconds,
   and the peak Python heap of a separate pass (tracemalloc), on the 181 gold article bodies of the
   extraction benchmark (x repeats), as they are and with planted PII (faker: one value of each kind per
   document). Contenders: `PiiRedactor` with all six kinds, `PiiRedactor` with e-mail + IPv4 (what
   datatrove's PIIFormatter covers), and `datatrove.pipeline.formatters.PIIFormatter`; the share of the
   planted e-mails and public IPv4 addresses each removes is reported beside.
2. URL filter: a blocklist of 1,000,000 generated domains (its load time, and its memory as a hashed
   array against a Python set), a substring list and RefinedWeb word lists, on the articles' URLs.
3. Bad words: a 400-entry list none of whose words occur (every document scanned whole), our trie-shaped
   expression against C4's plain alternation `(?:\\W|^)(w1|w2|...)(?:\\W|$)`, on the article bodies.
4. Hostile input: CPU seconds of each PII kind over 1 MB of its worst repeated unit.
"""

from __future__ import annotations

import argparse
import random
import re
import string
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from bench.data import article_pages, save_result, shared_data
from stages.safety.badwords import BadWords, BadwordsConfig
from stages.safety.lists import HashedSet
from stages.safety.patterns import KINDS
from stages.safety.pii import PiiConfig, PiiRedactor, find_pii
from stages.safety.urls import UrlConfig, UrlFilter

PLANT_KINDS = {"email": "email", "ipv4": "ipv4_public", "phone": "phone_number", "credit_card": "credit_card_number",
               "iban": "iban"}


def turns(contenders: dict[str, Callable[[dict], object]], docs: list[dict], batch: int = 20) -> dict:
    """Wall and CPU seconds of each contender over `docs`, taking turns every `batch` documents."""
    spent = {name: [0.0, 0.0] for name in contenders}
    for start in range(0, len(docs), batch):
        for name, fn in contenders.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for doc in docs[start:start + batch]:
                fn(doc)
            spent[name][0] += time.perf_counter() - wall
            spent[name][1] += time.process_time() - cpu
    return {name: {"docs": len(docs), "wall_s": round(w, 3), "cpu_s": round(c, 3),
                   "docs_per_s": round(len(docs) / w, 1)} for name, (w, c) in spent.items()}


def peak_mib(fn: Callable[[dict], object], docs: list[dict]) -> float:
    """Peak Python heap (MiB) while `fn` runs over `docs` (tracemalloc; a pass of its own, as it slows)."""
    tracemalloc.start()
    for doc in docs:
        fn(doc)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return round(peak / 2**20, 2)


def planted_docs(texts: list[str], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The texts with one generated value of each kind put in at a sentence end, and the values."""
    from faker import Faker

    fake, rng, docs, values = Faker("en_US"), random.Random(seed), [], []
    fake.seed_instance(seed)
    for text in texts:
        planted = {kind: getattr(fake, method)() for kind, method in PLANT_KINDS.items()}
        cuts = [m.end() for m in re.finditer(r"[.!?]\s+", text)] or [len(text)]
        for kind, value in planted.items():
            at = rng.choice(cuts)
            text = f"{text[:at]}Contact: {value}. {text[at:]}"
            cuts = [c + len(value) + 11 if c >= at else c for c in cuts]
        docs.append({"text": text})
        values.append(planted)
    return docs, values


def pii_contenders() -> dict[str, Callable[[dict], str]]:
    from datatrove.pipeline.formatters import PIIFormatter

    ours, like_for_like, reference = PiiRedactor(), PiiRedactor(PiiConfig(pii_kinds=("email", "ipv4"))), PIIFormatter()
    return {"ours (6 kinds)": lambda d: ours.map(d)["text"],
            "ours (e-mail + IPv4)": lambda d: like_for_like.map(d)["text"],
            "datatrove PIIFormatter (e-mail + IPv4)": lambda d: reference.format(d["text"])}


def removed_share(fn: Callable[[dict], str], docs: list[dict], values: list[dict], kind: str) -> float:
    return round(sum(v[kind] not in fn(d) for d, v in zip(docs, values)) / len(docs), 4)


def pii_bench(texts: list[str], repeats: int) -> dict:
    contenders = pii_contenders()
    clean = [{"text": t} for t in texts]
    planted, values = planted_docs(texts)
    result = {}
    for label, docs in (("articles", clean), ("articles + planted PII", planted)):
        rates = turns(contenders, docs * repeats)
        for name, fn in contenders.items():
            rates[name]["peak_mib"] = peak_mib(fn, docs)
        result[label] = rates
    result["removed"] = {name: {kind: removed_share(fn, planted, values, kind) for kind in ("email", "ipv4")}
                         for name, fn in contenders.items()}
    return result


def random_domains(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    tlds = ("com", "net", "org", "de", "co.uk", "fr", "info", "ru", "io")
    return ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 14))) + "." + rng.choice(tlds)
            for _ in range(n)]


def heap_of(build: Callable[[], object]) -> tuple[object, float]:
    tracemalloc.start()
    built = build()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return built, round(size / 2**20, 1)


def url_bench(urls: list[str], folder: Path, domains: int, repeats: int) -> dict:
    text = "\n".join(random_domains(domains) + ["blocked.example"])
    _, set_mib = heap_of(lambda: set(text.split("\n")))  # the strings and the set, as a list file becomes
    _, hashed_mib = heap_of(lambda: HashedSet(text.split("\n")))
    (folder / "domains.txt").write_text(text + "\n")
    (folder / "substrings.txt").write_text("casino\nporn\n/warez/\n")
    (folder / "hard.txt").write_text("xxx\nporn\nhentai\n")
    (folder / "soft.txt").write_text("sex\nfree\ncam\ngirls\nhot\nnude\n")
    stage = UrlFilter(UrlConfig(url_blocklist=str(folder / "domains.txt"), url_substrings=str(folder / "substrings.txt"),
                                url_hard_words=str(folder / "hard.txt"), url_soft_words=str(folder / "soft.txt")))
    started = time.perf_counter()
    stage.verdict({"url": "http://warm.example/"})  # loads the lists
    load_s = round(time.perf_counter() - started, 2)
    docs = [{"url": u} for u in urls] * repeats
    return {"domains": domains, "load_s": load_s, "python_set_mib": set_mib, "hashed_mib": hashed_mib,
            **turns({"url filter": stage.verdict}, docs)["url filter"]}


def badwords_bench(texts: list[str], folder: Path, repeats: int) -> dict:
    rng = random.Random(1)
    words = sorted({"".join(rng.choices("bcdfghjklmnpqrstvwxz", k=rng.randint(4, 9))) for _ in range(380)})
    words += [f"{a} {b}" for a, b in zip(words[:20], words[20:40])]
    (folder / "en.txt").write_text("\n".join(words) + "\n")
    ours = BadWords(BadwordsConfig(badwords={"en": str(folder / "en.txt")}))
    c4 = re.compile(r"(?:\W|^)({})(?:\W|$)".format("|".join(map(re.escape, words))))
    docs = [{"text": t, "lang": "en"} for t in texts] * repeats
    assert not any(ours.verdict(d) for d in docs[:len(texts)])
    return {"words": len(words), **turns({"ours (trie)": ours.verdict, "C4 alternation": lambda d: c4.search(d["text"].lower())}, docs)}


# Units whose repetition makes each PII kind's regex try hardest: runs of its own characters, almost-matches
# that fail at the last character, separators that let groups go on (tests/stages/test_safety_hostile.py).
UNITS = ("1", "1 ", "1-", "1.", "12 ", "123.", "0 ", "00 ", "(0) ", "+1 (1) ", "1 1 1 1 1 1 1 x", "4111 ",
         "a", "a@", "a.", "@a.", "a@a.", "a@b.cd ", "AB12", "AB12 ", "A1 ", "1:", "a:", "::", "fe80::", "12:34:",
         "1.2.3.4 ", "1.2.3.", "x1 ", "ext1 ", "+", "-", " ", "é@é.", "١٢٣ ")


def repeated(unit: str, size: int = 1_000_000) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def cpu_per_unit(kind: str, size: int = 1_000_000, units: tuple[str, ...] = UNITS) -> dict[str, float]:
    """CPU seconds of finding `kind` in `size` characters of each repeated unit."""
    spent = {}
    for unit in units:
        text = repeated(unit, size)
        started = time.process_time()
        find_pii(text, (kind,))
        spent[unit] = time.process_time() - started
    return spent


def hostile_bench() -> dict:
    worst = {}
    for kind in KINDS:
        spent = cpu_per_unit(kind)
        unit = max(spent, key=spent.get)
        worst[kind] = {"unit": unit, "cpu_s_per_mb": round(spent[unit], 3)}
    return worst


def markdown(r: dict) -> str:
    lines = ["### Safety: PII redaction vs datatrove, URL filter, bad words", "",
             f"One core, a plain loop; 181 gold article bodies x {r['repeats']} (contenders take turns).", "",
             "| documents | contender | docs/s | CPU s | wall s | peak heap MiB | vs datatrove |", "|---|---|---|---|---|---|---|"]
    for label in ("articles", "articles + planted PII"):
        rates = r["pii"][label]
        reference = rates["datatrove PIIFormatter (e-mail + IPv4)"]["docs_per_s"]
        for name, x in rates.items():
            lines.append(f"| {label} | {name} | {x['docs_per_s']:.0f} | {x['cpu_s']:.2f} | {x['wall_s']:.2f} | "
                         f"{x['peak_mib']:.2f} | {x['docs_per_s'] / reference:.2f}x |")
    removed = "; ".join(f"{name}: e-mail {v['email']:.0%}, IPv4 {v['ipv4']:.0%}" for name, v in r["pii"]["removed"].items())
    u, b = r["urls"], r["badwords"]
    lines += ["", f"Planted values removed: {removed}.", "",
              f"URL filter ({u['domains']:,} blocked domains, loaded in {u['load_s']} s; {u['hashed_mib']} MiB as hashes "
              f"vs {u['python_set_mib']} MiB as a Python set): **{u['docs_per_s']:.0f} URLs/s** on one core.", "",
              f"Bad words ({b['words']} entries, no match: every document scanned whole): ours "
              f"**{b['ours (trie)']['docs_per_s']:.0f} docs/s**, C4's alternation {b['C4 alternation']['docs_per_s']:.0f} docs/s.",
              "", "PII patterns on 1 MB of their worst repeated unit (CPU s): " +
              ", ".join(f"{k} {v['cpu_s_per_mb']} ({v['unit']!r})" for k, v in r["hostile"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_safety", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--domains", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    pages = article_pages(shared_data())
    texts, urls = [gold for *_, gold in pages], [url for _, url, _, _ in pages]
    result = {"repeats": args.repeats, "pii": pii_bench(texts, args.repeats)}
    with tempfile.TemporaryDirectory() as tmp:
        result["urls"] = url_bench(urls, Path(tmp), args.domains, 20 * args.repeats)
        result["badwords"] = badwords_bench(texts, Path(tmp), args.repeats)
    result["hostile"] = hostile_bench()
    return save_result(Path(args.out), "safety", result, markdown(result))


if __name__ == "__main__":
    main()
