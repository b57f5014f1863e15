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
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
import uuid

from pipeline.hadoop import HadoopFS, plain

log = logging.getLogger(__name__)

ARCHIVE_PATTERNS = ("*.warc", "*.warc.gz", "*.arc", "*.arc.gz", "*.wet", "*.wet.gz", "*.warc.wet.gz")
MANIFEST_SUFFIXES = (".paths", ".paths.gz", ".txt", ".lst")


class StageNotReady(RuntimeError):
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


def write_split(df, output: str, *, stage: str, config: dict, bytes_in: int = 0, extra: dict | None = None):
    """Writes judged rows as `kept/` + `rejected/` with stats and config, committed atomically.

    Returns the stats dict that was written to `_stats.json`.
    """
    spark, started = df.sparkSession, time.time()
    fs, output = HadoopFS(spark), absolute(output)
    fs.delete(f"{output}/_SUCCESS")
    parent, _, name = output.rpartition("/")
    for stale in fs.siblings(output, f".{name}.tmp-"):
        fs.delete(stale)
    tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
    _write_parts(df, tmp)
    stats = _stats(spark, tmp, stage, bytes_in, time.time() - started, extra or {})
    fs.write_text(f"{tmp}/_stats.json", json.dumps(stats, indent=2))
    fs.write_text(f"{tmp}/_config.json", json.dumps({"stage": stage, "output": output, **config}, indent=2))
    fs.delete(output)
    fs.rename(tmp, output)
    fs.write_text(f"{output}/_SUCCESS", json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    log.info("%s: kept %d, rejected %d -> %s", stage, stats["kept"], stats["rejected"], output)
    return stats


def _write_parts(df, tmp: str) -> None:
    """One Spark write, split by verdict into `kept/` and `rejected/` (both always exist)."""
    from pyspark.sql import functions as F

    fs = HadoopFS(df.sparkSession)
    split = F.when(F.col("drop_reason").isNull(), F.lit("kept")).otherwise(F.lit("rejected"))
    df.withColumn("_split", split).write.partitionBy("_split").parquet(f"{tmp}/_data")
    for part in ("kept", "rejected"):
        if fs.exists(f"{tmp}/_data/_split={part}"):
            fs.rename(f"{tmp}/_data/_split={part}", f"{tmp}/{part}")
        else:
            df.sparkSession.createDataFrame([], df.schema).write.parquet(f"{tmp}/{part}")
    fs.delete(f"{tmp}/_data")


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


def read_stats(spark, path: str) -> dict:
    return json.loads(HadoopFS(spark).read_text(f"{path}/_stats.json"))
