"""RoPE scaling: YaRN equals transformers; dynamic NTK and LogN follow the Qwen formulas."""
from __future__ import annotations

import math

import pytest
import torch

from training.model import rope
from training.model.qwen import ModelConfig, Qwen
from qwen_testlib import perturb_


@pytest.mark.parametrize("factor,orig,head_dim,extra", [(4.0, 32768, 128, {}), (2.0, 4096, 64, {}),
                                                       (8.0, 32768, 128, dict(beta_fast=16, beta_slow=2))])
def test_yarn_matches_transformers(factor, orig, head_dim, extra):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = dict(rope_type="yarn", rope_theta=1e6, factor=factor, original_max_position_embeddings=orig, **extra)
    cfg = transformers.Qwen2Config(hidden_size=head_dim * 4, num_attention_heads=4, rope_parameters=params,
                                   max_position_embeddings=int(orig * factor))
    ref_inv, ref_att = ROPE_INIT_FUNCTIONS["yarn"](cfg)
    inv, att = rope.yarn_inv_freq(head_dim, 1e6, factor, orig, extra.get("beta_fast", 32), extra.get("beta_slow", 1))
    assert torch.allclose(inv, ref_inv, rtol=1e-6, atol=0) and att == pytest.approx(ref_att, rel=1e-12)
    assert att == pytest.approx(0.1 * math.log(factor) + 1)


def test_ntk_alpha_hand_values():
    L = 2048
    assert [rope.ntk_alpha(t, L) for t in (1024, 2048, 2049, 4096, 8192, 8193)] == [1, 1, 3, 3, 7, 15]
    assert rope.ntk_base(10000.0, 128, 3) == pytest.approx(10000 * 3 ** (128 / 126))


def test_logn_hand_values():
    got = rope.logn_scale(torch.arange(8), train_len=4)      # 1-based positions 1..8
    want = [1, 1, 1, 1] + [math.log(n) / math.log(4) for n in (5, 6, 7, 8)]
    assert torch.allclose(got, torch.tensor(want))


def _pair(**kw):
    base = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=4,
                rope_theta=10000.0, train_seq_len=16)
    torch.manual_seed(0)
    a = Qwen(ModelConfig(**base))
    perturb_(a)
    b = Qwen(ModelConfig(**{**base, **kw}))
    b.load_state_dict(a.state_dict())
    return a.eval(), b.eval()


def test_dynamic_ntk_changes_base_only_past_training_length():
    plain, ntk = _pair(use_dynamic_ntk=True)
    ids = torch.randint(0, 128, (1, 32))
    with torch.no_grad():
        assert torch.equal(plain(ids[:, :16]).logits, ntk(ids[:, :16]).logits)     # T <= L: untouched
        _, rebased = _pair(rope_theta=rope.ntk_base(10000.0, 8, 3))                 # T = 2L -> alpha 3
        assert torch.allclose(ntk(ids).logits, rebased(ids).logits, atol=1e-6)
        assert not torch.allclose(ntk(ids).logits, plain(ids).logits, atol=1e-3)


def test_logn_scales_only_queries_past_training_length():
    plain, logn = _pair(use_logn_attn=True)
    ids = torch.randint(0, 128, (1, 32))
    with torch.no_grad():
        a, b = plain(ids).logits, logn(ids).logits
    assert torch.allclose(a[:, :16], b[:, :16], atol=1e-6)       # causal: first L positions unchanged
    assert not torch.allclose(a[:, 16:], b[:, 16:], atol=1e-3)
