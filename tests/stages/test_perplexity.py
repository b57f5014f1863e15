"""KenLM perplexity: cc_net normalisation by hand, and our scores against KenLM's own `query` binary."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from bench.data import article_pages
from stages.quality.perplexity import (Perplexity, PerplexityConfig, TrainKenlmConfig, bucket, kenlm_bin, model_lines,
                               normalise, perplexity_of, train_lm)


def test_normalise_like_cc_net():
    assert normalise("  Héllo WORLD, 2024! ") == "hello world, 0000!"
    assert normalise("“Ça va？”—oui…") == '"ca va?" - oui...'
    assert normalise("tab\there\x07") == "tabhere"  # control characters are removed
    assert model_lines("First line.\n\n  \nSecond, 3 words", "en") == ["first line .", "second , 0 words"]
    assert model_lines("中文，句子。", "zh") == ["中 文 , 句 子 ."]


def test_perplexity_formula_and_buckets():
    # two lines of 2 and 3 words: 7 tokens with the end-of-sentence marks; log10 p sums to -7
    assert perplexity_of([-3.0, -4.0], [3, 4]) == pytest.approx(10.0)
    assert perplexity_of([], []) is None
    assert [bucket(v, (10.0, 20.0)) for v in (5, 10, 15, 20, 25)] == ["head", "head", "middle", "middle", "tail"]
    assert bucket(None, (1.0, 2.0)) is None and bucket(3.0, None) is None


@pytest.fixture(scope="module")
def shakespeare_lm(shared_data, tmp_path_factory):
    if not (kenlm_bin() / "lmplz").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("lmplz missing: run `make kenlm`")
        pytest.skip("lmplz not built: run `make kenlm` (tools/build_kenlm.sh)")
    folder = tmp_path_factory.mktemp("kenlm")
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text()
    lines = (line for raw in text.splitlines() for line in model_lines(raw, "en"))
    stats = train_lm(lines, folder / "en.bin", TrainKenlmConfig(order=5), folder)
    assert stats["lines"] > 30_000
    return folder / "en.bin"


def query_perplexity(model, lines: list[str]) -> float:
    """KenLM's `query` binary on the same normalised lines: per-line log10 totals -> perplexity."""
    out = subprocess.run([str(kenlm_bin() / "query"), "-v", "sentence", str(model)], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, check=True).stdout
    totals = [float(v) for v in re.findall(r"^Total: (\S+) OOV", out, re.M)]
    assert len(totals) == len(lines)
    return perplexity_of(totals, [len(line.split()) + 1 for line in lines])


def test_stage_matches_kenlm_query(shakespeare_lm, shared_data):
    stage = Perplexity(PerplexityConfig(models={"en": str(shakespeare_lm)}))
    texts = [gold for _, _, _, gold in article_pages(shared_data, 25)] + ["To be, or not to be: that is the question."]
    for text in texts:
        ours = stage.perplexity(text, "en")
        assert ours == pytest.approx(query_perplexity(shakespeare_lm, model_lines(text, "en")), rel=1e-4)
    verse = stage.perplexity(texts[-1], "en")
    news = stage.perplexity(texts[0], "en")
    assert verse < news  # a Shakespeare model finds Shakespeare likelier than the news


def test_stage_buckets_and_missing_languages(shakespeare_lm):
    config = PerplexityConfig(models={"en": str(shakespeare_lm)}, cutoffs={"en_head": 100.0, "en_middle": 1000.0},
                              drop_buckets=("tail",))
    rows = Perplexity(config).run([{"text": "To be, or not to be: that is the question.", "lang": "en"},
                                   {"text": "Zyx qwv plorkt snarfle grumbix.", "lang": "en"},
                                   {"text": "Ceci est une phrase.", "lang": "fr"}])
    assert rows[0]["perplexity_bucket"] == "head" and rows[0]["drop_reason"] is None
    assert rows[1]["perplexity_bucket"] == "tail" and rows[1]["drop_reason"] == "perplexity_tail"
    assert rows[2]["perplexity"] is None and rows[2]["drop_reason"] is None
