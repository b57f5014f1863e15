"""Train-LID: a custom fastText language-ID model from labelled text, with held-out accuracy.

    python -m jobs.train_lid --output runs/demo/train-lid \
        --set 'train_lid.sources={en = ["../shared/data/udhr-nltk/udhr2/eng.txt"], fr = ["...fra.txt"]}'

Sources per language code are text files, folders or globs (one paragraph a line) or finished stage
folders (their `text`). A deterministic share of lines (`held_out`, by a hash of the text) is kept out
of training; `_stats.json` reports accuracy on it, overall and per language. The output folder gets
`model.bin`, usable as `--set langid.model=<output>/model.bin`. Local output paths only.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from pipeline import cli, io
from pipeline.hadoop import HadoopFS
from stages.quality.classifier import is_held_out, lid_accuracy, lid_line, train_lid


def read_lines(spark, paths: tuple[str, ...], config) -> list[str]:
    from pyspark.sql import functions as F

    lines = []
    for path in paths:
        if HadoopFS(spark).exists(f"{path}/_SUCCESS"):
            df = io.read_stage(spark, path).select(F.explode(F.split("text", "\n")).alias("value"))
        else:
            df = spark.read.text(path)
        df = df.where(F.length(F.trim("value")) >= config.min_chars)
        lines += [r.value.strip() for r in df.limit(config.max_lines_per_lang - len(lines)).collect()]
    return lines


def main(argv: list[str] | None = None) -> dict:
    from pipeline.spark import spark_session

    args = cli.stage_args("train_lid", __doc__.splitlines()[0], input_required=False).parse_args(argv)  # sources: recipe
    recipe, started = cli.load(args), time.time()
    config = recipe.section("train_lid")
    with spark_session("train_lid", recipe.section("spark"), args.master) as spark:
        labelled = [(lang, text) for lang, paths in config.sources.items() for text in read_lines(spark, paths, config)]
        held = [pair for pair in labelled if is_held_out(pair[1], config.held_out, config.seed)]
        rest = [pair for pair in labelled if not is_held_out(pair[1], config.held_out, config.seed)]
        random.Random(config.seed).shuffle(rest)
        with io.staged_output(spark, args.output) as tmp:
            Path(tmp).mkdir(parents=True, exist_ok=True)
            (Path(tmp) / "_train.txt").write_text("".join(lid_line(lang, text) + "\n" for lang, text in rest))
            model = train_lid(Path(tmp) / "_train.txt", config)
            (Path(tmp) / "_train.txt").unlink()
            model.save_model(f"{tmp}/model.bin")
            stats = {"stage": "train_lid", "train_lines": len(rest), "held_out": lid_accuracy(model, held),
                     "seconds": round(time.time() - started, 3)}
            io.write_json(spark, f"{tmp}/_stats.json", stats)
            io.write_json(spark, f"{tmp}/_config.json", {"stage": "train_lid", "output": io.absolute(args.output),
                                                         **cli.run_config(recipe, args, "train_lid")})
    print(f"[train_lid] {len(rest)} lines; held-out accuracy {stats['held_out']['accuracy']} "
          f"on {stats['held_out']['docs']} -> {args.output}/model.bin")
    return stats


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
