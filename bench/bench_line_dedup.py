"""Line dedup throughput against datatrove's sentence dedup, on the same documents in the same run.

    python -m bench.bench_line_dedup --out runs/bench     # writes runs/bench/line_dedup.json and line_dedup.md

Documents: the extraction benchmark's 181 gold article bodies (../shared/data) with boilerplate planted
as in tests/stages/test_line_dedup.py (navigation, cookie notice, share line, newsletter promo, a
footer varying in year and case), repeated `--copies` times; in every copy after the first about one
word in seven is replaced by a word of the corpus, so only boilerplate (and short lines such as
"Photo: Reuters") repeats across copies. One Parquet file is the input of every contender.

Contenders, each in a fresh child process, warmed up once on 100 documents, then timed on all:
- `ours, job`: `jobs.line_dedup` on Spark `local[1]` (Parquet in, a stage folder out), count mode and
  bloom mode (first occurrence kept, as datatrove);
- `ours, one process`: the same stage without Spark (`mark_repeats` + `LineDedup` on a list, Parquet
  in and out with pyarrow);
- `datatrove`: `SentenceDedupSignature` -> `SentenceFindDedups` -> `SentenceDedupFilter` through
  `LocalPipelineExecutor` (1 task), `ParquetReader` in, `ParquetWriter` out. Unit "line" is its
  `split_sentences=False, n_sentences=1`; "sentences3" its default (spaCy sentencizer, 3-sentence
  spans). Its keep rule is set to `min_doc_words=10, min_num_sentences=0`, the nearest to our
  `min_remaining_chars = 50`.

Measured: wall seconds of the timed run; CPU seconds of the child's whole process tree over that run
(Spark's JVM and Python workers included, read with psutil); peak resident memory of the tree
(sampled every 20 ms); documents/s per core = documents / wall / cores used (1 for every contender).
Kept documents and characters removed show that the contenders did comparable work (their
normalisation differs: datatrove also drops punctuation and maps numbers; we fold case and digits).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.data import article_pages, save_result, shared_data

NAV = "Home | News | Sport | Business | Culture | Contact"
COOKIE = "We use cookies to improve your experience. By continuing to browse you agree to our Cookie Policy."
SHARE = "Share this article: Facebook Twitter Email"
PROMO = "Subscribe to our newsletter. Get the best stories every morning. Unsubscribe at any time."
UNITS = ("line", "sentences3")
CONTENDERS = ("datatrove", "ours-job", "ours-job-bloom", "ours-pure")


def corpus(data: Path, copies: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    golds = [(name, gold) for name, _, _, gold in article_pages(data)]
    vocab = [w for _, gold in golds for w in gold.split()][::7]
    docs = []
    for copy in range(copies):
        for name, gold in golds:
            text = gold if copy == 0 else mutate(gold, rng, vocab)
            head = [b for b, p in ((NAV, 0.6), (COOKIE, 0.5)) if rng.random() < p]
            tail = [b for b, p in ((SHARE, 0.4), (PROMO, 0.3)) if rng.random() < p]
            tail += [f"© {rng.randint(2001, 2024)} Example Media Group. All rights reserved."] if rng.random() < 0.7 else []
            docs.append({"id": f"{copy:03d}-{name}", "text": "\n".join([*head, text, *tail])})
    return docs


def mutate(text: str, rng: random.Random, vocab: list[str]) -> str:
    """About one word in seven replaced, line breaks kept."""
    return "\n".join(" ".join(rng.choice(vocab) if rng.random() < 0.15 else w for w in line.split(" "))
                     for line in text.split("\n"))


# ---------------------------------------------------------------- measuring a process tree


class TreeMeter:
    """CPU seconds and peak RSS of this process and all its descendants over a `with` block."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval, 0, threading.Event()

    def tree(self):
        return [self.proc, *self.proc.children(recursive=True)]

    def cpu(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except Exception:  # noqa: BLE001 - a process that ended between listing and reading
                pass
        return total

    def _sample(self):
        while not self._stop.is_set():
            rss = 0
            for p in self.tree():
                try:
                    rss += p.memory_info().rss
                except Exception:  # noqa: BLE001
                    pass
            self.peak = max(self.peak, rss)
            time.sleep(self.interval)

    def __enter__(self):
        self.start_cpu, self.start = self.cpu(), time.perf_counter()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.start
        self.cpu_s = self.cpu() - self.start_cpu
        self._stop.set()
        self.thread.join()


# ---------------------------------------------------------------- the contenders (run in a child process)


def run_ours_job(unit: str, inp: str, out: str, mode: str) -> None:
    from jobs import line_dedup

    line_dedup.main(["--input", inp, "--output", out, "--set", f"line_dedup.unit={unit}",
                     "--set", f"line_dedup.mode={mode}", "--set", "line_dedup.expected_items=1000000"])


def run_ours_pure(unit: str, inp: str, out: str) -> None:
    from stages.line_dedup import LineDedup, LineDedupConfig, mark_repeats

    config = LineDedupConfig(unit=unit)
    docs = pq.read_table(f"{inp}/docs.parquet").to_pylist()
    rows = [r for r in LineDedup(config).run(mark_repeats(docs, config)) if r["drop_reason"] is None]
    Path(out).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), f"{out}/kept.parquet", compression="zstd")


