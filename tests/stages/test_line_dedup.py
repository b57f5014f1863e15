"""Line dedup on a Python list against a plain Python reference, on real article bodies (the extraction
benchmark's gold text, ../shared/data) with planted boilerplate: cookie notices, navigation, footers.

The reference shares nothing with `stages/line_dedup.py`: its own splitting (loops over lines and
whitespace runs), normalisation (str methods), exact strings instead of hashes, sets instead of a
Bloom filter, and its own reassembly."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from bench.data import article_pages
from common.recipe import ConfigError
from pipeline.config import load_recipe
from stages.line_dedup import (REMOVE, LineDedup, LineDedupConfig, BloomPlan, mark_repeats, normalize,
                               split_units)

COOKIE = "We use cookies to improve your experience. By continuing to browse you agree to our Cookie Policy."
NAV = "Home | News | Sport | Business | Culture | Contact"
SHARE = "Share this article: Facebook Twitter Email"
PROMO = "Subscribe to our newsletter. Get the best stories every morning. Unsubscribe at any time."


def footer(rng: random.Random) -> str:
    """The same footer up to case and year: one unit after normalisation."""
    text = f"© {rng.randint(2001, 2024)} Example Media Group. All rights reserved."
    return text.upper() if rng.random() < 0.3 else text


def planted_corpus(data, limit: int | None = None, seed: int = 5) -> list[dict]:
    """The gold article bodies, each with boilerplate lines planted at random in many documents, a line
    shared by exactly two and one by exactly three documents, and a few pages that are mostly boilerplate."""
    rng, docs = random.Random(seed), []
    for i, (name, _, _, gold) in enumerate(article_pages(data, limit)):
        head = [NAV] if rng.random() < 0.6 else []
        head += [COOKIE] if rng.random() < 0.5 else []
        tail = [SHARE] if rng.random() < 0.4 else []
        tail += [PROMO] if rng.random() < 0.3 else []
        tail += [footer(rng)] if rng.random() < 0.7 else []
        tail += ["A line planted in two documents only."] if i in (3, 40) else []
        tail += ["A line planted in three documents."] if i in (5, 6, 70) else []
        joiner = "\n\n" if rng.random() < 0.5 else "\n"  # paragraphs of their own, or lines of one
        docs.append({"id": f"{name}", "text": joiner.join([*head, gold, *tail]), "source": "news"})
    for i in range(6):  # boilerplate pages: navigation and a few words of their own
        docs.append({"id": f"zz-nav{i}", "text": "\n".join([NAV, COOKIE, f"Page {i} of the archive", footer(rng)]),
                     "source": "news"})
    return docs


# ---------------------------------------------------------------- the reference


def ref_normalize(piece: str) -> str:
    text = " ".join(piece.split()).lower()
    return "".join("0" if c.isdecimal() else c for c in text)


def ref_lines(text: str) -> tuple[list[str], list[str]]:
    pieces = text.split("\n")
    return pieces, ["\n"] * (len(pieces) - 1)


def ref_paragraphs(text: str) -> tuple[list[str], list[str]]:
    """A blank line (only spaces) followed by another line ends a paragraph; the run of blank lines
    and the newlines around them is the separator."""
    lines, i = text.split("\n"), 1
    pieces, seps = [lines[0]], []
    while i < len(lines):
        if lines[i].strip() == "" and i + 1 < len(lines):
            run = "\n"
            while i < len(lines) - 1 and lines[i].strip() == "":
                run += lines[i] + "\n"
                i += 1
            seps.append(run)
            pieces.append(lines[i])
        else:
            pieces[-1] += "\n" + lines[i]
        i += 1
    return pieces, seps


def ref_sentences(text: str) -> tuple[list[str], list[str]]:
    """A whitespace run ends a sentence when it holds a newline or follows . ! ? … (maybe behind a
    closing quote or bracket)."""
    pieces, seps, start = [], [], 0
    for run in re.finditer(r"\s+", text):
        before = text[:run.start()]
        ends = before[-1:] in ".!?…" or (len(before) >= 2 and before[-2] in ".!?…" and before[-1] in "\"'”’»)]")
        if "\n" in run.group() or ends:
            pieces.append(text[start:run.start()])
            seps.append(run.group())
            start = run.end()
    return pieces + [text[start:]], seps


def ref_units(text: str, unit: str) -> tuple[list[str], list[str], list[tuple[list[int], str]]]:
    split = {"line": ref_lines, "paragraph": ref_paragraphs, "sentences3": ref_sentences}[unit]
    pieces, seps = split(text)
    norms = [ref_normalize(p) for p in pieces]
    if unit != "sentences3":
        return pieces, seps, [([j], n) for j, n in enumerate(norms) if n]
    full = [j for j, n in enumerate(norms) if n]
    spans = [full[i:i + 3] for i in range(len(full) - 2)]
    return pieces, seps, [(s, " ".join(norms[j] for j in s)) for s in spans]


def ref_join(pieces: list[str], seps: list[str], cut: set[int]) -> str:
    kept = [j for j in range(len(pieces)) if j not in cut]
    if not kept:
        return ""
    text = pieces[kept[0]] + "".join(seps[j - 1] + pieces[j] for j in kept[1:])
    return text.strip() if cut else text


def reference(docs: list[dict], unit: str, mode: str = "count", min_docs: int = 1, min_left: int = 50,
              seen: set | None = None) -> dict[str, tuple]:
    """id -> (text, drop_reason, removed chars, removed pieces); `seen`: units of earlier dumps (bloom)."""
    units = {d["id"]: ref_units(d["text"], unit) for d in docs}
    in_docs = Counter(t for _, _, us in units.values() for t in {t for _, t in us})
    seen = set() if seen is None else seen
    out = {}
    for doc_id in sorted(units):
        pieces, seps, us = units[doc_id]
        cut = set()
        for span, t in us:
            if (mode == "count" and in_docs[t] > min_docs) or (mode == "bloom" and t in seen):
                cut |= set(span)
            seen.add(t)
        text = next(d["text"] for d in docs if d["id"] == doc_id)
        rest = ref_join(pieces, seps, cut)
        dropped = bool(cut) and len(rest) < max(min_left, 1)
        out[doc_id] = (text if dropped or not cut else rest, "line_dedup_empty" if dropped else None,
                       len(text) - len(rest), len(cut))
    return out


def rows_of(rows: list[dict]) -> dict[str, tuple]:
    return {r["id"]: (r["text"], r["drop_reason"], r["line_dedup_removed_chars"], r["line_dedup_removed_lines"])
            for r in rows}


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def corpus(shared_data):
    return planted_corpus(shared_data)


@pytest.mark.parametrize("unit", ["line", "paragraph", "sentences3"])
def test_count_mode_equals_the_reference(corpus, unit):
    config = LineDedupConfig(unit=unit)
    got = rows_of(LineDedup(config).run(mark_repeats(corpus, config)))
    expected = reference(corpus, unit)
    assert got == expected
    assert sum(v[3] for v in got.values()) > 150 and sum(v[1] is not None for v in got.values()) >= 1


def test_line_mode_removes_the_planted_boilerplate_only(corpus):
    config = LineDedupConfig(min_docs=2)
    got = rows_of(LineDedup(config).run(mark_repeats(corpus, config)))
    assert got == reference(corpus, "line", min_docs=2)
    kept = "\n".join(text for text, reason, _, _ in got.values() if reason is None)
    for planted in (COOKIE, NAV, SHARE, PROMO, "Example Media Group", "EXAMPLE MEDIA GROUP", "in three documents"):
        assert planted not in kept
    assert kept.count("A line planted in two documents only.") == 2  # in 2 documents: not more than min_docs
    assert {i for i, v in got.items() if v[1]} == {f"zz-nav{i}" for i in range(6)}  # the boilerplate pages


def test_bloom_mode_keeps_first_occurrences_across_dumps(corpus):
    """Dump 1 then dump 2 with dump 1's filter: a unit seen before (in either) is removed, the first kept."""
    config = LineDedupConfig(unit="paragraph", mode="bloom", fp_rate=1e-6, expected_items=20_000)
    first, second = corpus[::2], corpus[1::2] + [dict(corpus[0], id="zz-copy-of-first")]
    seen: set = set()
    expected1 = reference(first, "paragraph", "bloom", seen=seen)
    from jobs.line_dedup import new_filter  # the filter the job would start from
    bloom = new_filter(config)
    got1 = rows_of(LineDedup(config, BloomPlan(None)).run(mark_repeats(first, config)))
    for d in first:
        bloom.add(split_units(d["text"], config).keys)
    expected2 = reference(second, "paragraph", "bloom", seen=seen)
    got2 = rows_of(LineDedup(config, BloomPlan(bloom)).run(mark_repeats(second, config)))
    assert got1 == expected1 and got2 == expected2
    assert got2["zz-copy-of-first"][1] == "line_dedup_empty"  # every paragraph was seen in dump 1


