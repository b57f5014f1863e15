"""URL filtering, C4 bad words, the toxicity hook and the safety stage's order (stages/safety/)."""

from __future__ import annotations

import random
import re

import pytest

from bench.data import article_pages
from stages.safety import Safety, SafetyConfig
from stages.safety.badwords import BadWords, BadwordsConfig
from stages.safety.lists import HashedSet, host_suffixes
from stages.safety.toxicity import ToxicityConfig, ToxicityScorer
from stages.safety.urls import UrlConfig, UrlFilter


def write(folder, name: str, lines) -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def blocked(config: UrlConfig, url) -> str | None:
    verdict = UrlFilter(config).verdict({"url": url})
    assert verdict is None or verdict.reason == "url_blocked"
    return verdict.detail if verdict else None


@pytest.fixture
def domains(tmp_path) -> UrlConfig:
    return UrlConfig(url_blocklist=write(tmp_path, "domains.txt", [
        "# adult sites", "bad.example", "*.evil.co.uk  # a registered domain under a public suffix",
        "https://www.shady.example/landing", "bücher.example", "10.1.2.3"]))


@pytest.mark.parametrize("url, rule", [
    ("https://bad.example/page", "domain:bad.example"), ("http://cdn.img.BAD.example.:8080/x", "domain:bad.example"),
    ("bad.example/no-scheme", "domain:bad.example"), ("http://user:pw@www.evil.co.uk/", "domain:evil.co.uk"),
    ("http://www.shady.example/", "domain:www.shady.example"), ("http://xn--bcher-kva.example/", "domain:xn--bcher-kva.example"),
    ("http://BÜCHER.example/a", "domain:xn--bcher-kva.example"), ("http://10.1.2.3/", "domain:10.1.2.3"),
    ("https://notbad.example/", None), ("http://other.co.uk/", None), ("http://co.uk/", None),
    ("http://shady.example/", None), ("http://1.10.1.2.3/", None), ("http://[::1/", None), (None, None), ("", None),
])
def test_blocklist_matches_the_domain_and_its_subdomains(domains, url, rule):
    assert blocked(domains, url) == rule


def test_ut1_categories_domains_and_url_prefixes(tmp_path):
    ut1 = tmp_path / "ut1"
    write(ut1, "adult/domains", ["porn.example", "adult.example"])
    write(ut1, "adult/urls", ["www.host.example/forum/adult", "other.example/x"])
    write(ut1, "gambling/domains", ["casino.example"])
    adult = UrlConfig(ut1_dir=str(ut1), ut1_categories=("adult",))
    assert blocked(adult, "http://video.porn.example/") == "ut1:adult:porn.example"
    assert blocked(adult, "https://host.example/forum/adult/page.html?x=1") == "ut1:adult:host.example/forum/adult"
    assert blocked(adult, "http://www.other.example/x/") == "ut1:adult:other.example/x"
    assert blocked(adult, "https://host.example/forum/adults") is None
    assert blocked(adult, "http://casino.example/") is None  # a category the recipe did not name
    both = UrlConfig(ut1_dir=str(ut1), ut1_categories=("adult", "gambling", "missing"))
    assert blocked(both, "http://www.casino.example/") == "ut1:gambling:casino.example"


def test_substrings_and_refinedweb_word_score(tmp_path):
    config = UrlConfig(url_substrings=write(tmp_path, "sub.txt", ["casino", "/warez/"]),
                       url_hard_words=write(tmp_path, "hard.txt", ["porn", "xxx"]),
                       url_soft_words=write(tmp_path, "soft.txt", ["sex", "free", "cam", "girls"]), url_soft_min=2)
    assert blocked(config, "http://bestCASINO.example/") == "substring:casino"
    assert blocked(config, "http://ftp.example/warez/x") == "substring:/warez/"
    assert blocked(config, "http://a.example/free-porn-videos") == "hard_word:porn"
    assert blocked(config, "http://a.example/pornography-history") is None  # words, not substrings
    assert blocked(config, "http://a.example/free/cam") == "soft_words:cam,free"
    assert blocked(config, "http://a.example/free/free-stuff") is None  # distinct soft words count
    assert blocked(config, "http://sex-education.example/") is None


