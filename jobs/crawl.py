"""Crawl: seed URLs -> rounds of polite fetching -> WARC files for ingest, plus a crawl log.

    python -m jobs.crawl --seeds seeds.txt --output runs/crawl [--set crawl.max_pages=500 ...] [--fresh]

Each round: the frontier (`frontier/rNNNN/`, Parquet partitioned by host group) is fetched by one
Spark task per host group (`stages.crawl.task.crawl_group`, threads inside), which commits segments
`warc/rNNNN-bGGGGG-sSSSS.warc.gz`, `links/...parquet` and `log/...parquet` (the log last, as the
segment's marker) every `crawl.checkpoint_pages` pages; the next frontier is the new links minus
every URL already in a frontier or fetched (the seen-set), capped per host and overall.
Resumable: a frontier is committed with `_SUCCESS` and a round's pending URLs are its frontier minus
its logged URLs, so running the same command again after a kill refetches only the pages of
uncommitted segments and never writes a WARC record twice; `_stats.json`, `_config.json` and
`_SUCCESS` are written when the crawl ends.
Output folders must be on a file system every executor sees (local disk in local mode, NFS), or a URI (s3a://, gs://, hdfs://:
segments are staged locally and uploaded at each commit; the driver needs the Hadoop connector, as every stage does).
"""

from __future__ import annotations

import argparse
import time

from pipeline import cli, io
from pipeline.hadoop import HadoopFS
from pipeline.spark import spark_session
from pipeline.version import code_version
from stages.crawl.task import CrawlConfig, crawl_group
from stages.crawl.frontier import Scope, host_of, normalize

