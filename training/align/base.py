"""What the alignment phases (SFT, reward model, DPO, online DPO, PPO) share: log-probabilities of
responses, policy / reference loading, padded and preference batches, and the [train] table. The loop
itself is training/loop.py; the command line training/cli.py.

    lp = token_logprobs(model, ids, doc_ids=None)           # [B, T-1]: log p(ids[:, t+1] | ids[:, :t+1]), fp32
    s = sequence_logprob(model, ids, mask)                  # [B]: sum of log p over tokens where mask == 1
    s, aux = response_logprob(model, ids, mask)             # the same and the MoE balance loss of the forward
    policy, ref = load_policy(path, device), load_reference(path, device)   # ref: eval mode, no grads
    ids, resp_mask = concat_right_pad(prompts, responses)   # [B, T] each; resp_mask = 1 on response tokens
    batch = collate_pairs(rows)                             # PairBatch: chosen rows then rejected rows
    rows = load_pairs(PreferenceData(...), "train")        # preference rows, truncated per the [data] table

Masks and shapes: token t of a sequence is predicted from position t - 1, so a response mask [B, T]
(1 where token t belongs to the response) selects the entries [:, 1:] of token log-probs. Right
padding needs no attention mask (causal attention never looks right), so padded batches keep the
fast SDPA path; padding positions are excluded by the response mask.

Every phase writes the output folder of training/loop.py (metrics.jsonl, summary.json, final/,
checkpoints/, loss.png, recipe.json) and runs under torchrun like pretraining: each rank takes every
world-th row of a step's batch; sampling phases (online DPO, PPO) draw the same samples on every rank.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from common.recipe import require, require_positive
from training.data import read_rows
from common.plot import Panel, with_val
from training.loop import LoopConfig, Phase
from training.model.checkpoint import load_model
from training.model.qwen import Qwen


# ----------------------------------------------------------------------------- log-probabilities

def token_logprobs(model: Qwen, input_ids: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T-1] fp32 log-probability of each next token, input_ids[:, 1:], under the model."""
    logits = model(input_ids, doc_ids=doc_ids).logits[:, :-1]        # [B, T-1, V]
    targets = input_ids[:, 1:]
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return -nll.view_as(targets)


