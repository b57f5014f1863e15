"""Tokenize throughput: the Spark tokenize job (tokenize, shuffle, pack, write shards) against a plain
`tiktoken` loop over the same texts, in tokens per second.

    python -m bench.bench_tokenize --out runs/bench        # also run by `make bench`

Texts: the gold article bodies of the extraction benchmark, repeated `--copies` times (new ids). The job
is run twice in one session and the second run is timed: Spark's Python workers start and load the
tokenizer once per executor, a cost a long job pays once (the loop's tokenizer is loaded before timing too).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.data import article_pages, save_result, shared_data
from stages.tokenizer import QwenTokenizer


def corpus(data: Path, copies: int) -> list[dict]:
    gold = [g for _, _, _, g in article_pages(data)]
    return [{"id": f"{c}-{i}", "text": text, "source": "web"} for c in range(copies) for i, text in enumerate(gold)]


def loop_tokens_per_s(texts: list[str]) -> tuple[int, float]:
    encoding = QwenTokenizer().encoding
    encoding.encode_ordinary("warm up")
    started = time.perf_counter()
    tokens = sum(len(encoding.encode_ordinary(t)) for t in texts)
    return tokens, time.perf_counter() - started


def job_seconds(rows: list[dict], work: Path) -> tuple[float, dict]:
    from jobs import tokenize
    from pipeline import io
    from pipeline.spark import SparkConfig, spark_session

    with spark_session("bench-tokenize", SparkConfig()) as spark:
        io.write_docs(spark, [tuple(r.values()) for r in rows], str(work / "docs"))
        argv = ["--input", str(work / "docs"), "--output", str(work / "shards")]
        tokenize.main(argv)  # warm-up: Python workers start and load the tokenizer once per executor
        started = time.perf_counter()
        stats = tokenize.main(argv)
        return time.perf_counter() - started, stats


def markdown(r: dict) -> str:
    return "\n".join([
        f"### Tokenize throughput ({r['docs']} documents, {r['tokens']:,} tokens)", "",
        "| run | seconds | tokens/s |", "|---|---|---|",
        f"| plain tiktoken loop (`encode_ordinary`, 1 process) | {r['loop_s']} | {r['loop_tokens_per_s']:,.0f} |",
        f"| tokenize job on local Spark (tokenize, shuffle, pack, write) | {r['job_s']} | {r['job_tokens_per_s']:,.0f} |",
        f"| ratio job / loop | | **{r['ratio']}x** |", ""])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_tokenize", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--copies", type=int, default=100)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = corpus(shared_data(), args.copies)
    tokens, loop_s = loop_tokens_per_s([r["text"] for r in rows])
    job_s, stats = job_seconds(rows, out / "tokenize-work")
    job_tokens = stats["manifest"]["splits"]["train"]["tokens"] + stats["manifest"]["splits"]["valid"]["tokens"]
    result = {"docs": len(rows), "tokens": tokens, "loop_s": round(loop_s, 2), "job_s": round(job_s, 2),
              "loop_tokens_per_s": tokens / loop_s, "job_tokens_per_s": job_tokens / job_s,
              "ratio": round((job_tokens / job_s) / (tokens / loop_s), 2)}
    return save_result(out, "tokenize", result, markdown(result))


if __name__ == "__main__":
    main()
