"""Run tracking (training/tracking.py): the metrics.jsonl lines of a phase also reach TensorBoard, W&B (offline)
and MLflow, read back here with each tool's own reader; an unknown or missing tracker is a one-line error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import UserError
from common.recipe import ConfigError
from tests.training.align_testlib import save_tiny_model, write_sft_shards
from training.align import sft
from training.cli import RECIPES
from training.metrics import read_metrics

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")
pytest.importorskip("mlflow")


def run(tmp_path, *sets):
    save_tiny_model(tmp_path / "init")
    write_sft_shards(tmp_path / "sft", {"train": 8, "valid": 2})
    argv = ["--recipe", str(RECIPES / "sft.toml"), "--init", str(tmp_path / "init"), "--data", str(tmp_path / "sft"),
            "--out", str(tmp_path / "out")]
    sets = ("train.steps=3", "train.eval_every=0", "train.device='cpu'", "train.batch_size=4", *sets)
    return sft.main(argv + [x for s in sets for x in ("--set", s)])


def test_every_tracker_gets_the_metrics_lines(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(tmp_path, 'train.loggers=["jsonl", "tensorboard", "wandb", "mlflow"]')
    out = tmp_path / "out"
    rows = read_metrics(out / "metrics.jsonl")
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    val = {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}
    assert sorted(losses) == [1, 2, 3] and sorted(val) == [0, 3]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert {e.step: e.value for e in events.Scalars("loss")} == pytest.approx(losses)
    assert {e.step: e.value for e in events.Scalars("val_loss")} == pytest.approx(val)

    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{(out / 'mlflow.db').resolve()}")
    (found,) = client.search_runs([client.get_experiment_by_name("qwenforge").experiment_id])
    assert {m.step: m.value for m in client.get_metric_history(found.info.run_id, "loss")} == pytest.approx(losses)
    assert found.data.params["train.steps"] == "3" and found.info.status == "FINISHED"

    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    history = wandb_history(run_file)
    assert {r["_step"]: r["loss"] for r in history if "loss" in r} == pytest.approx(losses)
    assert {r["_step"]: r["val_loss"] for r in history if "val_loss" in r} == pytest.approx(val)


def wandb_history(path: Path) -> list[dict]:
    """The history records of an offline W&B run file: a 7-byte header, then LevelDB-log chunks (checksum,
    length, type: full / first / middle / last) in 32 KiB blocks, each record a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, raw, pending = path.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:   # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):   # full, last
            raw.append(pending)
            pending = b""
    rows = []
    for item in raw:
        record = pb.Record()
        record.ParseFromString(item)
        if record.WhichOneof("record_type") == "history":
            rows.append({i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def test_an_unknown_tracker_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="train.loggers must be a list of"):
        run(tmp_path, 'train.loggers=["jsonl", "neptune"]')


def test_a_missing_tracker_package_is_one_line(tmp_path, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_wandb(name, *args, **kw):
        if name == "wandb":
            raise ModuleNotFoundError("No module named 'wandb'", name="wandb")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(UserError, match="train.loggers names 'wandb' but wandb is not installed"):
        run(tmp_path, 'train.loggers=["wandb"]')
