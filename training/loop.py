"""The one training loop. Every phase (pretraining, SFT, reward model, DPO, online DPO, PPO and the
specialists' continued pretraining) runs through `Trainer`; a phase (`Phase`) supplies only what is its own:
its micro-batches, its loss, its evaluation, the state an exact resume needs and how its result is saved.

    trainer = Trainer(phase, recipe, env, out)     # recipe.train is a LoopConfig, recipe.optim an OptimConfig
    summary = trainer.fit(max_steps=None, resume=False)

The Trainer owns the device, bf16 autocast, DDP / FSDP2 wrapping under torchrun, activation
checkpointing, torch.compile, gradient accumulation, clipping, the non-finite guard, the optimizer and
lr schedule, the MoE load-balancing loss, metrics.jsonl and the progress bar, the evaluation cadence,
checkpoints with exact resume, and the output folder (training/cli.py builds phases from the command line).

Exact accumulation: each micro-batch has a weight known before its forward (target tokens, pairs,
response tokens) and the phase returns its loss summed over those units. The Trainer divides by the
summed weight of the whole global step (all micro-batches, all ranks), so the gradient is that of the
large batch whatever its split into micro-batches and processes. Metrics a phase sums the same way
are logged as means over the step.

Output folder: metrics.jsonl (one line per step: step, loss, the phase's metrics, lr, grad_norm, tokens,
tokens_per_s, seconds, mfu where known; validation lines: step and val_* keys), checkpoints/step-NNNNNN/
(model, optimizer, scheduler, the phase's state, RNGs; atomic, keep_last kept), final/, loss.png,
summary.json, recipe.json.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import JobFailed
from common.plot import Panel, plot_panels, with_val
from common.recipe import Recipe, require, require_positive
from training import dist
from training.metrics import MetricsLog, peak_flops, read_metrics
from training.model import checkpoint as ckpt
from training.model.moe import SparseMoE
from training.model.qwen import ModelConfig, Qwen
from training.tracking import LOGGERS, open_trackers
from training.optim import OptimConfig, make_optimizer, make_scheduler, param_groups


@dataclass(frozen=True)
class LoopConfig:
    """The [train] keys every phase shares (phases add their own in a subclass)."""
    steps: int = 1000                # optimizer steps (PPO: iterations); also the lr schedule's horizon
    seed: int = 0
    dtype: str = "auto"              # auto (bf16 autocast on CUDA, fp32 on CPU) | float32 | bfloat16
    device: str = "auto"             # auto | cpu | cuda
    compile: bool = False            # torch.compile the trained module
    activation_checkpointing: bool = False
    fsdp: bool = False               # FSDP2 instead of DDP (torchrun only)
    aux_loss_coef: float = -1.0      # MoE load-balancing weight; < 0: the model's router_aux_loss_coef
    log_every: int = 1               # metrics.jsonl line every N steps (the bar moves every step)
    eval_every: int = 100            # 0: only at the start and the end
    save_every: int = 100            # training checkpoint every N steps (0: only at the end); --resume
    keep_last: int = 2               # training checkpoints kept
    checkpoint_dir: str = ""         # where they go: a folder or s3:// gs:// hdfs:// URI ("": <out>/checkpoints)
    init: str = ""                   # checkpoint to start from; --init overrides
    out: str = "runs/train"          # --out overrides
    loggers: tuple[str, ...] = ("jsonl",)   # + "tensorboard", "wandb", "mlflow" (training/tracking.py)
    export_hf: bool = True           # also write <out>/hf, a Hugging Face folder with its tokenizer (causal LMs)

    def __post_init__(self):
        require_positive(self, "steps", "log_every", "keep_last")
        unknown = [name for name in self.loggers if name not in LOGGERS]
        require(not unknown, "loggers", self.loggers, f"a list of {tuple(LOGGERS)}")
        require(self.eval_every >= 0, "eval_every", self.eval_every, ">= 0 (0: only at the start and the end)")
        require(self.save_every >= 0, "save_every", self.save_every, ">= 0 (0: only at the end)")
        require(self.dtype in ("auto", "float32", "bfloat16"), "dtype", self.dtype, "auto, float32 or bfloat16")


class NonFiniteLoss(JobFailed, RuntimeError):
    """Loss or gradient norm became NaN/inf; the run stops before the optimizer step."""


@dataclass
class Micro:
    """One micro-batch: the phase's data and its weight (the units its loss is summed over)."""
    data: Any
    weight: float


