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
margin), on training steps and on the validation split (val_*). Output as in training/loop.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from common.errors import UserError, cli_main
from common.recipe import Recipe
from training import dist
from training.align.base import (ALIGN_PANELS, AlignConfig, PolicyPhase, PreferenceData, collate_pairs, first_rows,
                                 load_pairs, load_reference, response_logprob)
from training.cli import run_phase
from training.loop import LossOut, Micro, Trainer, chunks, shard, step_rows
from training.losses import dpo_loss
from training.optim import OptimConfig


@dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1                  # Rafailov et al. 2023 sec. 6 use 0.1 (0.5 for summarisation)
    label_smoothing: float = 0.0       # conservative DPO; 0 = the original loss
    precompute_reference: bool = True  # reference log-probs once before training (else every step)
    reference: str = ""                # reference checkpoint; empty: the starting checkpoint (train.init)


SECTIONS = {"data": PreferenceData, "dpo": DPOConfig, "optim": OptimConfig, "train": AlignConfig}


@torch.no_grad()
def reference_logprobs(reference, pairs: list[dict], micro: int, device) -> list[dict]:
    """Pairs with ref_chosen / ref_rejected (summed reply log-probs under the reference) added."""
    out = []
    for chunk in chunks(pairs, micro):
        batch = collate_pairs(chunk).to(device)
        rc, rr = batch.split(response_logprob(reference, batch.ids, batch.response_mask)[0])
        out += [{**p, "ref_chosen": float(c), "ref_rejected": float(r)} for p, c, r in zip(chunk, rc, rr)]
    return out


def pair_loss(policy, reference, pairs: list[dict], cfg: DPOConfig, device) -> LossOut:
    """DPO loss of a micro-batch, summed over its pairs (metrics too); reference None: the pairs carry ref_*."""
    batch = collate_pairs(pairs).to(device)
    lp, aux = response_logprob(policy, batch.ids, batch.response_mask)
    pc, pr = batch.split(lp)
    if reference is None:
        rc = torch.tensor([p["ref_chosen"] for p in pairs], device=device)
        rr = torch.tensor([p["ref_rejected"] for p in pairs], device=device)
    else:
        with torch.no_grad():
            rc, rr = batch.split(response_logprob(reference, batch.ids, batch.response_mask)[0])
    loss, metrics = dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing)
    n = len(pairs)
    return LossOut(loss * n, {k: v * n for k, v in metrics.items()}, aux, int(batch.last.sum() + len(batch.last)))


def pooled(policy, reference, pairs: list[dict], cfg: DPOConfig, micro: int, device) -> dict:
    """DPO loss and metrics over all `pairs`, means over pairs (no gradients; the caller sets no_grad)."""
    totals: dict[str, float] = {}
    for chunk in chunks(pairs, micro):
        out = pair_loss(policy, reference, chunk, cfg, device)
        for k, v in {"loss": float(out.total), **out.sums}.items():
            totals[k] = totals.get(k, 0.0) + v / len(pairs)
    return totals


class DPO(PolicyPhase):
    """The policy against a frozen reference on fixed preference pairs; a step's loss is the mean over its pairs."""
    name = "dpo"
    panels = ALIGN_PANELS

    def __init__(self, recipe: Recipe, env: dist.Env):
        super().__init__(recipe, env)
        t, self.dpo = recipe.train, recipe.dpo
        self.reference = load_reference(self.dpo.reference or t.init, env.device)
        self.train_rows = load_pairs(recipe.data, "train")
        self.valid_rows = first_rows(load_pairs(recipe.data, "valid"), t.eval_rows)
        if not self.train_rows:
            raise UserError(f"no preference pairs in {recipe.data.root}/train")
        if self.dpo.precompute_reference:
            self.train_rows = reference_logprobs(self.reference, self.train_rows, t.micro, env.device)
            self.valid_rows = reference_logprobs(self.reference, self.valid_rows, t.micro, env.device)
            self.reference = None

    def micro_batches(self, step: int, env: dist.Env) -> list[Micro]:
        pairs = shard(step_rows(self.train_rows, self.t.batch_size, self.t.seed, step), env)
        return [Micro(c, len(c)) for c in chunks(pairs, self.t.micro_batch_size)]

    def loss(self, model, micro: Micro) -> LossOut:
        return pair_loss(model, self.reference, micro.data, self.dpo, self.device)

    def evaluate(self, trainer: Trainer) -> dict | None:
        if not self.valid_rows:
            return None
        return pooled(self.model, self.reference, self.valid_rows, self.dpo, self.t.micro, self.device)


def main(argv: list[str] | None = None) -> dict:
    return run_phase("training.align.dpo", __doc__, SECTIONS, DPO, argv, "dpo")


if __name__ == "__main__":
    cli_main(main)
