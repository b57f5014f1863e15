"""Supervised fine-tuning on packed ChatML shards: loss on assistant tokens only, no attention across
conversations, from a pretrained checkpoint.

    python -m training.align.sft --recipe training/recipes/sft.toml --init runs/demo/train/final \\
        --data runs/demo/mix/sft --out runs/demo/sft
    python -m training.align.sft --set train.steps=10 --set optim.lr=1e-4 ...      # overrides

Shards (pipeline/chat_shards.py): rows of input_ids, loss_mask (1 on assistant content and its
<|im_end|>), doc_starts (where each packed conversation begins). Token t of a row is a target only
when loss_mask[t] = 1, so system and user turns, ChatML headers and padding never reach the loss;
doc_starts become the model's `doc_ids`, which restart positions and block attention at every
conversation boundary. The loss of a step is the mean over its assistant tokens (each micro-batch's
summed cross-entropy is divided by the step's total count, so accumulation is exact).

Output: <out>/metrics.jsonl (loss, lr, tokens_per_s, loss_tokens; val_loss, val_ppl), summary.json,
final/ (a checkpoint for training.chat), loss.png. See training/loop.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import UserError, cli_main
from common.recipe import Recipe
from training import dist
from training.align.base import AlignConfig, PolicyPhase, first_rows
from training.cli import run_phase
from training.data import Batch, encode_rows, read_rows as read_split
from training.loop import LossOut, Micro, Trainer, chunks, moe_aux, shard, step_rows
from training.losses import IGNORE
from training.optim import OptimConfig


@dataclass(frozen=True)
class SFTData:
    root: str = "runs/demo/mix/sft"   # SFT shards folder; --data overrides
    max_rows: int = 0                 # use at most this many training rows (0: all)


SECTIONS = {"data": SFTData, "optim": OptimConfig, "train": AlignConfig}


def read_rows(root: str | Path, split: str, limit: int = 0) -> list[dict]:
    """[{input_ids, loss_mask, doc_starts}] of one split (empty when the split has no files)."""
    return read_split(root, split, ["input_ids", "loss_mask", "doc_starts"], limit)


def sft_batch(rows: list[dict]) -> Batch:
    """Packed rows -> Batch (inputs, targets, doc_ids) with targets IGNORE wherever loss_mask is 0."""
    width = max(len(r["input_ids"]) for r in rows)
    batch = encode_rows([(r["input_ids"], r["doc_starts"]) for r in rows], width)
    keep = np.zeros(batch.targets.shape, dtype=bool)
    for b, r in enumerate(rows):
        keep[b, :len(r["loss_mask"]) - 1] = np.asarray(r["loss_mask"][1:], dtype=bool)   # target t+1 of position t
    batch.targets[~torch.from_numpy(keep)] = IGNORE
    return batch


def summed_loss(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(summed cross-entropy over the assistant targets of one batch, the MoE balance loss). The lm_head runs
    only on positions with a target: with a 151,936-token vocabulary it is most of the compute."""
    keep = batch.targets != IGNORE                                                    # [B, T]
    out = model(batch.input_ids, doc_ids=batch.attention_doc_ids(), logits_at=keep)   # logits [N, V]
    return F.cross_entropy(out.logits.float(), batch.targets[keep], reduction="sum"), moe_aux(out)


class SFT(PolicyPhase):
    """Assistant-token cross-entropy on packed ChatML rows; a step's loss is the mean over its assistant tokens."""
    name = "sft"

    def __init__(self, recipe: Recipe, env: dist.Env):
        super().__init__(recipe, env)
        t, d = recipe.train, recipe.data
        self.train_rows = read_rows(d.root, "train", d.max_rows)
        if not self.train_rows:
            raise UserError(f"no SFT rows in {d.root}/train")
        self.valid_rows = first_rows(read_rows(d.root, "valid"), t.eval_rows)

    def micro_batches(self, step: int, env: dist.Env) -> list[Micro]:
        rows = shard(step_rows(self.train_rows, self.t.batch_size, self.t.seed, step), env)
        batches = [sft_batch(c).to(self.device) for c in chunks(rows, self.t.micro_batch_size)]
        return [Micro(b, b.n_targets) for b in batches]

    def loss(self, model, micro: Micro) -> LossOut:
        total, aux = summed_loss(model, micro.data)
        return LossOut(total, aux=aux, tokens=int(micro.data.input_ids.numel()))

    def train_step(self, trainer: Trainer, step: int) -> dict:
        micros = self.micro_batches(step, trainer.env)
        found = trainer.update(micros)
        return {**found, "loss_tokens": int(trainer.env.sum(sum(m.weight for m in micros)))}

    def evaluate(self, trainer: Trainer) -> dict | None:
        if not self.valid_rows:
            return None
        total = count = 0.0
        for c in chunks(self.valid_rows, self.t.micro):
            batch = sft_batch(c).to(self.device)
            total, count = total + float(summed_loss(self.model, batch)[0]), count + batch.n_targets
        loss = total / max(count, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0))}


def main(argv: list[str] | None = None) -> dict:
    return run_phase("training.align.sft", __doc__, SECTIONS, SFT, argv, "sft")


if __name__ == "__main__":
    cli_main(main)
