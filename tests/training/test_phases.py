"""Every training phase runs through the one loop (training/loop.py), so each gets what the loop owns:
the MoE load-balancing loss reaches the router in SFT, reward-model, DPO, online-DPO and PPO training
(pretraining: tests/training/test_train.py); splitting a step into micro-batches leaves it unchanged; and a
2-process torchrun DPO run equals one process with the same global batch."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.align_testlib import (END, rule_pairs, save_tiny_model, tiny_config, write_preference_shards,
                                          write_sft_shards)
from training.align import dpo, online_dpo, ppo, reward, sft
from training.align.reward import RewardModel, save_reward_model
from training.cli import RECIPES
from training.metrics import read_metrics
from training.model.checkpoint import list_checkpoints
from training.model.qwen import Qwen

ROOT = Path(__file__).resolve().parents[2]
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=32)
COMMON = ["train.batch_size=4", "train.device='cpu'", "train.eval_every=0", "train.eval_rows=2", "optim.lr=1e-2",
          "optim.warmup_steps=0", "optim.grad_clip=0.0"]


def prepared(tmp_path: Path, **model) -> Path:
    """A starting checkpoint and a reward model of the same tiny config, SFT and preference shards."""
    save_tiny_model(tmp_path / "init", **model)
    torch.manual_seed(1)
    save_reward_model(RewardModel(Qwen(tiny_config(**model))), tmp_path / "rm")
    write_preference_shards(tmp_path / "pref", {"train": rule_pairs(16, 0), "valid": rule_pairs(4, 1)})
    write_sft_shards(tmp_path / "sft", {"train": 8, "valid": 2})
    return tmp_path


PHASES = {
    "sft": (sft.main, ["--recipe", "sft.toml", "--data", "sft"], ["train.steps=2"]),
    "rm": (reward.main, ["--recipe", "rm.toml", "--data", "pref"], ["train.steps=2"]),
    "dpo": (dpo.main, ["--recipe", "dpo.toml", "--data", "pref"], ["train.steps=2"]),
    "online_dpo": (online_dpo.main, ["--recipe", "online_dpo.toml", "--data", "pref", "--reward", "rm"],
                   ["train.steps=2", "online.steps_per_round=2", "online.prompts_per_round=4", "online.pad_id=0",
                    f"online.stop_tokens=[{END}]", "online.max_new_tokens=4"]),
    "ppo": (ppo.main, ["--recipe", "ppo.toml", "--prompts", "pref", "--reward", "rm"],
            ["train.steps=1", "ppo.minibatch_size=2", "ppo.ppo_epochs=2", "ppo.max_new_tokens=4", "ppo.pad_id=0",
             f"ppo.stop_tokens=[{END}]"]),
}


def run(phase: str, data: Path, out: Path, *sets: str) -> dict:
    main, flags, own = PHASES[phase]
    paths = {"sft", "pref", "rm"}
    argv = [str(RECIPES / f) if f.endswith(".toml") else str(data / f) if f in paths else f for f in flags]
    argv += ["--init", str(data / "init"), "--out", str(out)]
    return main(argv + [x for s in (*COMMON, *own, *sets) for x in ("--set", s)])


def tolerance(key: str) -> float:
    """k_proj.bias (softmax ignores a shift shared by every key) and the reward head's bias (the loss reads
    r_chosen - r_rejected) have a true gradient of zero: Adam turns summation-order noise there into
    lr-sized steps, so they are compared loosely."""
    return 1e-2 if key.endswith(("k_proj.bias", "head.bias")) else 1e-5


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(out / "checkpoints")[-1] / "model.safetensors"))


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_the_moe_balance_loss_trains_the_router_in_every_phase(tmp_path, phase):
    data = prepared(tmp_path, **MOE)
    run(phase, data, tmp_path / "off", "train.aux_loss_coef=0.0")
    run(phase, data, tmp_path / "on", "train.aux_loss_coef=1.0")
    off, on = weights(tmp_path / "off"), weights(tmp_path / "on")
    routers = [k for k in off if k.endswith("mlp.gate.weight")]
    assert routers, sorted(off)
    for k in routers:   # the only difference between the runs is the balance loss's gradient
        assert not torch.allclose(off[k], on[k], atol=1e-6), (phase, k)


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_micro_batches_do_not_change_a_step(tmp_path, phase):
    data = prepared(tmp_path)
    # Adam's first step is about lr * sign(g): eps = 1e-4 keeps the sign of a ~0 gradient (summation-order
    # noise) from moving a weight by lr, so the comparison sees the accumulation itself
    run(phase, data, tmp_path / "whole", "train.micro_batch_size=0", "optim.eps=1e-4")
    run(phase, data, tmp_path / "split", "train.micro_batch_size=1", "optim.eps=1e-4")
    whole, split = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert whole.keys() == split.keys()
    for k in whole:
        assert torch.allclose(whole[k], split[k], atol=tolerance(k)), (phase, k)
    losses = lambda out: [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert losses(tmp_path / "split") == pytest.approx(losses(tmp_path / "whole"), abs=1e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_dpo_equals_one(tmp_path):
    data = prepared(tmp_path)
    sets = ["train.steps=3", "train.eval_every=3", "train.micro_batch_size=1"]
    run("dpo", data, tmp_path / "one", *sets)
    argv = ["--recipe", str(RECIPES / "dpo.toml"), "--data", str(data / "pref"), "--init", str(data / "init"),
            "--out", str(tmp_path / "two")] + [x for s in (*COMMON, *PHASES["dpo"][2], *sets) for x in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "training.align.dpo", *argv]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = read_metrics(tmp_path / "one/metrics.jsonl"), read_metrics(tmp_path / "two/metrics.jsonl")
    assert [sorted(r) for r in one] == [sorted(r) for r in two]
    for a, b in zip(one, two):
        for key in ("loss", "accuracy", "margin", "val_loss", "val_margin", "grad_norm"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5), (key, a, b)
    wa, wb = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=tolerance(k)), k
