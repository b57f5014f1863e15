"""Decontamination benchmark: planted test items found, clean documents kept, and throughput through Spark.

    python -m bench.bench_decontam --out runs/bench        # also run by `make bench` once registered

1. Recall: GSM8K test, HumanEval and MMLU test items planted into real article bodies
   (article-extraction-benchmark gold text), verbatim and with edits: formatting (case, whitespace,
   punctuation, quotes), one word replaced (items of at least 27 words, where a 13-gram must survive),
   one word replaced in any item, and MMLU choices labelled "A) ... B) ...". Share of documents dropped.
2. False positives: share of clean documents dropped (the 181 article bodies, tinyshakespeare and the
   NLTK inaugural / State of the Union speeches cut into 5,000-character documents).
3. Throughput: the decontam job on local Spark against a plain Python loop of the same stage, MB/s.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.data import article_pages, save_result, shared_data
from stages.decontam import DecontamConfig, Decontaminate, build_index, read_benchmark, word_spans

N = 13
EDITS = ("verbatim", "format", "word (>= 27 words)", "word (any item)", "mmlu labelled choices")


def specs(data: Path) -> dict[str, str]:
    return {"gsm8k": str(data / "gsm8k" / "test.jsonl"), "humaneval": str(data / "humaneval" / "HumanEval.jsonl.gz"),
            "mmlu": str(data / "mmlu" / "test")}


def edit(kind: str, texts: list[str], rng: random.Random) -> str | None:
    text = "\n".join(texts)
    if kind == "format":
        text = re.sub(r"[,.;:?!]", lambda m: rng.choice(["", " ", m.group(), " - "]), text.replace("’", "'"))
        return rng.choice([str.lower, str.upper, str.title])(re.sub(r"\s+", "  ", text))
    if kind.startswith("word"):
        toks = text.split(" ")
        if kind == "word (>= 27 words)" and len(word_spans(text)) < 2 * N + 1:
            return None
        at = rng.randrange(len(toks))
        return " ".join(toks[:at] + ["zebra"] + toks[at + 1:])
    if kind == "mmlu labelled choices":
        lines = texts[0].split("\n")
        return None if len(lines) < 5 else lines[0] + " " + " ".join(f"{l}) {c}" for l, c in zip("ABCD", lines[1:]))
    return text


def planted(data: Path, articles: list[str], per_bench: int, seed: int = 0) -> list[dict]:
    rng, docs = random.Random(seed), []
    for bench, spec in sorted(specs(data).items()):
        items = list(read_benchmark(spec))
        for item_id, texts in rng.sample(items, min(per_bench, len(items))):
            for kind in EDITS:
                version = edit(kind, texts, rng) if kind != "mmlu labelled choices" or bench == "mmlu" else None
                if version is not None:
                    paragraphs = rng.choice(articles).split("\n")
                    at = rng.randrange(len(paragraphs) + 1)
                    docs.append({"id": f"{bench}|{item_id}|{kind}", "bench": bench, "kind": kind,
                                 "text": "\n".join(paragraphs[:at] + [version] + paragraphs[at:])})
    return docs


def clean_corpora(data: Path, articles: list[str]) -> dict[str, list[str]]:
    def chunks(text: str, size: int = 5000) -> list[str]:
        return [text[i:i + size] for i in range(0, len(text), size)]
    speeches = "\n".join(p.read_text(errors="replace") for folder in ("inaugural", "state_union")
                         for p in sorted((data / "english-pd-nltk" / folder).glob("*.txt")))
    return {"articles": articles, "tinyshakespeare": chunks((data / "tinyshakespeare" / "input.txt").read_text()),
            "speeches": chunks(speeches)}


def quality(data: Path, stage: Decontaminate, articles: list[str], per_bench: int) -> dict:
    docs = planted(data, articles, per_bench)
    out = stage.run([{"id": d["id"], "text": d["text"]} for d in docs])
    recall: dict = {}
    for d, o in zip(docs, out):
        cell = recall.setdefault(d["bench"], {}).setdefault(d["kind"], [0, 0])
        cell[0] += o["drop_reason"] is not None
        cell[1] += 1
    fp = {}
    for name, texts in clean_corpora(data, articles).items():
        judged = stage.run([{"id": str(i), "text": t} for i, t in enumerate(texts)])
        fp[name] = {"docs": len(texts), "dropped": sum(o["drop_reason"] is not None for o in judged)}
    return {"recall": {b: {k: {"found": f, "planted": n, "rate": round(f / n, 4)} for k, (f, n) in kinds.items()}
                       for b, kinds in recall.items()}, "false_positives": fp}


def throughput(data: Path, work: Path, articles: list[str], copies: int) -> dict:
    from jobs import decontam
    from pipeline.spark import SparkConfig, spark_session

    rows = [{"id": f"{i}-{c}", "text": t} for c in range(copies) for i, t in enumerate(articles)]
    (work / "docs" / "kept").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), work / "docs" / "kept" / "part-0.parquet")
    (work / "docs" / "_SUCCESS").write_text("{}")
    megabytes = sum(len(r["text"].encode()) for r in rows) / 1e6
    started = time.perf_counter()
    index = build_index(specs(data), N)
    index_s = time.perf_counter() - started
    started = time.perf_counter()
    Decontaminate(DecontamConfig(), index).run(rows)
    loop_s = time.perf_counter() - started
    bench = "decontam.benchmarks={" + ", ".join(f'{k}="{v}"' for k, v in specs(data).items()) + "}"
    with spark_session("bench", SparkConfig()) as spark:
        started = time.perf_counter()
        decontam.main(["--input", str(work / "docs"), "--output", str(work / "out"), "--set", bench])
        job_s = time.perf_counter() - started
        cores = spark.sparkContext.defaultParallelism
    return {"docs": len(rows), "megabytes": round(megabytes, 2), "cores": cores, "index_ngrams": len(index.hashes),
            "index_s": round(index_s, 2), "loop_s": round(loop_s, 2), "job_s": round(job_s, 2),
            "loop_mb_per_s": round(megabytes / loop_s, 2), "job_mb_per_s": round(megabytes / job_s, 2)}


def markdown(result: dict) -> str:
    lines = ["### Decontamination (13-gram): planted test items dropped", "",
             "| benchmark | " + " | ".join(EDITS) + " |", "|---|" + "---|" * len(EDITS)]
    for bench, kinds in result["quality"]["recall"].items():
        cells = [f"{kinds[k]['rate']:.3f} ({kinds[k]['found']}/{kinds[k]['planted']})" if k in kinds else "-" for k in EDITS]
        lines.append(f"| {bench} | " + " | ".join(cells) + " |")
    lines += ["", "| clean corpus | documents | dropped |", "|---|---|---|"]
    for name, fp in result["quality"]["false_positives"].items():
        lines.append(f"| {name} | {fp['docs']} | {fp['dropped']} |")
    t = result["throughput"]
    lines += ["", f"### Decontamination throughput ({t['docs']} documents, {t['megabytes']} MB, {t['cores']} cores, "
              f"{t['index_ngrams']:,} benchmark n-grams indexed in {t['index_s']} s)", "",
              "| run | seconds | MB/s |", "|---|---|---|",
              f"| plain Python loop of the stage (1 process) | {t['loop_s']} | {t['loop_mb_per_s']} |",
              f"| decontam job on local Spark (incl. index build, broadcast, write) | {t['job_s']} | {t['job_mb_per_s']} |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_decontam", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--per-bench", type=int, default=400, help="items sampled per benchmark")
    parser.add_argument("--copies", type=int, default=4, help="copies of the 181 articles for throughput")
    args = parser.parse_args(argv)
    data, out = shared_data(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    articles = [gold for *_, gold in article_pages(data)]
    stage = Decontaminate(DecontamConfig(), build_index(specs(data), N))
    result = {"quality": quality(data, stage, articles, args.per_bench),
              "throughput": throughput(data, out / "decontam-work", articles, args.copies)}
    return save_result(out, "decontam", result, markdown(result))


if __name__ == "__main__":
    main()
