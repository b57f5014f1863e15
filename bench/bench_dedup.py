"""Dedup benchmarks: near-duplicate quality against exact Jaccard, signature speed, Spark scaling.

    python -m bench.bench_dedup --out runs/bench        # writes runs/bench/dedup.json and dedup.md

1. Quality: lines of public-domain English (../shared/data/english-pd-nltk, >= 40 words each) plus
   planted near duplicates (word substitutions, insertions, deletions, appended boilerplate) go
   through the dedup job with the default recipe. True word 5-gram Jaccard is computed exactly for
   every pair sharing a shingle (an inverted index; other pairs have Jaccard 0). Reported: recall
   over pairs with J >= 0.85 (both ends in the same kept group) and the fraction of documents whose
   highest J to any other is <= 0.5 that were removed.
2. Signature speed, one core (the process is pinned to one CPU): `stages.minhash.signatures` (the C
   module; sha1 with both schemes, and the opt-in xxh64) against datasketch `MinHash.update_batch`,
   its fastest path (same seed, scheme and num_perm 128, same documents, the same shingles). Two
   document lengths from the 181 gold articles of ../shared/data/article-extraction-benchmark: the
   whole articles (~730 words) and consecutive 60-word pieces of them; ours in batches of 32, 256 and
   1000 documents (the runner's range). Wall and CPU seconds of each side are measured (warmed up
   once, median of 5); docs/s per core = documents / CPU seconds. datasketch is timed with the shingle
   lists given (built before the clock starts), and separately the time to build them with
   `stages.minhash.shingles` is reported, so "x update_batch" is the strict ratio: our time includes
   normalising and shingling, datasketch's does not.
3. Scaling: the whole dedup job on N and 4N documents (windows of the same corpus), warm session.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

from datasketch import MinHash

from bench.data import article_pages, save_result, shared_data
from stages.dedup import DedupConfig
from stages.minhash import MinHashParams, jaccard, native_module, shingles, signatures

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


SPEED_BATCHES = (32, 256, 1000)
SPEED_CONFIGS = (("sha1", "affine32"), ("sha1", "legacy"), ("xxh64", "affine32"))   # ours: hash, scheme
SHORT_WORDS = 60


def speed_corpora(data: Path, docs: int) -> dict[str, list[str]]:
    """`docs` documents of each length: the gold articles cycled, and consecutive 60-word pieces of them."""
    articles = [gold for _, _, _, gold in article_pages(data) if gold.strip()]
    pieces = []
    for text in articles:
        words = text.split()
        pieces += [" ".join(words[i:i + SHORT_WORDS]) for i in range(0, len(words) - SHORT_WORDS + 1, SHORT_WORDS)]
    return {"article": (articles * (docs // len(articles) + 1))[:docs],
            "short": (pieces * (docs // len(pieces) + 1))[:docs]}


@contextmanager
def one_core():
    """Pins this process to one CPU (where the OS allows it) for the duration."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        yield min(cpus)
    finally:
        os.sched_setaffinity(0, cpus)


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds of `fn`: one warm-up run, then the median of `repeats` runs of each."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus)


