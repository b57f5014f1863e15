"""Few-shot multiple choice by log-likelihood, on MMLU (Hendrycks et al. 2021).

    python -m training.evaluate --checkpoint runs/demo/train/final --tasks mmlu --limit 100

Data: ``<shared>/mmlu/{dev,test}/<subject>_{dev,test}.csv`` with header ``question,choice0..3,answer``
(answer 0-3). The prompt is the original MMLU format: a subject header, ``shots`` solved dev questions
of the same subject, then the question, each choice on a line as ``A. ...`` and ``Answer:``. The model's
choice is the letter whose continuation (`` A`` .. `` D``) has the highest log-likelihood, as in the
MMLU paper's evaluation code and Qwen's reports (5-shot).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

LETTERS = "ABCD"
ScoreFn = Callable[[list[tuple[str, str]]], list[float]]   # (context, continuation) pairs -> log-likelihoods


@dataclass(frozen=True)
class MMLUConfig:
    shots: int = 5                  # Qwen (2023) table 2 and Qwen2 (2024) table 2: 5-shot MMLU
    subjects: tuple[str, ...] = ()  # empty: all 57
    max_prompt_tokens: int = 2048   # fewer shots are used when the prompt would be longer


@dataclass(frozen=True)
class Item:
    question: str
    choices: tuple[str, ...]
    answer: int                     # index into choices
    subject: str = ""


def read_csv(path: Path, subject: str) -> list[Item]:
    with open(path, newline="", encoding="utf-8") as f:
        return [Item(r["question"], tuple(r[f"choice{i}"] for i in range(4)), int(r["answer"]), subject)
                for r in csv.DictReader(f)]


def load_mmlu(root: Path, split: str, subjects: tuple[str, ...] = ()) -> dict[str, list[Item]]:
    """{subject: items} of one split ('dev' or 'test'), subjects in name order."""
    files = sorted(Path(root, split).glob(f"*_{split}.csv"))
    names = [f.name[: -len(f"_{split}.csv")] for f in files]
    return {n: read_csv(f, n) for n, f in zip(names, files) if not subjects or n in subjects}


def format_item(item: Item, with_answer: bool) -> str:
    lines = [item.question] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices)]
    answer = f" {LETTERS[item.answer]}\n\n" if with_answer else ""
    return "\n".join(lines) + "\nAnswer:" + answer


def prompt(item: Item, shots: list[Item]) -> str:
    header = f"The following are multiple choice questions (with answers) about {item.subject.replace('_', ' ')}.\n\n"
    return header + "".join(format_item(s, True) for s in shots) + format_item(item, False)


def predict(context: str, n_choices: int, score: ScoreFn) -> tuple[int, list[float]]:
    """Index of the letter continuation with the highest log-likelihood, and all the scores."""
    scores = score([(context, f" {LETTERS[i]}") for i in range(n_choices)])
    return max(range(n_choices), key=scores.__getitem__), scores


def accuracy(items: list[Item], shots_of: Callable[[Item], list[Item]], score: ScoreFn) -> dict:
    """Accuracy overall and per subject; `shots_of(item)` gives the solved examples for its prompt."""
    right: dict[str, list[int]] = {}
    for item in items:
        choice, _ = predict(prompt(item, shots_of(item)), len(item.choices), score)
        right.setdefault(item.subject, []).append(int(choice == item.answer))
    flat = [r for rs in right.values() for r in rs]
    return {"accuracy": sum(flat) / max(len(flat), 1), "n": len(flat),
            "per_subject": {s: sum(r) / len(r) for s, r in right.items()}}


def model_scorer(model, tokenizer, batch_size: int = 8) -> ScoreFn:
    """A ScoreFn backed by a model: text pairs -> summed token log-likelihoods. When the pairs share
    their context and every continuation is one token (MMLU's letters), one forward scores them all."""
    from training.evaluate.scoring import loglikelihoods, next_token_logprobs

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        ids = [(tokenizer.encode(c), tokenizer.encode(x)) for c, x in pairs]
        if len({tuple(c) for c, _ in ids}) == 1 and all(len(x) == 1 for _, x in ids):
            logp = next_token_logprobs(model, ids[0][0])
            return [float(logp[x[0]]) for _, x in ids]
        return [lp for lp, _ in loglikelihoods(model, ids, batch_size)]
    return score


def evaluate_mmlu(model, tokenizer, data: Path, cfg: MMLUConfig, limit: int = 0, batch_size: int = 8) -> dict:
    """MMLU test accuracy (the first `limit` questions of each subject when limit > 0)."""
    dev, test = load_mmlu(data, "dev", cfg.subjects), load_mmlu(data, "test", cfg.subjects)
    items = [it for s in test.values() for it in (s[:limit] if limit else s)]

    def shots_of(item: Item) -> list[Item]:
        shots = dev.get(item.subject, [])[: cfg.shots]
        while shots and len(tokenizer.encode(prompt(item, shots))) > cfg.max_prompt_tokens:
            shots = shots[:-1]
        return shots
    result = accuracy(items, shots_of, model_scorer(model, tokenizer, batch_size))
    return {**result, "shots": cfg.shots}
