"""Mixture-of-experts feed-forward of Qwen1.5-MoE / Qwen2-MoE, and its load-balancing loss.

Routing: softmax over all experts in fp32, top-k, optional renormalisation of the k weights
(``norm_topk_prob``). Fine-grained routed experts are computed *grouped*: token copies are sorted by
expert, so every expert runs one matmul over a contiguous slice (no per-expert masking of all
tokens). A shared expert, gated per token by a sigmoid, is added to the routed output.

Weights are stacked per layer, as transformers >= 5 holds them in memory:
``experts.gate_up_proj`` [E, 2I, H] and ``experts.down_proj`` [E, H, I]; ``training/model/hf.py`` splits them
into the per-expert names of Hugging Face checkpoints. Tested in ``tests/training/test_moe.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Experts(nn.Module):
    """E SwiGLU experts stored stacked; forward runs them over expert-sorted token copies."""

    def __init__(self, num_experts: int, hidden: int, inner: int):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * inner, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, inner))

    def forward(self, x: torch.Tensor, expert_idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x [N, H], expert_idx/weights [N, k] -> [N, H] = sum_k weights * expert_k(x)."""
        n, k = expert_idx.shape
        flat = expert_idx.reshape(-1)                      # [N*k] expert of each token copy
        order = flat.argsort(stable=True)                  # copies grouped by expert
        token = order // k                                 # [N*k] source token of each sorted copy
        counts = torch.bincount(flat, minlength=self.gate_up_proj.shape[0]).tolist()
        xs = x[token]                                      # [N*k, H] contiguous per expert
        h = grouped_linear(xs, self.gate_up_proj, counts)  # [N*k, 2I]
        gate, up = h.chunk(2, dim=-1)
        out = grouped_linear(F.silu(gate) * up, self.down_proj, counts)  # [N*k, H]
        out = out * weights.reshape(-1)[order, None].to(out.dtype)
        return torch.zeros_like(x).index_add_(0, token, out)


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Rows of x grouped by expert (counts[e] rows each) times weight[e]^T: [N, in] -> [N, out]."""
    return _GroupedLinear.apply(x, weight, counts)


class _GroupedLinear(torch.autograd.Function):
    """One matmul per expert over its contiguous rows, written in place into preallocated outputs.

    A hand-written backward avoids what autograd would do per expert for ``x[a:b]`` or ``weight[e]``:
    materialise a full-size zero gradient, then concatenate or stack them.
    """

    @staticmethod
    def forward(ctx, x, weight, counts):
        ctx.save_for_backward(x, weight)
        ctx.counts = counts
        out = x.new_empty(x.shape[0], weight.shape[1])                     # [N, out]
        for e, rows in _slices(counts):
            torch.mm(x[rows], weight[e].t(), out=out[rows])                # [c, in] @ [in, out]
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x, grad_w = torch.empty_like(x), torch.zeros_like(weight)     # unused experts get 0
        for e, rows in _slices(ctx.counts):
            torch.mm(grad[rows], weight[e], out=grad_x[rows])              # [c, out] @ [out, in]
            torch.mm(grad[rows].t(), x[rows], out=grad_w[e])               # [out, c] @ [c, in]
        return grad_x, grad_w, None


def _slices(counts: list[int]):
    start = 0
    for e, c in enumerate(counts):
        if c:
            yield e, slice(start, start + c)
        start += c


class SparseMoE(nn.Module):
    """Router + routed experts + sigmoid-gated shared expert (HF names: gate, experts, shared_expert*)."""

    def __init__(self, hidden: int, num_experts: int, top_k: int, inner: int, shared_inner: int,
                 norm_topk_prob: bool):
        super().__init__()
        self.top_k, self.norm_topk_prob = top_k, norm_topk_prob
        self.gate = nn.Linear(hidden, num_experts, bias=False)
        self.experts = Experts(num_experts, hidden, inner)
        self.shared_expert = MLP(hidden, shared_inner) if shared_inner else None
        self.shared_expert_gate = nn.Linear(hidden, 1, bias=False) if shared_inner else None

    def route(self, x: torch.Tensor):
        """x [N, H] -> router logits [N, E], top-k weights [N, k] (x dtype), top-k experts [N, k]."""
        logits = self.gate(x)
        probs = F.softmax(logits, dim=-1, dtype=torch.float32)
        weights, idx = probs.topk(self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, weights.to(x.dtype), idx

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, H] -> (y [B, T, H], router logits [B*T, E])."""
        flat = x.reshape(-1, x.shape[-1])
        logits, weights, idx = self.route(flat)
        y = self.experts(flat, idx, weights)
        if self.shared_expert is not None:
            y = y + torch.sigmoid(self.shared_expert_gate(flat)) * self.shared_expert(flat)
        return y.view_as(x), logits


def load_balancing_loss(router_logits: list[torch.Tensor], num_experts: int, top_k: int,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Switch-Transformer auxiliary loss (Fedus et al. 2021, eqs. 4-6) over all MoE layers.

    router_logits: per layer [N, E] with N = B*T; attention_mask [B, T] (1 = real token) drops pads.
    loss = E * sum_e f_e * P_e, f_e = share of top-k assignments to e, P_e = mean router prob of e.
    """
    logits = torch.cat([r.float() for r in router_logits])              # [L*N, E]
    probs = F.softmax(logits, dim=-1)
    chosen = F.one_hot(probs.topk(top_k, dim=-1).indices, num_experts).sum(1).float()  # [L*N, E]
    if attention_mask is None:
        keep = torch.ones(len(logits), 1, device=logits.device)
    else:
        keep = attention_mask.reshape(-1, 1).float().repeat(len(router_logits), 1)   # [L*N, 1]
    rows = keep.sum()
    f = (chosen * keep).sum(0) / rows                                     # [E]
    p = (probs * keep).sum(0) / rows                                      # [E]
    return num_experts * (f * p).sum()
