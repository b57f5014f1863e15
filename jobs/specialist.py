"""Specialist data (Code-Qwen, Math-Qwen): a code- or math-heavy pretraining mixture and its SFT data.

    python -m jobs.specialist code --root runs/demo [--code-input DIR ...] [--set section.key=value ...]
    python -m jobs.specialist math --root runs/demo [--math-input gsm8k/train.jsonl ...]

The Qwen report builds Code-Qwen and Math-Qwen by continued pretraining of the base model on a
code- or math-heavy mixture, then SFT. This job makes the data, from the web documents the demo
pipeline kept (`<root>/decontam`), into `<root>/<kind>-qwen/`:

- code: source files (default: this Python's standard library) -> `code/` (jobs.ingest_code: size,
  line-length, alphanumeric and auto-generated filters) -> `dedup/` -> `upsample/` (web + code to the
  recipe's token shares, `pipeline/recipes/code_qwen.toml`) -> `shards/` (jobs.tokenize).
- math: worked math problems (default: GSM8K train, question/answer records) -> `mix/` (jobs.mix_instructions:
  ChatML conversations, decontaminated, mixed into the web stream at `mix.pretrain_ratio` as source
  "math", and `mix/sft` shards for the SFT stage) -> `shards/`.

Then `training.train --init <base>` continues pretraining on `shards/` and `training.align.sft` fine-tunes
(`make code-qwen`, `make math-qwen`).
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

from jobs import dedup, demo, ingest_code, mix_instructions, tokenize, upsample
from pipeline.config import load_recipe
from pipeline.spark import spark_session

RECIPES = Path(__file__).resolve().parent.parent / "pipeline" / "recipes"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jobs.specialist", description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("code", "math"))
    p.add_argument("--root", default="runs/demo", help="a demo-pipeline output root (reads <root>/decontam)")
    p.add_argument("--recipe", help="default: pipeline/recipes/<kind>_qwen.toml")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--code-input", nargs="*", default=[sysconfig.get_paths()["stdlib"]])
    p.add_argument("--math-input", nargs="*", default=[str(demo.SHARED_DATA / "gsm8k" / "train.jsonl")])
    args = p.parse_args(argv)
    args.recipe = args.recipe or str(RECIPES / f"{args.kind}_qwen.toml")
    return args


def code_data(args: argparse.Namespace, web: Path, out: Path) -> dict:
    results = {"code": ingest_code.main(demo.stage_argv(args, args.code_input, str(out / "code")))}
    results["dedup"] = dedup.main(demo.stage_argv(args, [str(out / "code")], str(out / "dedup")))
    results["upsample"] = upsample.main(demo.stage_argv(args, [str(web), str(out / "dedup")], str(out / "upsample")))
    results["tokenize"] = tokenize.main(demo.stage_argv(args, [str(out / "upsample")], str(out / "shards")))
    return results


def math_data(args: argparse.Namespace, web: Path, out: Path) -> dict:
    mix = mix_instructions.main(demo.stage_argv(args, args.math_input, str(out / "mix"))
                                + demo.benchmark_sets(demo.SHARED_DATA) + ["--pretrain", str(web)])
    results = {"mix": mix["pretrain"], "sft": mix["sft"]}
    results["tokenize"] = tokenize.main(demo.stage_argv(args, [str(out / "mix" / "pretrain")], str(out / "shards")))
    return results


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    root = Path(args.root).resolve()
    web, out = root / "decontam", root / f"{args.kind}-qwen"
    if not (web / "_SUCCESS").exists():
        raise SystemExit(f"jobs.specialist: {web} is not a finished stage; run `make demo` (or the pipeline) first")
    with spark_session(f"{args.kind}-qwen", load_recipe(args.recipe, args.set).section("spark")):
        results = (code_data if args.kind == "code" else math_data)(args, web, out)
    shares = results["tokenize"]["manifest"]["splits"]["train"]["tokens_per_source"]
    total = sum(shares.values()) or 1
    print(f"[{args.kind}-qwen] shards in {out / 'shards'}: " + ", ".join(
        f"{source} {n:,} tokens ({n / total:.0%})" for source, n in sorted(shares.items())))
    return results


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
