"""A killed extract job leaves nothing that looks finished; the rerun equals an unbroken run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bench.data import benchmark_warc
from jobs import extract, ingest
from pipeline import io

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def rows(spark, path):
    return sorted(tuple(r) for r in io.read_stage(spark, path).drop("drop_detail").collect())


def start_extract(inp, out):
    cmd = [sys.executable, "-m", "jobs.extract", "--input", inp, "--output", out, "--set", "spark.master='local[2]'"]
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when_writing(proc, out_parent, timeout=180):
    """SIGKILLs the job (driver and JVM) as soon as its temporary output folder appears."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.startswith(".extract.tmp-") for p in out_parent.iterdir()):
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.2)
    pytest.fail("the extract job never started writing, or finished before it could be killed")


def test_killed_extract_leaves_no_success_and_rerun_is_identical(spark, tmp_path, shared_data):
    warc = benchmark_warc(shared_data, tmp_path / "in" / "bench.warc.gz", copies=2)
    inp, out = str(tmp_path / "ingest"), str(tmp_path / "extract")
    ingest.main(["--input", str(warc), "--output", inp])
    extract.main(["--input", inp, "--output", out])
    unbroken = rows(spark, out)

    kill_when_writing(start_extract(inp, out), tmp_path)
    assert not (tmp_path / "extract" / "_SUCCESS").exists()
    with pytest.raises(io.StageNotReady, match="no _SUCCESS|does not exist"):
        io.read_stage(spark, out)

    extract.main(["--input", inp, "--output", out])
    assert rows(spark, out) == unbroken
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".extract.tmp-")]
