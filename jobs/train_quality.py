"""Train-quality: a fastText quality classifier from the recipe's positive and negative sources.

    python -m jobs.train_quality --output runs/demo/train-quality \
        --set 'train_quality.positives=["runs/demo/langid"]' --set 'train_quality.negatives=["runs/boilerplate"]'

Sources are stage folders (their `kept/`) or Parquet paths with a `text` column (`--input` adds positives).
A deterministic share of documents (`held_out`, by text hash) is kept out of training; the output folder
gets `model.bin`, and `_stats.json` with the held-out ROC AUC and accuracy (local output paths: fastText
writes plain files). Use the model with `--set quality.classifier=<output>/model.bin`.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from pipeline import cli, io
from stages.quality.classifier import evaluate, fasttext_line, is_held_out, train


def read_texts(spark, paths: tuple[str, ...], limit: int) -> list[str]:
    texts = []
    for path in paths:
        df = io.read_stage(spark, path).where("text IS NOT NULL AND length(text) > 0").select("text")
        texts += [row.text for row in df.limit(limit - len(texts)).collect()]
    return texts


def main(argv: list[str] | None = None) -> dict:
    from pipeline.spark import spark_session

    args = cli.stage_args("train_quality", __doc__.splitlines()[0], input_required=False).parse_args(argv)  # sources: recipe
    recipe, started = cli.load(args), time.time()
    config = recipe.section("train_quality")
    with spark_session("train_quality", recipe.section("spark"), args.master) as spark:
        labelled = [(1, t) for t in read_texts(spark, (*config.positives, *(args.input or ())), config.max_docs_per_class)]
        labelled += [(0, t) for t in read_texts(spark, config.negatives, config.max_docs_per_class)]
        with io.staged_output(spark, args.output) as tmp:
            stats = fit(labelled, config, Path(tmp))
            stats["seconds"] = round(time.time() - started, 3)
            io.write_json(spark, f"{tmp}/_stats.json", stats)
            io.write_json(spark, f"{tmp}/_config.json", {"stage": "train_quality", "output": io.absolute(args.output),
                                                         **cli.run_config(recipe, args, "train_quality")})
    print(f"[train_quality] {stats['train_docs']} train docs; held out {stats['held_out']['docs']}: "
          f"ROC AUC {stats['held_out']['roc_auc']}, accuracy {stats['held_out']['accuracy']} -> {args.output}/model.bin")
    return stats


def fit(labelled: list[tuple[int, str]], config, folder: Path) -> dict:
    """Splits, trains, saves `model.bin` into `folder` and returns the stats."""
    held = [(y, t) for y, t in labelled if is_held_out(t, config.held_out, config.seed)]
    rest = [(y, t) for y, t in labelled if not is_held_out(t, config.held_out, config.seed)]
    random.Random(config.seed).shuffle(rest)  # fastText reads in order: mix the classes
    folder.mkdir(parents=True, exist_ok=True)
    lines = folder / "_train.txt"
    lines.write_text("".join(fasttext_line(y, t, config.max_chars) + "\n" for y, t in rest))
    model = train(lines, config)
    lines.unlink()
    model.save_model(str(folder / "model.bin"))
    return {"stage": "train_quality", "positives": sum(y for y, _ in labelled), "negatives": sum(1 - y for y, _ in labelled),
            "train_docs": len(rest), "held_out": evaluate(model, [t for _, t in held], [y for y, _ in held], config.max_chars)}


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
