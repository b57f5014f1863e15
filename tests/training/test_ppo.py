"""PPO (training/align/ppo.py, training/align/ppo_rollout.py): every piece of the math against values worked out by hand
in this file (GAE, clipped policy and value losses with their gradients, whitening, the KL-penalised
reward layout, the adaptive KL controller), the rollout layout against unpadded forwards, and learning:
PPO against a rule-based reward on a tiny model raises the mean reward while the KL stays bounded."""
from __future__ import annotations

import json
import math
import random
import statistics

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from training.cli import load_recipe
from training.dist import Env
from training.loop import Trainer
from training.model.checkpoint import load_model, save_model
from training.model.flavors import FLAVORS
from training.model.qwen import ModelConfig, Qwen
from training.align.ppo import (PPO, SECTIONS, KLController, gae, kl_penalised_rewards, load_scorer, main,
                          policy_loss, value_loss, whiten)
from training.align.ppo_rollout import (Critic, PromptStream, layout, load_prompts, logprobs_entropy, per_sample,
                                  response_logits)
from training.align.reward import RewardModel, save_reward_model

VOCAB, TARGET, STOP, PAD = 16, 3, 1, 0


def tiny_model(seed: int = 0) -> Qwen:
    torch.manual_seed(seed)
    return Qwen(ModelConfig.from_dict({**FLAVORS["debug"].to_dict(), "vocab_size": VOCAB, "hidden_size": 32,
                                       "intermediate_size": 64, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1}))


# ----------------------------------------------------------------------------- GAE

