"""Online DPO, Qwen2's online preference stage (Yang et al. 2024, sec. 4.3): each round samples several
replies per prompt from the current policy, scores them with the reward model, keeps the best and the
worst as a preference pair and updates the policy with DPO on those pairs.

    python -m training.align.online_dpo --recipe training/recipes/online_dpo.toml --init runs/demo/dpo/final \\
        --reward runs/demo/rm/final --data runs/demo/mix/preference --out runs/demo/online_dpo

Prompts are the prompt_ids of the preference shards (train split; valid for evaluation). A round =
`prompts_per_round` prompts x `samples_per_prompt` replies (training.generate, KV cache, temperature
sampling) -> rewards -> pairs (prompts whose best and worst rewards differ by no more than
`min_reward_gap` are skipped) -> `steps_per_round` DPO optimizer steps on them, with reference
log-probs from the frozen starting policy computed once per round. train.steps is the total
(rounds x steps_per_round).

Metrics per step: DPO's (loss, reward_chosen, reward_rejected, margin, accuracy) plus the round's
reward-model scores: reward_mean (all samples), reward_best, reward_worst, pairs, round. Validation:
val_reward_mean, the mean reward of one sampled reply per validation prompt. Output as in training/align/common.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from training.align.common import (Loop, LoopConfig, PreferenceData, batches, begin, load_pairs, load_policy, load_reference)
from training.align.dpo import DPOConfig, reference_logprobs, update
from training.generate import ENDOFTEXT, IM_END, SamplingConfig, generate
from training.optim import OptimConfig
from training.align.reward import load_reward_model, score


@dataclass(frozen=True)
class OnlineConfig:
    prompts_per_round: int = 8
    samples_per_prompt: int = 4        # k replies per prompt; the best and the worst form the pair
    steps_per_round: int = 2           # DPO optimizer steps on each round's pairs
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_reward_gap: float = 0.0        # skip prompts whose best - worst reward is not above this
    beta: float = 0.1                  # DPO beta (Rafailov et al. 2023 sec. 6)
    pad_id: int = ENDOFTEXT            # generation padding (and stop tokens below); any id < vocab
    stop_tokens: tuple[int, ...] = (IM_END, ENDOFTEXT)


SECTIONS = {"data": PreferenceData, "online": OnlineConfig, "optim": OptimConfig, "train": LoopConfig}


def sampling(cfg: OnlineConfig) -> SamplingConfig:
    return SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                          top_p=cfg.top_p, stop_tokens=cfg.stop_tokens, pad_id=cfg.pad_id)


def best_and_worst(prompts: list[list[int]], samples: list[list[list[int]]], rewards: torch.Tensor,
                   min_gap: float = 0.0) -> list[dict]:
    """rewards [P, k] of samples[p][j] -> one pair per prompt: chosen = argmax, rejected = argmin."""
    pairs = []
    for p, (prompt, replies) in enumerate(zip(prompts, samples)):
        hi, lo = int(rewards[p].argmax()), int(rewards[p].argmin())
        if float(rewards[p, hi] - rewards[p, lo]) > min_gap:
            pairs.append({"prompt_ids": prompt, "chosen_ids": replies[hi], "rejected_ids": replies[lo],
                          "reward_chosen": float(rewards[p, hi]), "reward_rejected": float(rewards[p, lo])})
    return pairs


@torch.no_grad()
def sample_and_score(policy, rm, prompts: list[list[int]], cfg: OnlineConfig,
                     generator: torch.Generator | None = None) -> tuple[list[list[list[int]]], torch.Tensor]:
    """k sampled replies per prompt and their rewards [P, k]. An empty reply is scored as its stop token
    would be: it keeps one pad token so the head reads a real position after the prompt."""
    k = cfg.samples_per_prompt
    flat = generate(policy, [p for p in prompts for _ in range(k)], sampling(cfg), generator)
    flat = [r or [cfg.pad_id] for r in flat]
    rewards = score(rm, [p for p in prompts for _ in range(k)], flat, cfg.pad_id)
    return [flat[i * k:(i + 1) * k] for i in range(len(prompts))], rewards.view(len(prompts), k)


class Rounds:
    """The state of the online loop: which round's pairs the next DPO steps use."""

    def __init__(self, policy, reference, rm, prompts: list[list[int]], cfg: OnlineConfig, train: LoopConfig, device):
        self.policy, self.reference, self.rm, self.prompts = policy, reference, rm, prompts
        self.cfg, self.train, self.device = cfg, train, device
        self.dpo = DPOConfig(beta=cfg.beta)
        self.generator = torch.Generator(device=device).manual_seed(train.seed)
        self.pairs, self.stats, self.round = [], {}, -1

    def collect(self, r: int) -> None:
        """Samples, scores and pairs the prompts of round r; reference log-probs once per round."""
        prompts = batches(self.prompts, self.cfg.prompts_per_round, self.train.seed, r)
        samples, rewards = sample_and_score(self.policy, self.rm, prompts, self.cfg, self.generator)
        pairs = best_and_worst(prompts, samples, rewards, self.cfg.min_reward_gap)
        micro = self.train.micro_batch_size or len(pairs) or 1
        self.pairs = reference_logprobs(self.reference, pairs, micro, self.device)
        self.round = r
        self.stats = {"round": r, "pairs": len(pairs), "reward_mean": float(rewards.mean()),
                      "reward_best": float(rewards.max(1).values.mean()),
                      "reward_worst": float(rewards.min(1).values.mean())}

    def state_dict(self) -> dict:
        """The current round's pairs (with their reference log-probs), stats and the sampler's RNG."""
        return {"round": self.round, "pairs": self.pairs, "stats": self.stats, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.round, self.pairs, self.stats = state["round"], state["pairs"], state["stats"]
        self.generator.set_state(state["generator"])

    def step(self, i: int) -> dict:
        r = i // self.cfg.steps_per_round
        if r != self.round:
            self.collect(r)
        if not self.pairs:   # every prompt tied: nothing to learn this step
            return {"loss": 0.0, **self.stats, "tokens": 0}
        found = update(self.policy, None, self.pairs, self.dpo, self.train.micro_batch_size or len(self.pairs),
                       self.device)
        return {**found, **self.stats}

    @torch.no_grad()
    def evaluate(self, prompts: list[list[int]]) -> dict:
        one = OnlineConfig(**{**self.cfg.__dict__, "samples_per_prompt": 1})
        gen = torch.Generator(device=self.device).manual_seed(self.train.seed + 1)
        _, rewards = sample_and_score(self.policy, self.rm, prompts, one, gen)
        return {"reward_mean": float(rewards.mean())}


def main(argv: list[str] | None = None) -> dict:
    args, recipe, device = begin("online_dpo", __doc__, SECTIONS, argv)
    t, cfg = recipe.train, recipe.online
    policy, reference = load_policy(t.init, device), load_reference(t.init, device)
    rm = load_reward_model(t.reward, device)
    prompts = [r["prompt_ids"] for r in load_pairs(recipe.data, "train")]
    valid = [r["prompt_ids"] for r in load_pairs(recipe.data, "valid")]
    valid = valid[:t.eval_rows] if t.eval_rows else valid
    if not prompts:
        raise SystemExit(f"no prompts in {recipe.data.root}/train")
    rounds = Rounds(policy, reference, rm, prompts, cfg, t, device)
    loop = Loop(t.out, policy, recipe.optim, t, "online_dpo", recipe, parts={"rounds": rounds})
    summary = loop.run(rounds.step, (lambda: rounds.evaluate(valid)) if valid else None, max_steps=args.max_steps,
                       resume=args.resume)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