def test_normalisation_and_pieces():
    config = LineDedupConfig()
    assert normalize("  © 2023\tFoo   BAR ", config) == "© 0000 foo bar"
    assert normalize("A 1", LineDedupConfig(lowercase=False, digits=False)) == "A 1"
    text = "First.  Second!\n\n\nThird ”quoted.” Fourth? fifth"
    for unit in ("line", "paragraph", "sentences3"):
        units = split_units(text, LineDedupConfig(unit=unit))
        assert (units.pieces, units.seps) == {"line": ref_lines, "paragraph": ref_paragraphs,
                                              "sentences3": ref_sentences}[unit](text)
    assert len(split_units("One. Two.", LineDedupConfig(unit="sentences3")).spans) == 0  # < 3 sentences
    assert split_units("x\nab\n", LineDedupConfig(min_chars=2)).spans == [(1,)]


def test_rules_and_recipe():
    docs = [{"id": str(i), "text": f"boiler plate\nown text of document {i} " + "x" * 10 * i} for i in range(4)]
    config = LineDedupConfig(min_remaining_chars=0, min_remaining_fraction=0.5)
    got = {r["id"]: r["drop_reason"] for r in LineDedup(config).run(mark_repeats(docs, config))}
    assert got == {"0": None, "1": None, "2": None, "3": None}
    strict = LineDedupConfig(min_remaining_chars=45)
    got = {r["id"]: (r["drop_reason"], r["drop_detail"]) for r in LineDedup(strict).run(mark_repeats(docs, strict))}
    assert got["0"] == ("line_dedup_empty", "22 of 36 chars left") and got["3"][0] is None
    unchanged = LineDedup(strict).run([{"id": "u", "text": "short", REMOVE: None}])[0]
    assert unchanged["drop_reason"] is None and unchanged["line_dedup_removed_chars"] == 0
    recipe = load_recipe(None, ["line_dedup.unit=paragraph", "line_dedup.min_docs=3"])
    assert recipe.line_dedup == LineDedupConfig(unit="paragraph", min_docs=3)
    with pytest.raises(ConfigError, match="line_dedup.unit"):
        load_recipe(None, ["line_dedup.unit=word"])