def signature_speed(data: Path, docs: int, repeats: int = 5, num_perm: int = 128) -> dict:
    """Documents per CPU second of our signatures and of datasketch's `update_batch` on the same documents
    and shingles, per document length, batch size and (hash, scheme)."""
    if native_module() is None:
        raise SystemExit("stages._minhash is not built: run `make setup`")
    result = {"docs": docs, "num_perm": num_perm, "repeats": repeats, "corpora": {}}
    with one_core() as cpu:
        result["cpu"] = cpu
        for corpus, texts in speed_corpora(data, docs).items():
            base = MinHashParams(num_perm=num_perm, bands=16, rows=8)
            sets = [list(shingles(t, base)) for t in texts]
            entry = {"words_per_doc": round(sum(len(t.split()) for t in texts) / len(texts), 1),
                     "shingles": sum(map(len, sets)), "datasketch": {}, "ours": []}
            wall, cpu_s = _timed(lambda: [shingles(t, base) for t in texts], repeats)
            entry["shingling"] = {"wall_s": round(wall, 4), "cpu_s": round(cpu_s, 4)}
            for scheme in ("affine32", "legacy"):
                def datasketch_batch(scheme=scheme):
                    for s in sets:
                        MinHash(num_perm=num_perm, seed=base.seed, scheme=scheme).update_batch(s)
                wall, cpu_s = _timed(datasketch_batch, repeats)
                entry["datasketch"][scheme] = {"wall_s": round(wall, 4), "cpu_s": round(cpu_s, 4),
                                               "docs_per_s": round(docs / cpu_s, 1)}
            for hash_, scheme in SPEED_CONFIGS:
                params = MinHashParams(num_perm=num_perm, bands=16, rows=8, scheme=scheme, hash=hash_)
                for batch in SPEED_BATCHES:
                    chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
                    wall, cpu_s = _timed(lambda: [signatures(c, params) for c in chunks], repeats)
                    reference = entry["datasketch"][scheme]["cpu_s"]
                    entry["ours"].append({"hash": hash_, "scheme": scheme, "batch": batch, "wall_s": round(wall, 4),
                                          "cpu_s": round(cpu_s, 4), "docs_per_s": round(docs / cpu_s, 1),
                                          "x_update_batch": round(reference / cpu_s, 1),
                                          "x_shingling_and_update_batch":
                                              round((reference + entry["shingling"]["cpu_s"]) / cpu_s, 1)})
            result["corpora"][corpus] = entry
    return result


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


def speed_markdown(s: dict) -> list[str]:
    lines = [f"### MinHash signatures, one core ({s['docs']} documents per length, num_perm {s['num_perm']}; "
             f"warm, median of {s['repeats']}; docs/s per core = documents / CPU s)", "",
             "x update_batch: against datasketch's `MinHash.update_batch` with the same scheme, shingle lists given "
             "(our time includes normalising and shingling); in brackets, with datasketch's shingling counted too.", "",
             "| documents | implementation | batch | wall s | CPU s | docs/s per core | x update_batch |",
             "|---|---|---|---|---|---|---|"]
    for corpus, c in s["corpora"].items():
        name = f"{corpus} ({c['words_per_doc']:.0f} words, {c['shingles']:,} shingles)"
        for scheme, v in c["datasketch"].items():
            lines.append(f"| {name} | datasketch update_batch, {scheme} | per doc | {v['wall_s']} | {v['cpu_s']} | "
                         f"{v['docs_per_s']:,.0f} | 1.0x |")
        lines.append(f"| {name} | (building the shingle lists for datasketch) | | {c['shingling']['wall_s']} | "
                     f"{c['shingling']['cpu_s']} | | |")
        for v in c["ours"]:
            lines.append(f"| {name} | ours, {v['hash']}, {v['scheme']} | {v['batch']} | {v['wall_s']} | {v['cpu_s']} | "
                         f"{v['docs_per_s']:,.0f} | **{v['x_update_batch']}x** "
                         f"({v['x_shingling_and_update_batch']}x) |")
    return lines


def markdown(r: dict) -> str:
    q, s, c = r["quality"], r["speed"], r["scaling"]
    lines = [f"### Dedup quality ({q['docs']} documents, {q['planted']} planted near copies; {q['params']})", "",
             "| measure | value | goal |", "|---|---|---|",
             f"| recall, pairs with true 5-gram Jaccard >= 0.85 ({q['pairs_j_ge_085']}) | {q['recall_j_ge_085']:.4f} | >= 0.95 |",
             f"| removed among documents with max Jaccard <= 0.5 ({q['distinct_docs_j_le_05']}) | "
             f"{q['distinct_removed']} ({100 * q['distinct_removed_frac']:.2f}%) | <= 1% |", "",
             *speed_markdown(s)]
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
    parser.add_argument("--speed-only", action="store_true", help="only the signature speed part (no Spark)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = shared_data()
    result = {"speed": signature_speed(data, args.speed_docs)}
    if args.speed_only:
        return save_result(out, "dedup_speed", result, "\n".join(speed_markdown(result["speed"])) + "\n")
    lines = english_lines(data)
    with spark_session("bench-dedup", SparkConfig()) as spark:
        result["quality"] = quality(spark, lines, out / "dedup-work")
        result["scaling"] = scaling(spark, lines, out / "dedup-work", args.scale_n)
    return save_result(out, "dedup", result, markdown(result))


if __name__ == "__main__":
    main()