FRONTIER_COLUMNS = ("url", "host", "depth", "parent")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="jobs.crawl", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=None, help="file of seed URLs, one a line (and/or crawl.seeds)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--recipe", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--master", default=None)
    parser.add_argument("--fresh", action="store_true", help="delete OUTPUT first instead of resuming")
    args = parser.parse_args(argv)
    recipe = cli.load(args)
    config, started = recipe.section("crawl"), time.time()
    seeds = read_seeds(args.seeds, config)
    out = io.absolute(args.output)
    with spark_session("crawl", recipe.section("spark"), args.master) as spark:
        fs = HadoopFS(spark)
        fs.delete(out) if args.fresh else fs.delete(f"{out}/_SUCCESS")
        groups = config.host_groups or spark.sparkContext.defaultParallelism
        seed_hosts = {host_of(u) for u in seeds}
        rounds = 0
        for round_no in range(config.max_rounds):
            if not ensure_frontier(spark, out, round_no, seeds, config, groups):
                break
            fetch_round(spark, out, round_no, config, seed_hosts)
            rounds = round_no + 1
        stats = crawl_stats(spark, out, rounds, time.time() - started)
        io.write_json(spark, f"{out}/_stats.json", stats)
        io.write_json(spark, f"{out}/_config.json", {
            "stage": "crawl", "output": out, "seeds": args.seeds, "overrides": args.set, "recipe": recipe.path,
            "config": recipe.to_dict("spark", "crawl"), "code_version": code_version()})
        fs.write_text(f"{out}/_SUCCESS", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    cli.report(stats, out)
    return stats


def read_seeds(path: str | None, config: CrawlConfig) -> list[str]:
    lines = list(config.seeds)
    if path:
        with open(path, encoding="utf-8") as f:
            lines += [line.strip() for line in f if line.strip() and not line.startswith("#")]
    seeds = list(dict.fromkeys(u for u in map(normalize, lines) if u))
    if not seeds:
        raise SystemExit("jobs.crawl: no usable seed URL (give --seeds FILE or crawl.seeds)")
    return seeds


def ensure_frontier(spark, out: str, round_no: int, seeds: list[str], config: CrawlConfig, groups: int) -> bool:
    """Commits round `round_no`'s frontier unless it is already there; False when it is empty."""
    from pyspark.sql import functions as F

    path, fs = f"{out}/frontier/r{round_no:04d}", HadoopFS(spark)
    if not fs.exists(f"{path}/_SUCCESS"):
        candidates = seed_frame(spark, seeds, config) if round_no == 0 else next_frontier(spark, out, round_no, config)
        frame = candidates.withColumn("bucket", F.pmod(F.xxhash64("host"), F.lit(groups)).cast("int"))
        with io.staged_output(spark, path) as tmp:
            frame.write.partitionBy("bucket").parquet(tmp)
    return bool(spark.read.parquet(path).limit(1).count()) if fs.glob(f"{path}/bucket=*") else False


def seed_frame(spark, seeds: list[str], config: CrawlConfig):
    rows = [(u, host_of(u), 0, None) for u in seeds if Scope(config).reject_reason(u, 0) is None]
    return spark.createDataFrame(rows[:config.max_pages], "url string, host string, depth int, parent string")


def next_frontier(spark, out: str, round_no: int, config: CrawlConfig):
    """New links of the last round, minus the seen-set, within the per-host and total page caps."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    links = spark.read.parquet(*HadoopFS(spark).glob(f"{out}/links/r{round_no - 1:04d}-*.parquet"))
    links = links.groupBy("url").agg(F.min("depth").alias("depth"), F.first("host").alias("host"),
                                     F.first("parent").alias("parent"))
    log = spark.read.parquet(f"{out}/log")
    fs = HadoopFS(spark)
    rounds = [f"{out}/frontier/r{r:04d}" for r in range(round_no) if fs.glob(f"{out}/frontier/r{r:04d}/bucket=*")]
    seen = log.select(F.col("final_url").alias("url"))
    for path in rounds:  # read one by one: Spark refuses several partitioned roots in one read
        seen = seen.union(spark.read.parquet(path).select("url"))
    fresh = links.join(seen.distinct(), "url", "left_anti")
    per_host = log.groupBy("host").agg(F.count("*").alias("done"))
    rank = F.row_number().over(Window.partitionBy("host").orderBy("depth", "url"))
    fresh = fresh.join(per_host, "host", "left").withColumn("rank", rank)
    fresh = fresh.filter(F.col("rank") <= config.max_pages_per_host - F.coalesce(F.col("done"), F.lit(0)))
    budget = max(0, config.max_pages - log.count())
    return fresh.orderBy("rank", "depth", "url").limit(budget).select(*FRONTIER_COLUMNS)


def fetch_round(spark, out: str, round_no: int, config: CrawlConfig, seed_hosts: set[str]) -> list[dict]:
    """Runs one Spark task per host group that still has URLs of the round not in a committed log."""
    frontier = spark.read.parquet(f"{out}/frontier/r{round_no:04d}")
    logged = HadoopFS(spark).glob(f"{out}/log/r{round_no:04d}-b*.parquet")
    pending = frontier.join(spark.read.parquet(*logged).select("url"), "url", "left_anti") if logged else frontier
    buckets = sorted(r["bucket"] for r in pending.select("bucket").distinct().collect())
    if not buckets:
        return []
    index = {b: i for i, b in enumerate(buckets)}
    pairs = pending.rdd.map(lambda row: (row["bucket"], row.asDict()))
    tasks = pairs.partitionBy(len(buckets), lambda b: index[b])

    def run(items):
        rows = [row for _, row in items]
        if rows:
            yield crawl_group(rows, config, seed_hosts, out, round_no, rows[0]["bucket"])

    return tasks.mapPartitions(run).collect()


def crawl_stats(spark, out: str, rounds: int, seconds: float) -> dict:
    """Counts by outcome read back from the log (the shape `cli.report` prints)."""
    from pyspark.sql import functions as F

    fs, rows = HadoopFS(spark), []
    if fs.glob(f"{out}/log/*.parquet"):
        log = spark.read.parquet(f"{out}/log")
        rows = log.groupBy("outcome").agg(F.count("*").alias("n"), F.sum("bytes").alias("bytes")).collect()
    by = {r["outcome"]: r["n"] for r in sorted(rows, key=lambda r: -r["n"])}
    warcs = fs.files(f"{out}/warc", "*.warc.gz")
    kept = by.get("ok", 0)
    return {"stage": "crawl", "docs_in": sum(by.values()), "kept": kept, "rejected": sum(by.values()) - kept,
            "by_reason": {k: v for k, v in by.items() if k != "ok"}, "by_outcome": by, "rounds": rounds,
            "bytes_in": 0, "bytes_out": sum(n for _, n in warcs), "warc_files": len(warcs),
            "bytes_fetched": sum(r["bytes"] or 0 for r in rows), "seconds": round(seconds, 3)}


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
