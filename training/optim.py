"""AdamW with parameter groups and learning-rate schedules for the trainer.

    cfg = OptimConfig(lr=3e-4, weight_decay=0.1)
    opt = make_optimizer(param_groups(model, cfg), cfg)
    sched = make_scheduler(opt, OptimConfig(warmup_steps=100, schedule="cosine"), total_steps=10_000)

Weight decay applies to matrices only: norms and biases never decay, embeddings (and a tied lm_head)
only with `decay_embeddings = true` (GPT-3 / nanoGPT practice). Schedules: linear warmup from 0 to
`lr` over `warmup_steps`, then "cosine" or "linear" decay to `min_lr_ratio * lr` at `total_steps`, or
"constant". Qwen (2023) sec. 2.4: AdamW, beta2 = 0.95, eps = 1e-8, cosine to 10% of the peak;
weight decay 0.1 and clipping at 1.0 as in LLaMA (Touvron et al. 2023) sec. 2.2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from common.recipe import require, require_fraction, require_positive

SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4                # peak learning rate
    min_lr_ratio: float = 0.1       # Qwen (2023) 2.4: decay to 10% of the peak
    weight_decay: float = 0.1       # LLaMA (Touvron et al. 2023) sec. 2.2
    decay_embeddings: bool = False  # embeddings (and a tied lm_head) decay too
    beta1: float = 0.9
    beta2: float = 0.95             # Qwen (2023) 2.4
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "cosine"        # cosine | linear | constant
    grad_clip: float = 1.0          # max global grad norm (0: no clipping); LLaMA sec. 2.2

    def __post_init__(self):
        require(self.lr >= 0, "lr", self.lr, ">= 0")
        require_positive(self, "eps")
        require_fraction(self, "min_lr_ratio", "beta1", "beta2")
        require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, ">= 0")
        require(self.grad_clip >= 0, "grad_clip", self.grad_clip, ">= 0 (0: no clipping)")
        require(self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {SCHEDULES}")


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """[decayed, not decayed] groups; every parameter once (a tied lm_head is the embedding)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for _, p in model.named_parameters():   # named_parameters() already drops tied duplicates
        if not p.requires_grad:
            continue
        is_embedding = id(p) in embeddings
        wants = p.ndim >= 2 and (cfg.decay_embeddings or not is_embedding)
        (decay if wants else no_decay).append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over parameter groups (`param_groups`; a group may carry its own lr), fused on CUDA."""
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused or None)


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


def make_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    lr_factor(0, cfg, total_steps)   # validates the schedule name early
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg, total_steps))
