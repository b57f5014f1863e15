"""Tokenize throughput: the Spark tokenize job (tokenize, shuffle, pack, write shards) against a plain
`tiktoken` loop over the same texts on the same cores, in tokens per second.

    python -m bench.bench_tokenize --out runs/bench        # also run by `make bench`

Texts: the gold article bodies of the extraction benchmark, repeated `--copies` times (new ids). The
reference is the plain loop (`encode_ordinary`, one text after another) in one process per core Spark
uses (local[*]: every core), each over its share of the texts; the ratio is job / that. The job encodes
with `tokenize.encoder = "fast"` (stages/tokenize/fast_bpe.py, the same ids); the same job with tiktoken itself
and the loop in one process (the per-core rate) are reported too. The job runs once untimed (Spark's Python workers start and
load the tokenizer once per executor, a cost a long job pays once), then `--runs` timed runs: the median
counts, and the loop is measured between the job runs, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench.data import article_pages, save_result, shared_data
from stages.tokenize.tokenizer import QwenTokenizer


def corpus(data: Path, copies: int) -> list[dict]:
    gold = [g for _, _, _, g in article_pages(data)]
    return [{"id": f"{c}-{i}", "text": text, "source": "web"} for c in range(copies) for i, text in enumerate(gold)]


_START = None   # the barrier the loop processes pass together once their tokenizer is loaded


def _set_start(barrier) -> None:
    global _START
    _START = barrier


def loop_tokens_per_s(texts: list[str]) -> tuple[int, float]:
    """Tokens and seconds of the plain loop over `texts` in this process (tokenizer loaded before timing)."""
    encoding = QwenTokenizer().encoding
    encoding.encode_ordinary("warm up")
    if _START is not None:
        _START.wait()
    started = time.perf_counter()
    tokens = sum(len(encoding.encode_ordinary(t)) for t in texts)
    return tokens, time.perf_counter() - started


def parallel_loop(texts: list[str], processes: int) -> tuple[int, float]:
    """The plain loop in `processes` processes at once, each over every processes-th text: tokens and the
    slowest process's seconds (process start and tokenizer loading excluded, as for one process; the
    processes start timing together). Spawned, not forked: a forked child would share (and close) the
    driver's connection to the JVM."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, _set_start, (context.Barrier(processes),)) as pool:
        parts = pool.map(loop_tokens_per_s, [texts[i::processes] for i in range(processes)], chunksize=1)
    return sum(n for n, _ in parts), max(s for _, s in parts)


def job_runs(rows: list[dict], work: Path, runs: int) -> tuple[list[float], list[float], list[float], dict, int]:
    """Seconds of `runs` timed tokenize jobs (after one untimed), of the same job with tiktoken as its
    encoder, the loop's seconds on the same cores measured after each, the last job's stats and the
    cores Spark used."""
    from jobs import tokenize
    from pipeline import io
    from pipeline.spark import SparkConfig, spark_session

    texts, job_s, tiktoken_s, loop_s = [r["text"] for r in rows], [], [], []
    with spark_session("bench-tokenize", SparkConfig()) as spark:
        cores = spark.sparkContext.defaultParallelism
        io.write_docs(spark, [tuple(r.values()) for r in rows], str(work / "docs"))
        argv = ["--input", str(work / "docs"), "--output", str(work / "shards")]
        reference = [*argv, "--set", "tokenize.encoder=tiktoken"]
        tokenize.main(argv), tokenize.main(reference)  # warm-up: workers start and load the encoders once
        for _ in range(runs):
            started = time.perf_counter()
            stats = tokenize.main(argv)
            job_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            tokenize.main(reference)
            tiktoken_s.append(time.perf_counter() - started)
            loop_s.append(parallel_loop(texts, cores)[1])
    return job_s, tiktoken_s, loop_s, stats, cores


def markdown(r: dict) -> str:
    return "\n".join([
        f"### Tokenize throughput ({r['docs']} documents, {r['tokens']:,} tokens, {r['cores']} cores)", "",
        "| run | seconds | tokens/s |", "|---|---|---|",
        f"| plain tiktoken loop (`encode_ordinary`), 1 process | {r['loop_1_s']} | {r['loop_1_tokens_per_s']:,.0f} |",
        f"| the same loop, {r['cores']} processes (the job's cores), median of {r['runs']} | {r['loop_s']} | "
        f"{r['loop_tokens_per_s']:,.0f} |",
        f"| tokenize job on local Spark (read, tokenize, shuffle, pack, write), median of {r['runs']} | {r['job_s']} | "
        f"{r['job_tokens_per_s']:,.0f} |",
        f"| the same job with `tokenize.encoder=tiktoken`, median of {r['runs']} | {r['job_tiktoken_s']} | "
        f"{r['job_tiktoken_tokens_per_s']:,.0f} |",
        f"| ratio job / loop on the same cores (runs: {', '.join(map(str, r['ratios']))}) | | **{r['ratio']}x** |",
        f"| ratio job with tiktoken / loop on the same cores | | {r['ratio_tiktoken']}x |",
        f"| ratio job / loop in 1 process | | {r['ratio_1_process']}x |", ""])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_tokenize", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = corpus(shared_data(), args.copies)
    tokens, loop_1 = loop_tokens_per_s([r["text"] for r in rows])
    job_s, tiktoken_s, loop_s, stats, cores = job_runs(rows, out / "tokenize-work", args.runs)
    job_tokens = stats["manifest"]["splits"]["train"]["tokens"] + stats["manifest"]["splits"]["valid"]["tokens"]
    if job_tokens != tokens + len(rows):   # every text token and one <|endoftext|> per document
        raise RuntimeError(f"the shards hold {job_tokens} tokens, the loop counted {tokens} + {len(rows)} EOS")
    job, loop = statistics.median(job_s), statistics.median(loop_s)   # both rates count the same text tokens
    result = {"docs": len(rows), "tokens": tokens, "cores": cores, "runs": args.runs,
              "loop_1_s": round(loop_1, 2), "loop_1_tokens_per_s": tokens / loop_1,
              "loop_s": round(loop, 2), "loop_tokens_per_s": tokens / loop, "job_s": round(job, 2),
              "job_tokens_per_s": tokens / job, "ratio": round(loop / job, 2),
              "ratios": [round(b / a, 2) for a, b in zip(job_s, loop_s)], "ratio_1_process": round(loop_1 / job, 2),
              "job_tiktoken_s": round(statistics.median(tiktoken_s), 2),
              "job_tiktoken_tokens_per_s": tokens / statistics.median(tiktoken_s),
              "ratio_tiktoken": round(loop / statistics.median(tiktoken_s), 2)}
    return save_result(out, "tokenize", result, markdown(result))


if __name__ == "__main__":
    main()
