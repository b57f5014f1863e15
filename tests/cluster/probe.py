"""The fault tests' spark-submit driver: tests/cluster/chain.py plus fault-injection hooks on the driver.

    PROBE_PAUSE_AT_SUCCESS=/tmp/marker spark-submit tests/cluster/probe.py extract --input A --output B
    PROBE_ANNOUNCE_WRITE=1 spark-submit tests/cluster/probe.py extract --input A --output B

PROBE_PAUSE_AT_SUCCESS: inside the output commit, after the finished folder was renamed into place and
before `_SUCCESS` is written, create the marker file and wait to be killed (the widest window a killed
driver can leave: a folder with every file but `_SUCCESS`).
PROBE_ANNOUNCE_WRITE: print `probe: writing` when a stage starts writing its rows, and log at INFO from
then on, so a test knows that the next task launched (`Starting task ... executor N`) belongs to that write.
The hooks wrap the real functions; nothing in pipeline/ knows about them.
"""

from __future__ import annotations

import os
import sys
import time

from pipeline import hadoop, io
import chain  # beside this file: the driver script's folder is on sys.path


def pause_before_success(marker: str) -> None:
    real = hadoop.HadoopFS.write_text

    def write_text(self, path: str, text: str) -> None:
        if path.endswith("/_SUCCESS"):
            open(marker, "w").close()
            while True:  # wait for SIGKILL
                time.sleep(1)
        real(self, path, text)

    hadoop.HadoopFS.write_text = write_text


def announce_write() -> None:
    real = io.write_partitioned

    def write_partitioned(df, *args, **kwargs):
        df.sparkSession.sparkContext.setLogLevel("INFO")  # task launches are logged at INFO
        print("probe: writing", flush=True)
        return real(df, *args, **kwargs)

    io.write_partitioned = write_partitioned


if __name__ == "__main__":
    if os.environ.get("PROBE_PAUSE_AT_SUCCESS"):
        pause_before_success(os.environ["PROBE_PAUSE_AT_SUCCESS"])
    if os.environ.get("PROBE_ANNOUNCE_WRITE"):
        announce_write()
    chain.main(sys.argv[1:])
