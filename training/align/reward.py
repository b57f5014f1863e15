"""Reward model: the Qwen backbone with a scalar head on the last real token, trained with the
Bradley-Terry loss on preference pairs.

    python -m training.align.reward --recipe training/recipes/rm.toml --init runs/demo/sft/final \\
        --data runs/demo/mix/preference --out runs/demo/rm

    rm = load_reward_model("runs/demo/rm/final")             # RewardModel, frozen
    scores = rm(ids, last)                                   # ids [B, T] right padded, last [B] -> [B]
    scores = score(rm, prompts, responses)                   # id lists -> [B] rewards

Loss: -log sigmoid(r_chosen - r_rejected - margin) (training/losses.py). Metrics: accuracy (share of
pairs with r_chosen > r_rejected) and margin (mean r_chosen - r_rejected), on training batches and on
the validation split (val_accuracy, val_margin). The head reads the final-norm hidden state of the last
prompt+reply token (the reply ends in <|im_end|>), as InstructGPT (Ouyang et al. 2022, sec. 3.5) and
Qwen (2023, sec. 3.2.1) do; the lm_head is never run. Head init: normal with std 1/sqrt(H + 1), as in
OpenAI's lm-human-preferences reward head.

Saved as our checkpoint (training.model.checkpoint: the backbone, loadable as a plain Qwen) plus
`reward_head.safetensors` (weight [1, H], bias [1]).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from training.align.common import (Loop, LoopConfig, PreferenceData, batches, begin, chunks, collate_pairs, concat_right_pad,
                            freeze, hidden_states, load_pairs, load_policy)
from training.model.checkpoint import load_model, save_model
from training.losses import bradley_terry_loss
from training.model.qwen import Qwen
from training.optim import OptimConfig

HEAD = "reward_head.safetensors"


class RewardModel(nn.Module):
    """backbone (a Qwen) -> final-norm hidden state of token `last` -> Linear(H, 1) -> reward."""

    def __init__(self, backbone: Qwen):
        super().__init__()
        self.backbone = backbone
        h = backbone.cfg.hidden_size
        self.head = nn.Linear(h, 1)
        nn.init.normal_(self.head.weight, std=1 / math.sqrt(h + 1))
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """ids [B, T] (right padded), last [B] index of each row's last real token -> rewards [B] fp32."""
        h = hidden_states(self.backbone, ids)                              # [B, T, H]
        picked = h[torch.arange(ids.shape[0], device=ids.device), last]    # [B, H]
        return self.head(picked).squeeze(-1).float()


def save_reward_model(rm: RewardModel, path: str | Path) -> None:
    save_model(rm.backbone, path)
    save_file({k: v.detach().contiguous() for k, v in rm.head.state_dict().items()}, str(Path(path) / HEAD))


def load_reward_model(path: str | Path, device: str | torch.device = "cpu", trainable: bool = False) -> RewardModel:
    """A saved reward model; frozen (eval, no grads) unless trainable. A plain checkpoint without a head
    gets a fresh head (the start of reward-model training)."""
    rm = RewardModel(load_model(path).float())
    if (Path(path) / HEAD).exists():
        rm.head.load_state_dict(load_file(str(Path(path) / HEAD)))
    rm.to(device)
    return rm.train() if trainable else freeze(rm)


@torch.no_grad()
def score(rm: RewardModel, prompts: list[list[int]], responses: list[list[int]], pad_id: int = 0) -> torch.Tensor:
    """Rewards [B] of prompt + response pairs (id lists)."""
    ids, _ = concat_right_pad(prompts, responses, pad_id)
    last = torch.tensor([len(p) + len(r) - 1 for p, r in zip(prompts, responses)])
    device = next(rm.parameters()).device
    return rm(ids.to(device), last.to(device))


@dataclass(frozen=True)
class RMConfig:
    margin: float = 0.0   # subtracted from r_c - r_r inside the loss (Llama 2 eq. 2 uses rated margins)


SECTIONS = {"data": PreferenceData, "rm": RMConfig, "optim": OptimConfig, "train": LoopConfig}


def pair_metrics(rm: RewardModel, pairs: list[dict], margin: float, device) -> tuple[torch.Tensor, dict, int]:
    """(Bradley-Terry loss, metrics, tokens) of one micro-batch of pairs."""
    batch = collate_pairs(pairs).to(device)
    rewards = rm(batch.ids, batch.last)
    loss, metrics = bradley_terry_loss(*batch.split(rewards), margin)
    return loss, metrics, int(batch.last.sum() + len(batch.last))


def make_step(rm: RewardModel, rows: list[dict], margin: float, train: LoopConfig, device):
    def step(i: int) -> dict:
        pairs = batches(rows, train.batch_size, train.seed, i)
        totals, tokens = {}, 0
        for chunk in chunks(pairs, train.micro_batch_size):
            loss, metrics, n = pair_metrics(rm, chunk, margin, device)
            (loss * len(chunk) / len(pairs)).backward()
            for k, v in {"loss": loss.item(), **metrics}.items():
                totals[k] = totals.get(k, 0.0) + v * len(chunk) / len(pairs)
            tokens += n
        return {**totals, "tokens": tokens}
    return step


def make_eval(rm: RewardModel, rows: list[dict], margin: float, train: LoopConfig, device):
    if not rows:
        return None
    rows = rows[:train.eval_rows] if train.eval_rows else rows

    def evaluate() -> dict:
        rewards = []
        for chunk in chunks(rows, train.micro_batch_size or train.batch_size):
            batch = collate_pairs(chunk).to(device)
            rewards.append(torch.stack(batch.split(rm(batch.ids, batch.last)), 1))   # [b, 2]
        r = torch.cat(rewards)
        loss, metrics = bradley_terry_loss(r[:, 0], r[:, 1], margin)
        return {"loss": loss.item(), **metrics}
    return evaluate


def main(argv: list[str] | None = None) -> dict:
    args, recipe, device = begin("reward", __doc__, SECTIONS, argv, "rm")
    t = recipe.train
    rm = RewardModel(load_policy(t.init, device)).to(device).train()
    train_rows = load_pairs(recipe.data, "train")
    if not train_rows:
        raise SystemExit(f"no preference pairs in {recipe.data.root}/train")
    loop = Loop(t.out, rm, recipe.optim, t, "rm", recipe)
    valid = make_eval(rm, load_pairs(recipe.data, "valid"), recipe.rm.margin, t, device)
    summary = loop.run(make_step(rm, train_rows, recipe.rm.margin, t, device), valid,
                       lambda path: save_reward_model(rm, path), args.max_steps, args.resume)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
