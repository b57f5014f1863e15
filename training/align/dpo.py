"""Direct Preference Optimization (Rafailov et al. 2023), Qwen2's offline preference stage (Yang et al.
2024, sec. 4.3): the policy learns from preference pairs against a frozen reference, no reward model.

    python -m training.align.dpo --recipe training/recipes/dpo.toml --init runs/demo/sft/final \\
        --data runs/demo/mix/preference --out runs/demo/dpo
    python -m training.align.dpo --set dpo.precompute_reference=false ...     # reference log-probs on the fly

Reference log-probabilities come from the starting checkpoint (or dpo.reference). With
`precompute_reference = true` they are computed once for every train and valid pair before training
and the reference model is dropped (half the memory and a third less compute per step, the usual
choice); with false the frozen reference runs beside the policy at every step (needed when pairs
change, as in online DPO). Both give identical losses.

Metrics (training/losses.py dpo_loss): loss, reward_chosen / reward_rejected (beta * (log pi - log
pi_ref) of each reply), margin (their difference) and accuracy (share of pairs with a positive
margin), on training steps and on the validation split (val_*). Output as in training/align/common.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from training.align.common import (Loop, LoopConfig, PreferenceData, batches, begin, chunks, collate_pairs, load_pairs,
                            load_policy, load_reference, sequence_logprob)
from training.losses import dpo_loss
from training.optim import OptimConfig


@dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1                  # Rafailov et al. 2023 sec. 6 use 0.1 (0.5 for summarisation)
    label_smoothing: float = 0.0       # conservative DPO; 0 = the original loss
    precompute_reference: bool = True  # reference log-probs once before training (else every step)
    reference: str = ""                # reference checkpoint; empty: the starting checkpoint (train.init)


SECTIONS = {"data": PreferenceData, "dpo": DPOConfig, "optim": OptimConfig, "train": LoopConfig}


@torch.no_grad()
def reference_logprobs(reference, pairs: list[dict], micro: int, device) -> list[dict]:
    """Pairs with ref_chosen / ref_rejected (summed reply log-probs under the reference) added."""
    out = []
    for chunk in chunks(pairs, micro):
        batch = collate_pairs(chunk).to(device)
        rc, rr = batch.split(sequence_logprob(reference, batch.ids, batch.response_mask))
        out += [{**p, "ref_chosen": float(c), "ref_rejected": float(r)} for p, c, r in zip(chunk, rc, rr)]
    return out


def pair_loss(policy, reference, pairs: list[dict], cfg: DPOConfig, device) -> tuple[torch.Tensor, dict, int]:
    """(DPO loss, metrics, tokens) of a micro-batch; reference None: the pairs carry ref_* values."""
    batch = collate_pairs(pairs).to(device)
    pc, pr = batch.split(sequence_logprob(policy, batch.ids, batch.response_mask))
    if reference is None:
        rc = torch.tensor([p["ref_chosen"] for p in pairs], device=device)
        rr = torch.tensor([p["ref_rejected"] for p in pairs], device=device)
    else:
        with torch.no_grad():
            rc, rr = batch.split(sequence_logprob(reference, batch.ids, batch.response_mask))
    loss, metrics = dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing)
    return loss, metrics, int(batch.last.sum() + len(batch.last))


def update(policy, reference, pairs: list[dict], cfg: DPOConfig, micro: int, device) -> dict:
    """Forward + backward of one optimizer step over `pairs` (micro-batched); returns mean metrics."""
    totals, tokens = {}, 0
    for chunk in chunks(pairs, micro):
        loss, metrics, n = pair_loss(policy, reference, chunk, cfg, device)
        (loss * len(chunk) / len(pairs)).backward()
        for k, v in {"loss": loss.item(), **metrics}.items():
            totals[k] = totals.get(k, 0.0) + v * len(chunk) / len(pairs)
        tokens += n
    return {**totals, "tokens": tokens}


def evaluate_pairs(policy, reference, pairs: list[dict], cfg: DPOConfig, micro: int, device) -> dict:
    """DPO loss and metrics over all `pairs`, pooled (no gradients; the caller sets no_grad)."""
    totals = {}
    for chunk in chunks(pairs, micro):
        loss, metrics, _ = pair_loss(policy, reference, chunk, cfg, device)
        for k, v in {"loss": loss.item(), **metrics}.items():
            totals[k] = totals.get(k, 0.0) + v * len(chunk) / len(pairs)
    return totals


def main(argv: list[str] | None = None) -> dict:
    args, recipe, device = begin("dpo", __doc__, SECTIONS, argv)
    t, cfg = recipe.train, recipe.dpo
    micro = t.micro_batch_size or t.batch_size
    policy, reference = load_policy(t.init, device), load_reference(cfg.reference or t.init, device)
    train_rows = load_pairs(recipe.data, "train")
    valid_rows = load_pairs(recipe.data, "valid")
    valid_rows = valid_rows[:t.eval_rows] if t.eval_rows else valid_rows
    if not train_rows:
        raise SystemExit(f"no preference pairs in {recipe.data.root}/train")
    if cfg.precompute_reference:
        train_rows = reference_logprobs(reference, train_rows, micro, device)
        valid_rows = reference_logprobs(reference, valid_rows, micro, device)
        reference = None
    loop = Loop(t.out, policy, recipe.optim, t, "dpo", recipe)
    step = lambda i: update(policy, reference, batches(train_rows, t.batch_size, t.seed, i), cfg, micro, device)
    valid = (lambda: evaluate_pairs(policy, reference, valid_rows, cfg, micro, device)) if valid_rows else None
    summary = loop.run(step, valid, max_steps=args.max_steps, resume=args.resume)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
