"""PPO for RLHF (Qwen 2023 sec. 3.2; Ouyang et al. 2022): a policy, its frozen reference, a reward model
and a critic; rollouts with the KV-cache generator, a per-token KL penalty, GAE and clipped losses.

    python -m training.align.ppo --recipe training/recipes/ppo.toml --init runs/demo/sft/final \
        --reward runs/demo/rm/final --prompts runs/demo/mix/preference --out runs/demo/ppo
    python -m training.align.ppo ... --set ppo.kl_coef=0.1 --set ppo.adaptive_kl=true

One iteration: sample one response per prompt for `train.batch_size` prompts (training.generate, at
`ppo.temperature`); score each with the reward model; per response token t the reward is
    r_t = -kl_coef * (log pi(y_t) - log pi_ref(y_t))          (k1 estimator of the KL to the reference)
plus the scalar score at the last response token (Ziegler et al. 2019, eq. 2); advantages by GAE
(Schulman et al. 2016) over the response tokens, whitened over the batch; then `ppo_epochs` passes over the
batch in minibatches of `minibatch_size` rows with the clipped policy loss and the clipped value loss
(Schulman et al. 2017, eq. 7; the value clip as in OpenAI baselines' ppo2, used by Ziegler et al.). The adaptive KL controller (Ziegler et al. 2019, sec. 2.2) moves
kl_coef toward `kl_target` nats per response. Losses are means over the response tokens of a minibatch.

Recipe (training/recipes/ppo.toml; common/recipe.py rules): [data] (prompts), [ppo] (PPOConfig), [optim]
(training/optim.py; the policy's AdamW, the critic's uses ppo.value_lr) and [train] (align's LoopConfig,
see SECTIONS). Output folder (as every alignment stage, training/align/common.py): metrics.jsonl (per iteration:
step, loss, lr, reward, kl, kl_coef, clip_frac, value_loss, value_clip_frac, policy_loss, entropy,
approx_kl, response_len, tokens_per_s; held-out lines: val_reward, val_kl, val_response_len),
summary.json, final/ (the policy, our model format, for training.chat), loss.png, recipe.json.
The rollout side (batch layout, critic, log-probabilities, prompts) is training/align/ppo_rollout.py.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from training.align.common import (AlignRecipe, GeneratorState, LoopConfig, cli_overrides, first_eval_of, freeze,
                            load_policy, load_recipe, load_reference, pick_device, restore_checkpoint,
                            save_checkpoint, stage_args)
from training.model.checkpoint import save_model
from training.generate import ENDOFTEXT, IM_END, SamplingConfig
from training.metrics import MetricsLog, read_metrics
from training.model.qwen import Qwen
from training.optim import OptimConfig, make_optimizer, make_scheduler
from training.align.reward import load_reward_model
from training.align.reward import score as rm_score
from training.align.ppo_rollout import (Critic, PromptStream, Rollout, Scorer, load_prompts, logit_temperature,
                                  logprobs_entropy, response_logits, rollout)


@dataclass(frozen=True)
class PromptData:
    root: str = "runs/demo/mix/preference"   # preference shards; their prompt_ids are the prompts (--prompts)
    max_prompt_len: int = 256                # longer prompts keep their last tokens (the assistant header)
    max_prompts: int = 0                     # use at most this many distinct training prompts (0: all)


@dataclass(frozen=True)
class PPOConfig:
    minibatch_size: int = 16          # rows per gradient step (train.batch_size rows per rollout)
    ppo_epochs: int = 4               # passes over each rollout batch (Schulman et al. 2017 use 3-10)
    max_new_tokens: int = 128
    temperature: float = 1.0          # sampling temperature; log-probabilities use the same one
    top_k: int = 0
    top_p: float = 1.0
    stop_tokens: tuple[int, ...] = (IM_END, ENDOFTEXT)
    pad_id: int = ENDOFTEXT
    clip_eps: float = 0.2             # policy ratio clip (Schulman et al. 2017, sec. 3)
    value_clip_eps: float = 0.2       # value clip around the rollout's values
    vf_coef: float = 0.5              # weight of the value loss in the total loss
    entropy_coef: float = 0.0         # entropy bonus (0: off, as in Ziegler et al. 2019)
    gamma: float = 1.0                # discount; 1 for RLHF (the reward comes at the end)
    lam: float = 0.95                 # GAE lambda (Schulman et al. 2016)
    kl_coef: float = 0.05             # beta of the per-token KL penalty (initial value when adaptive)
    adaptive_kl: bool = False         # Ziegler et al. 2019 sec. 2.2 controller
    kl_target: float = 6.0            # nats per response (Ziegler et al. 2019)
    kl_horizon: int = 10000           # responses
    whiten_advantages: bool = True
    value_lr: float = 1e-5            # critic AdamW lr (other settings from [optim])
    critic_init: str = "reward"       # "reward" (the reward model's backbone and head) | "policy"
    dtype: str = "auto"               # auto (bf16 autocast on CUDA, fp32 on CPU) | float32 | bfloat16

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                              top_p=self.top_p, stop_tokens=tuple(self.stop_tokens), pad_id=self.pad_id)


# [train] is align's LoopConfig: steps = PPO iterations, batch_size = prompts per rollout, micro_batch_size =
# rows per forward/backward inside a minibatch (0: the whole minibatch), eval_rows = held-out prompts scored
# every eval_every iterations, init / reward / out = --init / --reward / --out.
SECTIONS = {"data": PromptData, "ppo": PPOConfig, "optim": OptimConfig, "train": LoopConfig}


# ----------------------------------------------------------------------------- the math (pure tensor functions)

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (population variance); 0 on masked-out entries."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def kl_penalised_rewards(scores: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                         kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [B], log-probs and mask [B, R] (responses left-aligned) -> rewards [B, R], per-token KL [B, R].
    Every response token pays -kl_coef * (logp - ref_logp); its last one also gets the score."""
    kl = (logp - ref_logp) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)                          # [B] index of the last token
    rewards[torch.arange(len(scores)), last] += scores
    return rewards * mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over left-aligned responses [B, R] -> (advantages, returns).
    delta_t = r_t + gamma V_{t+1} - V_t with V = 0 after the last token; A_t = delta_t + gamma lam A_{t+1}."""
    rewards, values = rewards * mask, values * mask    # padding: delta = 0 and A stays 0 past the end
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    R = rewards.shape[1]
    for t in reversed(range(R)):
        next_value = values[:, t + 1] if t + 1 < R else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate -> (loss, clip fraction, approx KL). The clip fraction counts the tokens whose
    clipped term is the larger loss, i.e. those that get no gradient; approx KL = mean 1/2 (log ratio)^2."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_frac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean(0.5 * (logp - old_logp) ** 2, mask)
    return loss, clip_frac.detach(), approx_kl.detach()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 1/2 max((V - G)^2, (V_clip - G)^2), V_clip = V_old + clip(V - V_old, +-eps)
    -> (loss, fraction of tokens where the clipped term is the larger)."""
    clipped = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
    err, err_clipped = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    return loss, masked_mean((err_clipped > err).float(), mask).detach()


