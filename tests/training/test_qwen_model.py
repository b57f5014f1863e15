"""Model behaviour: document masking, KV cache, windows, activation checkpointing, meta-device build."""
from __future__ import annotations

import pytest
import torch

from qwen_testlib import perturb_
from training.model.qwen import KVCache, ModelConfig, Qwen

BASE = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=24)


def _model(**kw) -> Qwen:
    torch.manual_seed(0)
    m = Qwen(ModelConfig(**{**BASE, **kw}))
    perturb_(m)
    return m.eval()


@pytest.mark.parametrize("kw", [{}, MOE, dict(window_sizes=(3, None))], ids=["dense", "moe", "window"])
def test_packed_documents_equal_separate_runs(kw):
    model = _model(**kw)
    a, b = torch.randint(0, 128, (1, 7)), torch.randint(0, 128, (1, 9))
    doc_ids = torch.tensor([[0] * 7 + [1] * 9])
    with torch.no_grad():
        packed = model(torch.cat([a, b], 1), doc_ids=doc_ids).logits
        assert (packed[:, :7] - model(a).logits).abs().max() < 1e-5
        assert (packed[:, 7:] - model(b).logits).abs().max() < 1e-5


@pytest.mark.parametrize("kw", [{}, MOE, dict(window_sizes=(3, 5))], ids=["dense", "moe", "window"])
def test_kv_cache_equals_full_forward(kw):
    model = _model(**kw)
    ids = torch.randint(0, 128, (2, 12))
    with torch.no_grad():
        whole = model(ids).logits
        cache = KVCache(2)
        parts = [model(ids[:, :5], cache=cache).logits, model(ids[:, 5:8], cache=cache).logits]
        parts += [model(ids[:, i:i + 1], cache=cache).logits for i in range(8, 12)]
    assert (torch.cat(parts, 1) - whole).abs().max() < 1e-5


def test_window_attention_is_local():
    model, full = _model(window_sizes=(4, 4)), _model()
    ids = torch.randint(0, 128, (1, 10))
    with torch.no_grad():
        assert torch.allclose(model(ids[:, :4]).logits, full(ids[:, :4]).logits, atol=1e-6)  # fits the window
        changed = ids.clone()
        changed[0, 0] = (ids[0, 0] + 1) % 128
        # two layers of width-4 windows: position 9 sees back to position 3 only
        assert torch.allclose(model(ids).logits[:, 9], model(changed).logits[:, 9], atol=1e-6)
        assert not torch.allclose(model(ids).logits[:, 5], model(changed).logits[:, 5], atol=1e-6)


def test_activation_checkpointing_same_gradients():
    ids = torch.randint(0, 128, (2, 8))
    grads = []
    for ckpt in (False, True):
        model = _model(**MOE).train()
        model.gradient_checkpointing = ckpt
        out = model(ids)
        (out.logits.logsumexp(-1).mean() + out.aux_loss).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_moe_exposes_aux_loss_and_meta_build():
    out = _model(**MOE)(torch.randint(0, 128, (1, 6)))
    assert out.aux_loss is not None and len(out.router_logits) == 2
    with torch.device("meta"):
        big = Qwen(ModelConfig(**{**BASE, "hidden_size": 4096, "intermediate_size": 11008}))
    assert big.model.embed_tokens.weight.is_meta
