"""Logits parity with transformers on the same random weights, both directions, plus Qwen v1 import."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from qwen_testlib import hf_dense_config, hf_moe_config, perturb_, random_hf_model
from training.model.checkpoint import load_model, save_model
from training.model.hf import from_pretrained, main as hf_main, save_pretrained
from training.model.qwen import ModelConfig, Qwen

pytest.importorskip("transformers")
TOL = 1e-4

HF_CASES = {
    "dense-untied": lambda: hf_dense_config(),
    "dense-tied": lambda: hf_dense_config(tie_word_embeddings=True),
    "dense-sliding": lambda: hf_dense_config(use_sliding_window=True, sliding_window=8, max_window_layers=1),
    "dense-yarn": lambda: hf_dense_config(rope_parameters=dict(rope_type="yarn", rope_theta=1e6, factor=4.0,
                                                               original_max_position_embeddings=64)),
    "moe": lambda: hf_moe_config(),
    "moe-norm-topk": lambda: hf_moe_config(norm_topk_prob=True, mlp_only_layers=[]),
}


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_transformers_to_ours(case, tmp_path):
    hf = random_hf_model(HF_CASES[case]())
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 512, (2, 40), generator=torch.Generator().manual_seed(1))  # 40 > window 8
    assert (_logits(hf, ids) - _logits(ours, ids)).abs().max() <= TOL
    if case == "dense-sliding":
        assert ours.cfg.window_sizes == (None, 8, 8)


def _small_ours(**kw) -> Qwen:
    base = dict(vocab_size=512, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2,
                max_position_embeddings=256)
    torch.manual_seed(0)
    model = Qwen(ModelConfig(**{**base, **kw}))
    perturb_(model)
    return model.eval()


OURS_CASES = {
    "dense-tied": dict(tie_word_embeddings=True),
    "dense-sliding": dict(window_sizes=(None, 8)),
    "dense-yarn": dict(rope_type="yarn", rope_factor=4.0, rope_original_max_position=16),
    "moe": dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48),
}


@pytest.mark.parametrize("case", sorted(OURS_CASES))
def test_ours_to_transformers(case, tmp_path):
    from transformers import AutoModelForCausalLM

    ours = _small_ours(**OURS_CASES[case])
    save_pretrained(ours, tmp_path, max_shard_bytes=200_000)   # forces several shards
    assert (tmp_path / "model.safetensors.index.json").exists()
    names = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    if case == "moe":
        assert "model.layers.0.mlp.experts.7.down_proj.weight" in names
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager").eval()
    assert type(hf).__name__ == ("Qwen2MoeForCausalLM" if case == "moe" else "Qwen2ForCausalLM")
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(2))
    assert (_logits(hf, ids) - _logits(ours, ids)).abs().max() <= TOL


def test_cli_roundtrip(tmp_path):
    ours = _small_ours(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=0)
    save_model(ours, tmp_path / "ckpt")
    hf_main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")])
    hf_main(["import", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")])
    back = load_model(tmp_path / "back")
    assert back.cfg == ours.cfg
    theirs = back.state_dict()
    assert all(torch.equal(t, theirs[k]) for k, t in ours.state_dict().items())


# ----------------------------------------------------------------------------- Qwen v1 import

V1 = dict(vocab_size=300, hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=2 * 48,
          kv_channels=8, rotary_emb_base=10000, seq_length=64, layer_norm_epsilon=1e-6, use_dynamic_ntk=True,
          use_logn_attn=True, max_position_embeddings=8192, model_type="qwen")


def _v1_state(seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    H, F_, V = V1["hidden_size"], V1["intermediate_size"] // 2, V1["vocab_size"]
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    sd = {"transformer.wte.weight": r(V, H), "transformer.ln_f.weight": 1 + r(H), "lm_head.weight": r(V, H)}
    for i in range(V1["num_hidden_layers"]):
        p = f"transformer.h.{i}."
        sd.update({p + "ln_1.weight": 1 + r(H), p + "ln_2.weight": 1 + r(H), p + "attn.c_attn.weight": r(3 * H, H),
                   p + "attn.c_attn.bias": r(3 * H), p + "attn.c_proj.weight": r(H, H), p + "mlp.w1.weight": r(F_, H),
                   p + "mlp.w2.weight": r(F_, H), p + "mlp.c_proj.weight": r(H, F_)})
    return sd


def _v1_reference(sd, ids):
    """Qwen v1 forward written from its formulas (no cache, T <= seq_length so no NTK/LogN)."""
    H, nh = V1["hidden_size"], V1["num_attention_heads"]
    d, T = H // nh, ids.shape[1]
    rms = lambda x, w: w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    ang = torch.arange(T).float()[:, None] * inv                       # [T, d/2]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    rot = lambda x: x * cos + torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1) * sin
    x = sd["transformer.wte.weight"][ids]
    for i in range(V1["num_hidden_layers"]):
        p = f"transformer.h.{i}."
        h = rms(x, sd[p + "ln_1.weight"])
        q, k, v = (h @ sd[p + "attn.c_attn.weight"].T + sd[p + "attn.c_attn.bias"]).split(H, -1)
        q, k, v = (t.view(1, T, nh, d).transpose(1, 2) for t in (q, k, v))
        s = rot(q) @ rot(k).transpose(-1, -2) / math.sqrt(d)
        s = s.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(1, T, H)
        x = x + a @ sd[p + "attn.c_proj.weight"].T
        h = rms(x, sd[p + "ln_2.weight"])
        a1, a2 = h @ sd[p + "mlp.w1.weight"].T, h @ sd[p + "mlp.w2.weight"].T
        x = x + (a1 * F.silu(a2)) @ sd[p + "mlp.c_proj.weight"].T
    return rms(x, sd["transformer.ln_f.weight"]) @ sd["lm_head.weight"].T


def test_qwen_v1_import(tmp_path):
    from safetensors.torch import save_file

    sd = _v1_state()
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(V1))
    ours = from_pretrained(tmp_path).eval()
    assert ours.cfg.arch == "qwen" and ours.cfg.use_dynamic_ntk and ours.cfg.train_seq_len == 64
    ids = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(3))
    assert (_logits(ours, ids) - _v1_reference(sd, ids)).abs().max() <= TOL
