"""Dedup benchmarks: near-duplicate quality against exact Jaccard, signature speed, Spark scaling.

    python -m bench.bench_dedup --out runs/bench        # writes runs/bench/dedup.json and dedup.md

1. Quality: lines of public-domain English (../shared/data/english-pd-nltk, >= 40 words each) plus
   planted near duplicates (word substitutions, insertions, deletions, appended boilerplate) go
   through the dedup job with the default recipe. True word 5-gram Jaccard is computed exactly for
   every pair sharing a shingle (an inverted index; other pairs have Jaccard 0). Reported: recall
   over pairs with J >= 0.85 (both ends in the same kept group) and the fraction of documents whose
   highest J to any other is <= 0.5 that were removed.
2. Signature speed, one process: `stages.minhash.signatures` against datasketch `MinHash` (default
   seed and scheme, same num_perm, same documents, same shingles) fed with `update` per shingle (its
   documented use) and with `update_batch`, in documents per second (each warmed up once, median of 5).
3. Scaling: the whole dedup job on N and 4N documents (windows of the same corpus), warm session.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from datasketch import MinHash

from bench.data import save_result, shared_data
from stages.dedup import DedupConfig
from stages.minhash import jaccard, shingles, signatures

BOILERPLATE = "Share this page on social media. Subscribe to our newsletter for updates."


def english_lines(data: Path, min_words: int = 40) -> list[str]:
    lines = []
    for folder in ("state_union", "inaugural"):
        for path in sorted((data / "english-pd-nltk" / folder).glob("*.txt")):
            text = path.read_text(encoding="utf-8", errors="replace")
            lines += [" ".join(line.split()) for line in text.splitlines() if len(line.split()) >= min_words]
    return list(dict.fromkeys(lines))


def mutate(text: str, rng: random.Random, vocab: list[str]) -> str:
    """A near copy: a few words substituted, inserted or deleted, sometimes boilerplate appended."""
    words = text.split()
    for _ in range(rng.randint(0, max(1, len(words) // 25))):
        i, op = rng.randrange(len(words)), rng.choice("sid")
        if op == "s":
            words[i] = rng.choice(vocab)
        elif op == "i":
            words.insert(i, rng.choice(vocab))
        elif len(words) > 10:
            del words[i]
    if rng.random() < 0.5:
        words += BOILERPLATE.split()
    return " ".join(words)


def quality_corpus(lines: list[str], planted: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    vocab = [w for line in lines[:200] for w in line.split()]
    rows = [{"id": f"d{i:05d}", "text": t} for i, t in enumerate(lines)]
    for k, i in enumerate(rng.sample(range(len(lines)), planted)):
        rows.append({"id": f"m{k:05d}", "text": mutate(lines[i], rng, vocab)})
    return rows


def true_pairs(rows: list[dict]) -> tuple[dict, dict]:
    """Exact 5-gram Jaccard of every pair sharing a shingle, and each document's highest Jaccard."""
    sets = [shingles(r["text"]) for r in rows]
    index: dict[bytes, list[int]] = {}
    for i, s in enumerate(sets):
        for x in s:
            index.setdefault(x, []).append(i)
    pairs, best = {}, [0.0] * len(rows)
    for i, s in enumerate(sets):
        others = {j for x in s for j in index[x] if j > i}
        for j in others:
            pairs[i, j] = jaccard(s, sets[j])
            best[i], best[j] = max(best[i], pairs[i, j]), max(best[j], pairs[i, j])
    return pairs, dict(enumerate(best))


def run_dedup(spark, rows: list[dict], work: Path, name: str, argv: list[str] = ()) -> tuple[dict, dict, float]:
    from jobs import dedup

    spark.createDataFrame(rows, "id string, text string").write.mode("overwrite").parquet(str(work / f"{name}-in"))
    started = time.perf_counter()
    stats = dedup.main(["--input", str(work / f"{name}-in"), "--output", str(work / name), *argv])
    seconds = time.perf_counter() - started
    rejected = spark.read.parquet(str(work / name / "rejected")).select("id", "dup_of").collect()
    return stats, {r["id"]: r["dup_of"] for r in rejected}, seconds


