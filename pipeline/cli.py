"""Command-line plumbing shared by the jobs: arguments, logging, and the run of one stage.

Every job takes the same core flags:

    python -m jobs.<stage> --input IN [IN ...] --output OUT [--recipe R.toml] [--set section.key=value ...]
                           [--master spark://host:7077]
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common.errors import UserError
from pipeline import io
from common.recipe import Recipe
from pipeline.config import load_recipe
from pipeline.spark import resolve_master
from pipeline.version import code_version


def stage_args(stage: str, description: str, input_required: bool = True,
               package: str = "jobs") -> argparse.ArgumentParser:
    """The common flags; training jobs whose sources come from the recipe pass input_required=False."""
    parser = argparse.ArgumentParser(prog=f"{package}.{stage}", description=description)
    parser.add_argument("--input", nargs="+", required=input_required, help="input path(s), globs or stage folder")
    parser.add_argument("--output", required=True, help=f"output folder, e.g. runs/demo/{stage}")
    parser.add_argument("--recipe", default=None, help="TOML recipe (default: pipeline/recipes/default.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one recipe value (repeatable)")
    parser.add_argument("--master", default=None, help="Spark master URL (default: $MASTER or local[*])")
    return parser


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("py4j").setLevel(logging.WARNING)


def load(args: argparse.Namespace) -> Recipe:
    """The recipe, after the local inputs were checked: both fail in a second, before Spark starts."""
    setup_logging()
    check_local_inputs(getattr(args, "input", None) or [])
    return load_recipe(args.recipe, args.set)


def check_local_inputs(inputs: list[str]) -> None:
    """Raises `UserError` for a local `--input` path that does not exist or a glob that matches
    nothing; remote URIs (`hdfs://`, `s3a://`) are left to the job."""
    for item in inputs:
        path = item.removeprefix("file://")
        if "://" in path:
            continue
        if glob.has_magic(path) and not glob.glob(path):
            raise UserError(f"--input {item}: the pattern matches no file")
        if not glob.has_magic(path) and not Path(path).exists():
            raise UserError(f"--input {item}: no such file or folder")


def run_config(recipe: Recipe, args: argparse.Namespace, *sections: str) -> dict:
    """What `_config.json` records besides stage and output."""
    return {
        "input": args.input, "recipe": recipe.path, "overrides": args.set,
        "config": recipe.to_dict("spark", *sections), "code_version": code_version(),
        "master": resolve_master(recipe.section("spark"), args.master),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def report(stats: dict, output: str) -> None:
    """Prints a short human summary of a finished stage."""
    reasons = ", ".join(f"{k}={v}" for k, v in stats["by_reason"].items()) or "none"
    print(f"[{stats['stage']}] {stats['docs_in']} in -> {stats['kept']} kept, {stats['rejected']} rejected "
          f"({reasons}); {stats['bytes_in']:,} B in -> {stats['bytes_out']:,} B out in {stats['seconds']} s")
    print(f"[{stats['stage']}] output: {output}")


def run_record_stage(name: str, make_stage: Callable, description: str, argv: list[str] | None,
                     sections: tuple[str, ...] = (), totals: tuple[str, ...] = ()) -> dict:
    """The whole job of a per-record stage: read a finished stage, apply, write kept/rejected, report.

    `make_stage` builds the stage from the recipe section called `name`, and from the other recipe
    `sections` the stage reads, passed by name (`make_stage(config, **{section: its config})`);
    `_config.json` records them all. `totals` names numeric columns whose sums over all rows (kept and
    rejected) `_stats.json` carries under "totals" (e.g. the safety job's `pii_<kind>` counts).
    """
    from pipeline import runner
    from pipeline.spark import spark_session

    args = stage_args(name, description).parse_args(argv)
    recipe = load(args)
    stage = make_stage(recipe.section(name), **{section: recipe.section(section) for section in sections})
    with spark_session(name, recipe.section("spark"), args.master) as spark:
        docs = io.read_stage(spark, args.input[0])
        judged = runner.apply(docs, stage, recipe.section("spark").arrow_batch_rows)
        stats = io.write_split(judged, args.output, stage=name, config=run_config(recipe, args, name, *sections),
                               bytes_in=io.input_bytes(spark, [f"{args.input[0]}/kept"]), totals=totals)
    report(stats, args.output)
    return stats