@dataclass
class LossOut:
    total: torch.Tensor                                 # loss summed over the micro-batch's units
    sums: dict[str, float] = field(default_factory=dict)  # metrics summed over the same units
    aux: torch.Tensor | None = None                     # MoE load-balancing loss of the forward (unscaled)
    tokens: int = 0                                     # tokens processed (for tokens_per_s)


def moe_aux(*outputs) -> torch.Tensor | None:
    """The summed `aux_loss` of model outputs (None when no output has one: a dense model)."""
    found = [o.aux_loss for o in outputs if getattr(o, "aux_loss", None) is not None]
    return sum(found) if found else None


class Phase:
    """What a training phase supplies. `model` is the trained module, `cfg` the ModelConfig its
    checkpoints carry; `name` names the stage in summaries and plots."""
    name = "phase"
    model: nn.Module
    cfg: ModelConfig
    panels: tuple[Panel, ...] = (Panel("loss", with_val("loss")),)
    chat = True   # the Hugging Face export ends turns at <|im_end|> (pretraining: False)

    def micro_batches(self, step: int, env: dist.Env) -> list[Micro]:
        """This rank's micro-batches of optimizer step `step` (0-based)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, micro: Micro) -> LossOut:
        """Forward of one micro-batch through `model` (the wrapped module: call it, not its parts)."""
        raise NotImplementedError

    def train_step(self, trainer: "Trainer", step: int) -> dict:
        """One step: by default one optimizer update; PPO overrides it (a rollout, then several updates)."""
        return trainer.update(self.micro_batches(step, trainer.env))

    def evaluate(self, trainer: "Trainer") -> dict | None:
        """Validation metrics (the Trainer adds the val_ prefix), in eval mode without gradients."""
        return None

    def state(self) -> dict[str, Any]:
        """Further objects (with state_dict / load_state_dict) a checkpoint holds for an exact resume."""
        return {}

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        return param_groups(self.model, optim)

    def clip_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters clipped together, by the metric their norm is logged as."""
        return {"grad_norm": [p for p in self.model.parameters() if p.requires_grad]}

    def schedule_steps(self, steps: int) -> int:
        """Optimizer updates over the run (the lr schedule's horizon)."""
        return steps

    def causal_lm(self, state: dict[str, torch.Tensor]) -> Qwen | None:
        """The trained causal LM from `state`, the complete weights of the last checkpoint (FSDP-sharded
        parameters are gathered there); None when the phase trains something else (a reward model)."""
        return ckpt.build_model(self.cfg, state)

    def save_final(self, state: dict[str, torch.Tensor], final: Path) -> None:
        """final/: the result in our model format (training.chat, --init of the next phase)."""
        ckpt.save_model(self.causal_lm(state), final)

    def summary(self, first: dict | None, last: dict | None) -> dict:
        return {}

    def flops_per_token(self) -> float | None:
        return None


