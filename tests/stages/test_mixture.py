"""Upsampling math: repeat factors from weights and target shares, calibrated fractional repeats, shares."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from bench.data import article_pages
from common.recipe import ConfigError
from pipeline.config import load_recipe
from stages.mixture import (BINS, CountTokens, HistogramBin, MixtureConfig, Repeat, calibrated_cuts, cluster_label,
                            copies, group_of, histogram_bin, repeat_factors, threshold, token_shares, uniform)

TARGETS = {"news": 0.5, "blogs": 0.3, "forum": 0.2}


def test_weights_multiply():
    config = MixtureConfig(source_weights={"wiki": 2.5}, bucket_weights={"high": 2.0, "low": 0.5})
    got = repeat_factors({("wiki", "high"): 10, ("wiki", "low"): 10, ("web", "high"): 5, ("web", ""): 5}, config)
    assert got == {("wiki", "high"): 5.0, ("wiki", "low"): 1.25, ("web", "high"): 2.0, ("web", ""): 1.0}


def test_target_shares_formula():
    tokens = {("a", ""): 600, ("b", ""): 300, ("c", ""): 100}
    got = repeat_factors(tokens, MixtureConfig(target_shares={"a": 0.5, "b": 0.25, "c": 0.25}))
    total = max(600 / 0.5, 300 / 0.25, 100 / 0.25)  # 1200: the smallest total that drops nothing
    assert got == pytest.approx({("a", ""): 0.5 * total / 600, ("b", ""): 0.25 * total / 300, ("c", ""): 0.25 * total / 100})
    assert min(got.values()) == pytest.approx(1.0)
    fixed = repeat_factors(tokens, MixtureConfig(target_shares={"a": 1, "b": 1, "c": 2}, total_tokens=2000))
    assert fixed[("c", "")] == pytest.approx(0.5 * 2000 / 100) and fixed[("a", "")] == pytest.approx(0.25 * 2000 / 600)
    with pytest.raises(ValueError, match="no share"):
        repeat_factors({("x", ""): 1, ("a", ""): 1}, MixtureConfig(target_shares={"a": 1.0}))


def test_uniform_and_copies():
    us = [uniform(0, str(i), 1) for i in range(20000)]
    assert us == [uniform(0, str(i), 1) for i in range(20000)] and 0 <= min(us) and max(us) < 1
    assert abs(sum(us) / len(us) - 0.5) < 0.01 and uniform(0, "a", 1) != uniform(1, "a", 1) != uniform(0, "a", 2)
    assert [copies(2.25, u) for u in (0.1, 0.3)] == [3, 2]
    assert copies(0.5, 0.4, cut=0.3) == 0 and copies(3.0, 0.0) == 3


def test_threshold_on_a_hand_histogram():
    hist = {0: 10.0, 1: 30.0, 3: 60.0}
    assert threshold(hist, 0.1) == pytest.approx(1 / BINS)  # exactly bin 0
    assert threshold(hist, 0.25) == pytest.approx((1 + 15 / 30) / BINS)
    assert threshold(hist, 0.7) == pytest.approx((3 + 30 / 60) / BINS)
    assert threshold(hist, 0.0) == 0.0 and histogram_bin(0.999999999) == BINS - 1


@pytest.fixture(scope="module")
def paragraphs(shared_data):
    """Real paragraphs of the benchmark articles, in three sources of very different sizes."""
    docs = []
    for i, (name, _, _, gold) in enumerate(article_pages(shared_data)):
        source = "news" if i % 10 < 7 else "blogs" if i % 10 < 9 else "forum"
        docs += [{"id": f"{name}/{k}", "text": p, "source": source} for k, p in enumerate(gold.split("\n")) if p.strip()]
    return CountTokens().run(docs)


def resolve(docs, config):
    tokens = Counter()
    for d in docs:
        tokens[group_of(d, config)] += d["n_tokens"]
    factors = repeat_factors(dict(tokens), config)
    hist: dict = {}
    for d in HistogramBin(config, factors).run(docs):
        group = tuple(d["mix_group"].split("\0"))
        hist.setdefault(group, Counter())[d["u_bin"]] += d["n_tokens"]
    cuts = calibrated_cuts(hist, factors) if config.calibrate else None
    return Repeat(config, factors, cuts).run(docs), factors


def shares_after(rows):
    tokens = Counter()
    for r in rows:
        if r["drop_reason"] is None:
            tokens[r["source"]] += r["n_tokens"]
    return token_shares(dict(tokens))


def test_token_shares_within_half_a_point(paragraphs):
    rows, factors = resolve(paragraphs, MixtureConfig(target_shares=TARGETS))
    assert all(math.modf(f)[0] > 0.01 for f in factors.values() if f > 1.01)  # fractional repeats are exercised
    got = shares_after(rows)
    assert all(abs(got[s] - TARGETS[s]) < 0.005 for s in TARGETS), got
    # copies carry new ids, point at their original, and the original is epoch 0
    by_orig = Counter(r["orig_id"] for r in rows if r["drop_reason"] is None)
    assert max(by_orig.values()) == math.ceil(max(factors.values()))
    assert all(r["id"] == r["orig_id"] for r in rows if r["epoch"] == 0)


def test_downsampling_with_a_total_and_determinism(paragraphs):
    total = sum(d["n_tokens"] for d in paragraphs) // 2
    config = MixtureConfig(target_shares=TARGETS, total_tokens=total, seed=3)
    rows, _ = resolve(paragraphs, config)
    kept = sum(r["n_tokens"] for r in rows if r["drop_reason"] is None)
    assert abs(kept / total - 1) < 0.01 and any(r["drop_reason"] == "downsampled" for r in rows)
    shuffled = paragraphs[:]
    random.Random(0).shuffle(shuffled)
    again, _ = resolve(shuffled, config)
    key = lambda rs: sorted((r["id"], r["drop_reason"] or "") for r in rs)
    assert key(rows) == key(again)


# ---------------------------------------------------------------- cluster sizes (FineWeb-2 rehydration)

REPEATS = ((1, 1, 1.0), (2, 4, 2.0), (5, 100, 3.0), (101, 0, 1.0))


def test_cluster_ranges_and_recipe():
    config = MixtureConfig(cluster_repeats=REPEATS)
    sizes = [None, 1, 2, 4, 5, 100, 101, 10 ** 6]
    assert [cluster_label(s, config) for s in sizes] == ["1-1", "1-1", "2-4", "2-4", "5-100", "5-100", "101+", "101+"]
    assert cluster_label(3, MixtureConfig(cluster_repeats=((5, 9, 2.0),))) == ""  # outside every range: factor 1
    recipe = load_recipe(None, ["upsample.cluster_repeats=[[1, 1, 1.0], [2, 4, 2.0], [5, 100, 3.0], [101, 0, 1.0]]"])
    assert recipe.upsample.cluster_repeats == REPEATS
    for bad in ("[[1, 5, 1.0], [3, 9, 2.0]]", "[[0, 2, 1.0]]", "[[1, 2]]", "[[3, 2, 1.0]]", "[[1, 0, 1.0], [5, 6, 1.0]]"):
        with pytest.raises(ConfigError, match="upsample.cluster_repeats"):
            load_recipe(None, [f"upsample.cluster_repeats={bad}"])


def test_cluster_repeats_multiply_the_other_weights(paragraphs):
    """Copies per document = source weight x cluster factor (integers here, so exact)."""
    rng = random.Random(2)
    docs = [{**d, "dup_cluster_size": rng.choice([None, 1, 2, 3, 7, 150])} for d in paragraphs]
    config = MixtureConfig(source_weights={"blogs": 2.0}, cluster_repeats=REPEATS)
    rows, factors = resolve(docs, config)
    per_doc = Counter(r["orig_id"] for r in rows if r["drop_reason"] is None)
    cluster = {None: 1, 1: 1, 2: 2, 3: 2, 7: 3, 150: 1}
    assert all(per_doc[d["id"]] == (2 if d["source"] == "blogs" else 1) * cluster[d["dup_cluster_size"]] for d in docs)
    assert factors[("blogs", "", "5-100")] == 6.0 and factors[("news", "", "101+")] == 1.0


def test_cluster_repeats_with_target_shares(paragraphs):
    """Shares are met after the cluster factors; inside a source, tokens follow the factors (calibrated)."""
    rng = random.Random(4)
    docs = [{**d, "dup_cluster_size": rng.choice([1, 1, 3, 8])} for d in paragraphs]
    config = MixtureConfig(target_shares=TARGETS, cluster_repeats=((2, 4, 1.5), (5, 0, 2.5)))
    rows, factors = resolve(docs, config)
    got = shares_after(rows)
    assert all(abs(got[s] - TARGETS[s]) < 0.005 for s in TARGETS), got
    for source in TARGETS:
        assert factors[(source, "", "5+")] == pytest.approx(2.5 * factors[(source, "", "")])
    before, after = Counter(), Counter()
    size_of = {d["id"]: d["dup_cluster_size"] for d in docs}
    for d in docs:
        before[d["source"], size_of[d["id"]]] += d["n_tokens"]
    for r in rows:
        if r["drop_reason"] is None:
            after[r["source"], size_of[r["orig_id"]]] += r["n_tokens"]
    news = {s: after["news", s] / before["news", s] for s in (1, 3, 8)}
    assert news[3] / news[1] == pytest.approx(1.5, rel=0.02) and news[8] / news[1] == pytest.approx(2.5, rel=0.02)
