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

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from common.errors import UserError, cli_main
from common.recipe import Recipe
from training import dist
from training.align.base import (ALIGN_PANELS, AlignConfig, PreferenceData, collate_pairs, concat_right_pad,
                                 first_rows, freeze, load_pairs, load_policy)
from training.cli import run_phase
from training.loop import LossOut, Micro, Phase, Trainer, chunks, shard, step_rows, sub_state
from training.losses import bradley_terry_loss
from training.model.checkpoint import build_model, load_model, save_model
from training.model.qwen import Qwen
from training.optim import OptimConfig

HEAD = "reward_head.safetensors"


class RewardModel(nn.Module):
    """backbone (a Qwen) -> final-norm hidden state of token `last` -> Linear(H, 1) -> reward. The backbone's
    lm_head is never run: an untied one is frozen."""

    def __init__(self, backbone: Qwen):
        super().__init__()
        self.backbone = backbone
        self.cfg = backbone.cfg
        h = backbone.cfg.hidden_size
        self.head = nn.Linear(h, 1)
        nn.init.normal_(self.head.weight, std=1 / math.sqrt(h + 1))
        nn.init.zeros_(self.head.bias)
        if not backbone.cfg.tie_word_embeddings:
            backbone.lm_head.weight.requires_grad_(False)

    def forward(self, ids: torch.Tensor, last: torch.Tensor, with_aux: bool = False):
        """ids [B, T] (right padded), last [B] index of each row's last real token -> rewards [B] fp32, or
        (rewards, the backbone's MoE balance loss) with with_aux (training: one forward that DDP sees)."""
        out = self.backbone(ids, return_hidden=True)                             # hidden [B, T, H]
        picked = out.hidden[torch.arange(ids.shape[0], device=ids.device), last]  # [B, H]
        rewards = self.head(picked).squeeze(-1).float()
        return (rewards, out.aux_loss) if with_aux else rewards


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


SECTIONS = {"data": PreferenceData, "rm": RMConfig, "optim": OptimConfig, "train": AlignConfig}


def pair_rewards(rm: nn.Module, pairs: list[dict], device) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Rewards [b, 2] (chosen, rejected) of a micro-batch of pairs, the aux loss and the tokens read."""
    batch = collate_pairs(pairs).to(device)
    rewards, aux = rm(batch.ids, batch.last, with_aux=True)
    return torch.stack(batch.split(rewards), 1), aux, int(batch.last.sum() + len(batch.last))


class RewardTraining(Phase):
    """Bradley-Terry loss on preference pairs; a step's loss is the mean over its pairs."""
    name = "rm"
    panels = ALIGN_PANELS

    def __init__(self, recipe: Recipe, env: dist.Env):
        t, self.margin = recipe.train, recipe.rm.margin
        self.t, self.device = t, env.device
        self.model = RewardModel(load_policy(t.init, env.device)).to(env.device).train()
        self.cfg = self.model.cfg
        self.train_rows = load_pairs(recipe.data, "train")
        if not self.train_rows:
            raise UserError(f"no preference pairs in {recipe.data.root}/train")
        self.valid_rows = first_rows(load_pairs(recipe.data, "valid"), t.eval_rows)

    def micro_batches(self, step: int, env: dist.Env) -> list[Micro]:
        pairs = shard(step_rows(self.train_rows, self.t.batch_size, self.t.seed, step), env)
        return [Micro(c, len(c)) for c in chunks(pairs, self.t.micro_batch_size)]

    def loss(self, model, micro: Micro) -> LossOut:
        rewards, aux, tokens = pair_rewards(model, micro.data, self.device)
        loss, metrics = bradley_terry_loss(rewards[:, 0], rewards[:, 1], self.margin)
        return LossOut(loss * micro.weight, {k: v * micro.weight for k, v in metrics.items()}, aux, tokens)

    def evaluate(self, trainer: Trainer) -> dict | None:
        if not self.valid_rows:
            return None
        r = torch.cat([pair_rewards(self.model, c, self.device)[0] for c in chunks(self.valid_rows, self.t.micro)])
        loss, metrics = bradley_terry_loss(r[:, 0], r[:, 1], self.margin)
        return {"loss": loss.item(), **metrics}

    def causal_lm(self, state: dict) -> None:
        return None   # a reward model, not a causal LM: no Hugging Face export

    def save_final(self, state: dict, final: Path) -> None:
        rm = RewardModel(build_model(self.cfg, sub_state(state, "backbone.")))
        rm.head.load_state_dict(sub_state(state, "head."))
        save_reward_model(rm, final)


def main(argv: list[str] | None = None) -> dict:
    return run_phase("training.align.reward", __doc__, SECTIONS, RewardTraining, argv, "rm")


if __name__ == "__main__":
    cli_main(main)