def run_datatrove(unit: str, inp: str, out: str) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.sentence_dedup import (SentDedupConfig, SentenceDedupFilter,
                                                         SentenceDedupSignature, SentenceFindDedups)
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    line = unit == "line"
    config = SentDedupConfig(split_sentences=not line, n_sentences=1 if line else 3, min_doc_words=10,
                             min_num_sentences=0)
    work = Path(out)
    steps = [
        [ParquetReader(inp), SentenceDedupSignature(str(work / "sig"), config=config)],
        [SentenceFindDedups(str(work / "sig"), str(work / "dups"), config=config)],
        [ParquetReader(inp), SentenceDedupFilter(str(work / "dups"), config=config), ParquetWriter(str(work / "kept"))],
    ]
    for i, pipeline in enumerate(steps):
        LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=str(work / f"logs{i}")).run()


def run_contender(name: str, unit: str, inp: str, out: str) -> None:
    if name == "datatrove":
        run_datatrove(unit, inp, out)
    elif name == "ours-pure":
        run_ours_pure(unit, inp, out)
    else:
        run_ours_job(unit, inp, out, "bloom" if name.endswith("bloom") else "count")


def kept_files(name: str, out: Path) -> list[Path]:
    folder = {"datatrove": out / "kept", "ours-pure": out}.get(name, out / "kept")
    return sorted(p for p in folder.rglob("*.parquet"))


def worker(name: str, unit: str, work: Path) -> dict:
    """Warm-up on 100 documents, then the timed run; the result as a dict."""
    import contextlib

    from pipeline.spark import SparkConfig, spark_session

    session = spark_session("bench-line-dedup", SparkConfig(), "local[1]") if name.startswith("ours-job") \
        else contextlib.nullcontext()
    with session:
        warm, out = work / f"out-warm-{name}-{unit}", work / f"out-{name}-{unit}"
        for folder in (warm, out):  # datatrove skips tasks an earlier run's logs mark as done
            shutil.rmtree(folder, ignore_errors=True)
        run_contender(name, unit, str(work / "warm"), str(warm))
        with TreeMeter() as meter:
            run_contender(name, unit, str(work / "input"), str(out))
    texts = [t for p in kept_files(name, out) for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()]
    return {"wall_s": round(meter.wall, 2), "cpu_s": round(meter.cpu_s, 2), "peak_rss_mb": round(meter.peak / 2 ** 20),
            "kept_docs": len(texts), "kept_chars": sum(map(len, texts))}


# ---------------------------------------------------------------- the driver


def measure(work: Path, docs: list[dict]) -> dict:
    chars = sum(len(d["text"]) for d in docs)
    results = {}
    for unit in UNITS:
        for name in CONTENDERS:
            proc = subprocess.run([sys.executable, "-m", "bench.bench_line_dedup", "--worker", name, "--unit", unit,
                                   "--work", str(work)], capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                raise RuntimeError(f"{name} ({unit}) failed:\n{proc.stderr[-3000:]}")
            r = json.loads(line[len("RESULT "):])
            r["docs_per_s_core"] = round(len(docs) / r["wall_s"], 1)
            r["removed_chars"] = chars - r["kept_chars"]
            results[f"{unit}/{name}"] = r
        base = results[f"{unit}/datatrove"]["docs_per_s_core"]
        for name in CONTENDERS:
            results[f"{unit}/{name}"]["vs_datatrove"] = round(results[f"{unit}/{name}"]["docs_per_s_core"] / base, 2)
    return results


def write_inputs(work: Path, docs: list[dict]) -> None:
    for name, rows in (("input", docs), ("warm", docs[:100])):
        (work / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), work / name / "docs.parquet")


LABELS = {"datatrove": "datatrove (first occurrence kept)", "ours-job": "ours, Spark job local[1], count",
          "ours-job-bloom": "ours, Spark job local[1], bloom (first occurrence kept)",
          "ours-pure": "ours, one process, count"}


def markdown(r: dict) -> str:
    lines = [f"### Line dedup vs datatrove ({r['docs']:,} documents, {r['chars'] / 1e6:.1f} M chars; one core each, "
             "warm, fresh process per row)", "",
             "| unit | implementation | wall s | CPU s | peak RSS MB | docs/s per core | vs datatrove | kept docs | "
             "chars removed |", "|---|---|---|---|---|---|---|---|---|"]
    for key, v in r["results"].items():
        unit, name = key.split("/")
        lines.append(f"| {unit} | {LABELS[name]} | {v['wall_s']} | {v['cpu_s']} | {v['peak_rss_mb']} | "
                     f"{v['docs_per_s_core']} | {v['vs_datatrove']}x | {v['kept_docs']} | {v['removed_chars']:,} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_line_dedup", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--worker", choices=CONTENDERS)
    parser.add_argument("--unit", choices=UNITS)
    parser.add_argument("--work")
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.unit, Path(args.work))), flush=True)
        return {}
    out = Path(args.out)
    work = out / "line-dedup-work"
    docs = corpus(shared_data(), args.copies)
    write_inputs(work, docs)
    result = {"docs": len(docs), "chars": sum(len(d["text"]) for d in docs), "copies": args.copies,
              "results": measure(work, docs)}
    return save_result(out, "line_dedup", result, markdown(result))


if __name__ == "__main__":
    main()
