"""Perplexity on the validation split of a shards folder (``jobs.tokenize`` output).

    from training.evaluate.perplexity import PerplexityConfig, perplexity
    perplexity(model, PerplexityConfig(shards="runs/demo/shards", max_rows=64))
    # -> {"loss": nats/token, "ppl": exp(loss), "tokens": n, "rows": r}

Packed rows are scored with per-document attention (``Batch.attention_doc_ids``), exactly as the
trainer's validation does, so the number is comparable with ``val_loss`` in metrics.jsonl.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.data import IGNORE, ShardData, eval_batches


@dataclass(frozen=True)
class PerplexityConfig:
    shards: str = "runs/demo/shards"   # a shards folder with manifest.json
    split: str = "valid"
    batch_size: int = 4
    max_rows: int = 0                  # 0 = every row of the split


@torch.no_grad()
def perplexity(model, cfg: PerplexityConfig, limit: int = 0) -> dict:
    """Token-weighted cross-entropy over the split; `limit` (rows) overrides cfg.max_rows when > 0."""
    data = ShardData(cfg.shards, cfg.split)
    device = next(model.parameters()).device
    total, tokens, rows = 0.0, 0, 0
    for batch in eval_batches(data, cfg.batch_size, limit or cfg.max_rows):
        batch = batch.to(device)
        logits = model(batch.input_ids, doc_ids=batch.attention_doc_ids()).logits   # [B, T, V]
        total += float(F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten(),
                                       ignore_index=IGNORE, reduction="sum"))
        tokens += batch.n_targets
        rows += batch.input_ids.shape[0]
    loss = total / max(tokens, 1)
    return {"loss": loss, "ppl": math.exp(loss), "tokens": tokens, "rows": rows, "split": cfg.split}