class Trainer:
    """Runs one phase: owns the wrapped model, optimizer, schedule, log and checkpoints of one process."""

    def __init__(self, phase: Phase, recipe: Recipe, env: dist.Env, out: str | Path):
        self.phase, self.recipe, self.env, self.out = phase, recipe, env, Path(out)
        self.train, self.optim = recipe.train, recipe.optim
        t = self.train
        self.bf16 = t.dtype == "bfloat16" or (t.dtype == "auto" and env.device.type == "cuda")
        self.raw = phase.model
        for m in self.raw.modules():
            if isinstance(m, Qwen):
                m.gradient_checkpointing = t.activation_checkpointing
        coef = t.aux_loss_coef
        self.aux_coef = phase.cfg.router_aux_loss_coef if coef < 0 else coef
        self.step = 0

    # ------------------------------------------------------------------ setup and resume

    def setup(self, resume: bool) -> None:
        state = self._resume_state() if resume else None
        if state:
            load_weights(self.raw, state["model"], self.phase.cfg)
        self.raw.to(self.env.device)
        moe = any(isinstance(m, SparseMoE) for m in self.raw.modules())
        self.model = dist.wrap(self.raw, self.env, self.train.fsdp, self.bf16, find_unused=moe)
        if self.train.compile:
            self.model = torch.compile(self.model)
        self.opt = make_optimizer(self.phase.param_groups(self.optim), self.optim)
        self.sched = make_scheduler(self.opt, self.optim, self.phase.schedule_steps(self.train.steps))
        if state:
            dist.load_optimizer(self.model, self.raw, self.opt, state["optim"]["optimizer"], self.train.fsdp)
            self.sched.load_state_dict(state["optim"]["scheduler"])
            for name, part in self.phase.state().items():
                part.load_state_dict(state["optim"][name])
            rngs = state["rng"]
            ckpt.set_rng_state(rngs[self.env.rank] if len(rngs) == self.env.world else rngs[0])
            self.step = state["trainer"]["step"]

    @property
    def checkpoints(self) -> Path | str:
        """The checkpoints folder: train.checkpoint_dir (a Path, or a URI as it is), else <out>/checkpoints."""
        return ckpt.location(self.train.checkpoint_dir) if self.train.checkpoint_dir else self.out / "checkpoints"

    def _resume_state(self) -> dict | None:
        found = ckpt.list_checkpoints(self.checkpoints)
        if not found:
            if self.env.is_main:
                print(f"--resume: no checkpoint in {self.checkpoints}; starting from step 0", file=sys.stderr)
            return None
        return ckpt.load_training(found[-1])

    # ------------------------------------------------------------------ one optimizer update

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=torch.bfloat16)

    def update(self, micros: list[Micro]) -> dict:
        """Forward + backward of every micro-batch, then one clipped optimizer step; returns the step's
        metrics (means over the global batch), lr, gradient norms and tokens."""
        total = float(self.env.sum(sum(m.weight for m in micros)))
        sums: dict[str, float] = {"loss": 0.0}
        tokens = 0
        for i, micro in enumerate(micros):
            with dist.no_sync(self.model, i == len(micros) - 1):
                with self.autocast():
                    out = self.phase.loss(self.model, micro)
                # DDP averages gradients over ranks: * world turns that average back into the global sum
                loss = out.total.float() * (self.env.world / total)
                if out.aux is not None and self.aux_coef:
                    loss = loss + self.aux_coef * out.aux.float() / len(micros)
                loss.backward()
            for key, value in {"loss": float(out.total.detach()), **out.sums}.items():
                sums[key] = sums.get(key, 0.0) + value
            tokens += out.tokens
        metrics = self._global_means(sums, total)
        norms = self._clip()
        if not all(math.isfinite(v) for v in (metrics["loss"], *norms.values())):
            raise NonFiniteLoss(self._nan_message(metrics["loss"], norms))
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return {**metrics, "lr": lr, **norms, "tokens": int(self.env.sum(tokens))}

    def _global_means(self, sums: dict[str, float], total: float) -> dict[str, float]:
        keys = sorted(sums)
        summed = self.env.sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64)).tolist()
        return {k: v / total if total else 0.0 for k, v in zip(keys, summed)}

    def _clip(self) -> dict[str, float]:
        clip = self.optim.grad_clip
        return {name: clip_norm(params, clip) for name, params in self.phase.clip_groups().items()}

    def _nan_message(self, loss: float, norms: dict[str, float]) -> str:
        found = ckpt.list_checkpoints(self.checkpoints)
        last = found[-1] if found else "none (no checkpoint saved yet)"
        return (f"{self.phase.name}: non-finite values at step {self.step + 1} (loss {loss}, {norms}); stopped "
                f"before the optimizer step. Last good checkpoint: {last}. Lower optim.lr or raise optim.warmup_steps.")

    # ------------------------------------------------------------------ the run

    def evaluate(self) -> dict | None:
        was = self.raw.training
        self.raw.eval()
        with torch.no_grad(), self.autocast():
            found = self.phase.evaluate(self)
        self.raw.train(was)
        return {"step": self.step, **{f"val_{k}": v for k, v in found.items()}} if found else None

    def save(self) -> Path | None:
        model_state, optim_state = dist.full_states(self.model, self.raw, self.opt, self.train.fsdp)
        rngs = self.env.gather(ckpt.rng_state())
        path = None
        if self.env.is_main:
            if self.phase.cfg.tie_word_embeddings:   # a tied lm_head is the embedding: not saved twice
                model_state = {k: v for k, v in model_state.items() if not k.endswith("lm_head.weight")}
            parts = {"optimizer": optim_state, "scheduler": self.sched.state_dict(),
                     **{name: part.state_dict() for name, part in self.phase.state().items()}}
            meta = {"world": self.env.world, "stage": self.phase.name, "recipe": self.recipe.to_dict()}
            path = ckpt.save_training(self.checkpoints, self.step, model_state, self.phase.cfg, parts,
                                      rngs, meta, self.train.keep_last)
        self.env.barrier()
        return path

    def fit(self, max_steps: int | None = None, resume: bool = False) -> dict:
        """Trains to train.steps (or max_steps), evaluating at the start, every eval_every steps and at the
        end, saving every save_every steps and at the end; writes the output folder (rank 0)."""
        t, started = self.train, time.time()
        self.setup(resume)
        stop = min(t.steps, max_steps or t.steps)
        trackers = open_trackers(t.loggers, self.out, f"{self.out.name}-{self.phase.name}",
                                 self.recipe.to_dict()) if self.env.is_main else []
        log = MetricsLog(self.out, self.step, stop, enabled=self.env.is_main, trackers=trackers)
        first = last = self.evaluate() if self.step == 0 else first_eval_of(self.out)
        if first and self.step == 0:
            log.write(first)
        record = None
        try:
            while self.step < stop:
                record = self._timed_step()
                log.step(record, write=self.step % t.log_every == 0 or self.step == stop)
                if (t.eval_every and self.step % t.eval_every == 0) or self.step == stop:
                    last = self.evaluate()
                    if last:
                        log.write(last)
                if t.save_every and self.step % t.save_every == 0 and self.step < stop:
                    self.save()
        finally:
            log.close()
        return self.finish(first, last, record, time.time() - started)

    def _timed_step(self) -> dict:
        started = time.perf_counter()
        found = self.phase.train_step(self, self.step)
        self.step += 1
        seconds = time.perf_counter() - started
        tokens = found.pop("tokens", 0)
        record = {"step": self.step, **found, "tokens": int(tokens), "tokens_per_s": round(tokens / seconds, 2),
                  "seconds": round(seconds, 4)}
        fpt, peak = self.phase.flops_per_token(), peak_flops(self.env.device)
        if fpt:   # null where the device's peak is unknown (CPU)
            record["mfu"] = fpt * tokens / seconds / (peak * self.env.world) if peak else None
        return record

    def finish(self, first: dict | None, last: dict | None, record: dict | None, seconds: float) -> dict:
        """The last checkpoint (`--resume` continues from it), final/, loss.png and summary.json."""
        checkpoint = self.save()
        final = self.out / "final"
        summary = {"stage": self.phase.name, "steps": self.step, "seconds": round(seconds, 2),
                   "checkpoint": str(checkpoint), "final": str(final), "first_eval": first, "last_eval": last,
                   "last_train": record, **self.phase.summary(first, last)}
        if self.env.is_main:
            state = ckpt.load_weights(checkpoint)
            self.phase.save_final(state, final)
            model = self.phase.causal_lm(state) if self.train.export_hf else None
            if model is not None:
                from training.model.hf import save_pretrained
                save_pretrained(model, self.out / "hf", chat=self.phase.chat)
                summary["hf"] = str(self.out / "hf")
            rows = read_metrics(self.out / "metrics.jsonl")
            summary["loss_png"] = str(plot_panels(rows, self.phase.panels, self.out / "loss.png",
                                                  title=self.phase.name))
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