def response_logprob(model: Qwen, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """([B] sum of log p(ids[b, t]) over the tokens t with mask[b, t] = 1 (t >= 1), the forward's MoE balance
    loss). The lm_head runs only on the positions that predict those tokens (memory O(response tokens x vocab)),
    inside the model's forward, so a DDP/FSDP-wrapped model syncs its gradients as for any forward."""
    keep = torch.zeros_like(mask, dtype=torch.bool)
    keep[:, :-1] = mask[:, 1:].bool()                                 # position t predicts token t + 1
    out = model(ids, logits_at=keep)
    lp = -F.cross_entropy(out.logits.float(), ids[:, 1:][keep[:, :-1]], reduction="none")   # [N]
    rows = keep.nonzero()[:, 0]
    return torch.zeros(ids.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, rows, lp), out.aux_loss


def sequence_logprob(model: Qwen, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] sum of log p(ids[b, t]) over the tokens t with mask[b, t] = 1 (response_logprob without the aux loss)."""
    return response_logprob(model, ids, mask)[0]


# ----------------------------------------------------------------------------- models

def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients: a frozen reference (or reward) model."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> Qwen:
    """The trainable policy, fp32, from a checkpoint folder (training.model.checkpoint format)."""
    return load_model(path).float().to(device).train()


def load_reference(path: str | Path, device: str | torch.device = "cpu") -> Qwen:
    """A frozen copy of the checkpoint: the KL / DPO reference."""
    return freeze(load_model(path).float().to(device))


# ----------------------------------------------------------------------------- batches

def right_pad(seqs: list[list[int]], pad_id: int = 0) -> torch.Tensor:
    """[B, T] int64, each row followed by pad_id up to the longest."""
    width = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)


def concat_right_pad(prompts: list[list[int]], responses: list[list[int]],
                     pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """prompt + response per row, right padded -> ids [B, T], response mask [B, T] (1 on response tokens)."""
    ids = right_pad([list(p) + list(r) for p, r in zip(prompts, responses)], pad_id)
    mask = torch.zeros_like(ids)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        mask[b, len(p):len(p) + len(r)] = 1
    return ids, mask


@dataclass
class PairBatch:
    """B preference pairs as 2B rows: rows [0, B) chosen, [B, 2B) rejected, same prompt per pair."""
    ids: torch.Tensor            # [2B, T] prompt + response, right padded
    response_mask: torch.Tensor  # [2B, T] 1 on response tokens
    last: torch.Tensor           # [2B] index of the last real token (for a reward head)

    @property
    def n_pairs(self) -> int:
        return self.ids.shape[0] // 2

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A per-row tensor [2B, ...] -> (chosen [B, ...], rejected [B, ...])."""
        return x[: self.n_pairs], x[self.n_pairs:]

    def to(self, device) -> "PairBatch":
        return PairBatch(self.ids.to(device), self.response_mask.to(device), self.last.to(device))


def collate_pairs(rows: list[dict], pad_id: int = 0) -> PairBatch:
    """Rows with prompt_ids, chosen_ids, rejected_ids -> a PairBatch."""
    prompts = [r["prompt_ids"] for r in rows] * 2
    responses = [r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows]
    ids, mask = concat_right_pad(prompts, responses, pad_id)
    last = torch.tensor([len(p) + len(r) - 1 for p, r in zip(prompts, responses)], dtype=torch.long)
    return PairBatch(ids, mask, last)


def truncate_pair(row: dict, max_prompt: int, max_response: int) -> dict:
    """Keeps the last max_prompt prompt tokens (its end is the assistant header) and the first
    max_response tokens of each reply (0: no limit)."""
    cut = lambda ids, n, tail: list(ids)[-n:] if tail and n else (list(ids)[:n] if n else list(ids))
    return {**row, "prompt_ids": cut(row["prompt_ids"], max_prompt, True),
            "chosen_ids": cut(row["chosen_ids"], max_response, False),
            "rejected_ids": cut(row["rejected_ids"], max_response, False)}


@dataclass(frozen=True)
class PreferenceData:
    """[data] of the preference stages (reward model, DPO, online DPO)."""
    root: str = "runs/demo/mix/preference"   # preference shards folder; --data overrides
    max_prompt_len: int = 256                # keep the last N prompt tokens (0: all)
    max_response_len: int = 128              # keep the first N tokens of each reply (0: all)
    max_pairs: int = 0                       # use at most this many training pairs (0: all)


def load_pairs(data: PreferenceData, split: str) -> list[dict]:
    """Truncated preference rows of one split (max_pairs applies to train only)."""
    rows = read_preferences(data.root, split, data.max_pairs if split == "train" else 0)
    return [truncate_pair(r, data.max_prompt_len, data.max_response_len) for r in rows]


def read_preferences(root: str | Path, split: str, limit: int = 0) -> list[dict]:
    """Preference shards (pipeline/chat_shards.py) -> [{prompt_ids, chosen_ids, rejected_ids, ...}]."""
    return read_rows(root, split, limit=limit)


# ----------------------------------------------------------------------------- the [train] table and state

@dataclass(frozen=True)
class AlignConfig(LoopConfig):
    """[train] of every alignment recipe: the loop's keys (training/loop.py) plus the batch layout."""
    init: str = "runs/demo/train/final"   # checkpoint to start from; --init overrides
    reward: str = "runs/demo/rm/final"    # reward model (online DPO, PPO); --reward overrides
    out: str = "runs/demo/align"          # --out overrides
    steps: int = 50                       # optimizer steps (PPO: iterations); also the lr schedule's horizon
    batch_size: int = 4                   # rows (SFT), pairs (RM, DPO) or prompts (PPO) per step
    micro_batch_size: int = 0             # rows / pairs per forward (gradient accumulation); 0: batch_size
    eval_every: int = 25                  # 0: only at the start and the end
    eval_rows: int = 64                   # validation rows / pairs / prompts per evaluation (0: all)
    save_every: int = 0                   # training checkpoint every N steps (0: only at the end); --resume

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "batch_size")
        require(self.micro_batch_size >= 0, "micro_batch_size", self.micro_batch_size, ">= 0 (0: batch_size)")
        require(self.eval_rows >= 0, "eval_rows", self.eval_rows, ">= 0 (0: all)")

    @property
    def micro(self) -> int:
        return self.micro_batch_size or self.batch_size


# the curves of the preference phases: loss on the left, accuracy / margin / rewards on the right
ALIGN_PANELS = (Panel("loss", with_val("loss")),
                Panel("preference", with_val("accuracy", "margin", "reward_chosen", "reward_rejected", "reward_mean",
                                             val="o--")))


def first_rows(rows: list, n: int) -> list:
    """The first n rows (n = 0: all): an evaluation subset."""
    return rows[:n] if n else rows


class PolicyPhase(Phase):
    """A phase that trains the policy checkpoint at train.init (SFT, DPO, online DPO)."""

    def __init__(self, recipe, env):
        self.t, self.device = recipe.train, env.device
        self.model = load_policy(recipe.train.init, env.device)
        self.cfg = self.model.cfg


class GeneratorState:
    """A torch.Generator seen through state_dict() / load_state_dict(), so checkpoints can hold it."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])
