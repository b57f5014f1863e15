"""ingest -> extract -> langid -> quality -> dedup -> tokenize through spark-submit on a standalone
cluster (master + 2 workers on 127.0.0.1) gives the same rows and shards as local mode.

    pytest -m cluster tests/cluster/test_cluster_pipeline.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import dedup, extract, ingest, langid, quality, tokenize
from pipeline import io
from tests.cluster.conftest import ROOT, submit_command, submitted

pytestmark = [pytest.mark.cluster, pytest.mark.spark, pytest.mark.slow]

STAGES = ["ingest", "extract", "langid", "quality", "dedup", "tokenize"]
JOBS = {"ingest": ingest, "extract": extract, "langid": langid, "quality": quality, "dedup": dedup,
        "tokenize": tokenize}
RECIPE = "pipeline/recipes/default.toml"  # as the Makefile passes it (the zip's copy is not a file path)
SETS = {"tokenize": ["--set", "tokenize.seq_len=256"]}


def warcs(shared_data) -> list[str]:
    return [str(shared_data / "dolma-samples" / "sample-0001.warc.gz")]


def user_model(folder: Path) -> Path:
    """A model file outside the repository and the assets archive, as a user's own model would be."""
    from stages.language import model_path

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "user-lid.ftz"
    shutil.copyfile(model_path(), path)
    return path


def stage_args(root, inputs: list[str], sets: dict[str, list[str]] = SETS) -> list[list[str]]:
    """[name, --input ..., --output ...] for each stage, each reading the one before."""
    out, prev = [], inputs
    for name in STAGES:
        out.append([name, "--input", *prev, "--output", str(root / name), "--recipe", RECIPE, *sets.get(name, [])])
        prev = [str(root / name)]
    return out


def stage_rows(spark, path: str, part: str) -> list[tuple]:
    df = io.read_stage(spark, path, part)
    return sorted((tuple(r) for r in df.select(sorted(df.columns)).collect()), key=repr)


def shard_rows(spark, path: str) -> list[tuple]:
    df = spark.read.parquet(f"{path}/train", f"{path}/valid")
    return sorted((tuple(r) for r in df.select(sorted(df.columns)).collect()), key=repr)


def comparable(spark, root) -> dict:
    result = {}
    for name in STAGES[:-1]:
        for part in ("kept", "rejected"):
            result[f"{name}/{part}"] = stage_rows(spark, str(root / name), part)
        stats = json.loads((root / name / "_stats.json").read_text())
        result[f"{name}/stats"] = {k: v for k, v in stats.items() if k != "seconds" and not k.startswith("bytes")}
    manifest = json.loads((root / "tokenize" / "manifest.json").read_text())
    result["tokenize/manifest"] = {**manifest, "seconds": None}
    result["tokenize/rows"] = shard_rows(spark, str(root / "tokenize"))
    return result


def test_pipeline_on_a_standalone_cluster_equals_local_mode(cluster, dist, spark, tmp_path, shared_data):
    model = user_model(tmp_path / "models")  # a user's own LID model: the job ships it to executors
    sets = {**SETS, "langid": ["--set", f"langid.model={model}"]}
    chain = []
    for args in stage_args(tmp_path / "cluster", warcs(shared_data), sets):
        chain += [*args, "--then"]
    cmd = submit_command(cluster.master_url, dist, "tests/cluster/chain.py", chain[:-1])
    with submitted(cmd, tmp_path / "submit.log") as proc:
        for name, *args in stage_args(tmp_path / "local", warcs(shared_data), sets):  # meanwhile, in local mode
            JOBS[name].main(args)
        returncode = proc.wait(timeout=600)
    log = (tmp_path / "submit.log").read_text(errors="replace")
    assert returncode == 0, log[-4000:]
    assert f"chain: master {cluster.master_url}" in log
    for name in STAGES:
        assert (tmp_path / "cluster" / name / "_SUCCESS").exists()
        config = json.loads((tmp_path / "cluster" / name / "_config.json").read_text())
        assert config["master"] == cluster.master_url
    copies = [p for w in cluster.workers for p in w.work_dir.glob(f"app-*/*/{model.name}")]
    assert copies and all(p.read_bytes() == model.read_bytes() for p in copies), "the model did not travel"

    on_cluster, local = comparable(spark, tmp_path / "cluster"), comparable(spark, tmp_path / "local")
    assert on_cluster["tokenize/manifest"]["splits"]["train"]["rows"] > 0
    for key in local:
        assert on_cluster[key] == local[key], key


@pytest.fixture(scope="module")
def packed_env(tmp_path_factory) -> Path:
    """`make dist`'s env.tar.gz (the executors' packed environment), built once for this module."""
    from tools.dist import build_env

    return build_env(tmp_path_factory.mktemp("packed") / "env.tar.gz")[0]


def make_command(target: str, **variables: str) -> str:
    """The spark-submit line `make <target>` runs (from `make -n`; the set-up recipe is left out)."""
    args = ["make", "-n", "-s", target, *(f"{k}={v}" for k, v in variables.items())]
    lines = subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True).stdout.splitlines()
    found = [line for line in lines if "spark-submit" in line]
    assert len(found) == 1, lines
    return found[0]


def udhr_docs(shared_data, n: int = 12) -> list[tuple]:
    """(id, text, source) rows: the first 1,500 characters of a few real UDHR translations."""
    files = sorted((shared_data / "udhr-nltk" / "udhr2").glob("*.txt"))[:: 30][:n]
    return [(f.stem, f.read_text(errors="replace")[:1500], "udhr") for f in files]


def test_make_submits_a_stage_with_the_packed_environment(cluster, spark, tmp_path, shared_data, packed_env):
    root = tmp_path / "run"
    io.write_docs(spark, udhr_docs(shared_data), str(root / "extract"))
    line = make_command("langid", MASTER=cluster.master_url, ROOT=root, DIST=packed_env.parent, VENV=sys.prefix)
    assert f"--archives {packed_env.parent}/assets.tar.gz#assets,{packed_env}#env" in line
    # Executors must run the packed ./env/bin/python: any other interpreter would be this bogus one.
    with submitted(["bash", "-c", line], tmp_path / "make.log", PYSPARK_PYTHON="/nonexistent/python") as proc:
        langid.main(["--input", str(root / "extract"), "--output", str(tmp_path / "local"), "--recipe", RECIPE])
        returncode = proc.wait(timeout=600)
    assert returncode == 0, (tmp_path / "make.log").read_text(errors="replace")[-4000:]
    assert any(cluster.tmp.glob("worker*/app-*/*/env/bin/python"))
    for part in ("kept", "rejected"):
        assert stage_rows(spark, str(root / "langid"), part) == stage_rows(spark, str(tmp_path / "local"), part)
