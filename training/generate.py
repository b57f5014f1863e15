"""Text generation with a KV cache: greedy, temperature, top-k, top-p, repetition penalty, stop tokens,
and batched prompts of different lengths (left padding + attention mask + per-row positions).

    from training.generate import generate
    new_tokens = generate(model, [[785, 6722], [9707]], max_new_tokens=32)   # greedy

Filters follow the usual order (repetition penalty, temperature, top-k, top-p). Used by
``training/chat.py``; tested against transformers' ``generate`` in tests/training/test_generate.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from training.model.qwen import KVCache, Qwen

ENDOFTEXT, IM_END = 151643, 151645


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0            # 0 = greedy
    top_k: int = 0                      # 0 = off
    top_p: float = 1.0                  # 1 = off
    repetition_penalty: float = 1.0     # 1 = off (CTRL, Keskar et al. 2019)
    stop_tokens: tuple = (IM_END, ENDOFTEXT)
    pad_id: int = ENDOFTEXT


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ids [B, P], attention mask [B, P] (0 on the left padding)."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits [B, V]; seen [B, V] bool. Seen tokens: positive logits / penalty, negative * penalty."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set to -inf every logit outside the top k, then outside the smallest set with mass >= top_p."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]   # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        mass_before = sorted_logits.softmax(-1).cumsum(-1) - sorted_logits.softmax(-1)   # [B, V]
        drop = mass_before >= top_p          # the token that crosses top_p is kept; the first always is
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def next_token(logits: torch.Tensor, seen: torch.Tensor, cfg: SamplingConfig,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    logits = logits.float()
    if cfg.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
    if cfg.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = filter_top_k_top_p(logits / cfg.temperature, cfg.top_k, cfg.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: Qwen, prompts: list[list[int]], cfg: SamplingConfig = SamplingConfig(),
             generator: torch.Generator | None = None, **overrides) -> list[list[int]]:
    """New tokens for each prompt; a row ends with (and includes) its first stop token."""
    if overrides:
        cfg = SamplingConfig(**{**cfg.__dict__, **overrides})
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in left_pad(prompts, cfg.pad_id))
    padded = bool((mask == 0).any())            # without padding no mask is needed (and DCA allows none)
    seen = torch.zeros(len(prompts), model.cfg.vocab_size, dtype=torch.bool, device=device)
    seen.scatter_(1, ids, mask.bool())                                    # prompt tokens, not pads
    cache = KVCache(model.cfg.num_layers)
    logits = model(ids, attention_mask=mask if padded else None, cache=cache, logits_to_keep=1).logits[:, -1]
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    stops = torch.tensor(cfg.stop_tokens, dtype=torch.long, device=device)
    out = []
    for _ in range(cfg.max_new_tokens):
        tok = torch.where(done, torch.full_like(done, cfg.pad_id, dtype=torch.long), next_token(logits, seen, cfg, generator))
        out.append(tok)
        seen[torch.arange(len(tok)), tok] |= ~done
        done |= torch.isin(tok, stops)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        logits = model(tok[:, None], attention_mask=mask if padded else None, cache=cache,
                       logits_to_keep=1).logits[:, -1]
    return [_until_stop(row, cfg.stop_tokens) for row in torch.stack(out, 1).tolist()] if out else [[] for _ in prompts]


def _until_stop(row: list[int], stops: tuple) -> list[int]:
    for i, t in enumerate(row):
        if t in stops:
            return row[: i + 1]
    return row
