"""The Qwen model family in one file: Qwen v1 and Qwen2, dense and MoE, with long-context methods.

    from training.model.qwen import ModelConfig, Qwen
    from training.model.flavors import FLAVORS
    model = Qwen(FLAVORS["debug"])
    out = model(input_ids)              # out.logits [B, T, V]; out.aux_loss for MoE

Architecture (pre-norm decoder): embed -> L x [RMSNorm -> attention -> +residual, RMSNorm ->
SwiGLU MLP or MoE -> +residual] -> RMSNorm -> lm_head. Attention has bias on q/k/v only, RoPE and
grouped-query heads; it runs through ``F.scaled_dot_product_attention``.

Long context (all off by default): YaRN (``rope_type="yarn"``), Qwen v1's dynamic NTK and LogN
scaling, per-layer window attention (``window_sizes``) and Dual Chunk Attention (``dca_chunk_size``).
Packed rows: pass ``doc_ids`` [B, T] and attention never crosses documents (positions restart).
Parameter names follow the Hugging Face Qwen2 layout (``model.layers.0.self_attn.q_proj.weight``),
so ``training/model/hf.py`` is a literal key map.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from training.model import rope
from training.model.dca import dca_attention
from training.model.moe import MLP, SparseMoE, load_balancing_loss


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 151936
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_layers: int = 24
    num_heads: int = 14
    num_kv_heads: int = 2
    head_dim: int | None = None           # default hidden_size // num_heads
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    qkv_bias: bool = True
    arch: str = "qwen2"                   # "qwen" (v1) or "qwen2": naming and defaults only
    # RoPE scaling: "default" or "yarn" (factor, original length, betas as in the YaRN paper)
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_original_max_position: int | None = None
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    yarn_attention_factor: float | None = None
    # Qwen v1 inference-time extension; train_seq_len is L in the NTK and LogN formulas
    use_dynamic_ntk: bool = False
    use_logn_attn: bool = False
    train_seq_len: int = 2048
    window_sizes: tuple | None = None     # per layer: window in tokens, or None for full attention
    dca_chunk_size: int | None = None     # Dual Chunk Attention: pretraining length c
    dca_local_size: int = 0               # ... and local window w (chunks are c - w tokens)
    # MoE (num_experts > 0): which layers are sparse follows HF's decoder_sparse_step / mlp_only_layers
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple = ()
    router_aux_loss_coef: float = 0.001
    initializer_range: float = 0.02

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def is_sparse(self, layer: int) -> bool:
        return (self.num_experts > 0 and layer not in self.mlp_only_layers
                and (layer + 1) % self.decoder_sparse_step == 0)

    def window(self, layer: int) -> int | None:
        return self.window_sizes[layer] if self.window_sizes else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)


@dataclass
class Output:
    logits: torch.Tensor | None           # [B, T, V]; [N, V] with logits_at; None with return_hidden
    aux_loss: torch.Tensor | None = None  # MoE load-balancing loss (unscaled), else None
    router_logits: list | None = None     # per MoE layer [B*T, E]
    cache: "KVCache | None" = None
    hidden: torch.Tensor | None = None    # [B, T, H] final-norm states, with return_hidden


class KVCache:
    """Per-layer keys/values [B, Hkv, T, D] grown by concatenation; ``length`` tokens seen so far."""

    def __init__(self, num_layers: int):
        self.kv: list = [None] * num_layers
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if self.kv[layer] is not None:
            k = torch.cat([self.kv[layer][0], k], dim=2)
            v = torch.cat([self.kv[layer][1], v], dim=2)
        self.kv[layer] = (k, v)
        return k, v


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


@dataclass
class _Context:
    """What every layer needs for one forward call, computed once."""
    cos: torch.Tensor | None        # [B, 1, T, D]
    sin: torch.Tensor | None
    masks: dict                     # window (None = full) -> bool mask [B, 1, T, Tk] or None (causal)
    logn: torch.Tensor | None       # [B, 1, T, 1] query scale
    positions: torch.Tensor         # [B, T]
    inv_freq: torch.Tensor
    rope_scale: float
    cache: KVCache | None


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.nh, self.nkv, self.hd = cfg.num_heads, cfg.num_kv_heads, cfg.dim_per_head
        self.q_proj = nn.Linear(cfg.hidden_size, self.nh * self.hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.nkv * self.hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.nkv * self.hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.nh * self.hd, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, ctx: _Context) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)   # [B, H, T, D]
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        if self.cfg.dca_chunk_size:  # DCA rotates per chunk region, so the cache keeps raw keys
            if ctx.cache is not None:
                k, v = ctx.cache.update(self.layer, k, v)
            out = dca_attention(q, k, v, ctx.positions[0], torch.arange(k.shape[2], device=x.device),
                                ctx.inv_freq, self.cfg.dca_chunk_size, self.cfg.dca_local_size,
                                self.hd ** -0.5, ctx.rope_scale)
        else:
            q, k = rope.apply_rope(q, ctx.cos, ctx.sin), rope.apply_rope(k, ctx.cos, ctx.sin)
            if ctx.logn is not None:
                q = q * ctx.logn.to(q.dtype)
            if ctx.cache is not None:
                k, v = ctx.cache.update(self.layer, k, v)                   # [B, Hkv, Tk, D]
            mask = ctx.masks[self.cfg.window(self.layer)]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                                 enable_gqa=self.nkv != self.nh)   # [B, H, T, D]
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.nh * self.hd))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if cfg.is_sparse(layer):
            self.mlp = SparseMoE(cfg.hidden_size, cfg.num_experts, cfg.num_experts_per_tok,
                                 cfg.moe_intermediate_size, cfg.shared_expert_intermediate_size,
                                 cfg.norm_topk_prob)
        else:
            self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, ctx: _Context):
        x = x + self.self_attn(self.input_layernorm(x), ctx)
        h = self.mlp(self.post_attention_layernorm(x))
        h, router_logits = h if isinstance(h, tuple) else (h, None)
        return x + h, router_logits


class Qwen(nn.Module):
    """Causal LM. Set ``model.gradient_checkpointing = True`` to recompute blocks in backward."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.gradient_checkpointing = False
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(cfg.vocab_size, cfg.hidden_size),
            layers=nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers)),
            norm=RMSNorm(cfg.hidden_size, cfg.rms_norm_eps),
        ))
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        inv_freq, self.rope_scale = self._static_rope()
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.apply(self._init_weights)

    def _static_rope(self) -> tuple[torch.Tensor, float]:
        c = self.cfg
        if c.rope_type == "yarn":
            return rope.yarn_inv_freq(c.dim_per_head, c.rope_theta, c.rope_factor,
                                      c.rope_original_max_position or c.max_position_embeddings,
                                      c.yarn_beta_fast, c.yarn_beta_slow, c.yarn_attention_factor)
        if c.rope_type != "default":
            raise ValueError(f"unsupported rope_type {c.rope_type!r}")
        return rope.default_inv_freq(c.dim_per_head, c.rope_theta), 1.0

    def _init_weights(self, m: nn.Module):
        std = self.cfg.initializer_range
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, RMSNorm):
            nn.init.ones_(m.weight)
        elif hasattr(m, "gate_up_proj"):  # stacked experts
            nn.init.normal_(m.gate_up_proj, std=std)
            nn.init.normal_(m.down_proj, std=std)

    def num_params(self, active: bool = False) -> int:
        """Unique parameters; active=True counts only top-k of the routed experts per token."""
        total = sum(p.numel() for p in self.parameters())
        if active and self.cfg.num_experts:
            c = self.cfg
            per_expert = 3 * c.hidden_size * c.moe_intermediate_size
            sparse = sum(c.is_sparse(i) for i in range(c.num_layers))
            total -= sparse * (c.num_experts - c.num_experts_per_tok) * per_expert
        return total

    def forward(self, input_ids: torch.Tensor, *, position_ids: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, logits_to_keep: int = 0, logits_at: torch.Tensor | None = None,
                return_hidden: bool = False) -> Output:
        """input_ids [B, T]; doc_ids [B, T] segment ids of packed documents; attention_mask [B, past+T]
        (1 = real token, for left padding); cache grows by T. logits_to_keep=n keeps the last n positions;
        logits_at [B, T] bool computes the lm_head only there (logits [N, V]: with a 151,936-token vocabulary
        the lm_head is most of the compute); return_hidden skips the lm_head and returns the final-norm states
        (`hidden`) for a head of the caller's. The MoE load-balancing loss (`aux_loss`) comes with every form."""
        past = cache.length if cache is not None else 0
        if doc_ids is not None and past:
            raise ValueError("doc_ids is for training/prefill without a cache")
        if self.cfg.dca_chunk_size and (doc_ids is not None or attention_mask is not None):
            raise NotImplementedError("Dual Chunk Attention supports unpadded single-document rows only")
        ctx = self._context(input_ids, past, position_ids, doc_ids, attention_mask, cache)
        x = self.model.embed_tokens(input_ids)                          # [B, T, H]
        router_logits = []
        for block in self.model.layers:
            if self.gradient_checkpointing and self.training:
                x, r = checkpoint(block, x, ctx, use_reentrant=False)
            else:
                x, r = block(x, ctx)
            if r is not None:
                router_logits.append(r)
        if cache is not None:
            cache.length += input_ids.shape[1]
        x = self.model.norm(x[:, -logits_to_keep:] if logits_to_keep else x)
        if return_hidden:
            out = Output(None, cache=cache, hidden=x)
        else:
            out = Output(self.lm_head(x if logits_at is None else x[logits_at]), cache=cache)   # [B, T, V] / [N, V]
        if router_logits:
            pad = attention_mask[:, past:] if attention_mask is not None else None
            out.router_logits = router_logits
            out.aux_loss = load_balancing_loss(router_logits, self.cfg.num_experts,
                                               self.cfg.num_experts_per_tok, pad)
        return out

    def _context(self, input_ids, past, position_ids, doc_ids, attention_mask, cache) -> _Context:
        B, T = input_ids.shape
        c, dev = self.cfg, input_ids.device
        if position_ids is None:
            position_ids = make_positions(B, T, past, attention_mask, doc_ids, dev)
        inv_freq = self.inv_freq
        if c.use_dynamic_ntk and past + T > c.train_seq_len:
            # as in Qwen v1: the base follows the current length; cached keys keep the rotation they got
            alpha = rope.ntk_alpha(past + T, c.train_seq_len)
            inv_freq = rope.default_inv_freq(c.dim_per_head, rope.ntk_base(c.rope_theta, c.dim_per_head, alpha))
        cos = sin = logn = None
        if not c.dca_chunk_size:
            cos, sin = rope.rope_cos_sin(position_ids, inv_freq, self.rope_scale)
        if c.use_logn_attn and int(position_ids.max()) + 1 > c.train_seq_len:
            logn = rope.logn_scale(position_ids, c.train_seq_len)[:, None, :, None]
        windows = {c.window(i) for i in range(c.num_layers)}
        masks = {w: make_mask(B, T, past, attention_mask, doc_ids, w, dev) for w in windows}
        return _Context(cos, sin, masks, logn, position_ids, inv_freq, self.rope_scale, cache)


