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
see SECTIONS). Output folder (as every alignment stage, training/loop.py): metrics.jsonl (per iteration:
step, loss, lr, reward, kl, kl_coef, clip_frac, value_loss, value_clip_frac, policy_loss, entropy,
approx_kl, response_len, tokens_per_s; held-out lines: val_reward, val_kl, val_response_len),
summary.json, final/ (the policy, our model format, for training.chat), loss.png, recipe.json.
The rollout side (batch layout, critic, log-probabilities, prompts) is training/align/ppo_rollout.py.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from common.errors import UserError, cli_main
from common.plot import Panel
from common.recipe import Recipe
from training import dist
from training.align.base import AlignConfig, GeneratorState, freeze, load_policy, load_reference
from training.align.ppo_rollout import (ActorCritic, Critic, PromptStream, Rollout, Scorer, load_prompts,
                                        logit_temperature, logprobs_entropy, rollout)
from training.align.reward import load_reward_model
from training.align.reward import score as rm_score
from training.cli import run_phase
from training.generate import ENDOFTEXT, IM_END, SamplingConfig
from training.loop import LossOut, Micro, Phase, Trainer, shard, sub_state
from training.model.checkpoint import build_model
from training.model.qwen import Qwen
from training.optim import OptimConfig, param_groups


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

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                              top_p=self.top_p, stop_tokens=tuple(self.stop_tokens), pad_id=self.pad_id)


# [train] is align's AlignConfig: steps = PPO iterations, batch_size = prompts per rollout, micro_batch_size =
# rows per forward/backward inside a minibatch (0: the whole minibatch), eval_rows = held-out prompts scored
# every eval_every iterations, init / reward / out = --init / --reward / --out.
SECTIONS = {"data": PromptData, "ppo": PPOConfig, "optim": OptimConfig, "train": AlignConfig}


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


# ----------------------------------------------------------------------------- the phase

