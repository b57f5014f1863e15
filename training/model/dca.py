"""Dual Chunk Attention (DCA; An et al. 2024, "Training-Free Long-Context Scaling of LLMs").

Used by Qwen2 for contexts longer than pretraining. With pretraining length c (``chunk_size`` in
Qwen's config) and local window w (``local_size``), the sequence is cut into chunks of s = c - w
tokens. Keys always get position index j mod s; a query at in-chunk offset t gets
  * intra-chunk (same chunk, causal):        t
  * successive-chunk (the chunk just before): min(s + t, c - 1)   -> exact distances inside w
  * inter-chunk (any earlier chunk):           c - 1
so no relative distance exceeds c - 1. The three partial attentions are computed separately and
merged exactly by their log-sum-exp. Tested against a per-query reference in tests/training/test_dca.py.
"""
from __future__ import annotations

import torch

from training.model.rope import apply_rope, rope_cos_sin


def dca_query_positions(q_pos: torch.Tensor, chunk_size: int, local_size: int):
    """q_pos [T] absolute positions -> (intra, successive, inter) position indices, each [T]."""
    s = chunk_size - local_size
    t = q_pos % s
    return t, (t + s).clamp(max=chunk_size - 1), torch.full_like(t, chunk_size - 1)


def _partial(q, k, v, region, scale):
    """Attention restricted to region [T, Tk]; returns (out [B,H,T,D], lse [B,H,T,1])."""
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale          # [B, H, T, Tk]
    scores = scores.masked_fill(~region, float("-inf"))
    lse = scores.logsumexp(dim=-1, keepdim=True)                         # -inf where region is empty
    probs = torch.exp(scores - lse.clamp(min=torch.finfo(torch.float32).min))
    return probs @ v.float(), lse


def dca_attention(q, k, v, q_pos, k_pos, inv_freq, chunk_size: int, local_size: int,
                  scale: float, rope_scale: float = 1.0) -> torch.Tensor:
    """Causal DCA. q [B, H, T, D] and k, v [B, Hkv, Tk, D] *before* RoPE; q_pos [T], k_pos [Tk].

    Returns [B, H, T, D] in q's dtype.
    """
    s = chunk_size - local_size
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)                               # [B, H, Tk, D]
    v = v.repeat_interleave(groups, dim=1)
    cos, sin = rope_cos_sin((k_pos % s)[None], inv_freq, rope_scale)
    k = apply_rope(k, cos, sin)
    dist = (q_pos // s)[:, None] - (k_pos // s)[None]                    # [T, Tk] chunk distance
    causal = k_pos[None] <= q_pos[:, None]
    regions = [(dist == 0) & causal, dist == 1, dist >= 2]
    outs, lses = [], []
    for qp, region in zip(dca_query_positions(q_pos, chunk_size, local_size), regions):
        cos, sin = rope_cos_sin(qp[None], inv_freq, rope_scale)
        out, lse = _partial(apply_rope(q, cos, sin), k, v, region, scale)
        outs.append(out)
        lses.append(lse)
    total = torch.logsumexp(torch.stack(lses), dim=0)                    # [B, H, T, 1]
    merged = sum(torch.exp(lse - total) * out for out, lse in zip(outs, lses))
    return merged.to(q.dtype)
