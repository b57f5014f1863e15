"""Loss functions of the alignment stages, pure tensor math (no models, no data):

    loss, n = sft_loss(logits, targets)                        # mean CE over targets != IGNORE (assistant tokens)
    loss, m = bradley_terry_loss(r_chosen, r_rejected, margin)   # reward model; m: accuracy, margin, ...
    loss, m = dpo_loss(pc, pr, rc, rr, beta)                     # DPO (sigmoid); m: reward_chosen, ..., accuracy

Bradley-Terry: -log sigmoid(r_c - r_r - margin), the reward-model objective of InstructGPT
(Ouyang et al. 2022, eq. 1) with Llama 2's optional margin (Touvron et al. 2023, eq. 2). DPO: Rafailov
et al. 2023, eq. 7: -log sigmoid(beta * ((pc - rc) - (pr - rr))) with pc/pr the policy's and rc/rr the
reference's summed log-probabilities of the chosen/rejected replies; the implicit rewards are
beta * (policy - reference). Label smoothing is the conservative DPO variant (Mitchell 2023):
(1 - eps) * loss(z) + eps * loss(-z). Metric values are Python floats over the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def sft_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """logits [B, T, V], targets [B, T] (IGNORE where no loss) -> (mean CE over targets, target count).
    Only positions with a target contribute, so non-assistant tokens never reach the loss."""
    n = int((targets != IGNORE).sum())
    total = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    return total / max(n, 1), n


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values where mask is 1 (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                       margin: float | torch.Tensor = 0.0) -> tuple[torch.Tensor, dict]:
    """Rewards [B] -> (mean -log sigmoid(r_c - r_r - margin), metrics). accuracy: share of pairs with
    r_c > r_r (a tie counts as wrong); margin: mean r_c - r_r."""
    diff = r_chosen.float() - r_rejected.float()
    loss = -F.logsigmoid(diff - margin).mean()
    diff, r_chosen, r_rejected = diff.detach(), r_chosen.detach(), r_rejected.detach()
    metrics = {"accuracy": float((diff > 0).float().mean()), "margin": float(diff.mean()),
               "reward_chosen": float(r_chosen.float().mean()), "reward_rejected": float(r_rejected.float().mean())}
    return loss, metrics


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Summed log-probs [B] of each reply under the policy and the reference -> (mean DPO loss, metrics).
    reward_* = beta * (policy - reference) (detached means); margin = mean(reward_chosen - reward_rejected);
    accuracy = share of pairs with a positive margin."""
    chosen = beta * (policy_chosen.float() - ref_chosen.float())        # [B] implicit rewards
    rejected = beta * (policy_rejected.float() - ref_rejected.float())
    z = chosen - rejected
    loss = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    z = z.detach()
    metrics = {"reward_chosen": float(chosen.detach().mean()), "reward_rejected": float(rejected.detach().mean()),
               "margin": float(z.mean()), "accuracy": float((z > 0).float().mean())}
    return loss.mean(), metrics
