"""Quality benchmarks: throughput per core through Spark, classifier ROC AUC, custom LID accuracy.

    python -m bench.bench_quality --out runs/bench        # also run by `make bench`

1. Throughput of the heuristic rules (`QualityRules`), language ID (`LanguageId`) and KenLM perplexity
   (`Perplexity`, a 5-gram model trained here on tinyshakespeare + english-pd-nltk) through Spark
   (`runner.apply` on a cached DataFrame, a no-op sink), on the extracted benchmark pages (x repeats),
   in documents per second per core (Spark's cores in use), next to a plain Python loop whose stages
   take turns, with each stage's speed relative to LID's (stable when the machine is shared).
2. Quality classifier: fastText trained on clean article bodies vs. their pages' boilerplate and the
   Common Crawl spam sample, ROC AUC on a held-out 20% split.
3. Against datatrove, on the real pages of `bench.data.quality_texts` and the first half of each (lines
   cut: pages nearer the thresholds): documents whose words (`word_tokens`) equal datatrove's word
   tokenizer's and C4 lines whose sentence count equals its; keep / drop decisions of our Gopher
   quality, Gopher repetition, C4 and FineWeb rules against datatrove's GopherQualityFilter,
   GopherRepetitionFilter, C4QualityFilter and FineWebQualityFilter (defaults, the same thresholds),
   every page judged as English (FineWeb's pipeline after LID) and, for pages whose language (lid.176)
   has a spaCy split, in that language; and the split's speed (CPU docs/s) against datatrove's tokenizer
   and our look-alike: cold (chunk caches empty at the start) and warm (the same documents again).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from bench.data import article_pages, quality_texts, save_result, shared_data
from pipeline import runner
from pipeline.spark import SparkConfig, spark_session
from stages.extract import Extractor, decode_html
from stages.language import LanguageConfig, LanguageId
from stages.quality.c4 import C4Quality
from stages.quality.fineweb import FineWebQuality
from stages.quality.gopher import GopherQuality, GopherRepetition
from stages.quality.perplexity import Perplexity, PerplexityConfig, TrainKenlmConfig, kenlm_bin, model_lines, train_lm
from stages.quality.filter import QualityRules
from stages.quality.words import SPACY_OF, TextView, fast_word_tokens, forget_chunks, sentences, word_tokens
from stages.quality.classifier import (TrainQualityConfig, boilerplate_text, evaluate, fasttext_line, is_held_out,
                                  train, visible_blocks)
from stages.warc import WarcReader


def extracted_pages(data: Path) -> list[str]:
    extractor = Extractor()
    texts = (extractor.extract_text(html, url=url) for _, url, html, _ in article_pages(data))
    return [t for t in texts if t]


def kenlm_model(data: Path, folder: Path) -> str | None:
    if not (kenlm_bin() / "lmplz").exists():
        return None
    files = [data / "tinyshakespeare" / "input.txt", *sorted((data / "english-pd-nltk").glob("*/*.txt"))]
    lines = (l for f in files if "genesis" not in str(f) for raw in f.read_text(errors="replace").splitlines()
             for l in model_lines(raw, "en"))
    train_lm(lines, folder / "en.bin", TrainKenlmConfig(), folder)
    return str(folder / "en.bin")


def spark_rate(spark, texts: list[str], stage) -> dict:
    cores = spark.sparkContext.defaultParallelism
    df = spark.createDataFrame([(str(i), t, "en") for i, t in enumerate(texts)], "id string, text string, lang string")
    df = df.repartition(cores).cache()
    df.count()
    runner.apply(df.limit(50), stage, min_partitions=1).write.format("noop").mode("overwrite").save()  # warm
    started = time.perf_counter()
    runner.apply(df, stage, min_partitions=cores).write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - started
    df.unpersist()
    return {"docs": len(texts), "cores": cores, "seconds": round(seconds, 2),
            "docs_per_s_per_core": round(len(texts) / seconds / cores, 1)}


def loop_rates(texts: list[str], stages: dict, batch: int = 20) -> dict[str, float]:
    """Plain-loop docs/s of each stage, the stages taking turns every `batch` documents, so that the
    load of a shared machine weighs on all of them alike (their ratios are then stable)."""
    spent = dict.fromkeys(stages, 0.0)
    for start in range(0, len(texts), batch):
        for name, stage in stages.items():
            began = time.perf_counter()
            for i, text in enumerate(texts[start:start + batch]):
                stage.map({"id": str(i), "text": text, "lang": "en"})
            spent[name] += time.perf_counter() - began
    return {name: round(len(texts) / seconds, 1) for name, seconds in spent.items()}


def classifier_auc(data: Path, folder: Path) -> dict:
    pos, neg = [], []
    for _, _, html, gold in article_pages(data):
        pos.append(gold)
        neg.append(boilerplate_text(visible_blocks(decode_html(html, None)[0]), gold))
    for row in WarcReader().read_file(str(data / "resiliparse-test-warcs" / "warcfile.warc.gz")):
        if row["drop_reason"] is None and (text := Extractor().map(row)["text"]):
            neg.append(text)
    labelled = [(1, t) for t in pos] + [(0, t) for t in neg if t]
    rest = [(y, t) for y, t in labelled if not is_held_out(t, 0.2)]
    held = [(y, t) for y, t in labelled if is_held_out(t, 0.2)]
    random.Random(0).shuffle(rest)
    (folder / "q.txt").write_text("".join(fasttext_line(y, t) + "\n" for y, t in rest))
    model = train(folder / "q.txt", TrainQualityConfig())
    return {"train_docs": len(rest), **evaluate(model, [t for _, t in held], [y for y, _ in held])}


def datatrove_docs(data: Path, halves: bool = True) -> list[tuple[str, str, str]]:
    """(name, text, language) to judge on both sides: every page (and, with `halves`, its first half of
    lines) as English, then the pages whose lid.176 language is not English but has a spaCy split."""
    texts = quality_texts(data)
    if halves:
        texts += [(f"half:{name}", "\n".join(t.splitlines()[:max(1, len(t.splitlines()) // 2)])) for name, t in texts]
    lid = LanguageId(LanguageConfig(model=str(data / "fasttext-lid" / "lid.176.ftz")))
    own = [(name, text, lang) for name, text in texts if (lang := lid.predict(text)[0]) != "en" and lang in SPACY_OF]
    return [(name, text, "en") for name, text in texts] + own


def split_equality(docs: list[tuple[str, str, str]]) -> dict:
    """Documents whose `word_tokens` equal datatrove's word tokenizer's, and lines whose `sentences` equal
    the sentences datatrove's C4 filter counts (every line that has words), in each document's language."""
    from datatrove.utils.text import split_into_sentences
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    words, lines, words_differ, lines_differ = 0, 0, [], []
    for name, text, lang in docs:
        words += 1
        if word_tokens(text, lang) != load_word_tokenizer(lang).word_tokenize(text):
            words_differ.append(f"{lang}:{name}")
        for line in filter(None, map(str.strip, text.splitlines())):
            lines += 1
            if sentences(line, lang) != len(split_into_sentences(line, lang)):
                lines_differ.append(f"{lang}:{name}: {line[:80]}")
    return {"docs": words, "docs_equal": words - len(words_differ), "docs_differ": words_differ[:20],
            "lines": lines, "lines_equal": lines - len(lines_differ), "lines_differ": lines_differ[:20]}


def decision_agreement(docs: list[tuple[str, str, str]]) -> dict[str, dict]:
    """Keep / drop decisions of our four rules and datatrove's four filters on the same documents, each
    judged in its language on both sides, at the defaults of both (the same thresholds)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

    pairs, tally = {}, {}
    for name, text, lang in docs:
        if lang not in pairs:
            pairs[lang] = ((GopherQuality(), GopherQualityFilter(language=lang)),
                           (GopherRepetition(), GopherRepetitionFilter(language=lang)),
                           (C4Quality(), C4QualityFilter(language=lang)),
                           (FineWebQuality(), FineWebQualityFilter(language=lang)))
        view = TextView(text, lang)
        for ours, theirs in pairs[lang]:
            kept = theirs.filter(Document(text=text, id=name)) is True  # a fresh Document: C4 rewrites it
            t = tally.setdefault(ours.name, {"docs": 0, "agree": 0, "dropped_by_datatrove": 0, "disagreements": []})
            t["docs"], t["dropped_by_datatrove"] = t["docs"] + 1, t["dropped_by_datatrove"] + (not kept)
            if (ours.check(view) is None) == kept:
                t["agree"] += 1
            else:
                t["disagreements"].append(f"{lang}:{name}")
    for t in tally.values():
        t["agreement"] = round(t["agree"] / t["docs"], 5)
    return tally


