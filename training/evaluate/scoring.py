"""Model-facing helpers every task shares: log-likelihood of continuations and greedy completions.

    from training.evaluate.scoring import loglikelihoods, greedy
    loglikelihoods(model, [(context_ids, continuation_ids), ...])   # -> [(sum log p, is_greedy), ...]
    greedy(model, [prompt_ids, ...], max_new_tokens=64)             # -> new token ids per prompt

Rows of a batch are left-padded (with an attention mask) so that every continuation ends at the last
position and only ``max(len(continuation))`` positions of logits are materialised: with Qwen's
151,936-token vocabulary the full [B, T, V] logits would dominate memory.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from training.generate import SamplingConfig, generate, left_pad
from training.model.qwen import Qwen

PAD_ID = 0   # any id in the vocabulary works: padded positions are masked out


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def loglikelihoods(model: Qwen, pairs: list[tuple[list[int], list[int]]], batch_size: int = 8,
                   ) -> list[tuple[float, bool]]:
    """(sum of log-probabilities, whether greedy decoding would produce the continuation) per pair."""
    results = []
    for i in range(0, len(pairs), batch_size):
        results.extend(_batch_loglikelihoods(model, pairs[i:i + batch_size]))
    return results


def _batch_loglikelihoods(model: Qwen, pairs):
    if any(not ctx or not cont for ctx, cont in pairs):
        raise ValueError("context and continuation must both be non-empty")
    rows = [list(ctx) + list(cont) for ctx, cont in pairs]
    keep = max(len(cont) for _, cont in pairs)
    ids, mask = (t.to(_device(model)) for t in left_pad([r[:-1] for r in rows], PAD_ID))
    padded = bool((mask == 0).any())
    logits = model(ids, attention_mask=mask if padded else None, logits_to_keep=keep).logits.float()
    logp = F.log_softmax(logits, dim=-1)                                  # [B, keep, V]
    for b, (_, cont) in enumerate(pairs):
        part = logp[b, keep - len(cont):]                                 # [n, V]
        target = torch.tensor(cont, device=part.device)
        yield float(part.gather(-1, target[:, None]).sum()), bool((part.argmax(-1) == target).all())


@torch.no_grad()
def next_token_logprobs(model: Qwen, context: list[int]) -> torch.Tensor:
    """log p(next token | context) -> [V] fp32: one forward scores every single-token continuation."""
    ids = torch.tensor([context], device=_device(model))
    return F.log_softmax(model(ids, logits_to_keep=1).logits[0, -1].float(), dim=-1).cpu()


def greedy(model: Qwen, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 8,
           stop_tokens: tuple = (151643, 151645)) -> list[list[int]]:
    """Greedy continuations of each prompt (stop token dropped), in batches."""
    cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0, stop_tokens=stop_tokens, pad_id=PAD_ID)
    out = []
    for i in range(0, len(prompts), batch_size):
        for row in generate(model, prompts[i:i + batch_size], cfg):
            out.append([t for t in row if t not in stop_tokens])
    return out
