"""Tokenize: documents -> packed training shards (Qwen tokenizer, rows of seq_len + 1 tokens).

    python -m jobs.tokenize --input runs/demo/extract --output runs/demo/shards [--set tokenize.seq_len=1024]
    spark-submit dist/submit.py tokenize --input ... --output ...

Reads any finished stage with `id`, `text` (and `source`); writes `train/`, `valid/` and
`manifest.json` (see pipeline/shards.py). Documents that tokenize to nothing are counted in
`_stats.json` as `empty`.
"""

from __future__ import annotations

from pipeline import cli, io, shards
from pipeline.spark import spark_session


def main(argv: list[str] | None = None) -> dict:
    args = cli.stage_args("tokenize", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    with spark_session("tokenize", recipe.section("spark"), args.master) as spark:
        docs = io.read_stage(spark, args.input[0])
        stats = shards.tokenize_and_write(docs, args.output, recipe.section("tokenize"),
                                          cli.run_config(recipe, args, "tokenize"))
    splits = stats["manifest"]["splits"]
    print(f"[tokenize] {stats['docs_in']} docs -> {splits['train']['rows']} train + {splits['valid']['rows']} valid "
          f"rows of {stats['manifest']['row_width']} tokens (packing efficiency "
          f"{splits['train']['packing_efficiency']}); output: {args.output}")
    return stats


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