def make_positions(B, T, past, attention_mask, doc_ids, device) -> torch.Tensor:
    """Position ids [B, T]: restart at 0 per document, skip left padding, else past..past+T-1."""
    idx = torch.arange(T, device=device).expand(B, T)
    if doc_ids is not None:
        new_doc = torch.ones_like(doc_ids, dtype=torch.bool)
        new_doc[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
        start = torch.where(new_doc, idx, torch.zeros_like(idx)).cummax(dim=1).values
        return idx - start
    if attention_mask is not None:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:past + T]
    return idx + past


def make_mask(B, T, past, attention_mask, doc_ids, window, device) -> torch.Tensor | None:
    """Bool mask [B, 1, T, past+T] (True = may attend), or None when plain causal attention suffices."""
    if attention_mask is None and doc_ids is None and window is None and (past == 0 or T == 1):
        return None
    q = torch.arange(past, past + T, device=device)[:, None]          # [T, 1] cache index of queries
    k = torch.arange(past + T, device=device)[None]                    # [1, Tk]
    allowed = (k <= q).expand(B, T, past + T)
    if window is not None:
        allowed = allowed & (q - k < window)
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, :]
    if doc_ids is not None:
        allowed = allowed & (doc_ids[:, :, None] == doc_ids[:, None, :])
    return (allowed | (k == q))[:, None]   # a query always sees itself, so no row is empty (no NaN)
