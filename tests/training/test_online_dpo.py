"""Online DPO: pairs are the best and worst samples by the reward model; rounds run end to end."""
from __future__ import annotations

import json

import torch

from tests.training.align_testlib import END, rule_pairs, save_tiny_model, tiny_config, write_preference_shards
from training.align import online_dpo
from training.align.base import load_policy
from training.cli import RECIPES, load_recipe
from training.dist import Env
from training.loop import step_rows
from training.model.qwen import Qwen
from training.align.reward import RewardModel, save_reward_model, score

SMALL = ["online.pad_id=0", f"online.stop_tokens=[{END}]", "online.max_new_tokens=6"]


def test_best_and_worst_pick_argmax_and_argmin():
    prompts = [[1], [2], [3]]
    samples = [[[10], [11], [12]], [[20], [21], [22]], [[30], [31], [32]]]
    rewards = torch.tensor([[0.1, 0.9, -0.5], [2.0, 2.0, 2.0], [1.0, -3.0, 0.0]])
    pairs = online_dpo.best_and_worst(prompts, samples, rewards)
    assert [(p["prompt_ids"], p["chosen_ids"], p["rejected_ids"]) for p in pairs] == \
        [([1], [11], [12]), ([3], [30], [31])]                      # the all-tied prompt is skipped
    assert abs(pairs[0]["reward_chosen"] - 0.9) < 1e-6 and pairs[1]["reward_rejected"] == -3.0
    assert len(online_dpo.best_and_worst(prompts, samples, rewards, min_gap=3.5)) == 1


def setup(tmp_path):
    init = save_tiny_model(tmp_path / "init")
    torch.manual_seed(1)
    save_reward_model(RewardModel(Qwen(tiny_config())), tmp_path / "rm")
    write_preference_shards(tmp_path / "pref", {"train": rule_pairs(32, 0), "valid": rule_pairs(4, 1)})
    return init, tmp_path / "rm", tmp_path / "pref"


def test_round_pairs_are_best_and_worst_by_reward(tmp_path):
    init, rm_path, _ = setup(tmp_path)
    from training.align.reward import load_reward_model
    recipe = load_recipe(RECIPES / "online_dpo.toml", online_dpo.SECTIONS, [
        f"train.init='{init}'", f"train.reward='{rm_path}'", f"data.root='{tmp_path / 'pref'}'", "train.seed=5",
        "train.device='cpu'", "online.prompts_per_round=4", "online.samples_per_prompt=4",
        "online.max_new_tokens=6", "online.pad_id=0", f"online.stop_tokens=[{END}]"])
    rounds = online_dpo.OnlineDPO(recipe, Env())
    rounds.prompts = prompts = [p["prompt_ids"] for p in rule_pairs(8, 3)]
    rounds.collect(0)
    policy, rm, cfg = load_policy(init), load_reward_model(rm_path), recipe.online
    round_prompts = step_rows(prompts, 4, 5, 0)
    samples, _ = online_dpo.sample_and_score(policy, rm, round_prompts, cfg, torch.Generator().manual_seed(5))
    assert len(rounds.pairs) == 4
    for prompt, replies, pair in zip(round_prompts, samples, rounds.pairs):
        alone = [float(score(rm, [prompt], [r])[0]) for r in replies]   # each sample scored on its own
        assert pair["prompt_ids"] == prompt
        assert pair["chosen_ids"] == replies[max(range(4), key=alone.__getitem__)]
        assert pair["rejected_ids"] == replies[min(range(4), key=alone.__getitem__)]
        assert abs(pair["reward_chosen"] - max(alone)) < 1e-4 and abs(pair["reward_rejected"] - min(alone)) < 1e-4
        assert "ref_chosen" in pair


def test_online_dpo_runs_rounds(tmp_path):
    init, rm_path, pref = setup(tmp_path)
    out = tmp_path / "out"
    sets = SMALL + ["train.steps=4", "online.steps_per_round=2", "online.prompts_per_round=4", "optim.lr=1e-3"]
    summary = online_dpo.main(["--recipe", str(RECIPES / "online_dpo.toml"), "--init", str(init), "--reward",
                               str(rm_path), "--data", str(pref), "--out", str(out)]
                              + [x for s in sets for x in ("--set", s)])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["round"] for r in steps] == [0, 0, 1, 1]
    assert all({"reward_mean", "reward_best", "reward_worst", "margin", "accuracy", "lr"} <= set(r) for r in steps)
    assert all(r["reward_best"] >= r["reward_mean"] >= r["reward_worst"] for r in steps)
    assert "val_reward_mean" in summary["first_eval"] and summary["last_eval"]["step"] == 4
    assert (out / "final" / "model.safetensors").exists()