def test_url_config_is_checked():
    for values in ({"url_soft_min": 0}, {"ut1_categories": ("../etc",)}):
        with pytest.raises(ValueError):
            UrlConfig(**values)


def test_suffix_walk_and_hashed_set():
    assert host_suffixes("a.b.example.com") == ["a.b.example.com", "b.example.com", "example.com", "com"]
    assert host_suffixes("192.168.0.1") == ["192.168.0.1"]
    listed = HashedSet(["example.com", "example.com", "x.org"])
    assert len(listed) == 2 and "x.org" in listed and "y.org" not in listed and "" not in HashedSet([])


# ----------------------------------------------------------------------------- C4 bad words

def c4_reference(words: list[str]) -> re.Pattern:
    """C4's own expression (tensorflow/datasets c4_utils), applied to the lower-cased text."""
    return re.compile(r"(?:\W|^)({})(?:\W|$)".format("|".join(map(re.escape, words))))


def test_badwords_agree_with_c4s_expression_on_real_articles(tmp_path, shared_data):
    golds = [gold for *_, gold in article_pages(shared_data)]
    vocabulary = sorted({w for g in golds for w in re.findall(r"[a-z]{4,}", g.lower())})
    listed = random.Random(0).sample(vocabulary, 60) + ["new york", "white house", "u.s."]
    stage = BadWords(BadwordsConfig(badwords={"en": write(tmp_path, "en.txt", listed)}))
    reference = c4_reference(listed)
    ours = [stage.verdict({"text": g, "lang": "en"}) is not None for g in golds]
    assert ours == [reference.search(g.lower()) is not None for g in golds]
    assert 10 < sum(ours) < len(golds)


def test_badwords_boundaries_languages_and_cjk_substrings(tmp_path):
    config = BadwordsConfig(badwords={"en": write(tmp_path, "en.txt", ["ass", "two girls one cup"]),
                                      "pt": write(tmp_path, "pt.txt", ["merda"]),
                                      "zh": write(tmp_path, "zh.txt", ["色情"]), "ja": write(tmp_path, "ja.txt", ["エロ"])})
    stage = BadWords(config)

    def reason(text, lang):
        verdict = stage.verdict({"text": text, "lang": lang})
        return verdict and verdict.detail

    assert reason("What an ASS!", "en") == "en:ass"
    assert reason("A class of assets, passed.", "en") is None
    assert reason("about two girls one cup here", "en") == "en:two girls one cup"
    assert reason("que merda", "pt-BR") == "pt-br:merda" and reason("que merda", "en") is None
    assert reason("这是色情网站", "zh") == "zh:色情" and reason("这是色情网站", "zh-Hans") == "zh-hans:色情"
    assert reason("エロ動画", "ja") == "ja:エロ" and reason("no list", "de") is None and reason("ass", None) is None
    fallback = BadWords(BadwordsConfig(badwords={"*": write(tmp_path, "any.txt", ["ass"])}))
    assert fallback.verdict({"text": "ass", "lang": "de"}).detail == "de:ass"
    assert stage.model_files() == tuple(config.badwords.values())


# ----------------------------------------------------------------------------- toxicity

INSULTS = ("idiot", "stupid", "moron", "loser", "dumb", "pathetic", "worthless", "disgusting", "hate", "trash")


