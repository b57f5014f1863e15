"""Our model checkpoint format: a directory with ``model.safetensors`` (our parameter names, which are
the Hugging Face Qwen2 names with stacked experts) and ``model_config.json`` (a ModelConfig).

    from training.checkpoint import save_model, load_model
    save_model(model, "runs/ckpt/step-100"); model = load_model("runs/ckpt/step-100")

The trainer saves and resumes with these; ``python -m training.hf`` converts to and from HF layout.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from training.model import ModelConfig, Qwen

WEIGHTS, CONFIG = "model.safetensors", "model_config.json"


def state_for_saving(model: Qwen) -> dict[str, torch.Tensor]:
    """Contiguous copies of all weights; a tied lm_head is left out (it is the embedding)."""
    sd = model.state_dict()
    if model.cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return {k: v.detach().contiguous() for k, v in sd.items()}


def build_model(cfg: ModelConfig, state: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> Qwen:
    """A Qwen holding exactly `state` (our names), built on the meta device so no memory is wasted."""
    with torch.device("meta"):
        model = Qwen(cfg)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    allowed = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise ValueError(f"checkpoint mismatch: missing {sorted(set(missing) - allowed)}, unexpected {unexpected}")
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.inv_freq = model._static_rope()[0]   # buffers are not in the state dict
    return model


def save_model(model: Qwen, path: str | Path) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(state_for_saving(model), str(path / WEIGHTS), metadata={"format": "pt"})
    (path / CONFIG).write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n")


def load_model(path: str | Path, dtype: torch.dtype | None = None) -> Qwen:
    path = Path(path)
    cfg = ModelConfig.from_dict(json.loads((path / CONFIG).read_text()))
    return build_model(cfg, load_file(str(path / WEIGHTS)), dtype)
