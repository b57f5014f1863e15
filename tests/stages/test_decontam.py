"""Decontamination: normalised 13-gram hashing, benchmark readers, planted test items in real articles."""

from __future__ import annotations

import csv
import gzip
import json
import random
import re

import numpy as np
import pytest

from bench.data import article_pages
from stages.decontam import (DecontamConfig, Decontaminate, build_index, cut_spans, find_overlaps, ngram_hashes,
                             read_benchmark, word_hashes, word_spans)

N = 13


def bench_specs(data):
    return {"gsm8k": str(data / "gsm8k" / "test.jsonl"), "humaneval": str(data / "humaneval" / "HumanEval.jsonl.gz"),
            "mmlu": str(data / "mmlu" / "test")}


@pytest.fixture(scope="module")
def index(shared_data):
    return build_index(bench_specs(shared_data), N)


@pytest.fixture(scope="module")
def articles(shared_data):
    return [gold for *_, gold in article_pages(shared_data)]


def test_words_keep_offsets_and_fold_case():
    text = "Janet’s DUCKS lay 16 eggs."
    assert [(w, text[s:e]) for w, s, e in word_spans(text)] == [
        ("janet", "Janet"), ("s", "s"), ("ducks", "DUCKS"), ("lay", "lay"), ("16", "16"), ("eggs", "eggs")]


def test_ngram_hash_is_the_polynomial_mod_2_64():
    hashes = word_hashes(["a", "b", "c", "d"])
    prime, mod = 0x100000001B3, 2 ** 64
    expected = [(int(hashes[i]) * prime + int(hashes[i + 1])) % mod for i in range(3)]
    assert ngram_hashes(hashes, 2).tolist() == expected
    assert len(ngram_hashes(hashes, 5)) == 0


def test_readers_match_the_files(shared_data):
    raw = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    gsm = list(read_benchmark(str(shared_data / "gsm8k" / "test.jsonl")))
    assert len(gsm) == len(raw) and gsm[5][1] == [raw[5]["question"], raw[5]["answer"]]
    he = [json.loads(line) for line in gzip.open(shared_data / "humaneval" / "HumanEval.jsonl.gz", "rt")]
    items = dict(read_benchmark(str(shared_data / "humaneval" / "HumanEval.jsonl.gz")))
    assert items["HumanEval/7"] == [he[7]["prompt"] + he[7]["canonical_solution"]]
    with open(shared_data / "mmlu" / "test" / "anatomy_test.csv", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    mmlu = dict(read_benchmark(str(shared_data / "mmlu" / "test" / "anatomy_test.csv")))
    assert len(mmlu) == len(rows) and mmlu["anatomy_test/3"] == ["\n".join(rows[3][:5])]


def test_jsonl_with_a_text_field(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"id": "x1", "body": "some words"}) + "\n")
    assert list(read_benchmark(f"{path}#body")) == [("x1", ["some words"])]


