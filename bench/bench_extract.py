"""Extraction benchmarks: quality against gold text, and Spark's overhead against a plain loop.

    python -m bench.bench_extract --out runs/bench        # also run by `make bench`

1. article-extraction-benchmark (181 pages + gold article bodies): mean per-page token F1, precision
   and recall (bag of whitespace tokens) of the extract stage (the recipe's settings, and the same
   with trafilatura's metadata pass, `extract.metadata = "trafilatura"`), of `trafilatura.extract`
   with the same settings, and of `trafilatura.extract` with its defaults, all in this run.
2. trafilatura-eval (pages with snippets that must / must not appear): precision, recall, F1 and
   accuracy over snippets, as trafilatura's own evaluation counts them, stage vs trafilatura.extract.
3. Metadata cost: CPU milliseconds per page (one process, so one core) of the stage in each
   `extract.metadata` mode on the 181 pages, and how often each mode finds a title and a date.
4. Throughput: the extract job on local Spark (warm session, all cores) against a plain Python loop
   of the same stage object over the same pages, in pages per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import trafilatura
from tqdm import tqdm

from bench.data import article_pages, benchmark_warc, save_result, shared_data
from stages.extract import METADATA_MODES, ExtractConfig, Extractor


def token_prf(predicted: str | None, gold: str) -> tuple[float, float, float]:
    """Precision, recall and F1 of the multiset of whitespace tokens."""
    pred, ref = Counter((predicted or "").split()), Counter(gold.split())
    common = sum((pred & ref).values())
    if not pred or not ref or not common:
        return 0.0, 0.0, 0.0
    p, r = common / sum(pred.values()), common / sum(ref.values())
    return p, r, 2 * p * r / (p + r)


def mean_prf(scores: list[tuple[float, float, float]]) -> dict:
    return {k: round(statistics.fmean(s[i] for s in scores), 4) for i, k in enumerate(("precision", "recall", "f1"))}


def trafilatura_same_settings(config: ExtractConfig):
    def run(html: bytes, url: str) -> str | None:
        return trafilatura.extract(html, url=url, favor_precision=config.favor_precision,
                                   favor_recall=config.favor_recall, include_comments=config.include_comments,
                                   include_tables=config.include_tables, fast=config.fast, deduplicate=False)
    return run


def extractors(config: ExtractConfig) -> dict:
    stage, full = Extractor(config), Extractor(replace(config, metadata="trafilatura"))
    return {
        f"extract stage (recipe: metadata = {config.metadata})": lambda html, url: stage.extract_text(html, None, url),
        "extract stage, metadata = trafilatura": lambda html, url: full.extract_text(html, None, url),
        "trafilatura.extract, same settings": trafilatura_same_settings(config),
        "trafilatura.extract, defaults": lambda html, url: trafilatura.extract(html, url=url),
    }


def article_quality(data: Path, config: ExtractConfig) -> dict:
    pages = article_pages(data)
    results = {}
    for name, run in extractors(config).items():
        scores = [token_prf(run(html, url), gold) for _, url, html, gold in tqdm(pages, desc=name, leave=False)]
        results[name] = mean_prf(scores)
    return {"pages": len(pages), "results": results}


def snippet_quality(data: Path, config: ExtractConfig) -> dict:
    folder = data / "trafilatura-eval"
    cases = json.loads((folder / "evaldata.subset.json").read_text())
    results = {}
    for name, run in extractors(config).items():
        tally = Counter()
        for url, case in tqdm(cases.items(), desc=name, leave=False):
            page = _eval_page(folder, case["file"])
            if page is None:
                continue
            text = run(page, url) or ""
            tally["tp"] += sum(s in text for s in case.get("with", []))
            tally["fn"] += sum(s not in text for s in case.get("with", []))
            tally["fp"] += sum(s in text for s in case.get("without", []))
            tally["tn"] += sum(s not in text for s in case.get("without", []))
        results[name] = _snippet_scores(tally)
    return {"pages": len(cases), "results": results}


def _eval_page(folder: Path, name: str) -> bytes | None:
    for sub in ("eval", "cache"):
        if (folder / sub / name).exists():
            return (folder / sub / name).read_bytes()
    return None


def _snippet_scores(t: Counter) -> dict:
    precision = t["tp"] / max(1, t["tp"] + t["fp"])
    recall = t["tp"] / max(1, t["tp"] + t["fn"])
    return {"precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / max(1e-9, precision + recall), 4),
            "accuracy": round((t["tp"] + t["tn"]) / max(1, sum(t.values())), 4), **dict(t)}


def metadata_cost(data: Path, config: ExtractConfig) -> dict:
    """CPU ms per page of the stage in each metadata mode (process time: one core), best of two passes;
    pages with a title / a date, and titles equal to the "trafilatura" mode's."""
    rows = [{"id": name, "url": url, "html": html, "fetch_time": "2020-01-01T00:00:00Z"}
            for name, url, html, _ in article_pages(data)]
    results, titles = {}, {}
    for mode in METADATA_MODES:
        stage = Extractor(replace(config, metadata=mode))
        seconds = []
        for _ in range(2):
            started = time.process_time()
            out = [stage.map(row) for row in rows]
            seconds.append(time.process_time() - started)
        titles[mode] = [row["title"] for row in out]
        results[mode] = {"cpu_ms_per_page": round(1000 * min(seconds) / len(rows), 1),
                         "with_title": sum(bool(row["title"]) for row in out),
                         "with_date": sum(bool(row["date"]) for row in out)}
    for mode in METADATA_MODES:
        results[mode]["title_as_trafilatura"] = sum(
            a is not None and a == b for a, b in zip(titles[mode], titles["trafilatura"]))
    return {"pages": len(rows), "results": results}


