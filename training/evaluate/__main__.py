"""Command line of the evaluation harness (see training/evaluate/__init__.py).

    python -m training.evaluate --checkpoint runs/demo/train/final --out runs/demo/eval \\
        --tasks ppl,mmlu,gsm8k,humaneval,passkey --limit 20 \\
        --set passkey.trials=1

The recipe (default training/recipes/eval.toml) has one table per task plus ``[eval]``; ``--set
section.key=value`` overrides any key. Writes ``results.json``, ``summary.md`` and the passkey heat
maps (``passkey.png``, ``passkey_logprob.png``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

from common.recipe import ConfigError, Recipe
from training.evaluate import report
from training.evaluate.gsm8k import GSM8KConfig
from training.evaluate.humaneval import HumanEvalConfig
from training.evaluate.long_context import PasskeyConfig
from training.evaluate.multiple_choice import MMLUConfig
from training.evaluate.perplexity import PerplexityConfig

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO / "training" / "recipes" / "eval.toml"
TASKS = ("ppl", "mmlu", "gsm8k", "humaneval", "passkey")


@dataclass(frozen=True)
class EvalConfig:
    tasks: tuple[str, ...] = TASKS
    limit: int = 0                 # per task: rows (ppl), questions per subject (mmlu), problems; 0 = all
    batch_size: int = 8
    data: str = ""                 # the shared data folder; "" = $SHARED_DATA or ../shared/data
    device: str = "auto"           # auto: cuda when available
    dtype: str = "float32"         # float32 | bfloat16


SECTIONS = {"eval": EvalConfig, "ppl": PerplexityConfig, "mmlu": MMLUConfig, "gsm8k": GSM8KConfig,
            "humaneval": HumanEvalConfig, "passkey": PasskeyConfig}


def load_recipe(path: str | Path | None, overrides: list[str]) -> dict:
    """The recipe's tables by name (common.recipe rules; a base is found in training/recipes/)."""
    return Recipe.load(path, SECTIONS, overrides, recipe_dirs=(DEFAULT_RECIPE.parent,)).sections


def data_root(cfg: EvalConfig) -> Path:
    return Path(cfg.data or os.environ.get("SHARED_DATA") or REPO.parent / "shared" / "data")


def run_task(task: str, model, tokenizer, recipe: dict, out: Path) -> dict:
    from training.evaluate import gsm8k, humaneval, long_context, multiple_choice, perplexity

    e, data = recipe["eval"], data_root(recipe["eval"])
    if task == "ppl":
        return perplexity.perplexity(model, recipe["ppl"], e.limit)
    if task == "mmlu":
        return multiple_choice.evaluate_mmlu(model, tokenizer, data / "mmlu", recipe["mmlu"], e.limit, e.batch_size)
    if task == "gsm8k":
        return gsm8k.evaluate_gsm8k(model, tokenizer, data / "gsm8k", recipe["gsm8k"], e.limit, e.batch_size)
    if task == "humaneval":
        return humaneval.evaluate_humaneval(model, tokenizer, data / "humaneval", recipe["humaneval"], e.limit,
                                            e.batch_size)
    if task == "passkey":
        rows = long_context.passkey_table(model, tokenizer, recipe["passkey"])
        long_context.heatmap(rows, out / "passkey.png")
        long_context.heatmap(rows, out / "passkey_logprob.png", metric="logprob")
        return {"rows": rows, "png": ["passkey.png", "passkey_logprob.png"]}
    raise ConfigError(f"unknown task {task!r} (known: {', '.join(TASKS)})")


def load(checkpoint: str, cfg: EvalConfig):
    import torch

    from training.model.checkpoint import load_model

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    return load_model(checkpoint, dtype=getattr(torch, cfg.dtype)).to(device).eval()


def evaluate(model, tokenizer, recipe: dict, out: Path, meta: dict) -> dict:
    """Runs recipe['eval'].tasks in order; writes results.json + summary.md after each task."""
    unknown = [t for t in recipe["eval"].tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"unknown task(s) {unknown} (known: {', '.join(TASKS)})")
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for task in recipe["eval"].tasks:
        start = time.perf_counter()
        results[task] = {**run_task(task, model, tokenizer, recipe, out), "seconds": time.perf_counter() - start}
        report.write(out, results, meta)
        print(f"[eval] {task}: done in {results[task]['seconds']:.1f} s", flush=True)
    return results


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a model folder (model.safetensors + model_config.json)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--recipe", default=str(DEFAULT_RECIPE))
    p.add_argument("--tasks", help=f"comma-separated subset of {','.join(TASKS)}")
    p.add_argument("--limit", type=int, help="items per task (see [eval].limit)")
    p.add_argument("--shards", help="shards folder for ppl (ppl.shards)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sets = list(args.set)
    if args.tasks:
        sets.append("eval.tasks=[" + ",".join(f'"{t.strip()}"' for t in args.tasks.split(",") if t.strip()) + "]")
    sets += [f"eval.limit={args.limit}"] if args.limit is not None else []
    sets += [f'ppl.shards="{args.shards}"'] if args.shards else []
    recipe = load_recipe(args.recipe, sets)
    from stages.tokenize.tokenizer import QwenTokenizer

    model = load(args.checkpoint, recipe["eval"])
    meta = {"checkpoint": args.checkpoint, "tasks": ",".join(recipe["eval"].tasks), "limit": recipe["eval"].limit,
            "recipe": {k: dataclasses.asdict(v) for k, v in recipe.items()}}
    results = evaluate(model, QwenTokenizer(), recipe, Path(args.out), meta)
    print(f"[eval] {Path(args.out) / 'summary.md'}")
    return results


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
