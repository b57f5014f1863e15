"""Train-KenLM: per-language 5-gram models on reference text, with cc_net's normalisation.

    make kenlm   # once: builds lmplz / build_binary into .cache/kenlm/bin
    python -m jobs.train_kenlm --output runs/demo/kenlm \
        --set 'train_kenlm.sources={en = ["../shared/data/tinyshakespeare/input.txt"]}'

Sources per language are text files, folders or globs (one paragraph a line), or finished stage folders
(their `text` column, split into lines). Spark reads and normalises them (`stages.quality.perplexity.model_lines`,
the same tokens the scorer sees); the driver streams the lines into `lmplz`. The output folder gets
`<lang>.bin` per language and `_stats.json`; point `perplexity.models` at them. Local output paths only.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline import cli, io
from pipeline.hadoop import HadoopFS
from stages.quality.perplexity import model_lines, train_lm


def source_lines(spark, path: str):
    """A DataFrame of raw lines: a stage folder's `text` split on newlines, or text files."""
    from pyspark.sql import functions as F

    fs = HadoopFS(spark)
    if fs.exists(f"{path}/_SUCCESS"):
        return io.read_stage(spark, path).select(F.explode(F.split("text", "\n")).alias("value"))
    return spark.read.text(fs.glob(path) or path)  # globs expanded here: Spark logs a stack trace for a glob path


def lines_for(spark, paths: tuple[str, ...], lang: str):
    frames = [source_lines(spark, p) for p in paths]
    rdd = frames[0].rdd if len(frames) == 1 else spark.sparkContext.union([f.rdd for f in frames])
    return rdd.flatMap(lambda row: model_lines(row.value or "", lang)).toLocalIterator()


def main(argv: list[str] | None = None) -> dict:
    from pipeline.spark import spark_session

    args = cli.stage_args("train_kenlm", __doc__.splitlines()[0], input_required=False).parse_args(argv)  # sources: recipe
    recipe, started = cli.load(args), time.time()
    config = recipe.section("train_kenlm")
    if not config.sources:
        raise SystemExit("train_kenlm.sources is empty: name reference text per language in the recipe")
    with spark_session("train_kenlm", recipe.section("spark"), args.master) as spark:
        with io.staged_output(spark, args.output) as tmp:
            Path(tmp).mkdir(parents=True, exist_ok=True)
            models = {lang: train_lm(lines_for(spark, paths, lang), Path(tmp) / f"{lang}.bin", config, Path(tmp))
                      for lang, paths in config.sources.items()}
            stats = {"stage": "train_kenlm", "order": config.order, "models": models,
                     "seconds": round(time.time() - started, 3)}
            io.write_json(spark, f"{tmp}/_stats.json", stats)
            io.write_json(spark, f"{tmp}/_config.json", {"stage": "train_kenlm", "output": io.absolute(args.output),
                                                         **cli.run_config(recipe, args, "train_kenlm")})
    for lang, m in models.items():
        print(f"[train_kenlm] {lang}: {m['lines']} lines, {m['tokens']} tokens -> {args.output}/{lang}.bin")
    return stats


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
