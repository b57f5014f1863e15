"""DPO: the held-out chosen-over-rejected margin rises on a synthetic preference rule; precomputed and
on-the-fly reference log-probs give the same losses; the first evaluation (policy == reference) is log 2."""
from __future__ import annotations

import json
import math

import pytest

from tests.training.align_testlib import rule_pairs, save_tiny_model, write_preference_shards
from training.align import dpo
from training.cli import RECIPES


def run_dpo(tmp_path, name, *sets):
    init = tmp_path / "init"
    if not init.exists():
        save_tiny_model(init)
        write_preference_shards(tmp_path / "pref", {"train": rule_pairs(128, 0), "valid": rule_pairs(32, 1)})
    out = tmp_path / name
    argv = ["--recipe", str(RECIPES / "dpo.toml"), "--init", str(init), "--data", str(tmp_path / "pref"),
            "--out", str(out), "--set", "data.max_pairs=0"]
    return out, dpo.main(argv + [x for s in sets for x in ("--set", s)])


def test_dpo_raises_the_held_out_margin(tmp_path):
    out, summary = run_dpo(tmp_path, "dpo", "train.steps=25", "optim.lr=2e-3", "train.eval_every=0",
                           "train.batch_size=16", "train.micro_batch_size=16")
    first, last = summary["first_eval"], summary["last_eval"]
    print(f"DPO held-out: margin {first['val_margin']:.3f} -> {last['val_margin']:.3f}, accuracy "
          f"{first['val_accuracy']:.3f} -> {last['val_accuracy']:.3f}, loss {first['val_loss']:.3f} -> "
          f"{last['val_loss']:.3f}")
    assert first["val_loss"] == pytest.approx(math.log(2), abs=1e-6)   # policy == reference at step 0
    assert first["val_margin"] == pytest.approx(0.0, abs=1e-6)
    assert last["val_margin"] > 0.5 and last["val_accuracy"] >= 0.9
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "tokens_per_s", "reward_chosen", "reward_rejected", "margin", "accuracy"} \
        <= set(rows[1])
    assert (out / "final" / "model.safetensors").exists() and (out / "loss.png").exists()


def test_precomputed_and_on_the_fly_reference_agree(tmp_path):
    losses = {}
    for flag in ("true", "false"):
        out, _ = run_dpo(tmp_path, f"pre-{flag}", "train.steps=2", "optim.lr=1e-2", "train.batch_size=4",
                         f"dpo.precompute_reference={flag}", "train.eval_every=0", "train.eval_rows=8")
        losses[flag] = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses["true"]) == 2
    for a, b in zip(losses["true"], losses["false"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)    # step 2: the policy has moved, ref has not
