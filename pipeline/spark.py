"""The Spark session helper: embedded `local[*]` by default, a cluster through `MASTER` or `--master`.

    with spark_session("extract", SparkConfig()) as spark:
        ...

Local defaults suit a small machine (few shuffle partitions, Arrow batches sized for HTML pages, no
UI). Python workers run this interpreter (`PYSPARK_PYTHON`), so the project's virtual environment is
what executors use locally. Under `spark-submit` the master it was given is used (cluster mode: see
the Makefile's JOB macro and tools/dist.py for what travels to executors). A session that already exists (tests, notebooks) is reused and left
running; a session this helper starts is stopped when the block ends. `ship_files` sends the model
files a stage opens (`Stage.model_files`) to cluster nodes; `runner.apply` calls it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from common.recipe import require, require_fraction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparkConfig:
    master: str = ""  # empty: $MASTER, else local[*]
    driver_memory: str = "2g"
    shuffle_partitions: int = 0  # 0: 2 x the default parallelism in local mode, 200 on a cluster
    arrow_batch_rows: int = 256  # rows per Arrow batch handed to a stage (HTML pages are large)
    ui: bool = False
    conf: dict[str, str] = field(default_factory=dict)  # any other spark.* settings
    # Records whose stage raised (`stage_error` rows) fail the job above this fraction of its input:
    # hostile pages are expected, a bug that breaks every record is not.
    max_error_fraction: float = 0.01

    def __post_init__(self):
        require(self.arrow_batch_rows > 0, "arrow_batch_rows", self.arrow_batch_rows, "> 0")
        require(self.shuffle_partitions >= 0, "shuffle_partitions", self.shuffle_partitions, ">= 0 (0: automatic)")
        require_fraction(self, "max_error_fraction")


def resolve_master(config: SparkConfig, override: str | None = None) -> str:
    return override or config.master or submitted_master() or os.environ.get("MASTER") or "local[*]"


def submitted_master() -> str | None:
    """The `--master` spark-submit was given, when this driver runs under spark-submit; else None.

    spark-submit starts the JVM first and hands its gateway to Python (`PYSPARK_GATEWAY_PORT`), with
    the master in the JVM's Spark properties; without this, `builder.master(...)` would replace a
    cluster master with `local[*]`.
    """
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        return None
    from pyspark import SparkConf

    return SparkConf().get("spark.master", None)


def session_settings(config: SparkConfig, master: str) -> dict[str, str]:
    local = master.startswith("local")
    partitions = config.shuffle_partitions or (2 * (os.cpu_count() or 2) if local else 200)
    return {
        "spark.driver.memory": config.driver_memory,
        "spark.sql.shuffle.partitions": str(partitions),
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(config.arrow_batch_rows),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": str(config.ui).lower(),
        "spark.sql.parquet.compression.codec": "zstd",
        "spark.sql.sources.partitionOverwriteMode": "static",
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.sql.session.timeZone": "UTC",
        **config.conf,
    }


@contextlib.contextmanager
def spark_session(app: str, config: SparkConfig = SparkConfig(), master: str | None = None) -> Iterator:
    """Yields a SparkSession; stops it at the end only if this call started it."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    url = resolve_master(config, master)
    builder = SparkSession.builder.appName(f"qwenforge-{app}").master(url)
    for key, value in session_settings(config, url).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("Spark %s on %s", spark.version, url)
    try:
        yield spark
    finally:
        spark.stop()


def ship_files(spark, paths) -> list[str]:
    """Adds each local model file to the job (`SparkContext.addFile`) when the master is a cluster.

    Executors then hold a copy in their working folder, which `common.fs.shipped` finds when the
    driver's path does not exist on the node; in local mode every path is already readable. Remote
    URIs (hdfs://, s3a://) and paths that are not files here are left to the stage's own error.
    Returns the paths shipped.
    """
    from common.fs import local_path

    context = spark.sparkContext
    if context.master.startswith("local"):
        return []
    files = sorted({local_path(p) for p in paths if p and os.path.isfile(local_path(p))})
    for path in files:
        context.addFile(os.path.abspath(path))
    if files:
        log.info("shipping %s to executors", ", ".join(files))
    return files
