"""The whole pipeline offline on local Spark, on content made on this machine.

    python -m jobs.demo --root runs/demo [--recipe R.toml] [--set section.key=value ...]

Steps: pydoc pages served on 127.0.0.1 -> WARC (`jobs.demo_input`) -> ingest -> extract -> langid -> dedup ->
tokenize (packed shards in `<root>/shards`). Each stage
runs through its job's `main`, in one Spark session, and writes `<root>/<stage>/`. At the end a
table of the stages is printed with where the output is, and `<root>/report.html` is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from jobs import dedup, demo_input, extract, ingest, langid, report, tokenize
from pipeline import cli
from pipeline.config import Recipe
from pipeline.spark import spark_session

DEMO_RECIPE = Path(__file__).resolve().parent.parent / "pipeline" / "recipes" / "demo.toml"


def stage_argv(args: argparse.Namespace, inputs: list[str], output: str) -> list[str]:
    argv = ["--input", *inputs, "--output", output]
    if args.recipe:
        argv += ["--recipe", args.recipe]
    for item in args.set:
        argv += ["--set", item]
    return argv


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="jobs.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/demo")
    parser.add_argument("--recipe", default=str(DEMO_RECIPE))
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--pages", type=int, default=300)
    args = parser.parse_args(argv)
    cli.setup_logging()
    root, started = Path(args.root).resolve(), time.time()
    warc = demo_input.main(["--out", str(root / "input"), "--pages", str(args.pages)])
    recipe = Recipe.load(args.recipe, args.set)
    results = {}
    with spark_session("demo", recipe.section("spark")):
        results["ingest"] = ingest.main(stage_argv(args, [str(warc)], str(root / "ingest")))
        results["extract"] = extract.main(stage_argv(args, [str(root / "ingest")], str(root / "extract")))
        results["langid"] = langid.main(stage_argv(args, [str(root / "extract")], str(root / "langid")))
        results["dedup"] = dedup.main(stage_argv(args, [str(root / "langid")], str(root / "dedup")))
        results["tokenize"] = tokenize.main(stage_argv(args, [str(root / "dedup")], str(root / "shards")))
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
    main()
