"""The trainer on remote storage: shards read from, and checkpoints written to and resumed from, a real
S3-compatible server (moto, started on 127.0.0.1 by tests/stages/test_fs.py's fixture) through the same
`s3://` URIs a user gives. Objects are put and inspected with pyarrow alone, not with the code under test."""
from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch

from tests.training.train_testlib import recipe_args, write_shards
from training.metrics import read_metrics
from training.model import checkpoint as ckpt
from training.train import main


def store(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's own view of `uri` (it reads AWS_ENDPOINT_URL like the code under test)."""
    return pafs.FileSystem.from_uri(uri)


def names(uri: str) -> list[str]:
    where, inner = store(uri)
    return sorted(f.base_name for f in where.get_file_info(pafs.FileSelector(inner, allow_not_found=True)))


@pytest.fixture
def remote_shards(s3, tmp_path) -> tuple[Path, str]:
    """The test shards on local disk and the same files uploaded to `<bucket>/shards`."""
    shards = write_shards(tmp_path / "shards")
    where, inner = store(f"{s3}/shards")
    pafs.copy_files(str(shards), inner, destination_filesystem=where)
    return shards, f"{s3}/shards"


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}


def test_train_on_s3_shards_with_s3_checkpoints_resumes_exactly(remote_shards, s3, tmp_path):
    local, shards = remote_shards
    checkpoints = f"{s3}/ckpt"
    remote = ["train.steps=4", "train.save_every=2", f'train.checkpoint_dir="{checkpoints}"']
    main(recipe_args(local, tmp_path / "straight", "train.steps=4"))
    main(recipe_args(shards, tmp_path / "resumed", *remote) + ["--max-steps", "2"])
    assert ckpt.list_checkpoints(checkpoints) == [f"{checkpoints}/step-000002"]
    assert not (tmp_path / "resumed" / "checkpoints").exists()   # nothing written beside the run's output
    summary = main(recipe_args(shards, tmp_path / "resumed", *remote) + ["--resume"])
    assert summary["checkpoint"] == f"{checkpoints}/step-000004"
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(resumed) == sorted(straight) == [1, 2, 3, 4]
    assert all(resumed[s] == pytest.approx(straight[s], abs=1e-6) for s in straight)
    a = ckpt.load_model(tmp_path / "straight" / "final").state_dict()
    b = ckpt.load_model(tmp_path / "resumed" / "final").state_dict()
    c = ckpt.load_model(f"{checkpoints}/step-000004").state_dict()   # a model read straight from S3
    assert all(torch.allclose(a[k], b[k], atol=1e-6) and torch.equal(b[k], c[k]) for k in a)


def test_half_written_checkpoint_is_ignored_and_pruning_deletes_old_folders(remote_shards, s3, tmp_path):
    _, shards = remote_shards
    checkpoints = f"{s3}/ckpt"
    run = ["train.save_every=1", "train.keep_last=2", f'train.checkpoint_dir="{checkpoints}"']
    main(recipe_args(shards, tmp_path / "run", "train.steps=3", *run))
    assert names(checkpoints) == ["step-000002", "step-000003"]   # step-000001 deleted, every object of it
    # an upload killed before its marker: every file of step-000004 but trainer_state.json
    where, inner = store(checkpoints)
    for name in names(f"{checkpoints}/step-000003"):
        if name != ckpt.TRAINER_STATE:
            where.copy_file(f"{inner}/step-000003/{name}", f"{inner}/step-000004/{name}")
    assert ckpt.list_checkpoints(checkpoints) == [f"{checkpoints}/step-000002", f"{checkpoints}/step-000003"]
    summary = main(recipe_args(shards, tmp_path / "run", "train.steps=5", *run) + ["--resume"])
    assert summary["steps"] == 5 and sorted(losses(tmp_path / "run")) == [1, 2, 3, 4, 5]   # went on from step 3
    assert names(checkpoints) == ["step-000004", "step-000005"]
    assert ckpt.load_training(f"{checkpoints}/step-000004")["trainer"]["step"] == 4   # rewritten, with a marker
