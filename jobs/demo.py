"""The whole pipeline offline on local Spark, on content made on this machine.

    python -m jobs.demo --root runs/demo [--recipe R.toml] [--set section.key=value ...]

Steps: a crawl of the Python documentation served by pydoc on 127.0.0.1 (WARC) -> ingest -> extract -> langid ->
quality -> perplexity (an English KenLM model trained first, into `<root>/kenlm`, on public-domain English
prose: NLTK's inaugural addresses and State of the Union texts; needs `make kenlm`) -> safety -> dedup ->
line_dedup -> substring_dedup -> decontam -> upsample -> mix (instruction data in ChatML, SFT and preference
shards) -> tokenize (packed shards in `<root>/shards`). Each stage runs through its job's `main`, in one Spark
session, and writes `<root>/<stage>/`. At the end a table of the stages is printed with where the
output is, and `<root>/report.html` is written.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from jobs import (crawl, decontam, dedup, demo_input, extract, ingest, langid, line_dedup, mix_instructions, perplexity,
                  quality, report, safety, substring_dedup, tokenize, train_kenlm, upsample)
from pipeline import cli
from pipeline.config import load_recipe
from pipeline.spark import spark_session

REPO = Path(__file__).resolve().parent.parent
DEMO_RECIPE = REPO / "pipeline" / "recipes" / "demo.toml"
# Evaluation sets and instruction data: used where the real data folder is present (tests, CI, a
# checkout beside it); without it the demo decontaminates against nothing and mixes no instructions.
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))


def recipe_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--recipe", args.recipe] if args.recipe else []
    for item in args.set:
        argv += ["--set", item]
    return argv


def stage_argv(args: argparse.Namespace, inputs: list[str], output: str) -> list[str]:
    return ["--input", *inputs, "--output", output, *recipe_argv(args)]


def crawl_pydoc(args: argparse.Namespace, root: Path) -> dict:
    """Crawls the Python documentation served by pydoc on 127.0.0.1 (a real site, made on this machine)."""
    proc, base = demo_input.start_pydoc()
    try:
        seeds = root / "seeds.txt"
        root.mkdir(parents=True, exist_ok=True)
        seeds.write_text(base + "\n")
        allowed = ", ".join(f"'{pattern}'" for pattern in demo_input.crawl_scope())
        return crawl.main(["--seeds", str(seeds), "--output", str(root / "crawl"), "--fresh",
                           *recipe_argv(args), "--set", "crawl.allow_private_networks=true",
                           "--set", f"crawl.max_pages={args.pages}", "--set", "crawl.delay=0",
                           "--set", "crawl.max_depth=2", "--set", f"crawl.allowed_paths=[{allowed}]"])
    finally:
        proc.kill()
        proc.wait()


def benchmark_sets(data: Path) -> list[str]:
    """--set for decontamination against GSM8K, HumanEval and MMLU where the shared data is present."""
    if not data.is_dir():
        return []
    sets = {"gsm8k": data / "gsm8k" / "test.jsonl", "humaneval": data / "humaneval" / "HumanEval.jsonl.gz",
            "mmlu": data / "mmlu" / "test"}
    table = ", ".join(f'{k} = "{v}"' for k, v in sets.items() if v.exists())
    return ["--set", f"decontam.benchmarks={{ {table} }}"] if table else []


def kenlm_reference(data: Path) -> list[str]:
    """Reference English for the perplexity model (cc_net uses Wikipedia), where the shared data is present."""
    globs = [data / "english-pd-nltk" / name / "*.txt" for name in ("inaugural", "state_union")]
    return [str(g) for g in globs if g.parent.is_dir()]


def score_perplexity(args: argparse.Namespace, root: Path) -> dict:
    """Trains `<root>/kenlm/en.bin` on the reference text, then scores `<root>/quality` into `<root>/perplexity`
    (head / middle / tail buckets at the recipe's percentiles; none dropped unless the recipe says so)."""
    sources = ", ".join(f'"{p}"' for p in kenlm_reference(SHARED_DATA))
    train_kenlm.main(["--output", str(root / "kenlm"), *recipe_argv(args),
                      "--set", f"train_kenlm.sources={{ en = [{sources}] }}"])
    return perplexity.main(stage_argv(args, [str(root / "quality")], str(root / "perplexity"))
                           + ["--set", f'perplexity.models={{ en = "{root / "kenlm" / "en.bin"}" }}'])


def instructions(data: Path) -> list[str]:
    """Instruction data to mix in (self-instruct tasks and hh-rlhf pairs), where the shared data is present."""
    files = [data / "self-instruct" / "seed_tasks.jsonl", data / "hh-rlhf" / "harmless-base-test.jsonl.gz"]
    return [str(f) for f in files if f.exists()]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="jobs.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/demo")
    parser.add_argument("--recipe", default=str(DEMO_RECIPE))
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--pages", type=int, default=800, help="crawl page cap")
    args = parser.parse_args(argv)
    cli.setup_logging()
    root, started = Path(args.root).resolve(), time.time()
    recipe = load_recipe(args.recipe, args.set)
    results = {}
    with spark_session("demo", recipe.section("spark")):
        results["crawl"] = crawl_pydoc(args, root)
        results["ingest"] = ingest.main(stage_argv(args, [str(root / "crawl" / "warc")], str(root / "ingest")))
        results["extract"] = extract.main(stage_argv(args, [str(root / "ingest")], str(root / "extract")))
        results["langid"] = langid.main(stage_argv(args, [str(root / "extract")], str(root / "langid")))
        results["quality"] = quality.main(stage_argv(args, [str(root / "langid")], str(root / "quality")))
        scored = root / "quality"
        if kenlm_reference(SHARED_DATA):
            results["perplexity"], scored = score_perplexity(args, root), root / "perplexity"
        results["safety"] = safety.main(stage_argv(args, [str(scored)], str(root / "safety")))
        results["dedup"] = dedup.main(stage_argv(args, [str(root / "safety")], str(root / "dedup")))
        results["line_dedup"] = line_dedup.main(stage_argv(args, [str(root / "dedup")], str(root / "line_dedup")))
        results["substring_dedup"] = substring_dedup.main(stage_argv(args, [str(root / "line_dedup")],
                                                                     str(root / "substring_dedup")))
        results["decontam"] = decontam.main(stage_argv(args, [str(root / "substring_dedup")], str(root / "decontam"))
                                            + benchmark_sets(SHARED_DATA))
        results["upsample"] = upsample.main(stage_argv(args, [str(root / "decontam")], str(root / "upsample")))
        stream = root / "upsample"
        if instructions(SHARED_DATA):
            mix = mix_instructions.main(stage_argv(args, instructions(SHARED_DATA), str(root / "mix"))
                                        + benchmark_sets(SHARED_DATA) + ["--pretrain", str(stream)])
            results["mix"], stream = mix["pretrain"], root / "mix" / "pretrain"
        results["tokenize"] = tokenize.main(stage_argv(args, [str(stream)], str(root / "shards")))
    print_summary(results, root, time.time() - started)
    report.main(["--root", str(root)])
    return results


def print_summary(results: dict, root: Path, seconds: float) -> None:
    print(f"\n{'stage':<10}{'in':>8}{'kept':>8}{'rejected':>10}  top drop reasons")
    for name, s in results.items():
        top = ", ".join(f"{k} {v}" for k, v in list(s["by_reason"].items())[:3])
        print(f"{name:<10}{s['docs_in']:>8}{s['kept']:>8}{s['rejected']:>10}  {top}")
    if "tokenize" in results:
        for split, info in results["tokenize"]["manifest"]["splits"].items():
            print(f"shards/{split}: {info['rows']} rows, {info['tokens']:,} tokens, "
                  f"packing efficiency {info['packing_efficiency']}")
    print(f"\ndemo finished in {seconds:.0f} s; output in {root}")


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