class PPO(Phase):
    """One step = one PPO iteration: a rollout batch, then `ppo_epochs` passes over it in minibatches, each
    minibatch one optimizer update of the policy and the critic (one AdamW, the critic's groups at
    ppo.value_lr; each network clipped on its own)."""
    name = "ppo"
    panels = (Panel("loss", [("loss", "-"), ("policy_loss", "-"), ("value_loss", "-")]),
              Panel("mean reward", [("reward", "-"), ("val_reward", "o--")]),
              Panel("KL to reference (nats/response)", [("kl", "-"), ("val_kl", "o--")]))

    def __init__(self, recipe: Recipe, env: dist.Env, policy: Qwen, score: Scorer, prompts: list[list[int]],
                 eval_prompts: list[list[int]], critic: Critic | None = None, reference: Qwen | None = None):
        self.c, self.t, self.optim_cfg, self.score = recipe.ppo, recipe.train, recipe.optim, score
        self.device = env.device
        self.model = ActorCritic(policy, critic or Critic.from_policy(policy)).to(self.device).train()
        self.cfg = policy.cfg
        self.reference = (reference if reference is not None else freeze(copy.deepcopy(policy))).to(self.device)
        self.kl = KLController(self.c.kl_coef, self.c.kl_target if self.c.adaptive_kl else None, self.c.kl_horizon)
        self.stream = PromptStream(prompts, self.t.batch_size, self.t.seed)
        self.eval_prompts = eval_prompts
        self.generator = torch.Generator(self.device).manual_seed(self.t.seed)
        self.shuffle = torch.Generator().manual_seed(self.t.seed)

    def state(self) -> dict:
        return {"kl": self.kl, "stream": self.stream, "generator": GeneratorState(self.generator),
                "shuffle": GeneratorState(self.shuffle)}

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        value = [{**g, "lr": self.c.value_lr} for g in param_groups(self.model.critic, optim)]
        return param_groups(self.model.policy, optim) + value

    def clip_groups(self) -> dict:
        trainable = lambda m: [p for p in m.parameters() if p.requires_grad]
        return {"grad_norm": trainable(self.model.policy), "value_grad_norm": trainable(self.model.critic)}

    def schedule_steps(self, steps: int) -> int:
        return steps * self.c.ppo_epochs * math.ceil(self.t.batch_size / self.c.minibatch_size)

    def sample(self, trainer: Trainer, prompts: list[list[int]]) -> Rollout:
        with trainer.autocast():
            return rollout(self.model.policy, self.reference, self.model.critic, prompts, self.score,
                           self.c.sampling(), self.generator)

    def train_step(self, trainer: Trainer, step: int) -> dict:
        """The rollout, advantages and ppo_epochs x minibatches of updates; the mean of each update's metrics."""
        batch = self.sample(trainer, self.stream.next())
        rewards, kl = kl_penalised_rewards(batch.scores, batch.old_logp, batch.ref_logp, batch.mask, self.kl.value)
        advantages, returns = gae(rewards, batch.values, batch.mask, self.c.gamma, self.c.lam)
        if self.c.whiten_advantages:
            advantages = whiten(advantages, batch.mask)
        lr = trainer.sched.get_last_lr()[0]
        updates = [trainer.update(self.micro_batches_of(batch, idx, advantages, returns, trainer.env))
                   for idx in self.minibatches(len(batch.prompts))]
        stats = {k: sum(u[k] for u in updates) / len(updates) for k in updates[0] if k not in ("lr", "tokens")}
        kl_per_response = float(kl.sum(1).mean())
        record = {"loss": stats.pop("loss"), "lr": lr, "reward": float(batch.scores.mean()), "kl": kl_per_response,
                  "kl_coef": self.kl.value, **stats, "response_len": float(batch.mask.sum(1).mean()),
                  "return": float(masked_mean(returns, batch.mask)), "tokens": int(batch.mask.sum())}
        self.kl.update(kl_per_response, len(batch.prompts))
        return record

    def minibatches(self, n: int) -> list[torch.Tensor]:
        """Row indices of every minibatch of the iteration: ppo_epochs shuffled passes over n rows."""
        size = self.c.minibatch_size
        return [order[s:s + size] for _ in range(self.c.ppo_epochs)
                for order in [torch.randperm(n, generator=self.shuffle).to(self.device)] for s in range(0, n, size)]

    def micro_batches_of(self, batch: Rollout, idx: torch.Tensor, advantages: torch.Tensor, returns: torch.Tensor,
                         env: dist.Env) -> list[Micro]:
        """This rank's rows of the minibatch, in micro-batches weighted by their response tokens."""
        micros = []
        for part in shard(idx, env).split(self.t.micro_batch_size or len(idx)):
            mb = batch.rows(part)
            width = mb["mask"].shape[1]
            mb.update(advantages=advantages[part, :width], returns=returns[part, :width])
            micros.append(Micro(mb, float(mb["mask"].sum())))
        return micros

    def loss(self, model, micro: Micro) -> LossOut:
        """policy + vf_coef x value - entropy bonus, token means of the micro-batch (x its tokens: summed)."""
        c, mb = self.c, micro.data
        mask, R = mb["mask"], mb["mask"].shape[1]
        logits, values, aux = model(mb["input_ids"], mb["doc_ids"], R, logit_temperature(c.sampling()))
        logp, entropy = logprobs_entropy(logits, mb["input_ids"][:, -R:], entropy_grad=c.entropy_coef != 0)
        pg, clip_frac, approx_kl = policy_loss(logp, mb["old_logp"], mb["advantages"], mask, c.clip_eps)
        vl, v_clip = value_loss(values, mb["values"], mb["returns"], mask, c.value_clip_eps)
        ent = masked_mean(entropy, mask)
        loss = pg - c.entropy_coef * ent + c.vf_coef * vl      # the two networks share no parameters
        n = micro.weight
        stats = {"policy_loss": pg, "value_loss": vl, "entropy": ent, "clip_frac": clip_frac,
                 "value_clip_frac": v_clip, "approx_kl": approx_kl}
        return LossOut(loss * n, {k: float(v.detach()) * n for k, v in stats.items()}, aux, int(mask.sum()))

    def evaluate(self, trainer: Trainer) -> dict:
        """Mean score, KL to the reference (nats per response) and length of fresh samples, fixed seed."""
        saved = self.generator.get_state()
        self.generator.manual_seed(self.t.seed + 1)
        batch = self.sample(trainer, self.eval_prompts)
        self.generator.set_state(saved)
        kl = ((batch.old_logp - batch.ref_logp) * batch.mask).sum(1)
        return {"reward": float(batch.scores.mean()), "kl": float(kl.mean()),
                "response_len": float(batch.mask.sum(1).mean())}

    def causal_lm(self, state: dict) -> Qwen:
        return build_model(self.cfg, sub_state(state, "policy."))

    def summary(self, first: dict | None, last: dict | None) -> dict:
        return {"start_reward": first["val_reward"], "end_reward": last["val_reward"], "end_kl": last["val_kl"],
                "kl_coef": self.kl.value}


def load_scorer(path: str, device: torch.device, pad_id: int) -> tuple[Scorer, Callable[[], Critic]]:
    """The reward model at `path` (training/align/reward.py) as a batch scorer, and a factory for a critic that
    starts as a trainable copy of it (its backbone and head: values start as the reward model's scores)."""
    rm = load_reward_model(path, device)
    scorer = lambda prompts, responses: rm_score(rm, [list(p) for p in prompts], [list(r) for r in responses], pad_id)
    def critic() -> Critic:
        trainable = load_reward_model(path, device, trainable=True)
        return Critic(trainable.backbone, trainable.head)
    return scorer, critic


def build(recipe: Recipe, env: dist.Env) -> PPO:
    """The phase from the recipe's paths: prompts (data.root), policy (train.init), reward model (train.reward)."""
    t, d = recipe.train, recipe.data
    prompts = load_prompts(d.root, "train", d.max_prompt_len)
    if not prompts:
        raise UserError(f"no prompts in {d.root}/train")
    prompts = prompts[:d.max_prompts] if d.max_prompts else prompts
    held_out = load_prompts(d.root, "valid", d.max_prompt_len) or prompts     # no valid split: train prompts
    held_out = held_out[:t.eval_rows] if t.eval_rows else held_out
    policy = load_policy(t.init, env.device)
    score, critic_from_reward = load_scorer(t.reward, env.device, recipe.ppo.pad_id)
    critic = critic_from_reward() if recipe.ppo.critic_init == "reward" else Critic.from_policy(policy)
    return PPO(recipe, env, policy, score, prompts, held_out, critic, load_reference(t.init, env.device))


def main(argv: list[str] | None = None) -> dict:
    return run_phase("training.align.ppo", __doc__, SECTIONS, build, argv, "ppo")


if __name__ == "__main__":
    cli_main(main)