def split_rates(texts: list[str]) -> dict[str, float]:
    """CPU docs/s of the word split over `texts` (English): ours cold (empty chunk cache) and warm, datatrove's
    tokenizer (spaCy on the whole text), our look-alike (the rules' split before spaCy), and all the rules."""
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    reference, rules = load_word_tokenizer("en"), QualityRules()
    reference.word_tokenize("warm up"), word_tokens("warm up", "en")  # load both tokenizers

    def rate(fn) -> float:
        began = time.process_time()
        for i, text in enumerate(texts):
            fn(i, text)
        return round(len(texts) / (time.process_time() - began), 1)

    out = {}
    for name, fn in (("word_tokens", lambda i, t: word_tokens(t, "en")),
                     ("look_alike", lambda i, t: fast_word_tokens(t, "en")),
                     ("rules", lambda i, t: rules.map({"id": str(i), "text": t, "lang": "en"}))):
        forget_chunks()
        out[f"{name}_cold"], out[f"{name}_warm"] = rate(fn), rate(fn)
    out["datatrove_tokenizer"] = rate(lambda i, t: reference.word_tokenize(t))
    return out


def markdown(r: dict) -> str:
    lines = []
    if "rules" in r:
        lines += ["### Quality: heuristics, LID and perplexity throughput; quality classifier", "",
                  f"Extracted benchmark pages x {r['repeats']} ({r['docs']} docs) through Spark "
                  f"({r['rules']['cores']} core(s), shared machine: pessimistic).", "",
                  "| stage | docs/s per core (Spark) | docs/s (plain loop) | loop speed / LID's | target |",
                  "|---|---|---|---|---|"]
        for name, target in (("rules", 600), ("langid", 2000), ("perplexity", 1000)):
            if name in r:
                x = r[name]
                lines.append(f"| {name} | {x['docs_per_s_per_core']:.0f} | {x['loop_docs_per_s']:.0f} | "
                             f"{x['loop_vs_langid']:.2f} | {target} |")
        c = r["classifier"]
        lines += ["", f"Quality classifier (fastText, article bodies vs. boilerplate + CC spam): held-out ROC AUC "
                  f"**{c['roc_auc']:.3f}** on {c['docs']} docs ({c['positives']} positive), "
                  f"accuracy {c['accuracy']:.3f}.", ""]
    d = r["datatrove"]
    e, s = d["split"], d["speed"]
    lines += ["### Quality rules against datatrove (same word split: spaCy's tokenizer)", "",
              f"{d['pages']} real pages and their first halves ({d['english']} docs judged as English, {d['own']} "
              f"non-English ones also in their own language): words equal to datatrove's tokenizer's in "
              f"**{e['docs_equal']} of {e['docs']}** docs, C4 sentence counts equal in **{e['lines_equal']} of "
              f"{e['lines']}** lines.", "",
              "| rule (ours / datatrove's) | docs | datatrove drops | decisions agree | agreement |",
              "|---|---|---|---|---|"]
    names = {"gopher_quality": "GopherQualityFilter", "gopher_repetition": "GopherRepetitionFilter",
             "c4_quality": "C4QualityFilter", "fineweb_quality": "FineWebQualityFilter"}
    for rule, t in d["agreement"].items():
        lines.append(f"| {rule} / {names[rule]} | {t['docs']} | {t['dropped_by_datatrove']} | {t['agree']} | "
                     f"{t['agreement']:.4f} |")
    lines += ["", f"Word split speed, English, CPU docs/s over the {s['docs']} docs, one process (cold: the chunk "
              "caches empty at the start; warm: the same docs again):", "",
              "| split | cold | warm |", "|---|---|---|",
              f"| `word_tokens` (spaCy, cached chunks) | {s['word_tokens_cold']:.0f} | {s['word_tokens_warm']:.0f} |",
              f"| datatrove's tokenizer (spaCy on the whole text) | {s['datatrove_tokenizer']:.0f} | |",
              f"| `fast_word_tokens` (our look-alike) | {s['look_alike_cold']:.0f} | {s['look_alike_warm']:.0f} |",
              f"| all four rules + signals (`QualityRules`) | {s['rules_cold']:.0f} | {s['rules_warm']:.0f} |"]
    return "\n".join(lines) + "\n"


