"""Quality benchmarks: throughput per core through Spark, classifier ROC AUC, custom LID accuracy.

    python -m bench.bench_quality --out runs/bench        # also run by `make bench`

1. Throughput of the heuristic rules (`QualityRules`), language ID (`LanguageId`) and KenLM perplexity
   (`Perplexity`, a 5-gram model trained here on tinyshakespeare + english-pd-nltk) through Spark
   (`runner.apply` on a cached DataFrame, a no-op sink), on the extracted benchmark pages (x repeats),
   in documents per second per core (Spark's cores in use), next to a plain Python loop whose stages
   take turns, with each stage's speed relative to LID's (stable when the machine is shared).
2. Quality classifier: fastText trained on clean article bodies vs. their pages' boilerplate and the
   Common Crawl spam sample, ROC AUC on a held-out 20% split.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from bench.data import article_pages, save_result, shared_data
from pipeline import runner
from pipeline.spark import SparkConfig, spark_session
from stages.extract import Extractor, decode_html
from stages.language import LanguageId
from stages.quality.perplexity import Perplexity, PerplexityConfig, TrainKenlmConfig, kenlm_bin, model_lines, train_lm
from stages.quality.filter import QualityRules
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


def markdown(r: dict) -> str:
    lines = ["### Quality: heuristics, LID and perplexity throughput; quality classifier", "",
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
              f"**{c['roc_auc']:.3f}** on {c['docs']} docs ({c['positives']} positive), accuracy {c['accuracy']:.3f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    data, out = shared_data(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = extracted_pages(data) * args.repeats
    result = {"repeats": args.repeats, "docs": len(texts)}
    with tempfile.TemporaryDirectory() as tmp:
        lm = kenlm_model(data, Path(tmp))
        stages = {"rules": QualityRules(), "langid": LanguageId()}
        if lm:
            stages["perplexity"] = Perplexity(PerplexityConfig(models={"en": lm}))
        loops = loop_rates(texts[:543], stages)
        with spark_session("bench-quality", SparkConfig(), "local[1]") as spark:
            for name, stage in stages.items():
                result[name] = {**spark_rate(spark, texts, stage), "loop_docs_per_s": loops[name],
                                "loop_vs_langid": round(loops[name] / loops["langid"], 3)}
        result["classifier"] = classifier_auc(data, Path(tmp))
    return save_result(out, "quality", result, markdown(result))


if __name__ == "__main__":
    main()
