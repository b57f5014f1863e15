"""Synthesis benchmarks: the sandbox on HumanEval, math answer judging on GSM8K, code filters on the stdlib.

    python -m bench.bench_synthesis --out runs/bench [--workers 2] [--limit 164]

1. HumanEval (164 problems) through `common.sandbox` / `stages.synthesis.run_tests`: the canonical
   solutions must all pass and a stub (`return None`) must fail; latency per run (p50 / p95) and runs
   per second with a thread pool, plus the cost of the kernel isolation layers (trivial program with
   and without namespaces).
2. GSM8K train (7,473 solutions): `judge_math` of each reference solution against itself and of the
   solution with its final number changed (must be all right / all wrong), solutions per second.
3. The code filters of `stages/code.py` over this machine's Python standard library: files, kept share,
   reasons, MB/s of a plain loop (read + filter).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sysconfig
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.data import save_result, shared_data
from common import sandbox
from stages import synthesis
from stages.code import CodeConfig, CodeFilter, CodeReader, list_source_files


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def humaneval(data: Path, workers: int, limit: int) -> dict:
    with gzip.open(data / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        problems = [json.loads(line) for line in f][:limit]

    def run(args):
        problem, body = args
        t = time.perf_counter()
        res = synthesis.run_tests(problem["prompt"] + body, problem["test"], problem["entry_point"], timeout=10.0)
        return res.passed, time.perf_counter() - t
    jobs = [(p, p["canonical_solution"]) for p in problems] + [(p, "    return None\n") for p in problems]
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(run, jobs))
    wall = time.perf_counter() - started
    n = len(problems)
    latencies = [s for _, s in results]
    return {"problems": n, "canonical_pass": sum(ok for ok, _ in results[:n]),
            "stub_pass": sum(ok for ok, _ in results[n:]), "runs": len(jobs), "workers": workers,
            "runs_per_s": round(len(jobs) / wall, 2), "p50_s": round(percentile(latencies, 0.5), 3),
            "p95_s": round(percentile(latencies, 0.95), 3), "isolation": list(sandbox.kernel_layers())}


def isolation_cost(repeats: int = 10) -> dict:
    def mean_s(**kw):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            assert sandbox.run_code("print(1)", **kw).ok
            times.append(time.perf_counter() - t)
        return round(statistics.fmean(times), 3)
    return {"audit_only_s": mean_s(network=True), "all_layers_s": mean_s()}


def gsm8k(data: Path) -> dict:
    with open(data / "gsm8k" / "train.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    started = time.perf_counter()
    right = sum(synthesis.judge_math([r["answer"]], r["answer"])[0] for r in rows)
    wrong = 0
    for r in rows:
        head, number = r["answer"].rsplit("####", 1)
        changed = f"{head}#### {synthesis.normalize_answer(number)}1"  # 72 -> 721
        wrong += synthesis.judge_math([changed], r["answer"])[0]
    seconds = time.perf_counter() - started
    return {"solutions": len(rows), "self_match": right, "changed_match": wrong,
            "judged_per_s": round(2 * len(rows) / seconds)}


def stdlib_filters() -> dict:
    config = CodeConfig()
    files = list_source_files([sysconfig.get_paths()["stdlib"]], config)
    started = time.perf_counter()
    docs = CodeFilter(config).run(CodeReader(config).run([{"path": p, "rel_path": r} for p, r in files]))
    seconds = time.perf_counter() - started
    size = sum(d["n_bytes"] or 0 for d in docs)
    reasons = Counter(d["drop_reason"] for d in docs if d["drop_reason"])
    kept = sum(d["drop_reason"] is None for d in docs)
    return {"files": len(files), "kept": kept, "kept_share": round(kept / max(1, len(files)), 4),
            "by_reason": dict(reasons.most_common()), "mb": round(size / 1e6, 2),
            "mb_per_s": round(size / 1e6 / seconds, 2)}


def markdown(r: dict) -> str:
    h, c, g, s = r["humaneval"], r["isolation_cost"], r["gsm8k"], r["stdlib"]
    return (
        "## Synthesis: sandbox, answer judging, code filters\n\n"
        f"HumanEval in the sandbox (isolation: {', '.join(['audit', *h['isolation']])}): canonical solutions "
        f"pass {h['canonical_pass']}/{h['problems']}, `return None` stubs pass {h['stub_pass']}/{h['problems']}; "
        f"{h['runs']} runs at {h['runs_per_s']} runs/s with {h['workers']} threads, latency p50 {h['p50_s']} s, "
        f"p95 {h['p95_s']} s. A trivial program: {c['audit_only_s']} s with the audit hook only, "
        f"{c['all_layers_s']} s in new network, pid and read-only mount namespaces.\n\n"
        f"GSM8K train: {g['self_match']}/{g['solutions']} reference solutions judged correct against themselves, "
        f"{g['changed_match']}/{g['solutions']} with the final number changed; {g['judged_per_s']:,} judgements/s.\n\n"
        f"Code filters on this machine's stdlib: {s['files']} .py files ({s['mb']} MB), {s['kept']} kept "
        f"({s['kept_share']:.1%}); rejected by reason {s['by_reason']}; {s['mb_per_s']} MB/s read + filter.\n")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_synthesis", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--workers", type=int, default=2, help="threads running sandboxes at once")
    parser.add_argument("--limit", type=int, default=164, help="HumanEval problems to run")
    args = parser.parse_args(argv)
    data = shared_data()
    result = {"humaneval": humaneval(data, args.workers, args.limit), "isolation_cost": isolation_cost(),
              "gsm8k": gsm8k(data), "stdlib": stdlib_filters()}
    return save_result(Path(args.out), "synthesis", result, markdown(result))


if __name__ == "__main__":
    main()