class KLController:
    """Fixed beta, or Ziegler et al. (2019) sec. 2.2: e = clip(KL / target - 1, -0.2, 0.2),
    beta <- beta (1 + e n / horizon) after a batch of n responses with mean KL `kl` (nats per response)."""

    def __init__(self, value: float, target: float | None = None, horizon: int = 10000):
        self.value, self.target, self.horizon = value, target, horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]

    def update(self, kl: float, n: int) -> None:
        if self.target:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n / self.horizon


# ----------------------------------------------------------------------------- the trainer

class PPOTrainer:
    """Policy, reference, critic, optimizers and prompt stream of one run; `iteration()` = rollout + update."""

    def __init__(self, policy: Qwen, score: Scorer, prompts: list[list[int]], recipe: AlignRecipe,
                 critic: Critic | None = None, reference: Qwen | None = None):
        c, t = recipe.ppo, recipe.train
        self.cfg, self.train_cfg, self.optim_cfg, self.score = c, t, recipe.optim, score
        self.device = pick_device(t.device)
        self.autocast = c.dtype == "bfloat16" or (c.dtype == "auto" and self.device.type == "cuda")
        torch.manual_seed(t.seed)
        self.policy = policy.to(self.device).train()
        self.reference = reference.to(self.device) if reference is not None else freeze(copy.deepcopy(policy))
        self.critic = (critic or Critic.from_policy(policy)).to(self.device).train()
        self.opt = make_optimizer(self.policy, recipe.optim)
        self.value_opt = make_optimizer(self.critic, dataclasses.replace(recipe.optim, lr=c.value_lr))
        updates = t.steps * c.ppo_epochs * math.ceil(t.batch_size / c.minibatch_size)
        self.sched = make_scheduler(self.opt, recipe.optim, updates)
        self.value_sched = make_scheduler(self.value_opt, recipe.optim, updates)
        self.kl = KLController(c.kl_coef, c.kl_target if c.adaptive_kl else None, c.kl_horizon)
        self.stream = PromptStream(prompts, t.batch_size, t.seed)
        self.generator = torch.Generator(self.device).manual_seed(t.seed)
        self.shuffle = torch.Generator().manual_seed(t.seed)
        self.step = 0

    def parts(self) -> dict:
        """Everything besides the policy that an exact resume needs (align.save_checkpoint)."""
        return {"critic": self.critic, "optimizer": self.opt, "value_optimizer": self.value_opt,
                "scheduler": self.sched, "value_scheduler": self.value_sched, "kl": self.kl, "stream": self.stream,
                "generator": GeneratorState(self.generator), "shuffle": GeneratorState(self.shuffle)}

    def _autocast(self):
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def sample(self, prompts: list[list[int]]) -> Rollout:
        with self._autocast():
            return rollout(self.policy, self.reference, self.critic, prompts, self.score, self.cfg.sampling(),
                           self.generator)

    def iteration(self) -> dict:
        """One rollout batch and `ppo_epochs` passes over it; returns the metrics line."""
        started = time.perf_counter()
        batch = self.sample(self.stream.next())
        rewards, kl = kl_penalised_rewards(batch.scores, batch.old_logp, batch.ref_logp, batch.mask, self.kl.value)
        advantages, returns = gae(rewards, batch.values, batch.mask, self.cfg.gamma, self.cfg.lam)
        if self.cfg.whiten_advantages:
            advantages = whiten(advantages, batch.mask)
        lr = self.sched.get_last_lr()[0]
        stats = self.update(batch, advantages, returns)
        kl_per_response = float(kl.sum(1).mean())
        record = {"step": self.step + 1, "loss": stats.pop("loss"), "lr": lr, "reward": float(batch.scores.mean()),
                  "kl": kl_per_response, "kl_coef": self.kl.value, **stats,
                  "response_len": float(batch.mask.sum(1).mean()), "return": float(masked_mean(returns, batch.mask))}
        self.kl.update(kl_per_response, len(batch.prompts))
        self.step += 1
        seconds = time.perf_counter() - started
        record.update(tokens=int(batch.mask.sum()), tokens_per_s=round(float(batch.mask.sum()) / seconds, 2),
                      seconds=round(seconds, 4))
        return record

    def update(self, batch: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> dict:
        """ppo_epochs x minibatches of gradient steps; returns the mean of each minibatch statistic."""
        B, size = len(batch.prompts), self.cfg.minibatch_size
        totals: dict[str, float] = {}
        n = 0
        for _ in range(self.cfg.ppo_epochs):
            order = torch.randperm(B, generator=self.shuffle).to(self.device)
            for start in range(0, B, size):
                for key, value in self.minibatch_step(batch, order[start:start + size], advantages, returns).items():
                    totals[key] = totals.get(key, 0.0) + value
                n += 1
        return {k: v / n for k, v in totals.items()}

    def minibatch_step(self, batch: Rollout, idx: torch.Tensor, advantages: torch.Tensor,
                       returns: torch.Tensor) -> dict:
        """One gradient step of the policy and of the critic on the rows `idx`, in micro-batches whose
        token-mean losses are weighted by their share of the minibatch's response tokens (exact accumulation)."""
        n_tokens = float(batch.mask[idx].sum())
        micro = self.train_cfg.micro_batch_size or len(idx)
        stats: dict[str, float] = {}
        for part in idx.split(micro):
            mb = batch.rows(part)
            width = mb["mask"].shape[1]
            loss, found = self.micro_loss(mb, advantages[part, :width], returns[part, :width])
            weight = float(mb["mask"].sum()) / max(n_tokens, 1.0)
            (loss * weight).backward()
            for key, value in found.items():
                stats[key] = stats.get(key, 0.0) + value * weight
        stats["grad_norm"] = self._apply(self.policy, self.opt, self.sched)
        stats["value_grad_norm"] = self._apply(self.critic, self.value_opt, self.value_sched)
        return stats

    def micro_loss(self, mb: dict, advantages: torch.Tensor, returns: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Total loss (policy + vf_coef value - entropy bonus) of one micro-batch and its statistics."""
        c, mask, R = self.cfg, mb["mask"], mb["mask"].shape[1]
        ids, docs = mb["input_ids"], mb["doc_ids"]
        with self._autocast():
            logits = response_logits(self.policy, ids, docs, R, logit_temperature(c.sampling()))
            values = self.critic.response_values(ids, docs, R)
        logp, entropy = logprobs_entropy(logits, ids[:, -R:], entropy_grad=c.entropy_coef != 0)
        pg, clip_frac, approx_kl = policy_loss(logp, mb["old_logp"], advantages, mask, c.clip_eps)
        vl, v_clip = value_loss(values, mb["values"], returns, mask, c.value_clip_eps)
        ent = masked_mean(entropy, mask)
        loss = pg - c.entropy_coef * ent + c.vf_coef * vl      # the two networks share no parameters
        return loss, {"loss": loss.item(), "policy_loss": pg.item(), "value_loss": vl.item(), "entropy": ent.item(),
                      "clip_frac": clip_frac.item(), "value_clip_frac": v_clip.item(), "approx_kl": approx_kl.item()}

    def _apply(self, model: torch.nn.Module, opt: torch.optim.Optimizer, sched) -> float:
        clip = self.optim_cfg.grad_clip
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf")))
        if not math.isfinite(norm):
            raise FloatingPointError(f"ppo: non-finite gradient norm at iteration {self.step + 1}; lower optim.lr")
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return norm

    @torch.no_grad()
    def evaluate(self, prompts: list[list[int]]) -> dict:
        """Mean score, KL to the reference (nats per response) and length of fresh samples, fixed seed."""
        saved = self.generator.get_state()
        self.generator.manual_seed(self.train_cfg.seed + 1)
        batch = self.sample(prompts)
        self.generator.set_state(saved)
        kl = ((batch.old_logp - batch.ref_logp) * batch.mask).sum(1)
        return {"step": self.step, "val_reward": float(batch.scores.mean()), "val_kl": float(kl.mean()),
                "val_response_len": float(batch.mask.sum(1).mean())}


# ----------------------------------------------------------------------------- a run

def train(trainer: PPOTrainer, out: Path, eval_prompts: list[list[int]], max_steps: int | None = None,
          resume: bool = False) -> dict:
    """Runs train.steps iterations (or max_steps), evaluating on `eval_prompts` at the start, every
    eval_every iterations and at the end, and saving a checkpoint every save_every and at the end
    (`resume`: continue from the newest); writes metrics.jsonl, final/, loss.png and summary.json."""
    t = trainer.train_cfg
    stop = min(t.steps, max_steps or t.steps)
    out.mkdir(parents=True, exist_ok=True)
    save = lambda: save_checkpoint(out, trainer.step, trainer.policy, trainer.parts(), t.keep_last)
    if resume:
        trainer.step = restore_checkpoint(out, trainer.policy, trainer.parts())
    started, log = time.time(), MetricsLog(out, trainer.step, stop)
    first = last = trainer.evaluate(eval_prompts) if trainer.step == 0 else first_eval_of(out)
    if trainer.step == 0:
        log.write(first)
    record = None
    try:
        while trainer.step < stop:
            record = trainer.iteration()
            log.step(record, write=trainer.step % t.log_every == 0 or trainer.step == stop)
            if (t.eval_every and trainer.step % t.eval_every == 0) or trainer.step == stop:
                last = trainer.evaluate(eval_prompts)
                log.write(last)
            if t.save_every and trainer.step % t.save_every == 0 and trainer.step < stop:
                save()
    finally:
        log.close()
    save()
    save_model(trainer.policy, out / "final")
    summary = {"stage": "ppo", "steps": trainer.step, "seconds": round(time.time() - started, 2),
               "final": str(out / "final"), "first_eval": first, "last_eval": last, "last_train": record,
               "start_reward": first["val_reward"], "end_reward": last["val_reward"], "end_kl": last["val_kl"],
               "kl_coef": trainer.kl.value, "png": str(plot(out / "metrics.jsonl", out / "loss.png"))}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def plot(metrics: Path, png: Path) -> Path:
    """Three panels per iteration: losses; mean reward (rollouts and held-out); KL to the reference."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = ((("loss", "-"), ("policy_loss", "-"), ("value_loss", "-")),
              (("reward", "-"), ("val_reward", "o--")), (("kl", "-"), ("val_kl", "o--")))
    for ax, keys, label in zip(axes, panels, ("loss", "mean reward", "KL to reference (nats/response)")):
        for key, style in keys:
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), style, label=key, linewidth=1)
        ax.set(xlabel="PPO iteration", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("ppo")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def load_scorer(path: str, device: torch.device, pad_id: int) -> tuple[Scorer, Callable[[], Critic]]:
    """The reward model at `path` (training/align/reward.py) as a batch scorer, and a factory for a critic that
    starts as a trainable copy of it (its backbone and head: values start as the reward model's scores)."""
    rm = load_reward_model(path, device)
    scorer = lambda prompts, responses: rm_score(rm, [list(p) for p in prompts], [list(r) for r in responses], pad_id)
    def critic() -> Critic:
        trainable = load_reward_model(path, device, trainable=True)
        return Critic(trainable.backbone, trainable.head)
    return scorer, critic


def main(argv: list[str] | None = None) -> dict:
    parser = stage_args("ppo", __doc__)
    parser.add_argument("--prompts", dest="data", help="preference shards whose prompt_ids are the prompts (data.root)")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, SECTIONS, cli_overrides(args))
    t, d = recipe.train, recipe.data
    device = pick_device(t.device)
    prompts = load_prompts(d.root, "train", d.max_prompt_len)
    if not prompts:
        raise SystemExit(f"no prompts in {d.root}/train")
    prompts = prompts[:d.max_prompts] if d.max_prompts else prompts
    held_out = load_prompts(d.root, "valid", d.max_prompt_len) or prompts     # no valid split: train prompts
    held_out = held_out[:t.eval_rows] if t.eval_rows else held_out
    policy = load_policy(t.init, device)
    score, critic_from_reward = load_scorer(t.reward, device, recipe.ppo.pad_id)
    critic = critic_from_reward() if recipe.ppo.critic_init == "reward" else Critic.from_policy(policy)
    out = Path(t.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
    trainer = PPOTrainer(policy, score, prompts, recipe, critic, load_reference(t.init, device))
    summary = train(trainer, out, held_out, args.max_steps, args.resume)
    print(json.dumps({k: summary[k] for k in ("steps", "start_reward", "end_reward", "end_kl", "final")}, indent=2))
    return summary


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
