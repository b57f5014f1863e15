"""Stage inputs and outputs: listing archives, reading finished stages, committing outputs atomically.

Every stage writes one folder:

    <ROOT>/<stage>/
        kept/          Parquet (zstd): rows that go on to the next stage
        rejected/      Parquet (zstd): rows that did not, with `drop_reason` and `drop_detail`
        _stats.json    exact counts (by reason), docs and bytes in and out, seconds
        _config.json   the resolved recipe sections, input and output, code version
        _SUCCESS       written last: the folder is complete

Commit protocol: `_SUCCESS` of the old output is removed first; Spark writes everything into a hidden
sibling `.<stage>.tmp-<uuid>/` (Spark and Hadoop ignore names that start with `.` or `_`); stats and
config are written there; then the old folder is deleted, the temporary one renamed into place and
`_SUCCESS` written. A job killed at any moment leaves either no folder, a folder without `_SUCCESS`
(which `read_stage` refuses) or a hidden temporary folder (removed by the next run). A rerun
replaces the folder; it never appends.

Records whose stage raised are `stage_error` rows (`stages/base.py`); when they pass
`spark.max_error_fraction` of the rows in, `write_split` raises `JobFailed` before the commit, naming
the commonest errors, and the old output (if any) stays without `_SUCCESS`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator

import pyarrow as pa

from common.errors import JobFailed, UserError
from pipeline.hadoop import HadoopFS, plain
from pipeline.spark import SparkConfig
from stages.base import DROP_REASON, STAGE_ERROR

log = logging.getLogger(__name__)

ARCHIVE_PATTERNS = ("*.warc", "*.warc.gz", "*.arc", "*.arc.gz", "*.wet", "*.wet.gz")
MANIFEST_SUFFIXES = (".paths", ".paths.gz", ".txt", ".lst")
KEPT = f"{DROP_REASON} IS NULL"  # SQL for the rows a stage kept (the verdict convention: stages/base.py)


class StageNotReady(UserError):
    """An input folder that a stage must not read: missing, or without `_SUCCESS`."""


def list_archives(spark, inputs: list[str], manifest_prefix: str = "") -> list[str]:
    """Expands paths, globs, folders and manifest files (one path a line) into archive paths."""
    fs, found = HadoopFS(spark), []
    for spec in inputs:
        if spec.endswith(MANIFEST_SUFFIXES):
            found += _manifest(fs, spec, manifest_prefix)
            continue
        matches = fs.glob(spec)
        if not matches:
            raise FileNotFoundError(f"no input matches {spec!r}")
        for match in matches:
            found += _archives_in(fs, match) if fs.is_dir(match) else [match]
    return sorted(set(found))


def _archives_in(fs: HadoopFS, folder: str) -> list[str]:
    return [path for pattern in ARCHIVE_PATTERNS for path, _ in fs.files(folder, pattern)]


def _manifest(fs: HadoopFS, path: str, prefix: str) -> list[str]:
    data = fs.read_bytes(path)
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    lines = [line.strip() for line in data.decode("utf-8").splitlines()]
    return [_join(prefix, line) for line in lines if line and not line.startswith("#")]


def _join(prefix: str, path: str) -> str:
    if not prefix or "://" in path or path.startswith("/"):
        return path
    return prefix.rstrip("/") + "/" + path.lstrip("/")


def read_stage(spark, path: str, part: str = "kept"):
    """Reads `kept/` (or `rejected/`) of a finished stage folder, or plain Parquet files.

    A stage folder without `_SUCCESS` is refused with StageNotReady: it is being written, or the
    job that wrote it died.
    """
    fs = HadoopFS(spark)
    if fs.exists(f"{path}/{part}") or fs.exists(f"{path}/_config.json"):
        if not fs.exists(f"{path}/_SUCCESS"):
            raise StageNotReady(
                f"{path} has no _SUCCESS: the stage that writes it did not finish (still running, or "
                f"killed). Rerun that stage; its rerun replaces the folder.")
        return spark.read.parquet(f"{path}/{part}")
    if not fs.glob(path):
        raise StageNotReady(f"input {path} does not exist: run the stage that writes it first")
    return spark.read.parquet(path)


def input_bytes(spark, paths: list[str]) -> int:
    """Total size in bytes of files or folders (the `bytes_in` of a stage)."""
    fs = HadoopFS(spark)
    return sum(fs.size(p) for p in paths)


@contextlib.contextmanager
def staged_output(spark, output: str) -> Iterator[str]:
    """Yields a hidden temporary folder to write into; on success it replaces `output` atomically.

    `_SUCCESS` of the old output is removed first and written last (see the module docstring).
    On an exception the temporary folder is removed and the old output stays without `_SUCCESS`.
    """
    fs, output = HadoopFS(spark), absolute(output)
    fs.delete(f"{output}/_SUCCESS")
    parent, _, name = output.rpartition("/")
    for stale in fs.siblings(output, f".{name}.tmp-"):
        fs.delete(stale)
    tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        yield tmp
    except BaseException:
        fs.delete(tmp)
        raise
    fs.delete(output)
    fs.rename(tmp, output)
    fs.write_text(f"{output}/_SUCCESS", json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))


def write_split(df, output: str, *, stage: str, config: dict, bytes_in: int = 0, extra: dict | None = None,
                parts: dict | None = None, totals: tuple[str, ...] = ()):
    """Writes judged rows as `kept/` + `rejected/` with stats and config, committed atomically.

    `parts` ({folder: DataFrame}) are written beside them in the same commit (e.g. dedup's `index/`).
    `totals` names numeric columns whose sums over all written rows `_stats.json` carries under "totals"
    (e.g. the safety job's `pii_<kind>` counts), read back from the files like the counts.
    Returns the stats dict that was written to `_stats.json`.
    """
    spark, started = df.sparkSession, time.time()
    verdict = f"CASE WHEN {KEPT} THEN 'kept' ELSE 'rejected' END"
    with staged_output(spark, output) as tmp:
        write_partitioned(df, verdict, tmp, ("kept", "rejected"))
        for name, part in (parts or {}).items():
            part.write.parquet(f"{tmp}/{name}")
        stats = _stats(spark, tmp, stage, bytes_in, time.time() - started, extra or {})
        if totals:
            stats["totals"] = _totals(spark, tmp, totals)
        check_errors(spark, tmp, stats, recorded_error_limit(config))
        write_json(spark, f"{tmp}/_stats.json", stats)
        write_json(spark, f"{tmp}/_config.json", {"stage": stage, "output": absolute(output), **config})
    log.info("%s: kept %d, rejected %d -> %s", stage, stats["kept"], stats["rejected"], output)
    return stats


def _totals(spark, tmp: str, columns: tuple[str, ...]) -> dict[str, int]:
    from pyspark.sql import functions as F

    rows = spark.read.parquet(f"{tmp}/kept", f"{tmp}/rejected")
    sums = rows.agg(*(F.coalesce(F.sum(c), F.lit(0)).alias(c) for c in columns)).first()
    return {c: int(sums[c]) for c in columns}


def recorded_error_limit(config: dict) -> float:
    """`spark.max_error_fraction` as the job recorded it in its config (the default otherwise)."""
    spark = (config.get("config") or {}).get("spark") or {}
    return float(spark.get("max_error_fraction", SparkConfig.max_error_fraction))


def check_errors(spark, tmp: str, stats: dict, limit: float) -> None:
    """Raises `JobFailed` when `stage_error` rows pass `limit` of the rows in (see the module docstring)."""
    error_limit(stats["stage"], stats["by_reason"].get(STAGE_ERROR, 0), stats["docs_in"], limit,
                lambda: _commonest(spark, tmp))


def _commonest(spark, tmp: str) -> str:
    from pyspark.sql import functions as F

    top = (spark.read.parquet(f"{tmp}/rejected").where(F.col("drop_reason") == STAGE_ERROR)
           .groupBy("drop_detail").count().orderBy(F.desc("count")).limit(3).collect())
    return "; ".join(f"{r['count']} x {r['drop_detail']}" for r in top)


def error_limit(stage: str, errors: int, docs_in: int, limit: float, commonest=lambda: "") -> None:
    """Logs records that raised; raises `JobFailed` when they pass `limit` (a fraction of `docs_in`),
    with `commonest()` (read only then) in the message."""
    if not errors:
        return
    if errors <= limit * docs_in:
        log.warning("%s: %d records raised errors (rejected, not failed)", stage, errors)
        return
    detail = commonest()
    raise JobFailed(f"{stage}: {errors} of {docs_in} records raised errors ({errors / max(docs_in, 1):.1%}), "
                    f"above spark.max_error_fraction = {limit}" + (f"; commonest: {detail}" if detail else ""))


def write_partitioned(df, expression: str, tmp: str, parts: tuple[str, ...], **options) -> None:
    """One Spark write split into `<tmp>/<part>/` folders by a SQL expression (all parts always exist)."""
    from pyspark.sql import functions as F

    fs = HadoopFS(df.sparkSession)
    writer = df.withColumn("_part", F.expr(expression)).write.partitionBy("_part")
    for key, value in options.items():
        writer = writer.option(key, value)
    writer.parquet(f"{tmp}/_data")
    for part in parts:
        if fs.exists(f"{tmp}/_data/_part={part}"):
            fs.rename(f"{tmp}/_data/_part={part}", f"{tmp}/{part}")
        else:
            df.sparkSession.createDataFrame([], df.schema).write.parquet(f"{tmp}/{part}")
    fs.delete(f"{tmp}/_data")


TEXT_DOCS = pa.schema([pa.field("id", pa.string()), pa.field("text", pa.string()), pa.field("source", pa.string())])


def write_docs(spark, rows: list[tuple], output: str, schema: pa.Schema = TEXT_DOCS) -> str:
    """Turns rows (tuples in `schema` order; default id, text, source) into a finished stage folder
    whose rows are all kept: how outside data (or a test's) enters the pipeline."""
    from pipeline import runner, schemas
    from stages.base import Identity

    df = spark.createDataFrame(rows, schemas.spark(schema))
    write_split(runner.apply(df, Identity()), output, stage="docs", config={})
    return output


def write_json(spark, path: str, obj) -> None:
    HadoopFS(spark).write_text(path, json.dumps(obj, indent=2, default=str))


def _stats(spark, tmp: str, stage: str, bytes_in: int, seconds: float, extra: dict) -> dict:
    """Exact counts read back from the written files (never from accumulators)."""
    fs = HadoopFS(spark)
    kept = spark.read.parquet(f"{tmp}/kept").count()
    reasons = spark.read.parquet(f"{tmp}/rejected").groupBy("drop_reason").count().collect()
    by_reason = {r["drop_reason"]: r["count"] for r in sorted(reasons, key=lambda r: -r["count"])}
    rejected = sum(by_reason.values())
    return {
        "stage": stage, "docs_in": kept + rejected, "kept": kept, "rejected": rejected,
        "by_reason": by_reason, "bytes_in": bytes_in, "bytes_out": fs.size(f"{tmp}/kept"),
        "bytes_rejected": fs.size(f"{tmp}/rejected"), "seconds": round(seconds, 3), **extra,
    }


def absolute(path: str) -> str:
    """Local relative paths become absolute; URIs (`hdfs://`, `s3a://`) are left as they are."""
    path = plain(path.rstrip("/"))
    return path if "://" in path else os.path.abspath(path)