def test_overlap_found_across_formatting_and_span_is_exact(index, shared_data):
    question = json.loads((shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[0])["question"]
    edited = re.sub(r"\s+", "  ", question.upper().replace("’", "'").replace(".", " ;"))
    text = "Intro paragraph here.\n\n" + edited + "\n\nOutro."
    spans, items = find_overlaps(text, index)
    assert "gsm8k:test/0" in items
    assert len(spans) == 1 and text[spans[0][0]:spans[0][1]] == edited.strip(" ;?")


def test_cut_mode_follows_gpt3_rules():
    config = DecontamConfig(cut_margin_chars=5, min_piece_chars=4, max_pieces=3)
    text = "aaaa bbbb CONTAM cccc dddd"
    assert cut_spans(text, [(10, 16)], config) == ["aaaa", "dddd"]
    assert cut_spans(text, [(0, 26)], config) is None  # nothing left
    assert cut_spans("x" * 100, [(10, 11), (30, 31), (50, 51), (70, 71)], config) is None  # 5 pieces > 3


def plant(item: str, article: str, rng: random.Random) -> str:
    paragraphs = article.split("\n")
    at = rng.randrange(len(paragraphs) + 1)
    return "\n".join(paragraphs[:at] + [item] + paragraphs[at:])


def format_edit(text: str, rng: random.Random) -> str:
    """Case, whitespace, punctuation and quote edits (no word changed)."""
    text = text.replace("’", "'").replace("\n", " ")
    text = re.sub(r"[,.;:?!]", lambda m: rng.choice(["", " ", m.group(), " - "]), text)
    return rng.choice([str.lower, str.upper, str.title])(re.sub(r" +", "   ", text))


def word_edit(text: str, rng: random.Random) -> str | None:
    """One word replaced at a random place; only for items long enough for a 13-gram to survive."""
    toks = text.split(" ")
    if len(word_spans(text)) < 2 * N + 1 or len(toks) < 2 * N + 1:
        return None
    at = rng.randrange(len(toks))
    return " ".join(toks[:at] + ["zebra"] + toks[at + 1:])


def planted_docs(index, data, articles, per_bench=250, seed=0):
    rng, docs = random.Random(seed), []
    for bench, spec in sorted(bench_specs(data).items()):
        items = list(read_benchmark(spec))
        for item_id, texts in rng.sample(items, min(per_bench, len(items))):
            text = "\n".join(texts)
            if len(word_spans(text)) < index.short_lengths[0]:
                continue  # under min_short_words: by design not indexed
            for kind, version in (("verbatim", text), ("format", format_edit(text, rng)), ("word", word_edit(text, rng))):
                if version is not None:
                    docs.append({"id": f"{bench}:{item_id}:{kind}", "text": plant(version, rng.choice(articles), rng),
                                 "want": f"{bench}:{item_id}"})
    return docs


def test_planted_items_removed_and_clean_kept(index, shared_data, articles):
    docs = planted_docs(index, shared_data, articles)
    stage = Decontaminate(DecontamConfig(), index)
    out = stage.run([{"id": d["id"], "text": d["text"]} for d in docs])
    removed = [o["drop_reason"] == f"contam_{d['want'].split(':')[0]}" or (d["want"] in (o["contam_items"] or []))
               for d, o in zip(docs, out)]
    attributed = [d["want"] in (o["contam_items"] or []) or o["contam_benchmark"] is not None for d, o in zip(docs, out)]
    assert len(docs) > 800
    assert np.mean([o["drop_reason"] is not None for o in out]) >= 0.99
    assert np.mean(removed) >= 0.99 and np.mean(attributed) >= 0.99
    clean = stage.run([{"id": str(i), "text": t} for i, t in enumerate(articles)])
    assert np.mean([o["drop_reason"] is not None for o in clean]) < 0.005


def test_cut_mode_keeps_the_article_around_the_item(index, shared_data, articles):
    question = json.loads((shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[3])["question"]
    long_article = max(articles, key=len)
    half = len(long_article) // 2
    text = long_article[:half] + "\n" + question + "\n" + long_article[half:]
    [out] = Decontaminate(DecontamConfig(mode="cut"), index).run([{"id": "a", "text": text}])
    assert out["drop_reason"] is None and out["contam_benchmark"] == "gsm8k"
    assert question[:60] not in out["text"] and long_article[:300].strip() in out["text"]
    assert len(text) - len(out["text"]) < len(question) + 2 * 200 + 10  # the item plus the two margins


def test_no_benchmarks_keeps_everything_and_bad_mode_is_refused():
    [out] = Decontaminate(DecontamConfig()).run([{"id": "1", "text": " ".join("abcdefghijklmnop")}])
    assert out["drop_reason"] is None and out["contam_spans"] == 0
    with pytest.raises(ValueError, match="mode"):
        Decontaminate(DecontamConfig(mode="erase"))
