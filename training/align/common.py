"""Shared pieces of the alignment stages (SFT, reward model, DPO, online DPO, PPO): log-probabilities,
policy/reference loading, preference batches, recipes and the optimisation loop with its output folder.

Stable API (training/align/ppo.py imports it):

    lp = token_logprobs(model, ids, doc_ids=None)           # [B, T-1]: log p(ids[:, t+1] | ids[:, :t+1]), fp32
    s = sequence_logprob(model, ids, mask)                  # [B]: sum of log p over tokens where mask == 1
    h = hidden_states(model, ids, attention_mask=None)      # [B, T, H]: the final-norm output (no lm_head)
    policy, ref = load_policy(path, device), load_reference(path, device)   # ref: eval mode, no grads
    ids, resp_mask = concat_right_pad(prompts, responses)   # [B, T] each; resp_mask = 1 on response tokens
    batch = collate_pairs(rows)                             # PairBatch: chosen rows then rejected rows
    rows = read_preferences("runs/demo/mix/preference", "train", limit=0)   # dicts of id lists
    rows = load_pairs(PreferenceData(...), "train")        # the same, truncated per the [data] section
    recipe = load_recipe(path, {"train": LoopConfig, ...}, ["train.steps=5"])   # attribute per section
    args = stage_args("dpo").parse_args(argv)               # --recipe --set --init --data --out --reward --max-steps
    args, recipe, device = begin("dpo", __doc__, SECTIONS, argv)   # the same + recipe, seeded torch, device
    loop = Loop(out, model, recipe.optim, recipe.train, stage="dpo"); summary = loop.run(step_fn, eval_fn, save_fn)
    save_checkpoint(out, step, model, {"optimizer": opt, ...}, keep_last); step = restore_checkpoint(out, model, parts)

Masks and shapes: token t of a sequence is predicted from position t - 1, so a response mask [B, T]
(1 where token t belongs to the response) selects the entries [:, 1:] of token log-probs. Right
padding needs no attention mask (causal attention never looks right), so padded batches keep the
fast SDPA path; padding positions are excluded by the response mask.

Output folder of every stage (read by the training report):
    <out>/metrics.jsonl   one JSON per logged step: step, loss, lr, grad_norm, tokens, tokens_per_s, plus the
                          stage's metrics; validation lines: step and "val_"-prefixed keys
    <out>/summary.json    stage, steps, seconds, final (checkpoint path), first_eval, last_eval, last_train
    <out>/final/          our checkpoint format (training.model.checkpoint; the reward model adds its head)
    <out>/checkpoints/step-NNNNNN/   training checkpoints (every train.save_every steps and at the end):
                          the trained module, optimizer, scheduler, RNGs and the stage's own state (PPO's
                          critic, its optimizer and the KL controller; online DPO's round); `--resume`
                          continues from the newest exactly, keeping metrics.jsonl up to its step
    <out>/loss.png        loss and validation loss, plus the stage's extra metrics on a second panel
    <out>/recipe.json     the resolved recipe
Single process (CPU or one GPU): alignment runs at toy scale here; DDP is the pretraining trainer's job.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from common.recipe import load_sections
from training.model import checkpoint as ckpt
from training.model.checkpoint import load_model, save_model
from training.data import read_rows
from training.metrics import MetricsLog, read_metrics
from training.model.qwen import Qwen
from training.optim import OptimConfig, make_optimizer, make_scheduler

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# ----------------------------------------------------------------------------- log-probabilities

def hidden_states(model: Qwen, input_ids: torch.Tensor, *, doc_ids: torch.Tensor | None = None,
                  attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The model's forward up to the final norm: [B, T, H] (no lm_head, so no [B, T, V] logits)."""
    ctx = model._context(input_ids, 0, None, doc_ids, attention_mask, None)
    x = model.model.embed_tokens(input_ids)                          # [B, T, H]
    for block in model.model.layers:
        if model.gradient_checkpointing and model.training:
            x, _ = torch.utils.checkpoint.checkpoint(block, x, ctx, use_reentrant=False)
        else:
            x, _ = block(x, ctx)
    return model.model.norm(x)