def against_datatrove(data: Path) -> dict:
    docs = datatrove_docs(data)
    english = [doc for doc in docs if doc[2] == "en"]
    return {"pages": sum(1 for name, _, lang in english if not name.startswith("half:")), "english": len(english),
            "own": len(docs) - len(english), "split": split_equality(docs), "agreement": decision_agreement(docs),
            "speed": {"docs": len(english), **split_rates([text for _, text, _ in english])}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--datatrove-only", action="store_true", help="only part 3 (no Spark, no classifier)")
    args = parser.parse_args(argv)
    data, out = shared_data(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"datatrove": against_datatrove(data)}
    if args.datatrove_only:
        return save_result(out, "quality_datatrove", result, markdown(result))
    texts = extracted_pages(data) * args.repeats
    result.update({"repeats": args.repeats, "docs": len(texts)})
    with tempfile.TemporaryDirectory() as tmp:
        lm = kenlm_model(data, Path(tmp))
        stages = {"rules": QualityRules(), "langid": LanguageId()}
        if lm:
            stages["perplexity"] = Perplexity(PerplexityConfig(models={"en": lm}))
        forget_chunks()  # part 3 split these pages already
        loops = loop_rates(texts[:543], stages)
        with spark_session("bench-quality", SparkConfig(), "local[1]") as spark:
            for name, stage in stages.items():
                result[name] = {**spark_rate(spark, texts, stage), "loop_docs_per_s": loops[name],
                                "loop_vs_langid": round(loops[name] / loops["langid"], 3)}
        result["classifier"] = classifier_auc(data, Path(tmp))
    return save_result(out, "quality", result, markdown(result))


if __name__ == "__main__":
    main()
