"""Code-Qwen at toy scale end to end: jobs.specialist builds the code-heavy mixture from real source
files and real web text, then `training.train --init` continues pretraining a base checkpoint on it
with training/recipes/code_qwen.toml (what `make code-qwen` runs, minus the SFT step)."""

from __future__ import annotations

import json
import math
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from jobs import specialist
from training import train
from training.model.checkpoint import load_model, save_model
from training.model.flavors import FLAVORS
from training.model.qwen import ModelConfig, Qwen

pytestmark = [pytest.mark.spark, pytest.mark.slow]
RECIPE = str(Path(__file__).resolve().parents[2] / "training" / "recipes" / "code_qwen.toml")


def web_stage(root: Path, text: str, docs: int = 40) -> None:
    """<root>/decontam as the demo pipeline leaves it: a finished stage of web documents."""
    step = len(text) // docs
    rows = [{"id": f"web-{i}", "text": text[i * step:(i + 1) * step], "source": "web"} for i in range(docs)]
    (root / "decontam" / "kept").mkdir(parents=True)
    (root / "decontam" / "rejected").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "decontam" / "kept" / "part-00000.parquet")
    (root / "decontam" / "_stats.json").write_text(json.dumps({"stage": "decontam", "kept": docs}))
    (root / "decontam" / "_SUCCESS").write_text("")


def test_code_qwen_data_then_continued_pretraining_from_the_base(spark, shared_data, tmp_path):
    web_stage(tmp_path, (shared_data / "tinyshakespeare" / "input.txt").read_text()[:120_000])
    code = str(Path(sysconfig.get_paths()["stdlib"]) / "json")            # real source files
    results = specialist.main(["code", "--root", str(tmp_path), "--code-input", code,
                               "--set", "tokenize.seq_len=128", "--set", "tokenize.valid_fraction=0.1"])
    shares = results["tokenize"]["manifest"]["splits"]["train"]["tokens_per_source"]
    assert set(shares) == {"code", "web"} and shares["code"] > 0

    torch.manual_seed(3)   # a base unlike the recipe's flavor: config and weights must come from --init
    base_cfg = ModelConfig.from_dict({**FLAVORS["debug"].to_dict(), "num_layers": 1, "hidden_size": 32,
                                      "intermediate_size": 64, "num_heads": 2, "num_kv_heads": 1})
    save_model(Qwen(base_cfg), tmp_path / "base")
    common = ["--recipe", RECIPE, "--init", str(tmp_path / "base"), "--data", str(tmp_path / "code-qwen" / "shards"),
              "--set", "train.eval_every=0", "--set", "train.save_every=0", "--set", "data.eval_rows=4"]
    frozen = train.main([*common, "--out", str(tmp_path / "lr0"), "--set", "train.steps=1", "--set", "optim.lr=0.0",
                         "--set", "optim.warmup_steps=0"])
    base, start = load_file(str(tmp_path / "base" / "model.safetensors")), \
        load_file(str(tmp_path / "lr0" / "final" / "model.safetensors"))
    assert base.keys() == start.keys() and all(torch.equal(base[k], start[k]) for k in base)  # lr 0: the base itself
    assert load_model(tmp_path / "lr0" / "final").cfg == base_cfg
    summary = train.main([*common, "--out", str(tmp_path / "cpt"), "--set", "train.steps=6"])
    assert summary["start_val_loss"] == pytest.approx(frozen["start_val_loss"], abs=1e-6)  # same start: the base
    assert math.isfinite(summary["end_val_loss"]) and summary["end_val_loss"] < summary["start_val_loss"]
