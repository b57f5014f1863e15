"""Pretraining: packed Parquet shards in, a Qwen model out, on one CPU or many GPUs (a phase of training/loop.py).

    python -m training.train --recipe training/recipes/demo.toml --data runs/demo/shards --out runs/demo/train
    python -m training.train --recipe R.toml --set optim.lr=1e-3 --max-steps 10          # stop at step 10
    python -m training.train --recipe R.toml --resume                                    # from the last checkpoint
    python -m training.train --recipe R.toml --init runs/demo/train/final                # continued pretraining
    torchrun --nproc_per_node=2 -m training.train --recipe R.toml                        # DDP (gloo on CPU)

A recipe has four tables, each a frozen dataclass (common/recipe.py rules: unknown keys are errors,
`--set section.key=value` overrides, `base = "other.toml"` inherits): [model] (a FLAVORS name plus
ModelConfig overrides), [data], [optim] (training/optim.py) and [train] (TrainConfig: the loop's keys
plus the batch layout).

One optimizer step = `grad_accum_steps` micro-batches of `micro_batch_size` rows on each of `world`
ranks; each micro-batch weighs its target tokens, so the accumulated gradient is exactly that of the large
batch (training/loop.py).

Output folder (training/loop.py): metrics.jsonl, loss.png, summary.json (start_val_loss, end_val_loss),
checkpoints/step-NNNNNN/, final/ (our model format, for training.chat) and hf/ (Hugging Face format).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from common.errors import cli_main
from common.recipe import ConfigError, Recipe, require, require_positive
from training import dist
from training.cli import run_phase
from training.data import IGNORE, Batch, ShardData, StepLoader, eval_batches, split_files
from training.loop import LossOut, LoopConfig, Micro, Phase, Trainer, moe_aux
from training.metrics import flops_per_token
from training.model import checkpoint as ckpt
from training.model.flavors import FLAVORS
from training.model.qwen import ModelConfig, Qwen
from training.optim import OptimConfig


@dataclass(frozen=True)
class ModelSection:
    flavor: str = "debug"                                     # a training.model.flavors.FLAVORS name
    overrides: dict[str, Any] = field(default_factory=dict)   # ModelConfig fields, e.g. {num_layers = 4}

    def build_config(self) -> ModelConfig:
        if self.flavor not in FLAVORS:
            raise ConfigError(f"model.flavor {self.flavor!r} is not one of {sorted(FLAVORS)}")
        return ModelConfig.from_dict({**FLAVORS[self.flavor].to_dict(), **self.overrides})


@dataclass(frozen=True)
class DataConfig:
    root: str = "runs/demo/shards"   # a shards folder (jobs.tokenize); --data overrides
    shuffle: bool = True             # row-group order shuffled per epoch
    seed: int = 0
    eval_rows: int = 0               # validation rows per evaluation (0: the whole valid split)
    eval_batch: int = 8

    def __post_init__(self):
        require_positive(self, "eval_batch")
        require(self.eval_rows >= 0, "eval_rows", self.eval_rows, ">= 0 (0: the whole valid split)")


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    micro_batch_size: int = 8        # rows per rank per micro-batch
    grad_accum_steps: int = 1

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "micro_batch_size", "grad_accum_steps")


SECTIONS = {"model": ModelSection, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}


class Pretraining(Phase):
    """Next-token cross-entropy on packed rows, per-document attention (`doc_starts`)."""
    name = "pretrain"
    chat = False

    def __init__(self, recipe: Recipe, env: dist.Env):
        t, d = recipe.train, recipe.data
        self.data_cfg = d
        self.train_data = ShardData(d.root, "train")
        self.valid_data = ShardData(d.root, "valid") if split_files(d.root, "valid") else None
        self.model = ckpt.load_model(t.init) if t.init else Qwen(recipe.model.build_config())
        self.cfg = self.model.cfg
        self._check_vocab()
        self.loader = StepLoader(self.train_data, t.micro_batch_size, t.grad_accum_steps, env.rank, env.world,
                                 d.seed, d.shuffle)

    def _check_vocab(self) -> None:
        vocab = self.train_data.manifest.get("tokenizer", {}).get("vocab_size", 0)
        if vocab > self.cfg.vocab_size:
            raise ConfigError(f"shards use {vocab} token ids but the model has vocab_size {self.cfg.vocab_size}")
        for data in (self.train_data, self.valid_data):   # every id is checked as its row group is read
            if data is not None:
                data.vocab_size = self.cfg.vocab_size

    def micro_batches(self, step: int, env: dist.Env) -> list[Micro]:
        return [Micro(b.to(env.device), b.n_targets) for b in self.loader.next_step()]

    def loss(self, model, micro: Micro) -> LossOut:
        batch: Batch = micro.data
        out = model(batch.input_ids, doc_ids=batch.attention_doc_ids())
        total = summed_cross_entropy(out.logits, batch.targets)
        return LossOut(total, aux=moe_aux(out), tokens=batch.n_targets)

    def train_step(self, trainer: Trainer, step: int) -> dict:
        return {**trainer.update(self.micro_batches(step, trainer.env)), "epoch": round(self.loader.epoch, 6)}

    def evaluate(self, trainer: Trainer) -> dict | None:
        if self.valid_data is None:
            return None
        env, total, count = trainer.env, 0.0, 0.0
        for batch in eval_batches(self.valid_data, self.data_cfg.eval_batch, self.data_cfg.eval_rows,
                                  env.rank, env.world):
            batch = batch.to(env.device)
            logits = trainer.model(batch.input_ids, doc_ids=batch.attention_doc_ids()).logits
            total += float(summed_cross_entropy(logits, batch.targets))
            count += batch.n_targets
        loss = float(env.sum(total)) / max(1.0, float(env.sum(count)))
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0))}

    def state(self) -> dict:
        return {"data": self.loader}

    def flops_per_token(self) -> float:
        c = self.cfg
        return flops_per_token(self.model.num_params(active=True), 0 if c.tie_word_embeddings else
                               c.vocab_size * c.hidden_size, c.num_layers, c.hidden_size, self.train_data.row_width - 1)

    def summary(self, first: dict | None, last: dict | None) -> dict:
        return {"start_val_loss": (first or {}).get("val_loss"), "end_val_loss": (last or {}).get("val_loss")}


def summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over the targets that are not IGNORE, in fp32."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")


def main(argv: list[str] | None = None) -> dict:
    return run_phase("training.train", __doc__, SECTIONS, Pretraining, argv, "demo")


if __name__ == "__main__":
    cli_main(main)
