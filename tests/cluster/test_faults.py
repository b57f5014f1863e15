"""Faults: the driver killed inside the output commit, a worker killed during a stage (both on the
standalone cluster of conftest.py), and a training run killed with SIGKILL between checkpoints.

    pytest -m cluster tests/cluster/test_faults.py

What each shows: a stage folder never looks finished unless it is (`_SUCCESS` is written last and
`read_stage` refuses a folder without it) and a rerun replaces it with exactly the unbroken result;
Spark retries the tasks of a lost executor and the committed output is the same; a resumed training
run consumes exactly the rows an unbroken run does (none lost, none repeated in the model) and ends
with the same weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from jobs import extract, ingest
from pipeline import io
from tests.cluster.conftest import ROOT, submit_command, submitted
from tests.training.train_testlib import recipe_args, write_shards

RECIPE = "pipeline/recipes/default.toml"


def rows(spark, path: str) -> list[tuple]:
    df = io.read_stage(spark, path)
    return sorted((tuple(r) for r in df.select(sorted(df.columns)).collect()), key=repr)


def wait_until(condition, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"spark-submit ended ({proc.returncode}) too early:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def pages(spark, tmp_path_factory, shared_data):
    """One real WARC ingested locally, and its unbroken local extract (the reference)."""
    tmp = tmp_path_factory.mktemp("pages")
    warc = shared_data / "dolma-samples" / "sample-0000.warc.gz"
    ingest.main(["--input", str(warc), "--output", str(tmp / "ingest")])
    extract.main(["--input", str(tmp / "ingest"), "--output", str(tmp / "reference")])
    return tmp / "ingest", tmp / "reference", rows(spark, str(tmp / "reference"))


def extract_command(cluster, dist, script: str, inp: Path, out: Path) -> list[str]:
    return submit_command(cluster.master_url, dist, script, ["extract", "--input", str(inp), "--output", str(out),
                                                             "--recipe", RECIPE])


@pytest.mark.cluster
@pytest.mark.spark
@pytest.mark.slow
def test_driver_killed_in_the_commit_leaves_no_success_and_the_rerun_is_identical(cluster, dist, spark, tmp_path,
                                                                                   pages):
    inp, reference, unbroken = pages
    out, marker, log = tmp_path / "extract", tmp_path / "in-commit", tmp_path / "killed.log"
    shutil.copytree(reference, out)  # an earlier finished run, which the killed rerun replaces
    with submitted(extract_command(cluster, dist, "tests/cluster/probe.py", inp, out), log,
                   PROBE_PAUSE_AT_SUCCESS=str(marker)) as proc:
        wait_until(marker.exists, proc, log)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    assert (out / "kept").is_dir() and (out / "_stats.json").exists()  # every file but the last
    assert not (out / "_SUCCESS").exists()
    with pytest.raises(io.StageNotReady, match="no _SUCCESS"):
        io.read_stage(spark, str(out))

    # the rerun (here in local mode, to keep the folder fast; cluster == local is the pipeline test's point)
    extract.main(["--input", str(inp), "--output", str(out)])
    assert (out / "_SUCCESS").exists()
    assert rows(spark, str(out)) == unbroken
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".extract.tmp-")]


def executor_of_next_task(log: Path) -> tuple[str, str] | None:
    """(app id, executor id) of the first task launched after the probe said the write began."""
    text = log.read_text(errors="replace")
    app = re.search(r"app ID (app-\S+)", text)
    _, found, after = text.partition("probe: writing")
    task = re.search(r"Starting task .*?executor (\d+)", after) if found else None
    return (app.group(1), task.group(1)) if app and task else None


@pytest.mark.cluster
@pytest.mark.spark
@pytest.mark.slow
def test_a_worker_killed_during_a_stage_changes_nothing(cluster, dist, spark, tmp_path, pages):
    inp, _, unbroken = pages
    out, log = tmp_path / "extract", tmp_path / "submit.log"
    try:
        with submitted(extract_command(cluster, dist, "tests/cluster/probe.py", inp, out), log,
                       PROBE_ANNOUNCE_WRITE="1") as proc:
            wait_until(lambda: executor_of_next_task(log), proc, log)
            app, executor = executor_of_next_task(log)
            victim = next(w for w in cluster.workers if w.alive and (w.work_dir / app / executor).is_dir())
            victim.kill()
            assert proc.wait(timeout=300) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        cluster.replace_dead_workers()
    assert re.search(rf"Lost executor {executor}\b", log.read_text(errors="replace"))
    assert (out / "_SUCCESS").exists()
    assert rows(spark, str(out)) == unbroken


def train(shards: Path, out: Path, record: Path, kill_after: int = 0, resume: bool = False) -> subprocess.Popen:
    """Starts training.train (through train_probe.py) in a fresh process."""
    args = recipe_args(shards, out, "train.steps=12", "train.save_every=4", "train.keep_last=2")
    cmd = [sys.executable, "tests/cluster/train_probe.py", str(record), str(kill_after), "--", *args,
           *(["--resume"] if resume else [])]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def steps(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(next((out / "final").glob("*.safetensors")))


@pytest.mark.slow
def test_training_killed_between_checkpoints_resumes_without_lost_or_repeated_rows(tmp_path):
    shards = write_shards(tmp_path / "shards")
    run, killed, resumed = tmp_path / "run", tmp_path / "killed.jsonl", tmp_path / "resumed.jsonl"
    unbroken_proc = train(shards, tmp_path / "unbroken", tmp_path / "unbroken.jsonl")
    assert train(shards, run, killed, kill_after=6).wait(timeout=300) == -signal.SIGKILL
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000004"]
    assert not (run / "final").exists()
    assert train(shards, run, resumed, resume=True).wait(timeout=300) == 0
    assert unbroken_proc.wait(timeout=300) == 0

    # steps 5 and 6 ran twice in wall-clock time; the model kept only their second run
    consumed = steps(killed)[:4] + steps(resumed)
    assert len(steps(killed)) == 6 and steps(killed)[4:] == steps(resumed)[:2]
    assert consumed == steps(tmp_path / "unbroken.jsonl")
    assert sum(s["targets"] for s in consumed) == sum(s["targets"] for s in steps(tmp_path / "unbroken.jsonl"))
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    unbroken_metrics = [json.loads(x) for x in (tmp_path / "unbroken" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == list(range(1, 13))
    assert [m["loss"] for m in metrics if "loss" in m] == [m["loss"] for m in unbroken_metrics if "loss" in m]
    a, b = final_weights(tmp_path / "unbroken"), final_weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
