"""PPO rollouts: prompts in, sampled responses with their log-probabilities, values and rewards out.

    batch = rollout(policy, reference, critic, prompts, score, SamplingConfig(temperature=1.0, ...))
    batch.response_ids, batch.mask          # [B, R] response tokens, 1 on real (not padding) tokens
    batch.old_logp, batch.ref_logp          # [B, R] log pi(token | prefix) of the policy and the reference
    batch.values, batch.scores              # [B, R] critic values, [B] scalar rewards

Layout of one rollout batch, [B, P + R] tokens: each prompt left-padded to the longest prompt P, then
its response right-padded to the longest response R. So every response starts at column P and the
logits of all response tokens are the last R + 1 positions (`logits_to_keep`), which keeps the
[B, R, V] logits small even with the real 151,936-token vocabulary. Left padding is its own document
(`doc_ids` 0), so real tokens never attend to it and their positions start at 0, exactly as in
`training.generate`, which sampled them (left padding + attention mask). Right padding comes after the
response and causal attention hides it.

The critic (`Critic`) is a Qwen backbone and a scalar head on its final hidden states
(`Qwen.forward(return_hidden=True)`): one value per position, V(s_t) = the value of the prefix ending at token t.
`ActorCritic` holds the policy and the critic as the one module the trainer wraps (training/loop.py): its forward
gives the response logits, the values and the MoE balance loss of both networks.

Used by training/align/ppo.py (`python -m training.align.ppo`); tested in tests/training/test_ppo.py.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from training.align.base import read_preferences
from training.generate import SamplingConfig, generate
from training.model.qwen import Qwen

# Scores a batch: (prompts, responses) token lists -> one scalar reward per row
Scorer = Callable[[Sequence[Sequence[int]], Sequence[Sequence[int]]], Sequence[float]]


def per_sample(reward_fn: Callable[[list[int], list[int]], float]) -> Scorer:
    """Turns a rule `reward_fn(prompt_ids, response_ids) -> float` into a batch scorer."""
    return lambda prompts, responses: [float(reward_fn(list(p), list(r))) for p, r in zip(prompts, responses)]


# ----------------------------------------------------------------------------- batch layout

def layout(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
           pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> input_ids [B, P+R], doc_ids [B, P+R] (0 on left padding, 1 on the rest), mask [B, R] float."""
    P, R = max(len(p) for p in prompts), max(len(r) for r in responses)
    ids, docs, mask = [], [], []
    for p, r in zip(prompts, responses):
        left, right = P - len(p), R - len(r)
        ids.append([pad_id] * left + list(p) + list(r) + [pad_id] * right)
        docs.append([0] * left + [1] * (len(p) + R))
        mask.append([1.0] * len(r) + [0.0] * right)
    return torch.tensor(ids), torch.tensor(docs), torch.tensor(mask)


def response_logits(model: Qwen, input_ids: torch.Tensor, doc_ids: torch.Tensor, R: int,
                    temperature: float = 1.0) -> torch.Tensor:
    """Logits [B, R, V] (float32, / temperature) that predict the last R tokens of `input_ids`."""
    padded = bool((doc_ids == 0).any())    # without left padding no mask is needed (faster attention)
    logits = model(input_ids, doc_ids=doc_ids if padded else None, logits_to_keep=R + 1).logits
    return logits[:, :-1].float() / temperature


def logprobs_entropy(logits: torch.Tensor, tokens: torch.Tensor,
                     entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, R, V], tokens [B, R] -> log pi(token) [B, R] and the entropy of pi [B, R], in nats.
    The entropy is only logged unless it enters the loss (entropy_grad): then it keeps its graph."""
    logp_all = logits.log_softmax(-1)
    logp = logp_all.gather(-1, tokens[..., None]).squeeze(-1)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


# ----------------------------------------------------------------------------- the critic

class Critic(nn.Module):
    """Value model: a Qwen backbone (its final-norm hidden states) and a scalar head; values [B, T]."""

    def __init__(self, backbone: Qwen, head: nn.Linear | None = None):
        super().__init__()
        self.cfg = backbone.cfg
        self.backbone = backbone
        self.head = head if head is not None else self.zero_head(backbone.cfg.hidden_size)
        if not backbone.cfg.tie_word_embeddings:   # never run: frozen, so DDP expects no gradient for it
            backbone.lm_head.weight.requires_grad_(False)

    @staticmethod
    def zero_head(hidden: int) -> nn.Linear:
        head = nn.Linear(hidden, 1)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        return head

    @classmethod
    def from_policy(cls, policy: Qwen) -> "Critic":
        """A copy of the policy's backbone with a zero value head (values start at 0)."""
        return cls(copy.deepcopy(policy))

    def forward(self, input_ids: torch.Tensor, doc_ids: torch.Tensor | None = None,
                with_aux: bool = False):
        """Values [B, T] (or (values, the backbone's MoE balance loss) with with_aux)."""
        out = self.backbone(input_ids, doc_ids=doc_ids, return_hidden=True)
        values = self.head(out.hidden).squeeze(-1)                               # [B, T]
        return (values, out.aux_loss) if with_aux else values

    def response_values(self, input_ids: torch.Tensor, doc_ids: torch.Tensor, R: int,
                        with_aux: bool = False):
        """[B, R]: column j is the value of the state before response token j is chosen."""
        padded = bool((doc_ids == 0).any())
        values, aux = self(input_ids, doc_ids if padded else None, with_aux=True)
        values = values[:, -R - 1:-1].float()
        return (values, aux) if with_aux else values