def test_gae_on_a_hand_worked_trajectory():
    # gamma 0.9, lambda 0.8 (gamma * lambda = 0.72); row 1 has 2 tokens and garbage in its padding
    rewards = torch.tensor([[0.1, -0.2, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 0.5, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: delta_2 = 1.0 - 0.3 = 0.7; delta_1 = -0.2 + 0.9 * 0.3 - 0.4 = -0.33; delta_0 = 0.1 + 0.9 * 0.4 - 0.5 = -0.04
    #        A_2 = 0.7; A_1 = -0.33 + 0.72 * 0.7 = 0.174; A_0 = -0.04 + 0.72 * 0.174 = 0.08528
    # row 1: delta_1 = 2.0 - 0.5 = 1.5 (no value after the last token); delta_0 = 0.9 * 0.5 - 1.0 = -0.55
    #        A_1 = 1.5; A_0 = -0.55 + 0.72 * 1.5 = 0.53; the padding gets 0
    expected_adv = torch.tensor([[0.08528, 0.174, 0.7], [0.53, 1.5, 0.0]])
    expected_ret = torch.tensor([[0.58528, 0.574, 1.0], [1.53, 2.0, 0.0]])    # A + V on real tokens
    torch.testing.assert_close(adv, expected_adv, rtol=0, atol=1e-6)
    torch.testing.assert_close(ret, expected_ret, rtol=0, atol=1e-6)


def test_gae_with_gamma_and_lambda_one_is_the_monte_carlo_return_minus_the_value():
    rewards = torch.tensor([[0.1, -0.2, 1.0, 0.5]])
    values = torch.tensor([[0.5, 0.4, 0.3, 0.2]])
    adv, ret = gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    # returns to go: 1.4, 1.3, 1.5, 0.5
    torch.testing.assert_close(ret, torch.tensor([[1.4, 1.3, 1.5, 0.5]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(adv, torch.tensor([[0.9, 0.9, 1.2, 0.3]]), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- clipped policy loss

RATIOS = [0.7, 0.799, 0.801, 1.0, 1.199, 1.201, 1.3]   # eps = 0.2: the boundaries are 0.8 and 1.2


def _policy_case(advantage: float):
    old = torch.full((1, len(RATIOS) + 1), -1.5)
    logp = (old + torch.log(torch.tensor([RATIOS + [5.0]]))).requires_grad_(True)   # last: padding, ratio 5
    mask = torch.tensor([[1.0] * len(RATIOS) + [0.0]])
    adv = torch.full_like(old, advantage)
    loss, clip_frac, approx_kl = policy_loss(logp, old, adv, mask, clip_eps=0.2)
    loss.backward()
    return loss, clip_frac, approx_kl, logp.grad[0]


def test_policy_clipping_with_a_positive_advantage():
    loss, clip_frac, approx_kl, grad = _policy_case(+1.0)
    n = len(RATIOS)
    # A > 0: the loss is -min(r, clip(r, 0.8, 1.2)); only ratios above 1.2 are clipped (1.201 and 1.3)
    per_token = [-0.7, -0.799, -0.801, -1.0, -1.199, -1.2, -1.2]
    assert loss.item() == pytest.approx(sum(per_token) / n, abs=1e-6)
    assert float(clip_frac) == pytest.approx(2 / n)
    # d(-r)/d log r = -r where unclipped, 0 where clipped; the padding gets nothing
    expected = [-r / n for r in RATIOS[:5]] + [0.0, 0.0, 0.0]
    torch.testing.assert_close(grad, torch.tensor(expected), rtol=0, atol=1e-6)
    assert float(approx_kl) == pytest.approx(sum(0.5 * math.log(r) ** 2 for r in RATIOS) / n, rel=1e-5)


def test_policy_clipping_with_a_negative_advantage():
    loss, clip_frac, _, grad = _policy_case(-1.0)
    n = len(RATIOS)
    # A < 0: the loss is max(r, clip(r, 0.8, 1.2)); only ratios below 0.8 are clipped (0.7 and 0.799)
    per_token = [0.8, 0.8, 0.801, 1.0, 1.199, 1.201, 1.3]
    assert loss.item() == pytest.approx(sum(per_token) / n, abs=1e-6)
    assert float(clip_frac) == pytest.approx(2 / n)
    expected = [0.0, 0.0] + [r / n for r in RATIOS[2:]] + [0.0]
    torch.testing.assert_close(grad, torch.tensor(expected), rtol=0, atol=1e-6)


def test_policy_loss_at_ratio_one_is_minus_the_mean_advantage():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    loss, clip_frac, approx_kl = policy_loss(logp, logp.clone(), torch.tensor([[1.0, -3.0, 0.5]]),
                                             torch.ones(1, 3), clip_eps=0.2)
    assert float(loss) == pytest.approx(-(1.0 - 3.0 + 0.5) / 3)
    assert float(clip_frac) == 0.0 and float(approx_kl) == 0.0


# ----------------------------------------------------------------------------- clipped value loss

def test_value_loss_clipping():
    # old values 0, returns 1, eps 0.2: V_clip = clip(V, -0.2, 0.2)
    values = torch.tensor([[0.1, 0.3, -0.5, 1.5, 9.0]], requires_grad=True)
    old, returns = torch.zeros(1, 5), torch.ones(1, 5)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    loss, clip_frac = value_loss(values, old, returns, mask, clip_eps=0.2)
    loss.backward()
    # V=0.1: both 0.81 (inside the clip). V=0.3: (0.3-1)^2 = 0.49 < (0.2-1)^2 = 0.64 -> clipped.
    # V=-0.5: 2.25 > (-0.2-1)^2 = 1.44 -> unclipped. V=1.5: 0.25 < 0.64 -> clipped. V=9: padding.
    assert loss.item() == pytest.approx(0.5 * (0.81 + 0.64 + 2.25 + 0.64) / 4, abs=1e-6)
    assert float(clip_frac) == pytest.approx(2 / 4)
    # gradient of 1/2 (V - G)^2 / 4 is (V - G) / 4 where unclipped, 0 where the clipped term wins
    torch.testing.assert_close(values.grad[0], torch.tensor([-0.9 / 4, 0.0, -1.5 / 4, 0.0, 0.0]), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- whitening

def test_whitening_over_the_masked_entries():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 6.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    got = whiten(x, mask)
    real = [1.0, 2.0, 3.0, 6.0]
    mean, std = statistics.fmean(real), statistics.pstdev(real)    # 3 and sqrt(3.5)
    expected = torch.tensor([[(1 - mean) / std, (2 - mean) / std, 0.0], [0.0, (6 - mean) / std, 0.0]])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert float(got[mask.bool()].mean()) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- rewards and the KL controller

def test_kl_penalised_reward_layout():
    logp = torch.tensor([[-1.0, -2.0, -0.5, -9.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -1.0], [-2.0, -0.5, -1.0, -3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    rewards, kl = kl_penalised_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    # k1 per token: logp - ref; row 0's last real token is index 2, row 1's index 3; padding ignored
    torch.testing.assert_close(kl, torch.tensor([[0.5, -1.0, 0.0, 0.0], [1.0, -0.5, 0.0, 2.0]]))
    expected = torch.tensor([[-0.05, 0.1, 0.0 + 2.0, 0.0], [-0.1, 0.05, 0.0, -0.2 - 1.0]])
    torch.testing.assert_close(rewards, expected, rtol=0, atol=1e-6)


def test_adaptive_kl_controller():
    # Ziegler et al. 2019: e = clip(KL / target - 1, -0.2, 0.2); beta *= 1 + e * n / horizon
    for kl, expected in ((9.0, 0.1 * (1 + 0.2 * 32 / 100)), (3.0, 0.1 * (1 - 0.2 * 32 / 100)),
                         (6.6, 0.1 * (1 + 0.1 * 32 / 100))):
        ctl = KLController(0.1, target=6.0, horizon=100)
        ctl.update(kl, 32)
        assert ctl.value == pytest.approx(expected)
    fixed = KLController(0.1)
    fixed.update(100.0, 32)
    assert fixed.value == 0.1


# ----------------------------------------------------------------------------- rollout layout

def test_layout_and_response_logprobs_equal_unpadded_forwards():
    prompts, responses = [[5, 6, 7], [8]], [[9, 10], [11, 12, 13]]
    ids, docs, mask = layout(prompts, responses, PAD)
    assert ids.tolist() == [[5, 6, 7, 9, 10, PAD], [PAD, PAD, 8, 11, 12, 13]]
    assert docs.tolist() == [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]
    assert mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    model, R = tiny_model().eval(), 3
    with torch.no_grad():
        logp, _ = logprobs_entropy(response_logits(model, ids, docs, R), ids[:, -R:])
        critic = Critic(tiny_model(1), torch.nn.Linear(32, 1))
        values = critic.response_values(ids, docs, R)
        for b, (p, r) in enumerate(zip(prompts, responses)):
            alone = torch.tensor([p + r])
            lp = model(alone).logits[0].log_softmax(-1)             # position t predicts token t + 1
            want = [float(lp[len(p) - 1 + j, tok]) for j, tok in enumerate(r)]
            assert logp[b, :len(r)].tolist() == pytest.approx(want, abs=1e-5)
            v = critic(alone)[0]                                     # value of the prefix ending at t
            assert values[b, :len(r)].tolist() == pytest.approx(v[len(p) - 1:len(p) - 1 + len(r)].tolist(), abs=1e-5)


def test_prompt_stream_visits_every_prompt_once_per_pass():
    stream = PromptStream([[i] for i in range(10)], batch=4, seed=3)
    seen = [p[0] for _ in range(5) for p in stream.next()]             # 20 = two passes
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))


# ----------------------------------------------------------------------------- learning

def fraction_of_target(prompt_ids: list[int], response_ids: list[int]) -> float:
    return sum(t == TARGET for t in response_ids) / max(1, len(response_ids))


@pytest.mark.slow
def test_ppo_raises_a_rule_based_reward_with_bounded_kl(tmp_path):
    rng = random.Random(0)
    prompts = [[rng.randrange(4, VOCAB) for _ in range(rng.randrange(2, 6))] for _ in range(64)]
    max_new = 8
    recipe = load_recipe(None, SECTIONS, [
        "train.steps=16", "train.batch_size=32", "train.device='cpu'", "train.eval_every=0", "train.seed=0",
        "ppo.minibatch_size=16", "ppo.ppo_epochs=4", f"ppo.max_new_tokens={max_new}", f"ppo.stop_tokens=[{STOP}]",
        f"ppo.pad_id={PAD}", "ppo.kl_coef=0.05", "ppo.value_lr=1e-3",
        "optim.lr=3e-3", "optim.weight_decay=0.0", "optim.schedule='constant'"])
    policy = tiny_model()
    torch.manual_seed(recipe.train.seed)
    phase = PPO(recipe, Env(), policy, per_sample(fraction_of_target), prompts, prompts[:32])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # 32-wide matrices: a second thread only adds overhead
    try:
        summary = Trainer(phase, recipe, Env(), tmp_path).fit()
    finally:
        torch.set_num_threads(threads)
    start, end, kl = summary["start_reward"], summary["end_reward"], summary["end_kl"]
    print(f"PPO rule-based reward: start {start:.3f} end {end:.3f} final KL {kl:.2f} nats/response")
    # random init: about 1 token in VOCAB is the target
    assert start < 0.15
    assert end > start + 0.3
    # bounded: well under the KL of always emitting the target (about log VOCAB nats per token)
    assert 0.0 < kl < 0.5 * max_new * math.log(VOCAB)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "reward" in r]
    assert len(train_rows) == 16
    for key in ("step", "loss", "lr", "reward", "kl", "clip_frac", "value_loss", "entropy", "approx_kl",
                "response_len", "tokens_per_s"):
        assert all(math.isfinite(r[key]) for r in train_rows), key
    assert (tmp_path / "final" / "model.safetensors").exists() and (tmp_path / "loss.png").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 16


# ----------------------------------------------------------------------------- the CLI

def write_preference_shards(root, train_prompts: list[list[int]], valid_prompts: list[list[int]]) -> None:
    """<root>/{train,valid}/part-00000.parquet with the columns of pipeline/chat_shards.py."""
    ids = pa.list_(pa.int32())
    for split, rows in (("train", train_prompts), ("valid", valid_prompts)):
        (root / split).mkdir(parents=True)
        n = len(rows)
        pq.write_table(pa.table({"id": [f"{split}-{i}" for i in range(n)], "source": ["toy"] * n, "split": [split] * n,
                                 "prompt_ids": pa.array(rows, ids), "chosen_ids": pa.array([[TARGET, STOP]] * n, ids),
                                 "rejected_ids": pa.array([[5, STOP]] * n, ids)}), root / split / "part-00000.parquet")


def test_critic_from_the_reward_model_starts_at_its_scores(tmp_path):
    save_reward_model(RewardModel(tiny_model(2)), tmp_path / "rm")
    scorer, make_critic = load_scorer(str(tmp_path / "rm"), torch.device("cpu"), PAD)
    prompts, responses = [[5, 6, 7], [8]], [[9, 10], [11, 12, 13]]
    critic = make_critic()
    assert all(p.requires_grad for p in critic.parameters())
    with torch.no_grad():
        for (p, r), reward in zip(zip(prompts, responses), scorer(prompts, responses)):
            assert float(critic(torch.tensor([p + r]))[0, -1]) == pytest.approx(float(reward), abs=1e-5)


def test_cli_writes_the_output_folder(tmp_path):
    rng = random.Random(1)
    prompts = [[rng.randrange(4, VOCAB) for _ in range(rng.randrange(2, 6))] for _ in range(12)]
    write_preference_shards(tmp_path / "pref", prompts[:8] + prompts[:2], prompts[8:])   # 2 repeated prompts
    assert load_prompts(tmp_path / "pref", "train") == prompts[:8]
    assert load_prompts(tmp_path / "pref", "valid", max_len=2) == [p[-2:] for p in prompts[8:]]
    save_model(tiny_model(), tmp_path / "policy")
    save_reward_model(RewardModel(tiny_model(2)), tmp_path / "rm")
    out = tmp_path / "ppo"
    summary = main(["--init", str(tmp_path / "policy"), "--reward", str(tmp_path / "rm"), "--prompts",
                    str(tmp_path / "pref"), "--out", str(out), "--set", "train.steps=2", "--set", "train.batch_size=4",
                    "--set", "train.micro_batch_size=1", "--set", "train.eval_every=1", "--set", "train.eval_rows=3",
                    "--set", "train.device='cpu'", "--set", "ppo.minibatch_size=2", "--set", "ppo.max_new_tokens=4",
                    "--set", f"ppo.stop_tokens=[{STOP}]", "--set", f"ppo.pad_id={PAD}", "--set", "ppo.adaptive_kl=true"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2]
    assert [r["step"] for r in rows if "val_reward" in r] == [0, 1, 2]
    assert summary["steps"] == 2 and summary["kl_coef"] != 0.05           # the adaptive controller moved beta
    assert json.loads((out / "summary.json").read_text())["final"] == str(out / "final")
    assert load_model(out / "final").cfg.vocab_size == VOCAB and (out / "loss.png").exists()
    assert json.loads((out / "recipe.json").read_text())["ppo"]["adaptive_kl"] is True
