"""Alignment stages resume exactly: a run stopped after a checkpoint (the newer checkpoint lost, as
when a run is killed between checkpoints) and started again with --resume ends with the same weights as
an unbroken run, and its metrics.jsonl holds every step once. SFT (with gradient accumulation), DPO and
the reward model go through training.loop.Trainer (the reward model is not a bare Qwen), online DPO adds its round
state (a checkpoint in the middle of a round), PPO its critic, second optimizer, KL controller, prompt
stream and sampler."""
from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.training.align_testlib import (END, rule_pairs, save_tiny_model, tiny_config, write_preference_shards,
                                          write_sft_shards)
from tests.training.test_ppo import PAD, STOP, VOCAB, tiny_model
from tests.training.test_ppo import write_preference_shards as write_prompt_shards
from training.align import dpo, online_dpo, ppo, reward, sft
from common.recipe import Recipe
from training.align.base import AlignConfig
from training.cli import RECIPES
from training.dist import Env
from training.loop import Phase, Trainer
from training.optim import OptimConfig
from training.model.checkpoint import list_checkpoints, save_model
from training.model.qwen import Qwen
from training.align.reward import RewardModel, save_reward_model

STEPS = ["train.steps=4", "train.save_every=2", "train.eval_every=2", "train.device='cpu'"]


def prepared(tmp_path):
    save_tiny_model(tmp_path / "init")
    torch.manual_seed(1)
    save_reward_model(RewardModel(Qwen(tiny_config())), tmp_path / "rm")
    write_preference_shards(tmp_path / "pref", {"train": rule_pairs(32, 0), "valid": rule_pairs(4, 1)})
    write_sft_shards(tmp_path / "sft", {"train": 12, "valid": 2})
    rng = random.Random(1)
    prompts = [[rng.randrange(4, VOCAB) for _ in range(rng.randrange(2, 6))] for _ in range(12)]
    write_prompt_shards(tmp_path / "prompts", prompts[:8], prompts[8:])
    save_model(tiny_model(), tmp_path / "ppo-policy")
    save_reward_model(RewardModel(tiny_model(2)), tmp_path / "ppo-rm")
    return tmp_path


STAGES = {
    "sft": (sft.main, lambda d: ["--recipe", str(RECIPES / "sft.toml"), "--init", str(d / "init"), "--data",
                                 str(d / "sft"), "--set", "train.batch_size=4", "--set", "train.micro_batch_size=2",
                                 "--set", "optim.lr=1e-2"]),
    "dpo": (dpo.main, lambda d: ["--recipe", str(RECIPES / "dpo.toml"), "--init", str(d / "init"), "--data",
                                 str(d / "pref"), "--set", "train.batch_size=4", "--set", "optim.lr=1e-2"]),
    "rm": (reward.main, lambda d: ["--recipe", str(RECIPES / "rm.toml"), "--init", str(d / "init"), "--data",
                                   str(d / "pref"), "--set", "train.batch_size=4", "--set", "optim.lr=1e-2"]),
    "online_dpo": (online_dpo.main, lambda d: [
        "--recipe", str(RECIPES / "online_dpo.toml"), "--init", str(d / "init"), "--reward", str(d / "rm"), "--data",
        str(d / "pref"), "--set", "online.steps_per_round=3", "--set", "online.prompts_per_round=4",
        "--set", "online.pad_id=0", "--set", f"online.stop_tokens=[{END}]", "--set", "online.max_new_tokens=6"]),
    "ppo": (ppo.main, lambda d: [
        "--init", str(d / "ppo-policy"), "--reward", str(d / "ppo-rm"), "--prompts", str(d / "prompts"),
        "--set", "train.batch_size=4", "--set", "train.micro_batch_size=1", "--set", "train.eval_rows=3",
        "--set", "ppo.minibatch_size=2", "--set", "ppo.max_new_tokens=4", "--set", f"ppo.stop_tokens=[{STOP}]",
        "--set", f"ppo.pad_id={PAD}", "--set", "ppo.adaptive_kl=true"]),
}


def run(stage, data, out, *extra):
    main, argv = STAGES[stage]
    return main(argv(data) + ["--out", str(out), *[x for s in STEPS for x in ("--set", s)], *extra])


def weights(out):
    return load_file(str(list_checkpoints(out / "checkpoints")[-1] / "model.safetensors"))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_resumed_run_equals_an_unbroken_one(tmp_path, stage):
    data = prepared(tmp_path)
    run(stage, data, tmp_path / "straight")
    broken = tmp_path / "broken"
    run(stage, data, broken, "--max-steps", "3")               # checkpoints at steps 2 and 3 (its end)
    assert [p.name for p in list_checkpoints(broken / "checkpoints")] == ["step-000002", "step-000003"]
    shutil.rmtree(broken / "checkpoints" / "step-000003")      # killed before step 3 was saved
    summary = run(stage, data, broken, "--resume")
    assert summary["steps"] == 4
    straight, resumed = weights(tmp_path / "straight"), weights(broken)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight), stage
    rows = [json.loads(line) for line in (broken / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "loss" not in r] == [0, 2, 4]   # validation lines, none repeated
    timing = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "tokens_per_s")}
    unbroken = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [timing(r) for r in rows] == [timing(r) for r in unbroken]   # same losses, rewards, KL, lr


def test_a_checkpoint_restores_the_global_rngs(tmp_path):
    """No stage above draws from the global RNGs (their samplers are checkpointed generators), so this
    is checked directly: what torch, numpy and random give after a restore is what they gave after the save."""
    phase = Phase()
    phase.model, phase.cfg = Qwen(tiny_config()), tiny_config()
    recipe = Recipe("", {"train": AlignConfig(device="cpu"), "optim": OptimConfig()})
    trainer = Trainer(phase, recipe, Env(), tmp_path)
    trainer.setup(resume=False)
    trainer.step = 1
    trainer.save()
    after_save = (torch.rand(3), np.random.rand(), random.random())
    torch.rand(5), np.random.rand(), random.random()
    again = Trainer(phase, recipe, Env(), tmp_path)
    again.setup(resume=True)
    assert again.step == 1
    drawn = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(after_save[0], drawn[0]) and after_save[1:] == drawn[1:]
