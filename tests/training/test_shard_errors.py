"""The trainer names the shard at fault: a missing or broken manifest, a file that is not Parquet, token
ids outside the model's vocabulary (before: IndexError at the first forward); as a command, one line
and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.training.train_testlib import SCHEMA, recipe_args, write_shards
from training.data import ShardData, ShardError
from training.train import main

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_missing_and_malformed_manifests(tmp_path):
    with pytest.raises(ShardError, match="manifest.json not found"):
        ShardData(tmp_path, "train")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ShardError, match="is not a shards manifest"):
        ShardData(tmp_path, "train")


def test_a_corrupt_parquet_file_is_named(tmp_path):
    shards = write_shards(tmp_path / "shards")
    bad = shards / "train" / "part-00001.zstd.parquet"
    bad.write_bytes(bad.read_bytes()[:100] + b"garbage")
    with pytest.raises(ShardError, match=f"{bad} is not a readable Parquet file"):
        ShardData(shards, "train")


def test_out_of_vocabulary_ids_are_named_with_their_file(tmp_path):
    shards = write_shards(tmp_path / "shards")
    bad = shards / "train" / "part-00000.zstd.parquet"
    rows = pq.read_table(bad).to_pylist()
    rows[3]["input_ids"][2] = 70_000   # the manifest says vocab 256; the model below has 256 too
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), bad, row_group_size=8)
    with pytest.raises(ShardError, match=rf"{bad} row group 0: token id 70000 is outside the model's vocabulary"):
        main(recipe_args(shards, tmp_path / "out", "train.steps=2", "data.shuffle=false"))


def test_the_command_prints_one_line(tmp_path):
    shards = write_shards(tmp_path / "shards")
    (shards / "manifest.json").write_text(json.dumps({"row_width": "x"}))
    proc = subprocess.run([sys.executable, "-m", "training.train", *recipe_args(shards, tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("training.train: error: ")
    assert "manifest.json is not a shards manifest" in proc.stderr


def test_a_missing_or_broken_checkpoint_is_named(tmp_path):
    from training.model.checkpoint import CheckpointError, load_model

    with pytest.raises(CheckpointError, match=f"{tmp_path / 'nowhere'} is not a model checkpoint: model_config.json is missing"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model_config.json").write_text("{}")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="the checkpoint cannot be read"):
        load_model(tmp_path / "ckpt")


def test_alignment_commands_name_a_missing_checkpoint_or_data(tmp_path):
    for module, flag in (("training.align.sft", "--init"), ("training.align.dpo", "--init")):
        proc = subprocess.run([sys.executable, "-m", module, flag, str(tmp_path / "none"), "--out", str(tmp_path / "o")],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{tmp_path / 'none'} is not a model checkpoint" in proc.stderr


def test_sft_and_preference_shards_name_the_folder_or_file(tmp_path):
    from training.data import read_rows

    with pytest.raises(ShardError, match="no such folder"):
        read_rows(tmp_path / "missing", "train")
    (tmp_path / "sft" / "train").mkdir(parents=True)
    (tmp_path / "sft" / "train" / "part-0.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(ShardError, match="part-0.parquet cannot be read"):
        read_rows(tmp_path / "sft", "train")
    assert read_rows(tmp_path / "sft", "valid") == []   # a split without files is empty, not an error


def test_training_values_are_validated():
    from common.recipe import ConfigError
    from training.cli import load_recipe
    from training.train import SECTIONS

    for override, message in (("train.steps=0", "train.steps must be > 0, got 0"),
                              ("optim.schedule=\"step\"", "optim.schedule must be one of \\('cosine', 'linear', 'constant'\\)"),
                              ("optim.beta2=1.5", "optim.beta2 must be between 0 and 1"),
                              ("data.eval_batch=0", "data.eval_batch must be > 0")):
        with pytest.raises(ConfigError, match=message):
            load_recipe(str(ROOT / "training/recipes/demo.toml"), SECTIONS, [override])
