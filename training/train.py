"""Pretraining: packed Parquet shards in, a Qwen model out, on one CPU or many GPUs.

    python -m training.train --recipe training/recipes/demo.toml --data runs/demo/shards --out runs/demo/train
    python -m training.train --recipe R.toml --set optim.lr=1e-3 --max-steps 10          # stop at step 10
    python -m training.train --recipe R.toml --resume                                    # from the last checkpoint
    python -m training.train --recipe R.toml --init runs/demo/train/final                # continued pretraining
    torchrun --nproc_per_node=2 -m training.train --recipe R.toml                        # DDP (gloo on CPU)

A recipe has four tables, each a frozen dataclass (`common/recipe.py` rules: unknown keys are errors,
`--set section.key=value` overrides, `base = "other.toml"` inherits): [model] (a FLAVORS name plus
ModelConfig overrides), [data], [optim] (training/optim.py) and [train].

One optimizer step = `grad_accum_steps` micro-batches of `micro_batch_size` rows on each of `world`
ranks. The loss of every micro-batch is its summed token cross-entropy divided by the number of target
tokens of the whole global step (counted before the forward, summed over ranks), so the accumulated
gradient is exactly that of the large batch, whatever the split into micro-batches and processes.

Output folder: metrics.jsonl, loss.png, summary.json, checkpoints/step-NNNNNN/ (keep-last-N,
atomic), final/ (our model format, for training.chat) and hf/ (Hugging Face format).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from common.errors import JobFailed, cli_main
from common.recipe import ConfigError, load_sections, require, require_positive
from training.model import checkpoint as ckpt
from training import dist
from training.data import IGNORE, ShardData, StepLoader, eval_batches
from training.model.flavors import FLAVORS
from training.metrics import MetricsLog, flops_per_token, peak_flops, plot_losses, read_metrics
from training.model.qwen import ModelConfig, Qwen
from training.optim import OptimConfig, make_optimizer, make_scheduler

RECIPES = Path(__file__).resolve().parent / "recipes"


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
class TrainConfig:
    steps: int = 1000                # optimizer steps; also the horizon of the lr schedule
    micro_batch_size: int = 8        # rows per rank per micro-batch
    grad_accum_steps: int = 1
    seed: int = 0                    # model init
    dtype: str = "auto"              # auto (bf16 autocast on CUDA, fp32 on CPU) | float32 | bfloat16
    device: str = "auto"             # auto | cpu | cuda
    compile: bool = False            # torch.compile the model
    activation_checkpointing: bool = False
    fsdp: bool = False               # FSDP2 instead of DDP (torchrun only)
    aux_loss_coef: float = -1.0      # MoE load-balancing weight; < 0: the model's router_aux_loss_coef
    log_every: int = 1               # metrics.jsonl line every N steps (the bar moves every step)
    eval_every: int = 100            # 0: only at the start and the end
    save_every: int = 100            # 0: only at the end
    keep_last: int = 2
    export_hf: bool = True           # write <out>/hf at the end
    init: str = ""                   # continued pretraining: start from this checkpoint's weights and config
    out: str = "runs/train"          # --out overrides

    def __post_init__(self):
        require_positive(self, "steps", "micro_batch_size", "grad_accum_steps", "log_every", "keep_last")
        require(self.eval_every >= 0, "eval_every", self.eval_every, ">= 0 (0: only at the start and the end)")
        require(self.save_every >= 0, "save_every", self.save_every, ">= 0 (0: only at the end)")


SECTIONS = {"model": ModelSection, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Recipe:
    model: ModelSection
    data: DataConfig
    optim: OptimConfig
    train: TrainConfig

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] = ()) -> "Recipe":
        return cls(**load_sections(path, SECTIONS, overrides, recipe_dirs=(RECIPES,)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class NonFiniteLoss(JobFailed, RuntimeError):
    """Loss or gradient norm became NaN/inf; the run stops before the optimizer step."""


class Trainer:
    """Owns the model, optimizer, data and output folder of one run (one per process)."""

    def __init__(self, recipe: Recipe, out: Path, env: dist.Env):
        self.recipe, self.out, self.env = recipe, out, env
        t = recipe.train
        self.autocast = t.dtype == "bfloat16" or (t.dtype == "auto" and env.device.type == "cuda")
        self.train_data = ShardData(recipe.data.root, "train")
        valid = Path(recipe.data.root) / "valid"
        self.valid_data = ShardData(recipe.data.root, "valid") if any(valid.glob("*.parquet")) else None
        torch.manual_seed(t.seed)
        self.raw = ckpt.load_model(t.init) if t.init else Qwen(recipe.model.build_config())
        self.cfg = self.raw.cfg
        self._check_vocab()
        self.raw.gradient_checkpointing = t.activation_checkpointing
        self.loader = StepLoader(self.train_data, t.micro_batch_size, t.grad_accum_steps, env.rank, env.world,
                                 recipe.data.seed, recipe.data.shuffle)
        self.step = 0

    def _check_vocab(self) -> None:
        vocab = self.train_data.manifest.get("tokenizer", {}).get("vocab_size", 0)
        if vocab > self.cfg.vocab_size:
            raise ConfigError(f"shards use {vocab} token ids but the model has vocab_size {self.cfg.vocab_size}")
        for data in (self.train_data, self.valid_data):   # every id is checked as its row group is read
            if data is not None:
                data.vocab_size = self.cfg.vocab_size

    # ------------------------------------------------------------------ setup and resume

    def setup(self, resume: bool) -> None:
        state = self._resume_state() if resume else None
        if state:
            ckpt.load_weights_into(self.raw, state["model"])
        self.raw.to(self.env.device)
        self.model = dist.wrap(self.raw, self.env, self.recipe.train.fsdp, self.autocast)
        if self.recipe.train.compile:
            self.model = torch.compile(self.model)
        self.opt = make_optimizer(self.raw, self.recipe.optim)
        self.sched = make_scheduler(self.opt, self.recipe.optim, self.recipe.train.steps)
        if state:
            dist.load_optimizer(self.model, self.raw, self.opt, state["optim"]["optimizer"], self.recipe.train.fsdp)
            self.sched.load_state_dict(state["optim"]["scheduler"])
            self.loader.load_state_dict(state["trainer"]["data"])
            rngs = state["rng"]
            ckpt.set_rng_state(rngs[self.env.rank] if len(rngs) == self.env.world else rngs[0])
            self.step = state["trainer"]["step"]

    def _resume_state(self) -> dict | None:
        found = ckpt.list_checkpoints(self.out / "checkpoints")
        if not found:
            if self.env.is_main:
                print(f"--resume: no checkpoint in {self.out / 'checkpoints'}; starting from step 0", file=sys.stderr)
            return None
        return ckpt.load_training(found[-1])

    # ------------------------------------------------------------------ one step

    def train_step(self) -> dict:
        """One optimizer step over the global batch; returns the step's metrics."""
        started = time.perf_counter()
        micro = self.loader.next_step()
        n_global = float(self.env.sum(sum(b.n_targets for b in micro)))
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.env.device)
        for i, batch in enumerate(micro):
            with dist.no_sync(self.model, i == len(micro) - 1):
                loss, token_sum = self._micro_loss(batch.to(self.env.device), n_global, len(micro))
                loss.backward()
            loss_sum += token_sum.double()
        loss_value = float(self.env.sum(loss_sum)) / n_global
        grad_norm = self._clip()
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            raise NonFiniteLoss(self._nan_message(loss_value, grad_norm))
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        return self._step_record(loss_value, grad_norm, lr, n_global, time.perf_counter() - started)

    def _micro_loss(self, batch, n_global: float, n_micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to backpropagate, summed token cross-entropy) for one micro-batch."""
        with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.model(batch.input_ids, doc_ids=batch.attention_doc_ids())
        token_sum = F.cross_entropy(out.logits.float().flatten(0, 1), batch.targets.flatten(),
                                    ignore_index=IGNORE, reduction="sum")
        # DDP averages gradients over ranks: * world turns that average back into the global sum
        loss = token_sum * (self.env.world / n_global)
        if out.aux_loss is not None:
            coef = self.recipe.train.aux_loss_coef
            coef = self.cfg.router_aux_loss_coef if coef < 0 else coef
            loss = loss + coef * out.aux_loss / n_micro
        return loss, token_sum.detach()

    def _clip(self) -> float:
        clip = self.recipe.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def _nan_message(self, loss: float, grad_norm: float) -> str:
        found = ckpt.list_checkpoints(self.out / "checkpoints")
        last = found[-1] if found else "none (no checkpoint saved yet)"
        return (f"non-finite values at step {self.step + 1} (loss {loss}, grad norm {grad_norm}); stopped before the "
                f"optimizer step. Last good checkpoint: {last}. Lower optim.lr or raise optim.warmup_steps.")

    def _step_record(self, loss: float, grad_norm: float, lr: float, tokens: float, seconds: float) -> dict:
        tps = tokens / seconds
        peak = peak_flops(self.env.device)
        n_emb = self.cfg.vocab_size * self.cfg.hidden_size
        fpt = flops_per_token(self.raw.num_params(active=True), 0 if self.cfg.tie_word_embeddings else n_emb,
                              self.cfg.num_layers, self.cfg.hidden_size, self.train_data.row_width - 1)
        mfu = fpt * tps / (peak * self.env.world) if peak else None
        return {"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": int(tokens),
                "tokens_per_s": round(tps, 2), "mfu": mfu, "epoch": round(self.loader.epoch, 6)}

    # ------------------------------------------------------------------ validation and checkpoints

    @torch.no_grad()
    def evaluate(self) -> dict | None:
        if self.valid_data is None:
            return None
        self.model.eval()
        total = count = 0.0
        for batch in eval_batches(self.valid_data, self.recipe.data.eval_batch, self.recipe.data.eval_rows,
                                  self.env.rank, self.env.world):
            batch = batch.to(self.env.device)
            with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.model(batch.input_ids, doc_ids=batch.attention_doc_ids()).logits
            total += float(F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten(),
                                           ignore_index=IGNORE, reduction="sum"))
            count += batch.n_targets
        self.model.train()
        loss = float(self.env.sum(total)) / max(1.0, float(self.env.sum(count)))
        return {"step": self.step, "val_loss": loss, "val_ppl": math.exp(min(loss, 700.0))}

    def save(self) -> Path | None:
        model_state, optim_state = dist.full_states(self.model, self.raw, self.opt, self.recipe.train.fsdp)
        rngs = self.env.gather(ckpt.rng_state())
        path = None
        if self.env.is_main:
            trainer = {"data": self.loader.state_dict(), "world": self.env.world, "recipe": self.recipe.to_dict()}
            path = ckpt.save_training(self.out / "checkpoints", self.step, model_state, self.cfg,
                                      {"optimizer": optim_state, "scheduler": self.sched.state_dict()},
                                      rngs, trainer, self.recipe.train.keep_last)
        self.env.barrier()
        return path


def run(recipe: Recipe, out: Path, env: dist.Env, max_steps: int | None, resume: bool) -> dict:
    """Trains until train.steps (or max_steps); returns the summary written to summary.json."""
    t = recipe.train
    trainer = Trainer(recipe, out, env)
    trainer.setup(resume)
    stop = min(t.steps, max_steps or t.steps)
    log = MetricsLog(out, trainer.step, stop, enabled=env.is_main)
    if trainer.step == 0:
        first_eval = trainer.evaluate()
        if first_eval:
            log.write(first_eval)
    else:   # resumed: the start is in metrics.jsonl already
        first_eval = next((r for r in read_metrics(out / "metrics.jsonl") if "val_loss" in r), None) \
            if (out / "metrics.jsonl").exists() else None
    last_eval = first_eval
    try:
        while trainer.step < stop:
            record = trainer.train_step()
            log.step(record, write=trainer.step % t.log_every == 0 or trainer.step == stop)
            if t.eval_every and trainer.step % t.eval_every == 0 and trainer.step < stop:
                last_eval = trainer.evaluate()
                if last_eval:
                    log.write(last_eval)
            if t.save_every and trainer.step % t.save_every == 0 and trainer.step < stop:
                trainer.save()
    finally:
        log.close()
    return finish(trainer, out, env, first_eval, last_eval)


def finish(trainer: Trainer, out: Path, env: dist.Env, first_eval: dict | None, last_eval: dict | None) -> dict:
    """Final evaluation, checkpoint, our-format and HF exports, loss curve and summary.json."""
    if not last_eval or last_eval["step"] != trainer.step:
        last_eval = trainer.evaluate()
    path = trainer.save()
    summary = {"step": trainer.step, "checkpoint": str(path), "start_val_loss": (first_eval or {}).get("val_loss"),
               "end_val_loss": (last_eval or {}).get("val_loss")}
    if env.is_main:
        if last_eval:
            with (out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(last_eval) + "\n")
        model = ckpt.load_model(path)
        ckpt.save_model(model, out / "final")
        if trainer.recipe.train.export_hf:
            from training.model.hf import save_pretrained
            save_pretrained(model, out / "hf")
        summary["loss_png"] = str(plot_losses(out / "metrics.jsonl", out / "loss.png"))
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(RECIPES / "demo.toml"))
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--data", help="shards folder (data.root)")
    p.add_argument("--out", help="output folder (train.out)")
    p.add_argument("--max-steps", type=int, help="stop after this step (the lr schedule still spans train.steps)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in <out>/checkpoints")
    p.add_argument("--init", help="start from this checkpoint's weights and model config (train.init)")
    return p.parse_args(argv)


def keep_freed_memory() -> None:
    """On glibc, serve large blocks from the heap and keep them after free: a CPU step allocates the same
    [B, T, vocab] logits every time, and fresh mmap pages cost more system time than the math (-25% CPU on the
    demo). M_MMAP_MAX = -4, M_TRIM_THRESHOLD = -1 in malloc.h."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-4, 0)
        libc.mallopt(-1, 1 << 30)
    except (OSError, AttributeError):   # not glibc: nothing to tune
        pass


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sets = list(args.set) + ([f"data.root={json.dumps(args.data)}"] if args.data else []) \
        + ([f"train.out={json.dumps(args.out)}"] if args.out else []) \
        + ([f"train.init={json.dumps(args.init)}"] if args.init else [])
    recipe = Recipe.load(args.recipe, sets)
    out = Path(recipe.train.out)
    with dist.distributed(recipe.train.device) as env:
        if env.device.type == "cpu":
            keep_freed_memory()
        if env.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
        env.barrier()
        summary = run(recipe, out, env, args.max_steps, args.resume)
    if env.is_main:
        print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    cli_main(main)
