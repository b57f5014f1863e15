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
final/ (a checkpoint for training.chat), loss.png. See training/align/common.py.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.align.common import (Loop, LoopConfig, batches, begin, chunks, hidden_states, load_policy)
from training.data import Batch, encode_rows, read_rows as read_split
from training.losses import IGNORE
from training.optim import OptimConfig


@dataclass(frozen=True)
class SFTData:
    root: str = "runs/demo/mix/sft"   # SFT shards folder; --data overrides
    max_rows: int = 0                 # use at most this many training rows (0: all)


SECTIONS = {"data": SFTData, "optim": OptimConfig, "train": LoopConfig}


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


def summed_loss(model, batch: Batch) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy over assistant targets, their count) of one batch. The lm_head runs only
    on positions with a target: with a 151,936-token vocabulary it is most of the compute."""
    h = hidden_states(model, batch.input_ids, doc_ids=batch.attention_doc_ids())   # [B, T, H]
    keep = batch.targets != IGNORE                                                    # [B, T]
    logits = model.lm_head(h[keep]).float()                                           # [N, V]
    return F.cross_entropy(logits, batch.targets[keep], reduction="sum"), batch.n_targets


def make_step(model, rows: list[dict], train: LoopConfig, device):
    def step(i: int) -> dict:
        micro = [sft_batch(c).to(device) for c in chunks(batches(rows, train.batch_size, train.seed, i),
                                                         train.micro_batch_size)]
        n_total = sum(b.n_targets for b in micro)
        loss_sum = 0.0
        for b in micro:
            total, _ = summed_loss(model, b)
            (total / max(n_total, 1)).backward()
            loss_sum += total.item()
        tokens = sum(int(b.input_ids.numel()) for b in micro)
        return {"loss": loss_sum / max(n_total, 1), "tokens": tokens, "loss_tokens": n_total}
    return step


def make_eval(model, rows: list[dict], train: LoopConfig, device):
    if not rows:
        return None
    rows = rows[:train.eval_rows] if train.eval_rows else rows

    def evaluate() -> dict:
        total = count = 0.0
        for c in chunks(rows, train.micro_batch_size or train.batch_size):
            s, n = summed_loss(model, sft_batch(c).to(device))
            total, count = total + float(s), count + n
        loss = total / max(count, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0))}
    return evaluate


def main(argv: list[str] | None = None) -> dict:
    args, recipe, device = begin("sft", __doc__, SECTIONS, argv)
    t = recipe.train
    model = load_policy(t.init, device)
    train_rows = read_rows(recipe.data.root, "train", recipe.data.max_rows)
    if not train_rows:
        raise SystemExit(f"no SFT rows in {recipe.data.root}/train")
    loop = Loop(t.out, model, recipe.optim, t, "sft", recipe)
    valid = make_eval(model, read_rows(recipe.data.root, "valid"), t, device)
    summary = loop.run(make_step(model, train_rows, t, device), valid, max_steps=args.max_steps, resume=args.resume)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
