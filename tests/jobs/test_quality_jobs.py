"""Quality jobs on local Spark: the classifier's training (held-out ROC AUC) and the quality job."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.data import article_pages
from jobs import quality, train_quality
from pipeline import io, runner
from stages.extract import Extractor, decode_html
from stages.quality.c4 import C4Config
from stages.quality.classifier import boilerplate_text, visible_blocks
from stages.quality.filter import QualityConfig, QualityFilter, RulesConfig
from stages.warc import WarcReader

pytestmark = pytest.mark.spark

@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """An empty recipe: every section at its dataclass defaults."""
    path = tmp_path_factory.mktemp("recipe") / "recipe.toml"
    path.write_text("")
    return ["--recipe", str(path)]


def write_texts(path, texts):
    pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}), path)
    return str(path)


@pytest.fixture(scope="module")
def classifier(shared_data, tmp_path_factory):
    """Trains on clean article bodies vs. the same pages' boilerplate and Common Crawl spam."""
    root = tmp_path_factory.mktemp("train_quality")
    clean, junk = [], []
    for _, _, html, gold in article_pages(shared_data):
        clean.append(gold)
        junk.append(boilerplate_text(visible_blocks(decode_html(html, None)[0]), gold))
    for row in WarcReader().read_file(str(shared_data / "resiliparse-test-warcs" / "warcfile.warc.gz")):
        if row["drop_reason"] is None and (text := Extractor().map(row)["text"]):
            junk.append(text)
    positives, negatives = write_texts(root / "pos.parquet", clean), write_texts(root / "neg.parquet", junk)
    return root / "model", positives, negatives


def test_train_quality_separates_held_out_docs(spark, classifier, recipe):
    output, positives, negatives = classifier
    stats = train_quality.main([*recipe, "--output", str(output), "--set", f'train_quality.positives=["{positives}"]',
                                "--set", f'train_quality.negatives=["{negatives}"]'])
    assert stats["positives"] == 181 and stats["negatives"] >= 190
    assert stats["held_out"]["docs"] >= 50 and stats["held_out"]["roc_auc"] >= 0.9
    assert (output / "model.bin").exists() and (output / "_SUCCESS").exists()
    assert json.loads((output / "_stats.json").read_text())["held_out"] == stats["held_out"]


def test_quality_job_scores_and_filters(spark, tmp_path, shared_data, classifier, recipe):
    model = classifier[0] / "model.bin"
    if not model.exists():
        pytest.skip("needs the model of test_train_quality_separates_held_out_docs")
    texts = [gold for _, _, _, gold in article_pages(shared_data, 30)] + ["Home\nNews\nSport\nContact"] * 2
    docs = write_texts(tmp_path / "docs.parquet", texts)
    stats = quality.main([*recipe, "--input", docs, "--output", str(tmp_path / "quality"),
                          "--set", f"quality.classifier={model}", "--set", "quality.min_quality_score=0.5",
                          "--set", "c4_quality.min_sentences=3"])
    kept = io.read_stage(spark, str(tmp_path / "quality")).collect()
    rejected = io.read_stage(spark, str(tmp_path / "quality"), "rejected").collect()
    assert stats["docs_in"] == 32 and len(kept) == stats["kept"] >= 15
    assert all(r.quality_score >= 0.5 and r.word_count > 0 for r in kept)
    assert all(r.drop_reason != "low_quality_score" or r.quality_score < 0.5 for r in rejected)
    assert {r.text for r in rejected} >= {"Home\nNews\nSport\nContact"}
    config = json.loads((tmp_path / "quality" / "_config.json").read_text())
    assert config["config"]["c4_quality"]["min_sentences"] == 3

    # The same rows on a plain list as through Spark.
    stage = QualityFilter(QualityConfig(classifier=str(model), min_quality_score=0.5),
                          RulesConfig(configs={"c4_quality": C4Config(min_sentences=3)}))
    frame = io.read_stage(spark, docs)
    via_spark = sorted((r.asDict() for r in runner.apply(frame, stage).collect()), key=lambda r: r["id"])
    via_list = sorted(stage.run([r.asDict() for r in frame.collect()]), key=lambda r: r["id"])
    assert [r["drop_reason"] for r in via_spark] == [r["drop_reason"] for r in via_list]
    assert [r["quality_score"] for r in via_spark] == pytest.approx([r["quality_score"] for r in via_list], abs=1e-6)


