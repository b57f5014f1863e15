"""Language ID: documents -> `lang`, `lang_score`; keeps the languages of the recipe (fastText lid.176).

    python -m jobs.langid --input runs/demo/extract --output runs/demo/langid [--set 'langid.languages=["en","zh"]']
    spark-submit jobs/langid.py --input ... --output ...
"""

from __future__ import annotations

from pipeline import cli, io, runner
from pipeline.spark import spark_session
from stages.language import LanguageId


def main(argv: list[str] | None = None) -> dict:
    args = cli.stage_args("langid", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    with spark_session("langid", recipe.section("spark"), args.master) as spark:
        docs = io.read_stage(spark, args.input[0])
        judged = runner.apply(docs, LanguageId(recipe.section("langid")), recipe.section("spark").arrow_batch_rows)
        stats = io.write_split(judged, args.output, stage="langid", config=cli.run_config(recipe, args, "langid"),
                               bytes_in=io.input_bytes(spark, [f"{args.input[0]}/kept"]))
    cli.report(stats, args.output)
    return stats


if __name__ == "__main__":
    main()
