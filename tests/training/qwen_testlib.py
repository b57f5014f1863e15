"""Helpers for the training tests: tiny random transformers models with perturbed weights."""
from __future__ import annotations

import torch


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Add noise to every parameter (norms and biases included) so no weight keeps its init value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def hf_dense_config(**overrides):
    from transformers import Qwen2Config

    kw = dict(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, rope_theta=1e6, tie_word_embeddings=False,
              attn_implementation="eager")
    kw.update(overrides)
    return Qwen2Config(**kw)


def hf_moe_config(**overrides):
    from transformers import Qwen2MoeConfig

    kw = dict(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, num_experts=8, num_experts_per_tok=2,
              moe_intermediate_size=32, shared_expert_intermediate_size=48, decoder_sparse_step=1,
              mlp_only_layers=[1], norm_topk_prob=False, attn_implementation="eager")
    kw.update(overrides)
    return Qwen2MoeConfig(**kw)


def random_hf_model(config, seed: int = 0):
    """A transformers causal LM with perturbed random weights, in eval mode, fp32."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    perturb_(model, seed)
    return model.eval()
