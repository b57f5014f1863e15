"""MoE: grouped expert computation equals a naive per-token loop; aux loss equals transformers'."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.model.moe import SparseMoE, load_balancing_loss


def _moe(norm: bool) -> SparseMoE:
    torch.manual_seed(0)
    moe = SparseMoE(hidden=16, num_experts=8, top_k=3, inner=12, shared_inner=20, norm_topk_prob=norm)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return moe


def _naive(moe: SparseMoE, x: torch.Tensor) -> torch.Tensor:
    """Per token: softmax over all experts, top-k, sum of weighted expert SwiGLUs, + gated shared expert."""
    out = []
    for tok in x.reshape(-1, x.shape[-1]):
        probs = F.softmax(moe.gate.weight @ tok, dim=-1)
        w, idx = probs.topk(moe.top_k)
        if moe.norm_topk_prob:
            w = w / w.sum()
        y = torch.zeros_like(tok)
        for weight, e in zip(w, idx.tolist()):
            gate, up = (moe.experts.gate_up_proj[e] @ tok).chunk(2)
            y = y + weight * (moe.experts.down_proj[e] @ (F.silu(gate) * up))
        shared = moe.shared_expert
        y = y + torch.sigmoid(moe.shared_expert_gate.weight @ tok) * shared.down_proj(
            F.silu(shared.gate_proj(tok)) * shared.up_proj(tok))
        out.append(y)
    return torch.stack(out).view_as(x)


@pytest.mark.parametrize("norm", [False, True])
def test_grouped_equals_naive(norm):
    moe = _moe(norm)
    x = torch.randn(3, 11, 16)
    with torch.no_grad():
        y, logits = moe(x)
    assert logits.shape == (33, 8)
    assert (y - _naive(moe, x)).abs().max() < 1e-5


def test_grouped_backward_reaches_all_used_experts():
    moe = _moe(False)
    y, _ = moe(torch.randn(2, 40, 16))
    y.sum().backward()
    assert moe.experts.gate_up_proj.grad.abs().sum(dim=(1, 2)).gt(0).sum() >= 6


@pytest.mark.parametrize("masked", [False, True])
def test_aux_loss_matches_transformers(masked):
    mod = pytest.importorskip("transformers.models.qwen2_moe.modeling_qwen2_moe")
    g = torch.Generator().manual_seed(0)
    B, T, E, k = 2, 9, 8, 2
    logits = tuple(torch.randn(B * T, E, generator=g) for _ in range(3))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, :4] = 0
    mask = mask if masked else None
    ref = mod.load_balancing_loss_func(logits, E, k, mask)
    assert torch.allclose(load_balancing_loss(list(logits), E, k, mask), ref, atol=1e-6)


def test_grouped_gradients_equal_naive():
    moe = _moe(True)
    x = torch.randn(2, 7, 16)
    grads = []
    for fn in (lambda t: moe(t)[0], lambda t: _naive(moe, t)):
        moe.zero_grad()
        xg = x.clone().requires_grad_(True)
        (fn(xg) * torch.linspace(-1, 1, 16)).sum().backward()
        grads.append([xg.grad] + [p.grad.clone() for p in moe.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)
