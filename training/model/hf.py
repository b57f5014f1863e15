"""Hugging Face interop: Qwen2 / Qwen2-MoE directories in and out, Qwen v1 (remote-code) checkpoints in.

    python -m training.model.hf export --checkpoint runs/ckpt/final --out runs/hf/qwen2-debug
    python -m training.model.hf export --checkpoint runs/sft/final --out runs/hf/qwen2-chat --chat
    python -m training.model.hf import --hf path/to/Qwen2-0.5B --out runs/ckpt/imported

``save_pretrained`` writes ``config.json`` and ``model.safetensors`` (sharded, with
``model.safetensors.index.json``, above ``max_shard_bytes``) that
``transformers.AutoModelForCausalLM.from_pretrained`` loads as Qwen2ForCausalLM / Qwen2MoeForCausalLM, and,
when the vocabulary holds the Qwen tokenizer, its files (hf_tokenizer.py: tokenizer.json, tokenizer_config.json
with the ChatML template, special_tokens_map.json, generation_config.json; ``chat`` makes <|im_end|> the eos).
Import reads config.json and the weights and ignores every other file.
Names are the HF names already; only experts change shape: our stacked ``experts.gate_up_proj``
[E, 2I, H] / ``experts.down_proj`` [E, H, I] <-> per-expert ``experts.{e}.{gate,up,down}_proj.weight``.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from stages.tokenize.tokenizer import ENDOFTEXT_ID, IM_END_ID
from training.model.checkpoint import build_model, load_model, save_model, state_for_saving
from training.model.hf_tokenizer import DEFAULT_SYSTEM, TOKENIZER_SIZE, save_tokenizer
from training.model.qwen import ModelConfig, Qwen

SPECIAL = dict(bos_token_id=ENDOFTEXT_ID, eos_token_id=ENDOFTEXT_ID)


# ----------------------------------------------------------------------------- configs

def to_hf_config(cfg: ModelConfig) -> dict:
    moe = cfg.num_experts > 0
    d = dict(architectures=["Qwen2MoeForCausalLM" if moe else "Qwen2ForCausalLM"],
             model_type="qwen2_moe" if moe else "qwen2", vocab_size=cfg.vocab_size,
             hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
             num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
             num_key_value_heads=cfg.num_kv_heads, hidden_act="silu",
             max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
             rope_theta=cfg.rope_theta, rope_scaling=_hf_rope_scaling(cfg),
             tie_word_embeddings=cfg.tie_word_embeddings, initializer_range=cfg.initializer_range,
             attention_dropout=0.0, use_cache=True, torch_dtype="float32", **SPECIAL, **_hf_windows(cfg))
    if cfg.head_dim and cfg.head_dim != cfg.hidden_size // cfg.num_heads:
        d["head_dim"] = cfg.head_dim
    if moe:
        d.update(num_experts=cfg.num_experts, num_experts_per_tok=cfg.num_experts_per_tok,
                 moe_intermediate_size=cfg.moe_intermediate_size, norm_topk_prob=cfg.norm_topk_prob,
                 shared_expert_intermediate_size=cfg.shared_expert_intermediate_size,
                 decoder_sparse_step=cfg.decoder_sparse_step, mlp_only_layers=list(cfg.mlp_only_layers),
                 router_aux_loss_coef=cfg.router_aux_loss_coef, qkv_bias=cfg.qkv_bias)
    if cfg.dca_chunk_size:  # the key vLLM reads for Qwen2 DCA; transformers ignores it
        d["dual_chunk_attention_config"] = dict(chunk_size=cfg.dca_chunk_size, local_size=cfg.dca_local_size,
                                                original_max_position_embeddings=cfg.dca_chunk_size)
    if cfg.use_dynamic_ntk or cfg.use_logn_attn:  # Qwen v1 extras, read back by from_hf_config
        d.update(use_dynamic_ntk=cfg.use_dynamic_ntk, use_logn_attn=cfg.use_logn_attn, seq_length=cfg.train_seq_len)
    return d


def _hf_rope_scaling(cfg: ModelConfig) -> dict | None:
    if cfg.rope_type == "default":
        return None
    d = dict(rope_type="yarn", factor=cfg.rope_factor, beta_fast=cfg.yarn_beta_fast, beta_slow=cfg.yarn_beta_slow,
             original_max_position_embeddings=cfg.rope_original_max_position or cfg.max_position_embeddings)
    if cfg.yarn_attention_factor is not None:
        d["attention_factor"] = cfg.yarn_attention_factor
    return d


def _hf_windows(cfg: ModelConfig) -> dict:
    """Per-layer windows as HF's use_sliding_window / sliding_window / layer_types (one size only)."""
    sizes = {w for w in (cfg.window_sizes or ()) if w is not None}
    if not sizes:
        return dict(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.num_layers)
    if len(sizes) > 1:
        raise ValueError(f"HF Qwen2 supports one sliding window size, got {sorted(sizes)}")
    types = ["full_attention" if w is None else "sliding_attention" for w in cfg.window_sizes]
    first = types.index("sliding_attention")
    return dict(use_sliding_window=True, sliding_window=sizes.pop(), max_window_layers=first, layer_types=types)


