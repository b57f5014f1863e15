"""Reward model: Bradley-Terry training reaches high accuracy on a clear synthetic rule; save/load
round trip; hh-rlhf end to end through the real Qwen tokenizer."""
from __future__ import annotations

import gzip
import json

import pytest
import torch

from tests.training.align_testlib import rule_pairs, save_tiny_model, write_preference_shards
from training.align import reward
from training.cli import RECIPES


def run_rm(tmp_path, init, data, *sets):
    out = tmp_path / "rm"
    argv = ["--recipe", str(RECIPES / "rm.toml"), "--init", str(init), "--data", str(data), "--out", str(out)]
    summary = reward.main(argv + [x for s in sets for x in ("--set", s)])
    return out, summary


def test_reward_model_learns_a_clear_rule(tmp_path):
    init = save_tiny_model(tmp_path / "init")
    data = write_preference_shards(tmp_path / "pref", {"train": rule_pairs(256, 0), "valid": rule_pairs(64, 1)})
    out, summary = run_rm(tmp_path, init, data, "train.steps=40", "optim.lr=3e-3", "train.batch_size=16",
                          "train.micro_batch_size=16", "train.eval_every=20")
    first, last = summary["first_eval"], summary["last_eval"]
    print(f"RM synthetic: val accuracy {first['val_accuracy']:.3f} -> {last['val_accuracy']:.3f}, "
          f"margin {first['val_margin']:.3f} -> {last['val_margin']:.3f}")
    assert last["val_accuracy"] >= 0.95
    assert last["val_margin"] > first["val_margin"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "tokens_per_s", "accuracy", "margin"} <= set(rows[1])
    # the saved model scores exactly like the trained one
    rm = reward.load_reward_model(out / "final")
    pairs = rule_pairs(4, 2)
    chosen = reward.score(rm, [p["prompt_ids"] for p in pairs], [p["chosen_ids"] for p in pairs])
    rejected = reward.score(rm, [p["prompt_ids"] for p in pairs], [p["rejected_ids"] for p in pairs])
    assert bool((chosen > rejected).all())


def test_reward_reads_the_last_real_token_only(tmp_path):
    rm = reward.load_reward_model(save_tiny_model(tmp_path / "m"))
    alone = reward.score(rm, [[1, 7, 2]], [[9, 3]])
    padded = reward.score(rm, [[1, 7, 2], [1, 2]], [[9, 3], [8, 8, 8, 8, 3]])
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=1e-5)
    h = rm.backbone(torch.tensor([[1, 7, 2, 9, 3]]), return_hidden=True).hidden[0, -1]
    torch.testing.assert_close(alone[0], rm.head(h)[0], atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_reward_model_on_hh_rlhf_end_to_end(tmp_path, shared_data):
    from stages.chatml import encode_preference, read_preference, with_system
    from stages.tokenize.tokenizer import QwenTokenizer

    tok, pairs = QwenTokenizer(), []
    with gzip.open(shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt") as f:
        for line in f:
            parsed = read_preference(json.loads(line))
            if parsed:
                prompt, chosen, rejected = parsed
                pairs.append(encode_preference(with_system(prompt, "You are a helpful assistant."),
                                               chosen, rejected, tok))
            if len(pairs) == 400:
                break
    data = write_preference_shards(tmp_path / "pref", {"train": pairs[:320], "valid": pairs[320:]})
    init = save_tiny_model(tmp_path / "init", vocab_size=151936, hidden_size=64, intermediate_size=128)
    _, summary = run_rm(tmp_path, init, data, "train.steps=20", "optim.lr=1e-3", "data.max_prompt_len=96",
                        "data.max_response_len=48", "train.eval_every=0",
                        "train.micro_batch_size=16")
    last = summary["last_eval"]
    print(f"RM hh-rlhf (320 train / 80 held-out pairs, tiny model from scratch): held-out accuracy "
          f"{summary['first_eval']['val_accuracy']:.3f} -> {last['val_accuracy']:.3f}, "
          f"loss {summary['first_eval']['val_loss']:.3f} -> {last['val_loss']:.3f}")
    assert 0.0 <= last["val_accuracy"] <= 1.0 and last["step"] == 20
