"""A spark-submit driver that runs several jobs in one application (one JVM and one set of executors).

    spark-submit tests/cluster/chain.py ingest --input A --output B --then extract --input B --output C ...

Each job is `jobs.<name>.main(argv)`, the code `make <stage>` runs; the jobs reuse the session this
script starts, so a test pays for executor start-up once instead of once per stage.
"""

from __future__ import annotations

import importlib
import sys

from pipeline.spark import SparkConfig, spark_session


def groups(argv: list[str]) -> list[list[str]]:
    out, current = [], []
    for arg in argv:
        if arg == "--then":
            out.append(current)
            current = []
        else:
            current.append(arg)
    return out + [current]


def main(argv: list[str]) -> None:
    with spark_session("chain", SparkConfig(shuffle_partitions=4)) as spark:
        print(f"chain: master {spark.sparkContext.master}", flush=True)
        for name, *args in groups(argv):
            importlib.import_module(f"jobs.{name}").main(args)


if __name__ == "__main__":
    main(sys.argv[1:])