# ----------------------------------------------------------------------------- helpers

def clip_norm(params: list[nn.Parameter], clip: float) -> float:
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], cfg: ModelConfig) -> None:
    """A checkpoint's weights into `model`; a tied lm_head (saved once, as the embedding) may be absent."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (cfg.tie_word_embeddings and k.endswith("lm_head.weight"))]
    if missing or unexpected:
        raise ckpt.CheckpointError(f"checkpoint mismatch: missing {missing}, unexpected {unexpected}")


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a module's state under `prefix` (e.g. "policy."), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def first_eval_of(out: Path) -> dict | None:
    """The run's first validation line (a resumed run's start is in metrics.jsonl already)."""
    path = Path(out) / "metrics.jsonl"
    rows = read_metrics(path) if path.exists() else []
    return next((r for r in rows if any(k.startswith("val_") for k in r)), None)


def seeded_order(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) drawn from (seed, epoch), the same on every rank."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()


def step_rows(rows: list, size: int, seed: int, step: int) -> list:
    """The `size` rows of step `step` from an endless stream of seeded per-epoch shuffles of `rows`."""
    per_epoch = max(1, len(rows) // size)
    epoch, k = divmod(step, per_epoch)
    order = seeded_order(len(rows), seed, epoch)
    return [rows[i] for i in order[k * size:(k + 1) * size]]


def shard(rows: list, env: dist.Env) -> list:
    """This rank's share of a global batch (every world-th row)."""
    return rows[env.rank::env.world]


def chunks(rows: list, size: int) -> list[list]:
    """rows cut into consecutive pieces of at most `size` (size <= 0: one piece)."""
    size = size if size > 0 else max(1, len(rows))
    return [rows[i:i + size] for i in range(0, len(rows), size)]

