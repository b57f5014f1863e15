"""Our model checkpoint format: a directory with ``model.safetensors`` (our parameter names, which are
the Hugging Face Qwen2 names with stacked experts) and ``model_config.json`` (a ModelConfig).

    from training.model.checkpoint import save_model, load_model
    save_model(model, "runs/ckpt/step-100"); model = load_model("runs/ckpt/step-100")

``python -m training.model.hf`` converts to and from HF layout. The trainer's checkpoints (``save_training``,
``load_training``, below) are such a folder plus optimizer, scheduler, RNG and data-position state, so
``load_model`` reads them too. Every function here takes a local folder or a URI (``s3://``, ``s3a://``,
``gs://``, ``hdfs://``: common/fs.py): a URI's files are written locally, then uploaded, and read from a
local copy of the files needed.
"""
from __future__ import annotations

import json
import posixpath
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from common import fs
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
    with fs.staged(path, last=[CONFIG]) as folder:
        save_file(state_for_saving(model), str(folder / WEIGHTS), metadata={"format": "pt"})
        (folder / CONFIG).write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n")


class CheckpointError(UserError, ValueError):
    """A model folder the trainer cannot load; the message names it."""


def load_model(path: str | Path, dtype: torch.dtype | None = None) -> Qwen:
    path = fs.as_path(path)
    with fs.local_copy(path, [CONFIG, WEIGHTS]) as local:
        for name in (CONFIG, WEIGHTS):
            if not (local / name).is_file():
                raise CheckpointError(f"{path} is not a model checkpoint: {name} is missing")
        try:
            cfg = ModelConfig.from_dict(json.loads((local / CONFIG).read_text(encoding="utf-8")))
            weights = load_file(str(local / WEIGHTS))
        except (ValueError, TypeError, KeyError, OSError, SafetensorError) as err:   # JSON, config keys, weights
            raise CheckpointError(f"{path}: the checkpoint cannot be read ({type(err).__name__}: {err})") from None
    return build_model(cfg, weights, dtype)


# ----------------------------------------------------------------------------- training checkpoints
# A training checkpoint is a model folder (above) plus `optimizer.pt` (optimizer and scheduler),
# `rng.pt` (RNG states, one per rank) and `trainer_state.json` (step, data position, recipe):
#     <out>/checkpoints/step-000100/
# A local one is written into a hidden sibling and renamed into place; an object store has no rename,
# so there every other file is uploaded first and `trainer_state.json`, which `list_checkpoints`
# requires, last. Either way a killed run never leaves a half-written folder that looks finished; only
# the last `keep_last` folders are kept.

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


def location(path: str | Path) -> Path | str:
    """A checkpoints folder as the functions here return its entries: a Path, or the URI itself."""
    return fs.as_path(path)


def save_training(folder: str | Path, step: int, model_state: dict, cfg: ModelConfig, optim_state: dict,
                  rngs: list[dict], trainer_state: dict, keep_last: int) -> Path | str:
    """Writes <folder>/step-NNNNNN so that it looks finished only once complete (see above), and prunes
    older ones; model_state has our names."""
    folder = location(folder)
    final = location(fs.join(folder, f"{STEP_PREFIX}{step:06d}"))
    remote = fs.is_remote(folder)
    target = final if remote else folder / f".{final.name}.tmp"
    _remove(target)   # a killed attempt's files (a remote one has no marker, so it was never listed)
    if cfg.tie_word_embeddings:
        model_state = {k: v for k, v in model_state.items() if k != "lm_head.weight"}
    with fs.staged(target, last=[TRAINER_STATE]) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model_state.items()}, str(tmp / WEIGHTS),
                  metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        torch.save(optim_state, tmp / "optimizer.pt")
        torch.save(rngs, tmp / "rng.pt")
        (tmp / TRAINER_STATE).write_text(json.dumps({"step": step, **trainer_state}, indent=2) + "\n")
    if not remote:
        _remove(final)
        target.rename(final)
    for old in list_checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
        _remove(old)
    return final


def list_checkpoints(folder: str | Path) -> list[Path | str]:
    """Finished training checkpoints (those with a trainer_state.json), oldest first."""
    found = [location(p) for p in fs.glob(folder, f"{STEP_PREFIX}*") if fs.exists(fs.join(p, TRAINER_STATE))]
    return sorted(found, key=lambda p: int(posixpath.basename(str(p))[len(STEP_PREFIX):]))


def load_training(path: str | Path) -> dict:
    """The parts of a training checkpoint: model state (our names), optimizer state, RNGs, trainer state."""
    with fs.local_copy(path) as local:
        config = ModelConfig.from_dict(json.loads((local / CONFIG).read_text()))
        return {"model": load_file(str(local / WEIGHTS)), "config": config,
                "optim": torch.load(local / "optimizer.pt", weights_only=False),
                "rng": torch.load(local / "rng.pt", weights_only=False),
                "trainer": json.loads((local / TRAINER_STATE).read_text())}


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state (our names) of a training checkpoint, without its optimizer state."""
    with fs.local_copy(path, [WEIGHTS]) as local:
        return load_file(str(local / WEIGHTS))


def load_weights_into(model: Qwen, state: dict[str, torch.Tensor]) -> None:
    """Copies a saved state into an existing model (a tied lm_head may be absent)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {"lm_head.weight"} if model.cfg.tie_word_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise ValueError(f"checkpoint mismatch: missing {sorted(set(missing) - allowed)}, unexpected {unexpected}")


def _remove(path: Path | str) -> None:
    """Deletes a checkpoint folder; on a remote store its marker first, so a pruning stopped midway
    never leaves a folder that looks finished but lacks files."""
    if fs.is_remote(path):
        fs.remove(fs.join(path, TRAINER_STATE))
    fs.remove(path)
