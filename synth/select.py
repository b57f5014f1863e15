"""Diverse selection of instructions (Qwen2 sec. 4.1.1): near-duplicates removed with MinHash, then at
most `synth.max_per_tag` instructions per tag (a `tag` column, else the instruction's first word).

    python -m synth.select --input ../shared/data/self-instruct/seed_tasks.jsonl --output runs/demo/synth/select \\
        [--set synth.dedup_threshold=0.7 --set synth.max_per_tag=50]
    spark-submit synth/select.py --input ... --output ...

Instruction sets are small next to web data (thousands to millions of rows), so all rows go through one
task in `id` order, which makes "the earliest of a near-duplicate group is kept" well defined; for
web-scale text use jobs/dedup.py. Writes kept / rejected (near_duplicate, tag_cap) rows with
pipeline/io.py, so synth.evolve (or anything reading a stage folder) can follow.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline import cli, io, schemas
from pipeline.spark import spark_session
from stages import synthesis
from stages.base import VERDICT_FIELDS, drop, keep
from synth.engine import job_args, read_prompts


def select(df, config):
    """Judged rows: `drop_reason` near_duplicate / tag_cap / None, computed over all rows in one task."""
    out_schema = pa.schema([*(f for f in schemas.arrow(df.schema) if f.name not in ("drop_reason", "drop_detail")),
                            *VERDICT_FIELDS])

    def run(batches):
        rows = [r for b in batches for r in b.to_pylist()]
        texts = [synthesis.problem_text(r) for r in rows]
        reasons = synthesis.select_diverse(texts, config.dedup_threshold, config.max_per_tag,
                                           [r.get("tag") for r in rows], config.shingle_ngram)
        for start in range(0, len(rows), 1024):
            chunk = [keep(r) if why is None else drop(r, why)
                     for r, why in zip(rows[start:start + 1024], reasons[start:start + 1024])]
            yield pa.RecordBatch.from_pylist(chunk, schema=out_schema)
    return df.repartition(1).sortWithinPartitions("id").mapInArrow(run, schemas.spark(out_schema))


def main(argv: list[str] | None = None) -> dict:
    args = job_args("select", __doc__.splitlines()[0], model=False).parse_args(argv)
    recipe = cli.load(args)
    with spark_session("select", recipe.section("spark"), args.master) as spark:
        judged = select(read_prompts(spark, args.input, args.limit), recipe.section("synth"))
        stats = io.write_split(judged, args.output, stage="select", config=cli.run_config(recipe, args, "synth"))
    cli.report(stats, args.output)
    return stats


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