def token_logprobs(model: Qwen, input_ids: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T-1] fp32 log-probability of each next token, input_ids[:, 1:], under the model."""
    logits = model(input_ids, doc_ids=doc_ids).logits[:, :-1]        # [B, T-1, V]
    targets = input_ids[:, 1:]
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return -nll.view_as(targets)


def sequence_logprob(model: Qwen, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] sum of log p(ids[b, t]) over the tokens t with mask[b, t] = 1 (t >= 1); the lm_head runs
    only on the positions that predict those tokens, so memory is O(response tokens x vocab)."""
    h = hidden_states(model, ids)[:, :-1]                             # [B, T-1, H]; position t predicts t+1
    keep = mask[:, 1:].bool()                                         # [B, T-1]
    logits = model.lm_head(h[keep]).float()                           # [N, V]
    lp = -F.cross_entropy(logits, ids[:, 1:][keep], reduction="none")  # [N]
    rows = keep.nonzero()[:, 0]
    return torch.zeros(ids.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, rows, lp)


# ----------------------------------------------------------------------------- models

def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients: a frozen reference (or reward) model."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> Qwen:
    """The trainable policy, fp32, from a checkpoint folder (training.model.checkpoint format)."""
    return load_model(path).float().to(device).train()


def load_reference(path: str | Path, device: str | torch.device = "cpu") -> Qwen:
    """A frozen copy of the checkpoint: the KL / DPO reference."""
    return freeze(load_model(path).float().to(device))


# ----------------------------------------------------------------------------- batches

def right_pad(seqs: list[list[int]], pad_id: int = 0) -> torch.Tensor:
    """[B, T] int64, each row followed by pad_id up to the longest."""
    width = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)