def throughput(data: Path, work: Path, copies: int) -> dict:
    from jobs import extract, ingest
    from pipeline.spark import SparkConfig, spark_session

    warc = benchmark_warc(data, work / "input" / "bench.warc.gz", copies=copies)
    with spark_session("bench", SparkConfig()) as spark:
        ingest.main(["--input", str(warc), "--output", str(work / "ingest")])
        rows = pq.read_table(work / "ingest" / "kept").to_pylist()
        started = time.perf_counter()
        Extractor().run(rows)
        loop_s = time.perf_counter() - started
        started = time.perf_counter()
        stats = extract.main(["--input", str(work / "ingest"), "--output", str(work / "extract")])
        job_s = time.perf_counter() - started
        cores = spark.sparkContext.defaultParallelism
    pages = len(rows)
    return {"pages": pages, "cores": cores, "loop_s": round(loop_s, 2), "job_s": round(job_s, 2),
            "loop_pages_per_s": round(pages / loop_s, 1), "job_pages_per_s": round(pages / job_s, 1),
            "ratio_job_to_loop": round(loop_s / job_s, 2), "job_kept": stats["kept"]}


def markdown(result: dict) -> str:
    lines = ["### Extraction quality: article-extraction-benchmark "
             f"({result['articles']['pages']} pages, mean token F1 against gold)", "",
             "| extractor | F1 | precision | recall |", "|---|---|---|---|"]
    for name, r in result["articles"]["results"].items():
        lines.append(f"| {name} | {r['f1']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |")
    lines += ["", f"### Extraction quality: trafilatura-eval ({result['snippets']['pages']} pages, snippets with/without)",
              "", "| extractor | F1 | precision | recall | accuracy |", "|---|---|---|---|---|"]
    for name, r in result["snippets"]["results"].items():
        lines.append(f"| {name} | {r['f1']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['accuracy']:.3f} |")
    m = result["metadata"]
    lines += ["", f"### Extract metadata modes ({m['pages']} pages, CPU ms per page on one core)", "",
              "| extract.metadata | CPU ms/page | pages with title | with date | title = trafilatura's |",
              "|---|---|---|---|---|"]
    for mode, r in m["results"].items():
        lines.append(f"| {mode} | {r['cpu_ms_per_page']} | {r['with_title']} | {r['with_date']} | "
                     f"{r['title_as_trafilatura']} |")
    t = result["throughput"]
    lines += ["", f"### Extract throughput ({t['pages']} pages, {t['cores']} cores)", "",
              "| run | seconds | pages/s |", "|---|---|---|",
              f"| plain Python loop of the stage (1 process) | {t['loop_s']} | {t['loop_pages_per_s']} |",
              f"| extract job on local Spark | {t['job_s']} | {t['job_pages_per_s']} |",
              f"| ratio job / loop | | **{t['ratio_job_to_loop']}x** |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_extract", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--copies", type=int, default=3, help="repeat the 181 pages this many times for throughput")
    args = parser.parse_args(argv)
    data, out = shared_data(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = ExtractConfig()
    result = {"articles": article_quality(data, config), "snippets": snippet_quality(data, config),
              "metadata": metadata_cost(data, config),
              "throughput": throughput(data, out / "extract-work", args.copies)}
    return save_result(out, "extract", result, markdown(result))


if __name__ == "__main__":
    main()
