"""Rotary position embeddings (RoPE) and the Qwen long-context position tricks.

What lives here (pure tensor math, no modules):
  * inverse frequencies: plain RoPE, YaRN (same numbers as transformers' ``rope_type="yarn"``)
    and Qwen v1's dynamic NTK-aware interpolation;
  * LogN attention scaling of Qwen v1;
  * ``apply_rope``: rotate query/key heads by position.

Used by ``training/model/qwen.py``; tested in ``tests/training/test_rope.py``.
"""
from __future__ import annotations

import math

import torch


def default_inv_freq(head_dim: int, base: float) -> torch.Tensor:
    """inv_freq[i] = base^(-2i/d), i < d/2 -> [d/2] fp32."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def yarn_inv_freq(head_dim: int, base: float, factor: float, original_max_position: int,
                  beta_fast: float = 32.0, beta_slow: float = 1.0,
                  attention_factor: float | None = None, truncate: bool = True) -> tuple[torch.Tensor, float]:
    """YaRN (Peng et al. 2023): interpolate low frequencies, keep high ones, blend with a linear ramp.

    Returns (inv_freq [d/2], attention_factor); the factor multiplies cos and sin, i.e. scales the
    attention logits by its square. Default factor: 0.1 * ln(factor) + 1 (paper, eq. 22 fit).
    """
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0

    def dim_of(num_rotations: float) -> float:
        # The rotary dimension whose wavelength completes num_rotations turns over the original context.
        return head_dim * math.log(original_max_position / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = dim_of(beta_fast), dim_of(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero in the ramp
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolate = 1 - ramp  # 1: keep original frequency, 0: fully interpolated
    inv = default_inv_freq(head_dim, base)
    inv_freq = (inv / factor) * (1 - extrapolate) + inv * extrapolate
    return inv_freq, float(attention_factor)


def ntk_alpha(seq_len: int, train_len: int) -> float:
    """Qwen v1 dynamic NTK: alpha = max(2^ceil(log2(T/L) + 1) - 1, 1). T=2L -> 3, T<=L -> 1."""
    context = math.log(seq_len / train_len, 2) + 1
    return max(2 ** math.ceil(context) - 1, 1)


def ntk_base(base: float, head_dim: int, alpha: float) -> float:
    """NTK-aware base: base' = base * alpha^(d / (d - 2))."""
    return base * alpha ** (head_dim / (head_dim - 2))


def logn_scale(positions: torch.Tensor, train_len: int) -> torch.Tensor:
    """LogN scaling: query at 0-based position p scaled by log_L(p + 1) when p + 1 > L, else 1.

    Uses 1-based positions like Qwen v1's ``logn_list``. positions: any int shape -> same shape fp32.
    """
    n = (positions + 1).to(torch.float32)
    return torch.where(n > train_len, torch.log(n) / math.log(train_len), torch.ones_like(n))


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, scale: float = 1.0):
    """positions [B, T] int -> (cos, sin) each [B, 1, T, D] fp32 (halves duplicated)."""
    freqs = positions[..., None].to(torch.float32) * inv_freq.to(positions.device)  # [B, T, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [B, T, D]
    return (emb.cos() * scale)[:, None], (emb.sin() * scale)[:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, D] rotated by (cos, sin) [B, 1, T, D]; computed in fp32, returned in x's dtype."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)