def from_hf_config(d: dict) -> ModelConfig:
    """ModelConfig from an HF config.json dict (qwen2, qwen2_moe, or Qwen v1 ``qwen``)."""
    if d.get("model_type") == "qwen":
        return _from_v1_config(d)
    n = d["num_hidden_layers"]
    rope_params = d.get("rope_parameters") or {}
    scaling = d.get("rope_scaling") or rope_params
    rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    moe = d.get("model_type") == "qwen2_moe" or d.get("num_experts", 0) > 0
    dca = d.get("dual_chunk_attention_config") or {}
    kw = dict(vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
              num_layers=n, num_heads=d["num_attention_heads"],
              num_kv_heads=d.get("num_key_value_heads") or d["num_attention_heads"], head_dim=d.get("head_dim"),
              max_position_embeddings=d.get("max_position_embeddings", 32768),
              rope_theta=float(rope_params.get("rope_theta") or d.get("rope_theta") or 10000.0),
              rms_norm_eps=d.get("rms_norm_eps", 1e-6), tie_word_embeddings=d.get("tie_word_embeddings", False),
              qkv_bias=d.get("qkv_bias", True), window_sizes=_windows_from_hf(d, n, moe),
              use_dynamic_ntk=d.get("use_dynamic_ntk", False), use_logn_attn=d.get("use_logn_attn", False),
              train_seq_len=d.get("seq_length", 2048), dca_chunk_size=dca.get("chunk_size"),
              dca_local_size=dca.get("local_size", 0), initializer_range=d.get("initializer_range", 0.02))
    if rope_type == "yarn":
        kw.update(rope_type="yarn", rope_factor=scaling["factor"],
                  rope_original_max_position=scaling.get("original_max_position_embeddings"),
                  yarn_beta_fast=scaling.get("beta_fast") or 32.0, yarn_beta_slow=scaling.get("beta_slow") or 1.0,
                  yarn_attention_factor=scaling.get("attention_factor"))
    elif rope_type != "default":
        raise ValueError(f"unsupported rope type {rope_type!r}")
    if moe:
        kw.update(num_experts=d["num_experts"], num_experts_per_tok=d["num_experts_per_tok"],
                  moe_intermediate_size=d["moe_intermediate_size"], norm_topk_prob=d.get("norm_topk_prob", False),
                  shared_expert_intermediate_size=d.get("shared_expert_intermediate_size", 0),
                  decoder_sparse_step=d.get("decoder_sparse_step", 1),
                  mlp_only_layers=tuple(d.get("mlp_only_layers") or ()),
                  router_aux_loss_coef=d.get("router_aux_loss_coef", 0.001))
    return ModelConfig(**kw)


def _windows_from_hf(d: dict, n: int, moe: bool) -> tuple | None:
    """transformers' rule: explicit layer_types win; else Qwen2 slides layers i >= max_window_layers,
    Qwen2-MoE slides even layers i < max_window_layers (only with use_sliding_window)."""
    size = d.get("sliding_window") if d.get("use_sliding_window") else None
    if not size:
        return None
    types = d.get("layer_types")
    if types is None:
        mwl = d.get("max_window_layers", 28)
        slides = [(i % 2 == 0 and i < mwl) if moe else i >= mwl for i in range(n)]
        types = ["sliding_attention" if s else "full_attention" for s in slides]
    windows = tuple(size if t == "sliding_attention" else None for t in types)
    return windows if any(w is not None for w in windows) else None


def _from_v1_config(d: dict) -> ModelConfig:
    heads = d["num_attention_heads"]
    return ModelConfig(vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
                       intermediate_size=d["intermediate_size"] // 2, num_layers=d["num_hidden_layers"],
                       num_heads=heads, num_kv_heads=heads, head_dim=d.get("kv_channels"),
                       max_position_embeddings=d.get("max_position_embeddings", 8192),
                       rope_theta=float(d.get("rotary_emb_base", 10000)), rms_norm_eps=d.get("layer_norm_epsilon", 1e-6),
                       tie_word_embeddings=d.get("tie_word_embeddings", False), arch="qwen",
                       use_dynamic_ntk=d.get("use_dynamic_ntk", True), use_logn_attn=d.get("use_logn_attn", True),
                       train_seq_len=d.get("seq_length", 2048))


# ----------------------------------------------------------------------------- weights

def to_hf_state(model: Qwen) -> dict[str, torch.Tensor]:
    """Our state dict -> HF names: stacked experts split into per-expert Linear weights."""
    out = {}
    for name, t in state_for_saving(model).items():
        if name.endswith("experts.gate_up_proj"):
            prefix, inner = name[: -len("gate_up_proj")], t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.gate_proj.weight"] = t[e, :inner].contiguous()   # [I, H]
                out[f"{prefix}{e}.up_proj.weight"] = t[e, inner:].contiguous()     # [I, H]
        elif name.endswith("experts.down_proj"):
            prefix = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = t[e].contiguous()           # [H, I]
        else:
            out[name] = t
    return out