class ActorCritic(nn.Module):
    """The policy and the critic as one trained module (they share no parameters)."""

    def __init__(self, policy: Qwen, critic: Critic):
        super().__init__()
        self.policy, self.critic = policy, critic
        self.cfg = policy.cfg

    def forward(self, input_ids: torch.Tensor, doc_ids: torch.Tensor, R: int, temperature: float):
        """-> response logits [B, R, V] (fp32, / temperature), values [B, R], the summed MoE balance loss."""
        padded = bool((doc_ids == 0).any())    # without left padding no mask is needed (faster attention)
        out = self.policy(input_ids, doc_ids=doc_ids if padded else None, logits_to_keep=R + 1)
        values, value_aux = self.critic.response_values(input_ids, doc_ids, R, with_aux=True)
        found = [a for a in (out.aux_loss, value_aux) if a is not None]
        return out.logits[:, :-1].float() / temperature, values, sum(found) if found else None


# ----------------------------------------------------------------------------- one rollout

@dataclass
class Rollout:
    prompts: list[list[int]]
    responses: list[list[int]]
    input_ids: torch.Tensor     # [B, P+R]
    doc_ids: torch.Tensor       # [B, P+R]
    mask: torch.Tensor          # [B, R] 1.0 on response tokens
    old_logp: torch.Tensor      # [B, R] policy at sampling time
    ref_logp: torch.Tensor      # [B, R] frozen reference
    values: torch.Tensor        # [B, R] critic at sampling time
    scores: torch.Tensor        # [B] scalar reward of each response

    @property
    def R(self) -> int:
        return self.mask.shape[1]

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, -self.R:]

    def rows(self, idx: torch.Tensor) -> dict:
        """Tensors of the rows `idx`, for a minibatch; right padding cut to the minibatch's longest response."""
        width = max(1, int(self.mask[idx].sum(1).max()))
        cut = self.R - width
        end = self.input_ids.shape[1] - cut
        out = {"input_ids": self.input_ids[idx, :end], "doc_ids": self.doc_ids[idx, :end]}
        for name in ("mask", "old_logp", "ref_logp", "values"):
            out[name] = getattr(self, name)[idx, :width]
        return out


def logit_temperature(sampling: SamplingConfig) -> float:
    """The temperature the log-probabilities use: the sampling one (greedy sampling: 1)."""
    return sampling.temperature if sampling.temperature > 0 else 1.0


@torch.no_grad()
def rollout(policy: Qwen, reference: Qwen, critic: Critic, prompts: list[list[int]], score: Scorer,
            sampling: SamplingConfig, generator: torch.Generator | None = None) -> Rollout:
    """Samples one response per prompt with the KV-cache generator and evaluates it with all three models."""
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    responses = generate(policy, prompts, cfg=sampling, generator=generator)
    responses = [r if r else [sampling.pad_id] for r in responses]   # max_new_tokens = 0 guard
    ids, docs, mask = (t.to(device) for t in layout(prompts, responses, sampling.pad_id))
    R, temp = mask.shape[1], logit_temperature(sampling)
    tokens = ids[:, -R:]
    old_logp, _ = logprobs_entropy(response_logits(policy, ids, docs, R, temp), tokens)
    ref_logp, _ = logprobs_entropy(response_logits(reference, ids, docs, R, temp), tokens)
    values = critic.response_values(ids, docs, R)
    scores = torch.tensor(list(score(prompts, responses)), dtype=torch.float32, device=device)
    policy.train(was_training)
    return Rollout(prompts, responses, ids, docs, mask, old_logp * mask, ref_logp * mask, values * mask, scores)


# ----------------------------------------------------------------------------- prompts

def load_prompts(root: str | Path, split: str = "train", max_len: int = 0) -> list[list[int]]:
    """Distinct `prompt_ids` of a preference-shard split (pipeline/chat_shards.py), in file order; longer
    prompts than `max_len` keep their last `max_len` tokens (the end holds the assistant header)."""
    seen, out = set(), []
    for row in read_preferences(root, split):
        ids = row["prompt_ids"][-max_len:] if max_len > 0 else row["prompt_ids"]
        if ids and tuple(ids) not in seen:
            seen.add(tuple(ids))
            out.append(ids)
    return out


class PromptStream:
    """Endless batches of prompts: the pool shuffled once per pass with (seed, pass)."""

    def __init__(self, prompts: list[list[int]], batch: int, seed: int):
        import random
        self.prompts, self.batch, self.seed, self.passes = prompts, batch, seed, 0
        self.order: list[int] = []
        self._random = random

    def state_dict(self) -> dict:
        return {"passes": self.passes, "order": list(self.order)}

    def load_state_dict(self, state: dict) -> None:
        self.passes, self.order = state["passes"], list(state["order"])

    def next(self) -> list[list[int]]:
        while len(self.order) < self.batch:
            order = list(range(len(self.prompts)))
            self._random.Random(self.seed * 1_000_003 + self.passes).shuffle(order)
            self.passes += 1
            self.order += order
        take, self.order = self.order[:self.batch], self.order[self.batch:]
        return [self.prompts[i] for i in take]
