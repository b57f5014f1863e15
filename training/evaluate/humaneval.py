"""HumanEval (Chen et al. 2021): pass@1 by executing greedy completions against the unit tests.

    python -m training.evaluate --checkpoint runs/demo/train/final --tasks humaneval --limit 20

Data: ``<shared>/humaneval/HumanEval.jsonl.gz`` (164 problems: ``prompt``, ``canonical_solution``,
``test``, ``entry_point``). The model continues the function signature + docstring greedily; the
completion is cut at the first line that starts a new top-level statement (the stop sequences of
the HumanEval paper). Each program ``prompt + completion + test + check(entry_point)`` runs in
``common.sandbox.run_code``: a separate process, a timeout, no network, a scratch directory. A problem
passes only when the program ran to its end (the sandbox's per-run sentinel came back after the check
call returned) and exited 0 in time: a completion that exits early with status 0 (``os._exit(0)``,
``sys.exit(0)``, ``exit()``, an atexit or signal handler) fails, so pass@1 is not inflated. Programs run
concurrently on a small thread pool (each one is its own process).
"""
from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")  # Chen et al. 2021, sec. 2.3


@dataclass(frozen=True)
class HumanEvalConfig:
    max_new_tokens: int = 384
    timeout: float = 10.0          # seconds per program
    workers: int = 4               # programs run at once


def load(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def program(problem: dict, completion: str) -> str:
    """The file that passes when the completion is right: prompt, completion, tests, the check call."""
    return (problem["prompt"] + completion + "\n\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})\n")


def cut(completion: str) -> str:
    """The completion up to the first stop sequence (the function body only)."""
    end = min((i for i in (completion.find(s) for s in STOPS) if i >= 0), default=len(completion))
    return completion[:end]


def run_one(problem: dict, completion: str, timeout: float) -> dict:
    from common.sandbox import run_code

    result = run_code(program(problem, completion), timeout=timeout)
    return {"task_id": problem["task_id"], "passed": result.passed, "timed_out": bool(result.timed_out),
            "error": "" if result.passed else failure(result)}


def failure(result) -> str:
    """Why a run failed, short: the end of stderr, or that it stopped before the tests ended."""
    if result.ok and not result.completed:
        return "exited with status 0 before the tests finished"
    return (result.stderr or f"exit status {result.returncode}")[-300:]


def execute(problems: list[dict], completions: list[str], timeout: float = 10.0, workers: int = 4) -> list[dict]:
    """Runs every (problem, completion) program; one result dict per problem, in order."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda pc: run_one(pc[0], pc[1], timeout), zip(problems, completions)))


def pass_at_1(results: list[dict]) -> float:
    return sum(r["passed"] for r in results) / max(len(results), 1)


def evaluate_humaneval(model, tokenizer, data: Path, cfg: HumanEvalConfig, limit: int = 0,
                       batch_size: int = 8) -> dict:
    from training.evaluate.scoring import greedy

    problems = load(Path(data) / "HumanEval.jsonl.gz")
    problems = problems[:limit] if limit else problems
    outputs = greedy(model, [tokenizer.encode(p["prompt"]) for p in problems], cfg.max_new_tokens, batch_size)
    completions = [cut(tokenizer.decode(ids)) for ids in outputs]
    results = execute(problems, completions, cfg.timeout, cfg.workers)
    return {"pass@1": pass_at_1(results), "n": len(results),
            "timed_out": sum(r["timed_out"] for r in results),
            "samples": [{"task_id": p["task_id"], "completion": c[:300], "passed": r["passed"]}
                        for p, c, r in list(zip(problems, completions, results))[:5]]}
