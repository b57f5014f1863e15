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
val_reward_mean, the mean reward of one sampled reply per validation prompt. Output as in training/loop.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from common.errors import UserError, cli_main
from common.recipe import Recipe
from training import dist
from training.align.base import (ALIGN_PANELS, AlignConfig, PolicyPhase, PreferenceData, first_rows, load_pairs,
                                 load_reference)
from training.align.dpo import DPOConfig, pair_loss, reference_logprobs
from training.align.reward import load_reward_model, score
from training.cli import run_phase
from training.generate import ENDOFTEXT, IM_END, SamplingConfig, generate
from training.loop import LossOut, Micro, Trainer, chunks, shard, step_rows
from training.optim import OptimConfig


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


SECTIONS = {"data": PreferenceData, "online": OnlineConfig, "optim": OptimConfig, "train": AlignConfig}


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


class OnlineDPO(PolicyPhase):
    """Rounds of sampling, reward-model scoring and pairing, each followed by steps_per_round DPO steps."""
    name = "online_dpo"
    panels = ALIGN_PANELS

    def __init__(self, recipe: Recipe, env: dist.Env):
        super().__init__(recipe, env)
        t, self.online = recipe.train, recipe.online
        self.reference = load_reference(t.init, env.device)
        self.rm = load_reward_model(t.reward, env.device)
        self.prompts = [r["prompt_ids"] for r in load_pairs(recipe.data, "train")]
        if not self.prompts:
            raise UserError(f"no prompts in {recipe.data.root}/train")
        self.valid = first_rows([r["prompt_ids"] for r in load_pairs(recipe.data, "valid")], t.eval_rows)
        self.dpo = DPOConfig(beta=self.online.beta)
        self.generator = torch.Generator(device=env.device).manual_seed(t.seed)
        self.pairs, self.stats, self.round = [], {}, -1

    def collect(self, r: int) -> None:
        """Samples, scores and pairs the prompts of round r; reference log-probs once per round."""
        prompts = step_rows(self.prompts, self.online.prompts_per_round, self.t.seed, r)
        samples, rewards = sample_and_score(self.model, self.rm, prompts, self.online, self.generator)
        pairs = best_and_worst(prompts, samples, rewards, self.online.min_reward_gap)
        self.pairs = reference_logprobs(self.reference, pairs, self.t.micro_batch_size or len(pairs) or 1, self.device)
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

    def state(self) -> dict:
        return {"rounds": self}

    def micro_batches(self, step: int, env: dist.Env) -> list[Micro]:
        pairs = shard(self.pairs, env)   # every tie: no pairs, an empty step (the schedule still moves)
        return [Micro(c, len(c)) for c in chunks(pairs, self.t.micro_batch_size)] if pairs else []

    def loss(self, model, micro: Micro) -> LossOut:
        return pair_loss(model, None, micro.data, self.dpo, self.device)

    def train_step(self, trainer: Trainer, step: int) -> dict:
        r = step // self.online.steps_per_round
        if r != self.round:
            self.collect(r)
        return {**trainer.update(self.micro_batches(step, trainer.env)), **self.stats}

    def evaluate(self, trainer: Trainer) -> dict | None:
        if not self.valid:
            return None
        one = OnlineConfig(**{**self.online.__dict__, "samples_per_prompt": 1})
        gen = torch.Generator(device=self.device).manual_seed(self.t.seed + 1)
        _, rewards = sample_and_score(self.model, self.rm, self.valid, one, gen)
        return {"reward_mean": float(rewards.mean())}


def main(argv: list[str] | None = None) -> dict:
    return run_phase("training.align.online_dpo", __doc__, SECTIONS, OnlineDPO, argv, "online_dpo")


if __name__ == "__main__":
    cli_main(main)
