"""Extract: HTML pages (ingest's `kept/`) -> main text, title, date and host with trafilatura.

    python -m jobs.extract --input runs/demo/ingest --output runs/demo/extract [--set extract.favor_recall=true]
    spark-submit jobs/extract.py --input ... --output ...

Pages with no main text go to `rejected/` (`no_text`, `extract_error`). The input stage folder must
have `_SUCCESS`.
"""

from __future__ import annotations

from pipeline import cli, io, runner
from pipeline.spark import spark_session
from stages.extract import Extractor


def main(argv: list[str] | None = None) -> dict:
    args = cli.stage_args("extract", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    with spark_session("extract", recipe.section("spark"), args.master) as spark:
        pages = io.read_stage(spark, args.input[0])
        docs = runner.apply(pages, Extractor(recipe.section("extract")), recipe.section("spark").arrow_batch_rows)
        stats = io.write_split(docs, args.output, stage="extract", config=cli.run_config(recipe, args, "extract"),
                               bytes_in=io.input_bytes(spark, [f"{args.input[0]}/kept"]))
    cli.report(stats, args.output)
    return stats


if __name__ == "__main__":
    main()
