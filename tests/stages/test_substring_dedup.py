"""Exact substring dedup against a brute-force reference (a set of every k-token window seen so far) on
generated token sequences and on real article bodies (the extraction benchmark's gold text,
../shared/data) with planted 60-token repeats; hostile text never fails a record."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.data import article_pages
from common.errors import UserError
from common.recipe import ConfigError
from pipeline.config import load_recipe
from stages.substring_dedup import (CUT, REASON, REMOVED_BYTES, REMOVED_CHARS, REMOVED_SPANS, SubstringDedup,
                                    SubstringDedupConfig, corpus_cuts, cut_text, encode, mark_substrings,
                                    repeat_mask, token_bytes)
from stages.tokenize.fast_bpe import rank_tokens
from stages.tokenize.tokenizer import ranks_path

SPAN = 60  # planted repeats, in tokens (the test: k = 50, spans of 60)
WORD_GAP = re.compile(r"(?<=[A-Za-z]) (?=[A-Za-z])")  # where a span starting " word" fits between chunks


def brute_force(token_lists: list[list[int]], k: int) -> list[np.ndarray]:
    """Per document, True where a token lies in a k-window (inside the document) seen at an earlier position."""
    seen: set[tuple[int, ...]] = set()
    masks = []
    for tokens in token_lists:
        mask = np.zeros(len(tokens), dtype=bool)
        for p in range(len(tokens) - k + 1):
            window = tuple(tokens[p:p + k])
            if window in seen:
                mask[p:p + k] = True
            seen.add(window)
        masks.append(mask)
    return masks


def core_mask(token_lists: list[list[int]], k: int) -> list[np.ndarray]:
    lengths = [len(t) for t in token_lists]
    tokens = np.array([x for t in token_lists for x in t], dtype=np.int32)
    starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    mask = repeat_mask(tokens, starts, k)
    return [mask[a:b] for a, b in zip(starts[:-1], starts[1:])]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), max_size=40), max_size=8), st.integers(2, 6),
       st.sampled_from([0, 151_000, 2**20]))
def test_mask_equals_brute_force_on_generated_sequences(token_lists, k, offset):
    token_lists = [[x + offset for x in t] for t in token_lists]  # large ids: the 4-byte path of the sort
    for ours, theirs in zip(core_mask(token_lists, k), brute_force(token_lists, k)):
        assert ours.tolist() == theirs.tolist()


def test_mask_self_overlap_and_document_boundaries():
    # a run of one token repeats its own windows: all but the first window's first token go
    assert core_mask([[7] * 10], 3)[0].tolist() == [False] + [True] * 9
    # a window may not cross documents: [1 2 | 3] then [1 2 3] is no repeat
    assert not any(m.any() for m in core_mask([[1, 2], [3], [1, 2, 3]], 3))
    assert core_mask([[1, 2, 3], [9, 1, 2, 3]], 3)[1].tolist() == [False, True, True, True]


# ---------------------------------------------------------------- real text with planted repeats


def chunk_starts(tokens: np.ndarray, pieces: list[bytes]) -> list[int]:
    """Positions whose token begins a pre-tokenizer word chunk (" " then an ASCII letter)."""
    return [i for i, t in enumerate(tokens.tolist()) if re.match(rb" [A-Za-z]", pieces[t])]


def planted_corpus(data, seed: int = 3, plants: int = 120, copies: int = 2):
    """Gold article bodies, ids "a-..." (sources) and "b-..." (targets); each plant takes a span of 60
    tokens between two word chunks of a source and inserts it, before a word, into `copies` targets.
    Returns (docs, plants: (source id, span text, [target ids]))."""
    rng = random.Random(seed)
    pieces = rank_tokens(str(ranks_path()))
    golds = [gold for _, _, _, gold in article_pages(data) if len(WORD_GAP.findall(gold)) > 300]  # Latin-script
    repeats = brute_force([encode(gold).tolist() for gold in golds], 50)
    golds = [gold for gold, mask in zip(golds, repeats) if not mask.any()]  # no 50-token repeat of their own
    sources = {f"a-{i:03d}": g for i, g in enumerate(golds[: len(golds) // 2])}
    targets = {f"b-{i:03d}": g for i, g in enumerate(golds[len(golds) // 2:])}
    planted = []
    for _ in range(plants):
        source = rng.choice(sorted(sources))
        tokens = encode(sources[source])
        starts = set(chunk_starts(tokens, pieces))
        options = [i for i in sorted(starts) if i + SPAN in starts]
        if not options:
            continue
        at = rng.choice(options)
        try:
            span = b"".join(pieces[t] for t in tokens[at:at + SPAN].tolist()).decode("utf-8")
        except UnicodeDecodeError:
            continue
        chosen = rng.sample(sorted(targets), copies)
        for target in chosen:
            places = [m.start() for m in WORD_GAP.finditer(targets[target])]
            cut = rng.choice(places)
            targets[target] = targets[target][:cut] + span + targets[target][cut:]
        planted.append((source, span, chosen))
    docs = [{"id": i, "text": t, "source": "news"} for i, t in {**sources, **targets}.items()]
    return docs, planted


@pytest.fixture(scope="module")
def planted(shared_data):
    return planted_corpus(shared_data)


def reference_texts(docs: list[dict], k: int) -> dict[str, str]:
    """Each document's text with the brute-force reference's marked tokens cut: a character goes when its
    first byte belongs to a marked token (its own walk over the characters)."""
    pieces = rank_tokens(str(ranks_path()))
    ordered = sorted(docs, key=lambda d: d["id"])
    token_lists = [encode(d["text"]).tolist() for d in ordered]
    out = {}
    for doc, tokens, mask in zip(ordered, token_lists, brute_force(token_lists, k)):
        marked_bytes = [m for t, m in zip(tokens, mask) for _ in pieces[t]]
        kept, at = [], 0
        for ch in doc["text"]:
            if not marked_bytes[at]:
                kept.append(ch)
            at += len(ch.encode("utf-8"))
        out[doc["id"]] = "".join(kept).strip()
    return out


def run(docs: list[dict], config: SubstringDedupConfig) -> dict[str, dict]:
    return {row["id"]: row for row in SubstringDedup(config).run(mark_substrings(docs, config))}


def test_real_text_equals_the_brute_force_reference(planted):
    docs = planted[0]
    config = SubstringDedupConfig(min_tokens=50, min_remaining_chars=0)
    rows, expected = run(docs, config), reference_texts(docs, 50)
    changed = 0
    for doc in docs:
        row = rows[doc["id"]]
        if row[REMOVED_SPANS]:
            changed += 1
            assert row["text"] == expected[doc["id"]], doc["id"]
        else:
            assert row["text"] == doc["text"] and expected[doc["id"]] == doc["text"].strip()
    assert changed >= 50


def test_planted_repeats_are_removed_and_first_occurrences_kept(planted):
    docs, plants = planted
    rows = run(docs, SubstringDedupConfig(min_tokens=50))
    text = {doc["id"]: doc["text"] for doc in docs}
    # a later plant may land inside an earlier copy (the copy is then no longer whole in the input)
    copies = [(span, target) for _, span, targets in plants for target in targets if span in text[target]]
    gone = sum(span not in rows[target]["text"] for span, target in copies)
    kept = sum(span in rows[source]["text"] for source, span, _ in plants)
    assert len(plants) >= 100 and len(copies) >= 200
    assert gone / len(copies) >= 0.99, f"recall {gone}/{len(copies)}"
    assert kept == len(plants)  # the first occurrence (smallest id) stays whole
    removed = sum(r[REMOVED_BYTES] for r in rows.values())
    planted_bytes = sum(len(span.encode()) for span, _ in copies)
    assert planted_bytes * 0.95 <= removed <= planted_bytes * 1.5 + 20_000, (removed, planted_bytes)


def test_rows_columns_and_the_empty_rule():
    text = " ".join(f"word{i} apple banana cherry" for i in range(40))
    docs = [{"id": "1", "text": text, "extra": 5}, {"id": "2", "text": text + " tail"},
            {"id": "3", "text": "short and unique"}]
    rows = run(docs, SubstringDedupConfig(min_tokens=20, min_remaining_chars=10))
    assert rows["1"]["text"] == text and rows["1"]["drop_reason"] is None and rows["1"]["extra"] == 5
    assert rows["2"]["drop_reason"] == REASON and rows["2"]["text"] == text + " tail"  # rejected with its text
    assert rows["2"][REMOVED_CHARS] == len(text) + 5 - len("tail") and rows["2"][REMOVED_SPANS] == 1
    assert rows["3"][REMOVED_BYTES] == 0 and rows["3"]["drop_reason"] is None
    assert all(CUT not in r for r in rows.values())


def test_cut_text_counts_characters_by_their_first_byte():
    text = "aé€😀b"  # 1 + 2 + 3 + 4 + 1 bytes
    assert cut_text(text, [1, 3]) == "a€😀b"
    assert cut_text(text, [2, 4]) == "aé😀b"  # é's first byte (1) is outside; € starts at 3
    assert cut_text(text, [0, 11]) == ""
    assert cut_text(text, [6, 10, 0, 1]) == "é€b"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=300), min_size=1, max_size=6))
def test_hostile_text_never_fails(texts):
    docs = [{"id": str(i), "text": t} for i, t in enumerate(texts + texts)]  # every text twice
    rows = SubstringDedup(SubstringDedupConfig(min_tokens=2, min_remaining_chars=0)).run(
        mark_substrings(docs, SubstringDedupConfig(min_tokens=2)))
    assert len(rows) == len(docs) and not any(r["drop_reason"] == "stage_error" for r in rows)


def test_corpus_limit_and_recipe():
    with pytest.raises(UserError, match="substring_dedup.max_tokens"):
        corpus_cuts([np.arange(10, dtype=np.int32)], SubstringDedupConfig(max_tokens=5))
    recipe = load_recipe(None, ["substring_dedup.min_tokens=100"])
    assert recipe.section("substring_dedup").min_tokens == 100
    with pytest.raises(ConfigError, match="min_tokens"):
        load_recipe(None, ["substring_dedup.min_tokens=1"])
    assert token_bytes()[encode("hello world")].sum() == len("hello world")
