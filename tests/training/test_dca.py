"""Dual Chunk Attention against full attention (short inputs) and a per-query reference (long inputs)."""
from __future__ import annotations

import math

import torch

from qwen_testlib import perturb_
from training.model.dca import dca_attention
from training.model.qwen import KVCache, ModelConfig, Qwen
from training.model.rope import apply_rope, default_inv_freq, rope_cos_sin

C, W = 12, 4            # pretraining length c and local window w -> chunks of s = 8 tokens
S = C - W


def _rot(x, pos, inv):  # x [D] rotated to position index pos
    cos, sin = rope_cos_sin(torch.tensor([[pos]]), inv)
    return apply_rope(x.view(1, 1, 1, -1), cos, sin).view(-1)


def _reference(q, k, v, inv):
    """Naive DCA: for each query build the position index of every visible key, one softmax."""
    H, T, D = q.shape[1], q.shape[2], q.shape[3]
    out = torch.zeros_like(q)
    for h in range(H):
        kh = h // (H // k.shape[1])
        for i in range(T):
            t, chunk_i = i % S, i // S
            scores = []
            for j in range(i + 1):
                gap = chunk_i - j // S
                q_index = t if gap == 0 else (min(S + t, C - 1) if gap == 1 else C - 1)
                scores.append(_rot(q[0, h, i], q_index, inv) @ _rot(k[0, kh, j], j % S, inv) / math.sqrt(D))
            probs = torch.stack(scores).softmax(0)
            out[0, h, i] = probs @ v[0, kh, : i + 1]
    return out


def test_dca_matches_per_query_reference():
    g = torch.Generator().manual_seed(0)
    T, D = 30, 8                                   # ~4 chunks: intra, successive and inter all occur
    q, k, v = torch.randn(1, 4, T, D, generator=g), torch.randn(1, 2, T, D, generator=g), torch.randn(1, 2, T, D, generator=g)
    inv = default_inv_freq(D, 10000.0)
    got = dca_attention(q, k, v, torch.arange(T), torch.arange(T), inv, C, W, D ** -0.5)
    assert (got - _reference(q, k, v, inv)).abs().max() < 1e-5


def _models(**kw):
    base = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
    torch.manual_seed(0)
    full = Qwen(ModelConfig(**base))
    perturb_(full)
    dca = Qwen(ModelConfig(**base, dca_chunk_size=C, dca_local_size=W, **kw))
    dca.load_state_dict(full.state_dict())
    return full.eval(), dca.eval()


def test_dca_equals_full_attention_within_one_chunk():
    full, dca = _models()
    ids = torch.randint(0, 128, (2, S))
    with torch.no_grad():
        assert (full(ids).logits - dca(ids).logits).abs().max() < 1e-5


def test_dca_with_cache_equals_one_pass():
    _, dca = _models()
    ids = torch.randint(0, 128, (1, 28))
    with torch.no_grad():
        whole = dca(ids).logits
        cache = KVCache(2)
        first = dca(ids[:, :20], cache=cache).logits
        steps = [dca(ids[:, i:i + 1], cache=cache).logits for i in range(20, 28)]
    assert (torch.cat([first, *steps], 1) - whole).abs().max() < 1e-5


def test_generate_with_dca_uses_the_cache_correctly():
    from training.generate import generate

    _, dca = _models()
    prompt = torch.randint(0, 128, (1, 14))
    ids = prompt.clone()
    with torch.no_grad():
        for _ in range(10):                     # reference: greedy without a cache, crossing chunk edges
            ids = torch.cat([ids, dca(ids).logits[:, -1:].argmax(-1)], 1)
    assert generate(dca, prompt.tolist(), max_new_tokens=10, stop_tokens=())[0] == ids[0, 14:].tolist()