_EXPERT = re.compile(r"(.*\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def from_hf_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF names -> ours: per-expert weights stacked (already-stacked tensors pass through)."""
    out, experts = {}, {}
    for name, t in sd.items():
        m = _EXPERT.match(name)
        if m:
            experts.setdefault(m.group(1), {}).setdefault(m.group(3), {})[int(m.group(2))] = t
        else:
            out[name] = t
    for prefix, parts in experts.items():
        stack = {p: torch.stack([w[e] for e in sorted(w)]) for p, w in parts.items()}
        out[f"{prefix}.gate_up_proj"] = torch.cat([stack["gate_proj"], stack["up_proj"]], dim=1)  # [E, 2I, H]
        out[f"{prefix}.down_proj"] = stack["down_proj"]                                           # [E, H, I]
    return out


def from_v1_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Qwen v1 remote-code names -> ours. v1's MLP is c_proj(w1(x) * silu(w2(x))): w2 gates, w1 is up."""
    simple = {"ln_1.weight": "input_layernorm.weight", "ln_2.weight": "post_attention_layernorm.weight",
              "attn.c_proj.weight": "self_attn.o_proj.weight", "mlp.w2.weight": "mlp.gate_proj.weight",
              "mlp.w1.weight": "mlp.up_proj.weight", "mlp.c_proj.weight": "mlp.down_proj.weight"}
    out = {}
    for name, t in sd.items():
        if name == "transformer.wte.weight":
            out["model.embed_tokens.weight"] = t
        elif name == "transformer.ln_f.weight":
            out["model.norm.weight"] = t
        elif name == "lm_head.weight":
            out[name] = t
        elif m := re.match(r"transformer\.h\.(\d+)\.(.+)$", name):
            layer, rest = f"model.layers.{m.group(1)}.", m.group(2)
            if rest.startswith("attn.c_attn."):          # fused [3H, H] weight or [3H] bias, order q, k, v
                kind = rest.rsplit(".", 1)[1]
                for proj, part in zip("qkv", t.chunk(3, dim=0)):
                    out[f"{layer}self_attn.{proj}_proj.{kind}"] = part.contiguous()
            elif rest in simple:
                out[layer + simple[rest]] = t
            else:
                raise KeyError(f"unknown Qwen v1 weight {name}")
        else:
            raise KeyError(f"unknown Qwen v1 weight {name}")
    return out


# ----------------------------------------------------------------------------- directories

def save_pretrained(model: Qwen, path: str | Path, max_shard_bytes: int = 5 * 2**30, *, chat: bool = False,
                    system_prompt: str = DEFAULT_SYSTEM) -> None:
    """config.json, the weights and (vocabulary >= TOKENIZER_SIZE) the tokenizer, chat template and generation config.

    `chat`: the model ends its turns with <|im_end|> (SFT and later phases), so that is its eos; `system_prompt`:
    what the chat template adds when a conversation has no system message (as training's data did).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = to_hf_config(model.cfg)
    if chat:
        config["eos_token_id"] = IM_END_ID
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_weights(to_hf_state(model), path, max_shard_bytes)
    if model.cfg.vocab_size >= TOKENIZER_SIZE:   # a toy vocabulary is not Qwen's: weights only
        save_tokenizer(path, chat=chat, model_max_length=model.cfg.max_position_embeddings,
                       system_prompt=system_prompt)


def save_weights(state: dict[str, torch.Tensor], path: Path, max_shard_bytes: int) -> None:
    """model.safetensors, or numbered shards + model.safetensors.index.json."""
    shards, size = [{}], 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in shard})
        total += sum(t.numel() * t.element_size() for t in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def read_safetensors_dir(path: Path) -> dict[str, torch.Tensor]:
    index = path / "model.safetensors.index.json"
    if not index.exists():
        return load_file(str(path / "model.safetensors"))
    state = {}
    for fname in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        state.update(load_file(str(path / fname)))
    return state


def from_pretrained(path: str | Path, dtype: torch.dtype | None = None) -> Qwen:
    """Load an HF directory (written by us or by transformers; Qwen2, Qwen2-MoE or Qwen v1) as our model."""
    path = Path(path)
    cfg = from_hf_config(json.loads((path / "config.json").read_text()))
    raw = read_safetensors_dir(path)
    state = from_v1_state(raw) if any(k.startswith("transformer.") for k in raw) else from_hf_state(raw)
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return build_model(cfg, state, dtype)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.model.hf", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="our checkpoint -> HF directory")
    ex.add_argument("--checkpoint", required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--max-shard-gb", type=float, default=5.0)
    ex.add_argument("--chat", action="store_true", help="a chat model: <|im_end|> ends its turns (eos)")
    ex.add_argument("--system-prompt", default=DEFAULT_SYSTEM,
                    help="the chat template's system message when a conversation has none ('' for none)")
    im = sub.add_parser("import", help="HF directory -> our checkpoint")
    im.add_argument("--hf", required=True)
    im.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.cmd == "export":
        save_pretrained(load_model(args.checkpoint), args.out, int(args.max_shard_gb * 2**30), chat=args.chat,
                        system_prompt=args.system_prompt)
    else:
        save_model(from_pretrained(args.hf), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