def quality(spark, lines: list[str], work: Path) -> dict:
    rows = quality_corpus(lines, planted=len(lines) // 4)
    pairs, best = true_pairs(rows)
    stats, dup_of, seconds = run_dedup(spark, rows, work, "quality")
    group = [dup_of.get(r["id"], r["id"]) for r in rows]
    similar = [(i, j) for (i, j), jac in pairs.items() if jac >= 0.85]
    caught = sum(group[i] == group[j] for i, j in similar)
    distinct = [i for i, b in best.items() if b <= 0.5]
    removed = sum(rows[i]["id"] in dup_of for i in distinct)
    config = DedupConfig()
    return {"docs": len(rows), "planted": len(rows) - len(lines), "pairs_j_ge_085": len(similar),
            "recall_j_ge_085": round(caught / max(1, len(similar)), 4), "distinct_docs_j_le_05": len(distinct),
            "distinct_removed": removed, "distinct_removed_frac": round(removed / max(1, len(distinct)), 4),
            "removed": stats["rejected"], "job_s": round(seconds, 2),
            "params": f"{config.num_perm} perms = {config.bands} bands x {config.rows} rows, word {config.ngram}-grams"}


def signature_speed(lines: list[str], docs: int, repeats: int = 5) -> dict:
    """Documents per second of each implementation: one warm-up run each on the same documents (our
    punctuation table and permutations and datasketch's are built once per process, and the first run
    also pays the page faults of its arrays), then the median of `repeats` timed runs."""
    texts = (lines * (docs // len(lines) + 1))[:docs]
    num_perm = DedupConfig().num_perm
    params = DedupConfig().minhash()

    def per_shingle():
        for text in texts:
            m = MinHash(num_perm=num_perm)
            for s in shingles(text, params):
                m.update(s)

    def batch():
        for text in texts:
            MinHash(num_perm=num_perm).update_batch(list(shingles(text, params)))

    runs = {"qwenforge signatures (batch)": lambda: signatures(texts, params),
            "datasketch MinHash.update per shingle": per_shingle, "datasketch MinHash.update_batch": batch}
    timings = {name: statistics.median([_seconds(fn) for _ in range(repeats + 1)][1:]) for name, fn in runs.items()}
    ours = timings["qwenforge signatures (batch)"]
    return {"docs": docs, "num_perm": num_perm, "repeats": repeats,
            "shingles": sum(len(shingles(t, params)) for t in texts),
            "results": {k: {"seconds": round(v, 3), "docs_per_s": round(docs / v, 1), "speedup": round(v / ours, 2)}
                        for k, v in timings.items()}}


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def windows(lines: list[str], n: int, seed: int = 1, size: int = 80) -> list[dict]:
    words = " ".join(lines).split()
    rng = random.Random(seed)
    starts = [rng.randrange(len(words) - size) for _ in range(n)]
    return [{"id": f"w{i:06d}", "text": " ".join(words[s:s + size])} for i, s in enumerate(starts)]


def scaling(spark, lines: list[str], work: Path, n: int) -> dict:
    run_dedup(spark, windows(lines, 500, seed=9), work, "warmup")
    small = run_dedup(spark, windows(lines, n), work, "scale-n")
    large = run_dedup(spark, windows(lines, 4 * n), work, "scale-4n")
    return {"n": n, "n_s": round(small[2], 2), "4n_s": round(large[2], 2), "ratio": round(large[2] / small[2], 2),
            "n_removed": small[0]["rejected"], "4n_removed": large[0]["rejected"],
            "cores": spark.sparkContext.defaultParallelism}


def markdown(r: dict) -> str:
    q, s, c = r["quality"], r["speed"], r["scaling"]
    lines = [f"### Dedup quality ({q['docs']} documents, {q['planted']} planted near copies; {q['params']})", "",
             "| measure | value | goal |", "|---|---|---|",
             f"| recall, pairs with true 5-gram Jaccard >= 0.85 ({q['pairs_j_ge_085']}) | {q['recall_j_ge_085']:.4f} | >= 0.95 |",
             f"| removed among documents with max Jaccard <= 0.5 ({q['distinct_docs_j_le_05']}) | "
             f"{q['distinct_removed']} ({100 * q['distinct_removed_frac']:.2f}%) | <= 1% |", "",
             f"### MinHash signatures, one process ({s['docs']} documents, {s['shingles']:,} shingles, "
             f"num_perm {s['num_perm']}; warm, median of {s['repeats']})", "", "| implementation | seconds | docs/s | our speedup |", "|---|---|---|---|"]
    for name, v in s["results"].items():
        lines.append(f"| {name} | {v['seconds']} | {v['docs_per_s']} | {v['speedup']}x |")
    lines += ["", f"### Dedup job scaling (local Spark, {c['cores']} cores, warm session)", "",
              "| documents | seconds | removed |", "|---|---|---|",
              f"| N = {c['n']} | {c['n_s']} | {c['n_removed']} |",
              f"| 4N = {4 * c['n']} | {c['4n_s']} | {c['4n_removed']} |",
              f"| time(4N) / time(N) | **{c['ratio']}** (goal <= 5) | |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from pipeline.spark import SparkConfig, spark_session

    parser = argparse.ArgumentParser(prog="bench.bench_dedup", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--speed-docs", type=int, default=2000)
    parser.add_argument("--scale-n", type=int, default=5000)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = english_lines(shared_data())
    result = {"speed": signature_speed(lines, args.speed_docs)}
    with spark_session("bench-dedup", SparkConfig()) as spark:
        result["quality"] = quality(spark, lines, out / "dedup-work")
        result["scaling"] = scaling(spark, lines, out / "dedup-work", args.scale_n)
    return save_result(out, "dedup", result, markdown(result))


if __name__ == "__main__":
    main()
