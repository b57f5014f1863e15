"""Alignment losses against hand-computed values, and the shared log-prob / batch helpers of training/loop.py."""
from __future__ import annotations

import math

import pytest
import torch

from training.align.base import collate_pairs, concat_right_pad, sequence_logprob, token_logprobs
from training.losses import IGNORE, bradley_terry_loss, dpo_loss, sft_loss
from training.model.qwen import ModelConfig, Qwen

VOCAB = 50


def tiny_model(seed: int = 0) -> Qwen:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, tie_word_embeddings=True, max_position_embeddings=128)
    return Qwen(cfg).eval()


def softplus(x: float) -> float:      # -log sigmoid(-x) = log(1 + e^x)
    return math.log1p(math.exp(x))


def test_bradley_terry_matches_hand_computed_values():
    r_c, r_r = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])
    loss, m = bradley_terry_loss(r_c, r_r)
    # -log sigmoid(d) = log(1 + e^-d) for d = 2, -1, 0
    expected = (softplus(-2.0) + softplus(1.0) + math.log(2)) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(loss) == pytest.approx(0.711112, abs=1e-6)
    assert m["accuracy"] == pytest.approx(1 / 3)       # the tie counts as wrong
    assert m["margin"] == pytest.approx(1 / 3)
    loss_m, _ = bradley_terry_loss(r_c, r_r, margin=0.5)
    assert float(loss_m) == pytest.approx((softplus(-1.5) + softplus(1.5) + softplus(0.5)) / 3, rel=1e-6)


def test_dpo_loss_matches_hand_computed_values():
    loss, m = dpo_loss(torch.tensor([-10.0]), torch.tensor([-20.0]), torch.tensor([-12.0]), torch.tensor([-19.0]),
                       beta=0.1)
    # rewards: 0.1 * (-10 + 12) = 0.2 and 0.1 * (-20 + 19) = -0.1; z = 0.3
    assert float(loss) == pytest.approx(softplus(-0.3), rel=1e-6)
    assert m["reward_chosen"] == pytest.approx(0.2) and m["reward_rejected"] == pytest.approx(-0.1)
    assert m["margin"] == pytest.approx(0.3) and m["accuracy"] == 1.0
    smoothed, _ = dpo_loss(torch.tensor([-10.0]), torch.tensor([-20.0]), torch.tensor([-12.0]),
                           torch.tensor([-19.0]), beta=0.1, label_smoothing=0.2)
    assert float(smoothed) == pytest.approx(0.8 * softplus(-0.3) + 0.2 * softplus(0.3), rel=1e-6)


def test_dpo_loss_is_log2_when_policy_equals_reference():
    model = tiny_model()
    rows = [{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6, 7, 8, 9]},
            {"prompt_ids": [10, 11], "chosen_ids": [12, 13, 14], "rejected_ids": [15]}]
    batch = collate_pairs(rows)
    with torch.no_grad():
        lp = sequence_logprob(model, batch.ids, batch.response_mask)
        ref = sequence_logprob(tiny_model(), batch.ids, batch.response_mask)   # same seed: same weights
    loss, m = dpo_loss(*batch.split(lp), *batch.split(ref), beta=0.1)
    assert float(loss) == pytest.approx(math.log(2), abs=1e-6)
    assert m["margin"] == pytest.approx(0.0, abs=1e-6)


def test_sft_loss_equals_mean_cross_entropy_of_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, IGNORE, 4], [IGNORE, IGNORE, 0]])
    loss, n = sft_loss(logits, targets)
    logp = torch.log_softmax(logits, -1)
    expected = -(logp[0, 0, 1] + logp[0, 2, 4] + logp[1, 2, 0]) / 3
    assert n == 3 and float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_token_and_sequence_logprobs_agree_with_log_softmax():
    model = tiny_model()
    ids, mask = concat_right_pad([[1, 2, 3], [4]], [[5, 6], [7, 8, 9, 10]])
    assert ids.tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 10]]
    assert mask.tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]]
    with torch.no_grad():
        lp = token_logprobs(model, ids)
        ref = torch.log_softmax(model(ids).logits[:, :-1].double(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        seq = sequence_logprob(model, ids, mask)
        h = model(ids, return_hidden=True).hidden
    assert lp.shape == (2, 4) and lp.dtype == torch.float32
    torch.testing.assert_close(lp.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seq.double(), (ref * mask[:, 1:]).sum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.lm_head(h), model(ids).logits, atol=1e-6, rtol=1e-6)


def test_sequence_logprob_ignores_padding_and_gets_gradients():
    model = tiny_model().train()
    ids, mask = concat_right_pad([[1, 2]], [[3, 4]])
    padded, pmask = concat_right_pad([[1, 2], [5]], [[3, 4], [6, 7, 8, 9, 10]])
    alone = sequence_logprob(model, ids, mask)
    together = sequence_logprob(model, padded, pmask)
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-5)
    together.sum().backward()
    assert model.model.embed_tokens.weight.grad is not None


def test_collate_pairs_layout():
    batch = collate_pairs([{"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5, 6]}], pad_id=0)
    assert batch.ids.tolist() == [[1, 2, 3, 0, 0], [1, 2, 4, 5, 6]]
    assert batch.response_mask.tolist() == [[0, 0, 1, 0, 0], [0, 0, 1, 1, 1]]
    assert batch.last.tolist() == [2, 4] and batch.n_pairs == 1
