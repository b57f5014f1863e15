"""Ingest: WARC / WARC.gz / WET / ARC files -> one row per HTML page (and a rejected row per other record).

    python -m jobs.ingest --input 'data/*.warc.gz' --output runs/demo/ingest
    python -m jobs.ingest --input warc.paths.gz --set ingest.manifest_prefix=s3a://commoncrawl --output ...
    spark-submit dist/submit.py ingest --input ... --output ...

Inputs may be files, globs, folders (every archive inside) or manifest files (`*.paths[.gz]`, `*.txt`:
one path a line). Each archive is read by one task; broken files and records are rejected rows.
"""

from __future__ import annotations

from pipeline import cli, io, runner, schemas
from pipeline.spark import spark_session
from stages.warc import WarcReader


def main(argv: list[str] | None = None) -> dict:
    args = cli.stage_args("ingest", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    config = recipe.section("ingest")
    with spark_session("ingest", recipe.section("spark"), args.master) as spark:
        paths = io.list_archives(spark, args.input, config.manifest_prefix)
        files = spark.createDataFrame([(p,) for p in paths], schemas.spark(schemas.PATHS))
        files = files.repartition(max(1, len(paths)))
        pages = runner.apply(files, WarcReader(config), recipe.section("spark").arrow_batch_rows)
        stats = io.write_split(pages, args.output, stage="ingest", config=cli.run_config(recipe, args, "ingest"),
                               bytes_in=io.input_bytes(spark, paths), extra={"files": len(paths)})
    cli.report(stats, args.output)
    return stats


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
