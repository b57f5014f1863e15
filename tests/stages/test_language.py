"""fastText language ID: accuracy on a held-out corpus, and the filter's rules."""

from __future__ import annotations

import pytest

from stages.language import LanguageConfig, LanguageId, load_model, model_path


def covered_corpus(shared_data):
    """(code, text) of langid.py's test corpus, for the languages lid.176 knows."""
    labels = {label.removeprefix("__label__") for label in load_model(model_path()).get_labels()}
    docs = []
    for path in sorted((shared_data / "langid-py-testcorpus").glob("*.txt")):
        code = path.name.split(".")[0]
        if code in labels:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            docs.append((code, "\n".join(l for l in lines if not l.startswith("#"))))  # drop the source header
    return docs


def test_accuracy_on_langid_py_testcorpus(shared_data):
    docs = covered_corpus(shared_data)
    assert len(docs) >= 80
    stage = LanguageId()
    correct = sum(stage.predict(text)[0] == code for code, text in docs)
    # lid.176.ftz gets 84 of these 92 right (0.913). Its 8 misses are close pairs and
    # transliterations: an->es, bs->hr, oc->fr, ht->tl, 1890 Dano-Norwegian no->da, Arabic-script
    # az->azb, and Kazakh mechanically converted to Arabic (->ug) and Latin (->tr) script.
    assert correct / len(docs) >= 0.91


@pytest.mark.parametrize("text,lang", [
    ("Der schnelle braune Fuchs springt über den faulen Hund.", "de"),
    ("这是一个关于语言识别的中文句子。", "zh"),
    ("El rápido zorro marrón salta sobre el perro perezoso.", "es"),
])
def test_predict_with_newlines_folded(text, lang):
    assert LanguageId().predict(text.replace(" ", "\n", 2))[0] == lang


def test_filter_rules():
    keep_en = LanguageId(LanguageConfig(languages=("en",)))
    assert keep_en.map({"text": "Ceci est une phrase en français, sans aucun doute."})["drop_reason"] == "lang_not_kept"
    english = "This is plainly an English sentence about the weather."
    assert keep_en.map({"text": english})["drop_reason"] is None
    strict = LanguageId(LanguageConfig(thresholds={"en": 0.999}))   # this sentence scores 0.986
    assert strict.map({"text": english})["drop_reason"] == "low_lang_score"
    assert LanguageId().map({"text": ""})["drop_reason"] == "low_lang_score"
