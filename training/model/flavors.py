"""Published Qwen model sizes as a plain dict: ``FLAVORS[name] -> ModelConfig``.

Numbers are those of the released Hugging Face ``config.json`` files. For Qwen v1, whose config
lists ``intermediate_size`` as twice the SwiGLU width (w1 and w2 together), we store the real
width (22016 // 2 = 11008). Parameter totals are checked in tests/training/test_flavors.py.
``debug`` and ``debug-moe`` are tiny models with the real vocabulary, for tests and demos.

    python -c "from training.model.flavors import FLAVORS; print(sorted(FLAVORS))"
"""
from __future__ import annotations

from training.model.qwen import ModelConfig

_V1 = dict(arch="qwen", rope_theta=10_000.0, use_dynamic_ntk=True, use_logn_attn=True, rms_norm_eps=1e-6)
_MOE = dict(num_experts_per_tok=4, norm_topk_prob=False, max_position_embeddings=8192)

FLAVORS: dict[str, ModelConfig] = {
    # Qwen v1 (Bai et al. 2023): MHA, untied embeddings, trained at 2048 (7B v1.1: 8192).
    "qwen-7b": ModelConfig(vocab_size=151936, hidden_size=4096, intermediate_size=11008, num_layers=32,
                           num_heads=32, num_kv_heads=32, max_position_embeddings=8192, train_seq_len=8192, **_V1),
    "qwen-14b": ModelConfig(vocab_size=152064, hidden_size=5120, intermediate_size=13696, num_layers=40,
                            num_heads=40, num_kv_heads=40, max_position_embeddings=2048, train_seq_len=2048, **_V1),
    # Qwen2 (Yang et al. 2024): GQA, RoPE base 1e6, tied embeddings below 7B.
    "qwen2-0.5b": ModelConfig(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24,
                              num_heads=14, num_kv_heads=2, tie_word_embeddings=True, max_position_embeddings=32768),
    "qwen2-1.5b": ModelConfig(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_layers=28,
                              num_heads=12, num_kv_heads=2, tie_word_embeddings=True, max_position_embeddings=32768),
    "qwen2-7b": ModelConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
                            num_heads=28, num_kv_heads=4, max_position_embeddings=32768),
    "qwen2-72b": ModelConfig(vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_layers=80,
                             num_heads=64, num_kv_heads=8, max_position_embeddings=32768),
    "qwen2-57b-a14b": ModelConfig(vocab_size=151936, hidden_size=3584, intermediate_size=18944, num_layers=28,
                                  num_heads=28, num_kv_heads=4, num_experts=64, moe_intermediate_size=2560,
                                  shared_expert_intermediate_size=20480,
                                  **{**_MOE, "num_experts_per_tok": 8, "max_position_embeddings": 32768}),
    "qwen1.5-moe-a2.7b": ModelConfig(vocab_size=151936, hidden_size=2048, intermediate_size=5632, num_layers=24,
                                     num_heads=16, num_kv_heads=16, num_experts=60, moe_intermediate_size=1408,
                                     shared_expert_intermediate_size=5632, **_MOE),
    # Tiny models: the real vocabulary (>= 151646 ids, so Qwen's special tokens exist), small everything else.
    "debug": ModelConfig(vocab_size=151936, hidden_size=64, intermediate_size=160, num_layers=2,
                         num_heads=4, num_kv_heads=2, tie_word_embeddings=True, max_position_embeddings=2048),
    "debug-moe": ModelConfig(vocab_size=151936, hidden_size=64, intermediate_size=160, num_layers=2,
                             num_heads=4, num_kv_heads=2, num_experts=8, num_experts_per_tok=2,
                             moe_intermediate_size=32, shared_expert_intermediate_size=64,
                             max_position_embeddings=2048),
}
