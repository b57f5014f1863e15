"""Our model checkpoint format: a directory with ``model.safetensors`` (our parameter names, which are
the Hugging Face Qwen2 names with stacked experts) and ``model_config.json`` (a ModelConfig).

    from training.model.checkpoint import save_model, load_model
    save_model(model, "runs/ckpt/step-100"); model = load_model("runs/ckpt/step-100")

``python -m training.model.hf`` converts to and from HF layout. The trainer's checkpoints (``save_training``,
``load_training``, below) are such a folder plus optimizer, scheduler, RNG and data-position state, so
``load_model`` reads them too.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from common.errors import UserError

from training.model.qwen import ModelConfig, Qwen

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


class CheckpointError(UserError, ValueError):
    """A model folder the trainer cannot load; the message names it."""


def load_model(path: str | Path, dtype: torch.dtype | None = None) -> Qwen:
    path = Path(path)
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} is not a model checkpoint: {name} is missing")
    try:
        cfg = ModelConfig.from_dict(json.loads((path / CONFIG).read_text(encoding="utf-8")))
        weights = load_file(str(path / WEIGHTS))
    except (ValueError, TypeError, KeyError, OSError, SafetensorError) as err:   # JSON, config keys, weights
        raise CheckpointError(f"{path}: the checkpoint cannot be read ({type(err).__name__}: {err})") from None
    return build_model(cfg, weights, dtype)


# ----------------------------------------------------------------------------- training checkpoints
# A training checkpoint is a model folder (above) plus `optimizer.pt` (optimizer and scheduler),
# `rng.pt` (RNG states, one per rank) and `trainer_state.json` (step, data position, recipe):
#     <out>/checkpoints/step-000100/
# It is written into a hidden sibling and renamed into place, so a killed run never leaves a
# half-written folder that looks finished; only the last `keep_last` folders are kept.

STEP_PREFIX, TRAINER_STATE = "step-", "trainer_state.json"


def rng_state() -> dict:
    import random

    import numpy as np
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training(folder: Path, step: int, model_state: dict, cfg: ModelConfig, optim_state: dict,
                  rngs: list[dict], trainer_state: dict, keep_last: int) -> Path:
    """Atomically writes <folder>/step-NNNNNN and prunes older ones; model_state has our names."""
    folder = Path(folder)
    final = folder / f"{STEP_PREFIX}{step:06d}"
    tmp = folder / f".{final.name}.tmp"
    _remove(tmp)
    tmp.mkdir(parents=True)
    if cfg.tie_word_embeddings:
        model_state = {k: v for k, v in model_state.items() if k != "lm_head.weight"}
    save_file({k: v.detach().contiguous() for k, v in model_state.items()}, str(tmp / WEIGHTS),
              metadata={"format": "pt"})
    (tmp / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    torch.save(optim_state, tmp / "optimizer.pt")
    torch.save(rngs, tmp / "rng.pt")
    (tmp / TRAINER_STATE).write_text(json.dumps({"step": step, **trainer_state}, indent=2) + "\n")
    _remove(final)
    tmp.rename(final)
    for old in list_checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
        _remove(old)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Finished training checkpoints, oldest first."""
    folder = Path(folder)
    found = [p for p in folder.glob(f"{STEP_PREFIX}*") if (p / TRAINER_STATE).exists()] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def load_training(path: Path) -> dict:
    """The parts of a training checkpoint: model state (our names), optimizer state, RNGs, trainer state."""
    path = Path(path)
    config = ModelConfig.from_dict(json.loads((path / CONFIG).read_text()))
    return {"model": load_file(str(path / WEIGHTS)), "config": config,
            "optim": torch.load(path / "optimizer.pt", weights_only=False),
            "rng": torch.load(path / "rng.pt", weights_only=False),
            "trainer": json.loads((path / TRAINER_STATE).read_text())}


def load_weights_into(model: Qwen, state: dict[str, torch.Tensor]) -> None:
    """Copies a saved state into an existing model (a tied lm_head may be absent)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {"lm_head.weight"} if model.cfg.tie_word_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise ValueError(f"checkpoint mismatch: missing {sorted(set(missing) - allowed)}, unexpected {unexpected}")


def _remove(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)