def concat_right_pad(prompts: list[list[int]], responses: list[list[int]],
                     pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """prompt + response per row, right padded -> ids [B, T], response mask [B, T] (1 on response tokens)."""
    ids = right_pad([list(p) + list(r) for p, r in zip(prompts, responses)], pad_id)
    mask = torch.zeros_like(ids)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        mask[b, len(p):len(p) + len(r)] = 1
    return ids, mask


@dataclass
class PairBatch:
    """B preference pairs as 2B rows: rows [0, B) chosen, [B, 2B) rejected, same prompt per pair."""
    ids: torch.Tensor            # [2B, T] prompt + response, right padded
    response_mask: torch.Tensor  # [2B, T] 1 on response tokens
    last: torch.Tensor           # [2B] index of the last real token (for a reward head)

    @property
    def n_pairs(self) -> int:
        return self.ids.shape[0] // 2

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A per-row tensor [2B, ...] -> (chosen [B, ...], rejected [B, ...])."""
        return x[: self.n_pairs], x[self.n_pairs:]

    def to(self, device) -> "PairBatch":
        return PairBatch(self.ids.to(device), self.response_mask.to(device), self.last.to(device))


def collate_pairs(rows: list[dict], pad_id: int = 0) -> PairBatch:
    """Rows with prompt_ids, chosen_ids, rejected_ids -> a PairBatch."""
    prompts = [r["prompt_ids"] for r in rows] * 2
    responses = [r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows]
    ids, mask = concat_right_pad(prompts, responses, pad_id)
    last = torch.tensor([len(p) + len(r) - 1 for p, r in zip(prompts, responses)], dtype=torch.long)
    return PairBatch(ids, mask, last)


def truncate_pair(row: dict, max_prompt: int, max_response: int) -> dict:
    """Keeps the last max_prompt prompt tokens (its end is the assistant header) and the first
    max_response tokens of each reply (0: no limit)."""
    cut = lambda ids, n, tail: list(ids)[-n:] if tail and n else (list(ids)[:n] if n else list(ids))
    return {**row, "prompt_ids": cut(row["prompt_ids"], max_prompt, True),
            "chosen_ids": cut(row["chosen_ids"], max_response, False),
            "rejected_ids": cut(row["rejected_ids"], max_response, False)}


@dataclass(frozen=True)
class PreferenceData:
    """[data] of the preference stages (reward model, DPO, online DPO)."""
    root: str = "runs/demo/mix/preference"   # preference shards folder; --data overrides
    max_prompt_len: int = 256                # keep the last N prompt tokens (0: all)
    max_response_len: int = 128              # keep the first N tokens of each reply (0: all)
    max_pairs: int = 0                       # use at most this many training pairs (0: all)


def load_pairs(data: PreferenceData, split: str) -> list[dict]:
    """Truncated preference rows of one split (max_pairs applies to train only)."""
    rows = read_preferences(data.root, split, data.max_pairs if split == "train" else 0)
    return [truncate_pair(r, data.max_prompt_len, data.max_response_len) for r in rows]


def read_preferences(root: str | Path, split: str, limit: int = 0) -> list[dict]:
    """Preference shards (pipeline/chat_shards.py) -> [{prompt_ids, chosen_ids, rejected_ids, ...}]."""
    return read_rows(root, split, limit=limit)


def chunks(rows: list, size: int) -> list[list]:
    """rows cut into consecutive pieces of at most `size` (size <= 0: one piece)."""
    size = size if size > 0 else max(1, len(rows))
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def batches(rows: list, size: int, seed: int, step: int) -> list:
    """Rows of optimizer step `step` from an endless stream of seeded per-epoch shuffles."""
    per_epoch = max(1, len(rows) // size)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return [rows[i] for i in order[k * size:(k + 1) * size].tolist()]


# ----------------------------------------------------------------------------- recipes and CLI

class AlignRecipe:
    """Named recipe sections (frozen dataclasses), e.g. recipe.train, recipe.dpo."""

    def __init__(self, sections: dict[str, Any]):
        self.sections = sections

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["sections"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(value) for name, value in self.sections.items()}


def load_recipe(path: str | Path | None, sections: dict[str, type], overrides: list[str] = ()) -> AlignRecipe:
    """A TOML recipe (common/recipe.py rules: base =, section.key=value overrides, unknown keys are errors)."""
    return AlignRecipe(load_sections(path, sections, overrides, recipe_dirs=(RECIPES,)))


def stage_args(module: str, doc: str | None = None, recipe: str | None = None) -> argparse.ArgumentParser:
    """The common CLI of `python -m training.<module>`; --recipe defaults to training/recipes/<recipe>.toml."""
    p = argparse.ArgumentParser(prog=f"python -m training.{module}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(RECIPES / f"{recipe or module}.toml"), help="TOML recipe")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="recipe override")
    p.add_argument("--init", help="checkpoint folder to start from (overrides train.init)")
    p.add_argument("--data", help="SFT or preference shards folder (overrides data.root)")
    p.add_argument("--out", help="output folder (overrides train.out)")
    p.add_argument("--reward", help="reward model folder (online DPO, PPO; overrides train.reward)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in <out>/checkpoints")
    return p


def begin(module: str, doc: str | None, sections: dict[str, type], argv: list[str] | None,
          recipe: str | None = None) -> tuple[argparse.Namespace, AlignRecipe, torch.device]:
    """A stage's start: its command line parsed, its recipe loaded (flags as overrides), torch seeded
    with train.seed and the device picked."""
    args = stage_args(module, doc, recipe).parse_args(argv)
    loaded = load_recipe(args.recipe, sections, cli_overrides(args))
    torch.manual_seed(loaded.train.seed)
    return args, loaded, pick_device(loaded.train.device)


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """--set items plus the path flags as train.init / data.root / train.out / train.reward overrides."""
    pairs = (("train.init", args.init), ("data.root", args.data), ("train.out", args.out),
             ("train.reward", getattr(args, "reward", None)))
    return list(args.set) + [f"{k}={json.dumps(v)}" for k, v in pairs if v]


# ----------------------------------------------------------------------------- the loop

@dataclass(frozen=True)
class LoopConfig:
    """[train] of every alignment recipe."""
    init: str = "runs/demo/train/final"   # checkpoint to start from; --init overrides
    reward: str = "runs/demo/rm/final"    # reward model (online DPO, PPO); --reward overrides
    out: str = "runs/demo/align"          # --out overrides
    steps: int = 50                       # optimizer steps; also the lr schedule's horizon
    batch_size: int = 4                   # rows (SFT) or pairs (RM, DPO) per optimizer step
    micro_batch_size: int = 0             # rows / pairs per forward (gradient accumulation); 0: batch_size
    seed: int = 0
    device: str = "auto"                  # auto | cpu | cuda
    log_every: int = 1
    eval_every: int = 25                  # 0: only at the start and the end
    eval_rows: int = 64                   # validation rows / pairs per evaluation (0: all)
    save_every: int = 0                   # training checkpoint every N steps (0: only at the end); --resume
    keep_last: int = 2                    # training checkpoints kept


# ----------------------------------------------------------------------------- checkpoints and resume

class GeneratorState:
    """A torch.Generator seen through state_dict() / load_state_dict(), so checkpoints can hold it."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


def save_checkpoint(out: Path, step: int, model: torch.nn.Module, parts: dict[str, Any], keep_last: int) -> Path:
    """<out>/checkpoints/step-NNNNNN (training.model.checkpoint.save_training: atomic, keep_last kept): the
    model's state, each part's state_dict() (optimizers, schedulers, other modules, stage state) and
    the RNGs."""
    cfg = model.cfg if hasattr(model, "cfg") else model.backbone.cfg
    weights = {k: v for k, v in model.state_dict().items()   # a tied lm_head is the embedding: not saved twice
               if not (cfg.tie_word_embeddings and k.endswith("lm_head.weight"))}
    states = {name: part.state_dict() for name, part in parts.items()}
    return ckpt.save_training(Path(out) / "checkpoints", step, weights, cfg, states,
                              [ckpt.rng_state()], {"parts": sorted(parts)}, keep_last)


def restore_checkpoint(out: Path, model: torch.nn.Module, parts: dict[str, Any]) -> int:
    """Loads the newest checkpoint under <out>/checkpoints into `model` and `parts`; returns its step
    (0, with a note, when there is none)."""
    found = ckpt.list_checkpoints(Path(out) / "checkpoints")
    if not found:
        print(f"--resume: no checkpoint in {Path(out) / 'checkpoints'}; starting from step 0", file=sys.stderr)
        return 0
    state = ckpt.load_training(found[-1])
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected or any(not k.endswith("lm_head.weight") for k in missing):   # a tied lm_head is not saved
        raise ValueError(f"{found[-1]}: checkpoint mismatch: missing {missing}, unexpected {unexpected}")
    for name, part in parts.items():
        part.load_state_dict(state["optim"][name])
    ckpt.set_rng_state(state["rng"][0])
    return state["trainer"]["step"]


def first_eval_of(out: Path) -> dict | None:
    """The run's first validation line (a resumed run's start is in metrics.jsonl already)."""
    path = Path(out) / "metrics.jsonl"
    rows = read_metrics(path) if path.exists() else []
    return next((r for r in rows if any(k.startswith("val_") for k in r)), None)


class Loop:
    """Optimizer, schedule, clipping, logging, evaluation, checkpoints and the output folder of one stage.

    `parts`: further state a checkpoint must hold for an exact resume (objects with state_dict() and
    load_state_dict(), e.g. online DPO's rounds)."""

    def __init__(self, out: str | Path, model: torch.nn.Module, optim: OptimConfig, train: LoopConfig,
                 stage: str, recipe: AlignRecipe | None = None, parts: dict[str, Any] | None = None):
        self.out, self.model, self.optim_cfg, self.cfg, self.stage = Path(out), model, optim, train, stage
        self.out.mkdir(parents=True, exist_ok=True)
        if recipe is not None:
            (self.out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
        self.opt = make_optimizer(model, optim)
        self.sched = make_scheduler(self.opt, optim, train.steps)
        self.parts = {"optimizer": self.opt, "scheduler": self.sched, **(parts or {})}
        self.step = 0

    def save(self) -> Path:
        return save_checkpoint(self.out, self.step, self.model, self.parts, self.cfg.keep_last)

    def train_step(self, step_fn: Callable[[int], dict]) -> dict:
        """step_fn(step) runs forward + backward and returns metrics with "loss" (and "tokens")."""
        started = time.perf_counter()
        metrics = step_fn(self.step)
        clip = self.optim_cfg.grad_clip
        norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf")))
        if not (math.isfinite(metrics["loss"]) and math.isfinite(norm)):
            raise FloatingPointError(f"{self.stage}: non-finite loss {metrics['loss']} / grad norm {norm} "
                                     f"at step {self.step + 1}; lower optim.lr")
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        seconds = time.perf_counter() - started
        tokens = metrics.pop("tokens", 0)
        return {"step": self.step, **metrics, "lr": lr, "grad_norm": norm, "tokens": int(tokens),
                "tokens_per_s": round(tokens / seconds, 2), "seconds": round(seconds, 4)}

    def evaluate(self, eval_fn: Callable[[], dict] | None) -> dict | None:
        if eval_fn is None:
            return None
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            found = eval_fn()
        self.model.train(was)
        return {"step": self.step, **{f"val_{k}": v for k, v in found.items()}} if found else None

    def run(self, step_fn: Callable[[int], dict], eval_fn: Callable[[], dict] | None,
            save_fn: Callable[[Path], None] | None = None, max_steps: int | None = None, resume: bool = False) -> dict:
        """Trains to train.steps (or max_steps), evaluating every eval_every and saving a checkpoint every
        save_every; `resume` continues from the newest checkpoint. Writes the output folder."""
        stop = min(self.cfg.steps, max_steps or self.cfg.steps)
        if resume:
            self.step = restore_checkpoint(self.out, self.model, self.parts)
        # a fresh run replaces metrics.jsonl (never appends); a resumed one keeps the lines up to its step
        started, log = time.time(), MetricsLog(self.out, self.step, stop)
        first = last = self.evaluate(eval_fn) if self.step == 0 else first_eval_of(self.out)
        if first and self.step == 0:
            log.write(first)
        record = None
        try:
            while self.step < stop:
                record = self.train_step(step_fn)
                log.step(record, write=self.step % self.cfg.log_every == 0 or self.step == stop)
                due = self.cfg.eval_every and self.step % self.cfg.eval_every == 0
                if due or self.step == stop:
                    last = self.evaluate(eval_fn)
                    if last:
                        log.write(last)
                if self.cfg.save_every and self.step % self.cfg.save_every == 0 and self.step < stop:
                    self.save()
        finally:
            log.close()
        return self.finish(save_fn, first, last, record, time.time() - started)

    def finish(self, save_fn, first: dict | None, last: dict | None, record: dict | None, seconds: float) -> dict:
        self.save()   # `--resume` (e.g. after --max-steps) continues from here
        final = self.out / "final"
        (save_fn or (lambda path: save_model(self.model, path)))(final)
        plot_curves(self.out / "metrics.jsonl", self.out / "loss.png", self.stage)
        summary = {"stage": self.stage, "steps": self.step, "seconds": round(seconds, 2), "final": str(final),
                   "first_eval": first, "last_eval": last, "last_train": record}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


EXTRA_CURVES = ("accuracy", "margin", "reward_chosen", "reward_rejected", "reward_mean")


def plot_curves(metrics: Path, png: Path, title: str = "") -> Path:
    """Left: loss and val_loss per step. Right (when logged): accuracy / margin / rewards, train and val."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics) if Path(metrics).exists() else []
    extra = [k for k in EXTRA_CURVES if any(k in r or f"val_{k}" in r for r in rows)]
    fig, axes = plt.subplots(1, 2 if extra else 1, figsize=(12 if extra else 7, 4), squeeze=False)
    for key, style in (("loss", "-"), ("val_loss", "o-")):
        _plot(axes[0][0], rows, key, style)
    axes[0][0].set_ylabel("loss")
    for key in extra:
        _plot(axes[0][1], rows, key, "-")
        _plot(axes[0][1], rows, f"val_{key}", "o--")
    for ax in axes[0]:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _plot(ax, rows: list[dict], key: str, style: str) -> None:
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    if points:
        ax.plot(*zip(*points), style, label=key, linewidth=1)