def train_toxicity_model(folder, shared_data) -> str:
    """A tiny fastText model trained with the quality classifier's machinery on synthetic labelled lines:
    real article sentences (clean) and the same sentences with three insults put in (positive: toxic), so
    that only the insults tell them apart. Returns the model's path."""
    from stages.quality.classifier import TrainQualityConfig, fasttext_line, train

    rng = random.Random(3)
    clean = [s for *_, gold in article_pages(shared_data, 40) for s in re.split(r"(?<=[.!?])\s+", gold) if len(s) > 40]

    def insulted(sentence: str) -> str:
        words = sentence.split()
        for _ in range(3):
            words.insert(rng.randrange(len(words) + 1), rng.choice(INSULTS))
        return " ".join(words)

    lines = [fasttext_line(1, insulted(s)) for s in clean] + [fasttext_line(0, s) for s in clean]
    rng.shuffle(lines)
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    train(folder / "train.txt", TrainQualityConfig(epoch=10, dim=16)).save_model(str(folder / "model.bin"))
    return str(folder / "model.bin")


@pytest.fixture(scope="module")
def toxicity_model(tmp_path_factory, shared_data):
    return train_toxicity_model(tmp_path_factory.mktemp("toxicity"), shared_data)


def test_toxicity_hook_scores_and_drops_above_the_threshold(toxicity_model):
    stage = ToxicityScorer(ToxicityConfig(toxicity_model=toxicity_model, toxicity_threshold=0.5))
    toxic = stage.map({"text": "You are a stupid worthless idiot, such a pathetic loser."})
    clean = stage.map({"text": "The city council approved the new budget for schools on Tuesday."})
    assert toxic["drop_reason"] == "toxic" and toxic["toxicity_score"] > 0.5
    assert float(toxic["drop_detail"]) == pytest.approx(toxic["toxicity_score"], abs=1e-3)
    assert clean["drop_reason"] is None and clean["toxicity_score"] < 0.5
    assert stage.model_files() == (toxicity_model,)
    off = ToxicityScorer().map({"text": "idiot"})
    assert off["toxicity_score"] is None and off["drop_reason"] is None


def test_toxicity_config_is_checked():
    with pytest.raises(ValueError, match="toxicity_threshold"):
        ToxicityConfig(toxicity_threshold=1.5)


# ----------------------------------------------------------------------------- the stage

def test_steps_run_in_order_and_the_first_rejection_wins(tmp_path, toxicity_model):
    config = SafetyConfig(url_blocklist=write(tmp_path, "d.txt", ["bad.example"]),
                          badwords={"en": write(tmp_path, "en.txt", ["idiot"])}, toxicity_model=toxicity_model)
    docs = [{"id": "url", "url": "http://bad.example/", "lang": "en", "text": "idiot a@b.org"},
            {"id": "words", "url": "http://ok.example/", "lang": "en", "text": "idiot a@b.org"},
            {"id": "toxic", "lang": "en", "text": "You stupid worthless pathetic loser, a@b.org"},
            {"id": "kept", "lang": "en", "text": "Write to a@b.org about the budget for schools."}]
    rows = {r["id"]: r for r in Safety(config).run(docs)}
    assert {k: r["drop_reason"] for k, r in rows.items()} == {"url": "url_blocked", "words": "badwords",
                                                              "toxic": "toxic", "kept": None}
    assert rows["url"]["toxicity_score"] is None and rows["url"]["pii_email"] is None
    assert rows["toxic"]["pii_email"] is None and rows["toxic"]["text"].endswith("a@b.org")
    assert rows["kept"]["text"] == "Write to <EMAIL> about the budget for schools." and rows["kept"]["pii_email"] == 1
    reordered = {r["id"]: r["drop_reason"] for r in Safety(SafetyConfig(**{**config.__dict__, "steps": ("pii", "urls")})).run(docs)}
    assert reordered == {"url": "url_blocked", "words": None, "toxic": None, "kept": None}
    assert set(Safety(config).model_files()) == {config.url_blocklist, *config.badwords.values(), toxicity_model}


def test_safety_config_checks_every_part():
    for values, key in (({"steps": ("urls", "urls")}, "steps"), ({"steps": ("ner",)}, "steps"),
                        ({"max_pii": -2}, "max_pii"), ({"url_soft_min": 0}, "url_soft_min"),
                        ({"toxicity_threshold": -0.1}, "toxicity_threshold")):
        with pytest.raises(ValueError, match=key):
            SafetyConfig(**values)