def test_train_kenlm_and_perplexity_buckets(spark, tmp_path, shared_data, recipe):
    from jobs import perplexity, train_kenlm
    from stages.quality.perplexity import kenlm_bin

    if not (kenlm_bin() / "lmplz").exists():
        pytest.skip("lmplz not built: run `make kenlm`")
    reference = str(shared_data / "tinyshakespeare" / "input.txt")
    stats = train_kenlm.main([*recipe, "--output", str(tmp_path / "kenlm"),
                              "--set", f'train_kenlm.sources={{en = ["{reference}"]}}'])
    assert stats["models"]["en"]["lines"] > 30_000 and (tmp_path / "kenlm" / "en.bin").exists()

    texts = [gold for _, _, _, gold in article_pages(shared_data, 40)]
    docs = write_texts(tmp_path / "docs.parquet", texts)
    stats = perplexity.main([*recipe, "--input", docs, "--output", str(tmp_path / "ppl"),
                             "--set", f'perplexity.models={{en = "{tmp_path / "kenlm" / "en.bin"}"}}',
                             "--set", "perplexity.exact_percentiles=true", "--set", 'perplexity.drop_buckets=["tail"]'])
    rows = [*io.read_stage(spark, str(tmp_path / "ppl")).collect(),
            *io.read_stage(spark, str(tmp_path / "ppl"), "rejected").collect()]
    values = sorted(r.perplexity for r in rows)
    head, middle = stats["cutoffs"]["en"]
    # exact percentiles by hand (Spark's `percentile` interpolates linearly between ranks)
    for cutoff, p in ((head, 0.3), (middle, 0.6)):
        rank = p * (len(values) - 1)
        low = values[int(rank)]
        expected = low + (rank - int(rank)) * (values[min(int(rank) + 1, len(values) - 1)] - low)
        assert cutoff == pytest.approx(expected)
    assert stats["kept"] == sum(r.perplexity <= middle for r in rows) and stats["by_reason"] == {"perplexity_tail": 16}
    assert all((r.perplexity_bucket == "head") == (r.perplexity <= head) for r in rows)


def test_train_lid_on_udhr(spark, tmp_path, shared_data, recipe):
    from jobs import train_lid
    from stages.language import LanguageConfig, LanguageId
    from stages.quality.classifier import is_held_out

    codes = {"en": "eng", "fr": "fra", "de": "deu", "es": "spa", "it": "ita", "nl": "nld", "sv": "swe", "pl": "pol"}
    udhr = shared_data / "udhr-nltk" / "udhr2"
    sources = ", ".join(f'{code} = ["{udhr / name}.txt"]' for code, name in codes.items())
    stats = train_lid.main([*recipe, "--output", str(tmp_path / "lid"), "--set", f"train_lid.sources={{{sources}}}"])
    assert stats["held_out"]["docs"] >= 80 and stats["held_out"]["accuracy"] >= 0.9
    # The saved model, through the language-ID stage, on the held-out lines recomputed here.
    stage = LanguageId(LanguageConfig(model=str(tmp_path / "lid" / "model.bin")))
    held = [(code, line.strip()) for code, name in codes.items()
            for line in (udhr / f"{name}.txt").read_text().splitlines()
            if len(line.strip()) >= 20 and is_held_out(line.strip(), 0.2)]
    right = sum(stage.predict(text)[0] == code for code, text in held)
    assert len(held) == stats["held_out"]["docs"] and right / len(held) == pytest.approx(stats["held_out"]["accuracy"], abs=1e-4)
