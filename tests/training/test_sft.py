"""SFT: assistant-only loss, no attention across packed conversations, and a short end-to-end run."""
from __future__ import annotations

import json
import random

import pytest
import torch

from tests.training.align_testlib import conversation, save_tiny_model, tiny_config, write_sft_shards
from training.align import sft
from training.cli import RECIPES
from training.model.checkpoint import load_model
from training.losses import sft_loss
from training.model.qwen import Qwen


def packed_row(seed: int = 0, n: int = 2) -> dict:
    rng = random.Random(seed)
    ids, mask, starts = [], [], []
    for _ in range(n):
        c_ids, c_mask = conversation(rng)
        starts.append(len(ids))
        ids, mask = ids + c_ids, mask + c_mask
    return {"input_ids": ids, "loss_mask": mask, "doc_starts": starts}


def model() -> Qwen:
    torch.manual_seed(0)
    return Qwen(tiny_config()).eval()


def test_loss_equals_per_conversation_reference():
    """Reference: each conversation alone through the model, -log p of its assistant tokens only."""
    row, m = packed_row(), model()
    with torch.no_grad():
        batch = sft.sft_batch([row])
        total, n = sft.summed_loss(m, batch)[0], batch.n_targets
        ref, count = 0.0, 0
        bounds = row["doc_starts"] + [len(row["input_ids"])]
        for a, b in zip(bounds, bounds[1:]):
            ids = torch.tensor([row["input_ids"][a:b]])
            logp = torch.log_softmax(m(ids).logits[0, :-1].double(), -1)
            for t in range(1, b - a):
                if row["loss_mask"][a + t]:
                    ref -= float(logp[t - 1, ids[0, t]])
                    count += 1
    assert n == count == sum(row["loss_mask"])   # every assistant token is a target
    assert float(total) == pytest.approx(ref, rel=1e-5)


def test_non_assistant_tokens_never_reach_the_loss():
    row = packed_row()
    batch = sft.sft_batch([row])
    torch.manual_seed(1)
    logits = torch.randn(1, batch.input_ids.shape[1], 64, requires_grad=True)
    loss, _ = sft_loss(logits, batch.targets)
    changed = dict(row, input_ids=[t if k else (t + 7) % 64 for t, k in zip(row["input_ids"], row["loss_mask"])])
    loss2, _ = sft_loss(logits, sft.sft_batch([changed]).targets)
    assert loss2.item() == loss.item()
    loss.backward()
    predicts_user = [row["loss_mask"][t + 1] == 0 for t in range(len(row["input_ids"]) - 1)]
    assert all(float(logits.grad[0, t].abs().sum()) == 0 for t, no in enumerate(predicts_user) if no)
    flipped = dict(row, input_ids=[(t + 7) % 64 if k else t for t, k in zip(row["input_ids"], row["loss_mask"])])
    assert sft_loss(logits, sft.sft_batch([flipped]).targets)[0].item() != loss.item()


def test_trailing_non_assistant_tokens_leave_the_model_loss_unchanged():
    row, m = packed_row(n=1), model()
    tail = dict(row, input_ids=row["input_ids"] + [40, 41], loss_mask=row["loss_mask"] + [0, 0])
    tail2 = dict(tail, input_ids=row["input_ids"] + [50, 9])
    with torch.no_grad():
        a = sft.summed_loss(m, sft.sft_batch([tail]))[0]
        b = sft.summed_loss(m, sft.sft_batch([tail2]))[0]
    assert float(a) == pytest.approx(float(b), abs=1e-6)


def test_attention_does_not_cross_conversations():
    row, m = packed_row(n=2), model()
    second = row["doc_starts"][1]
    other = dict(row, input_ids=[(t + 5) % 64 if i < second else t for i, t in enumerate(row["input_ids"])])
    with torch.no_grad():
        b1, b2 = sft.sft_batch([row]), sft.sft_batch([other])
        l1 = m(b1.input_ids, doc_ids=b1.attention_doc_ids()).logits
        l2 = m(b2.input_ids, doc_ids=b2.attention_doc_ids()).logits
        alone = m(torch.tensor([row["input_ids"][second:-1]])).logits
    assert not torch.allclose(l1[0, :second], l2[0, :second])
    torch.testing.assert_close(l1[0, second:], l2[0, second:], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(l1[0, second:], alone[0], atol=1e-5, rtol=1e-5)   # as if alone at position 0


def test_sft_cli_learns_and_writes_the_output_folder(tmp_path):
    init = save_tiny_model(tmp_path / "init")
    data = write_sft_shards(tmp_path / "sft", {"train": 48, "valid": 8})
    out = tmp_path / "out"
    summary = sft.main(["--recipe", str(RECIPES / "sft.toml"),
                        "--init", str(init), "--data", str(data), "--out", str(out),
                        "--set", "train.steps=30", "--set", "optim.lr=1e-2", "--set", "train.eval_every=15",
                        "--set", "train.batch_size=8", "--set", "train.micro_batch_size=4"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    vals = [r for r in rows if "val_loss" in r]
    assert {"step", "loss", "lr", "tokens_per_s"} <= set(steps[0]) and len(steps) == 30
    assert vals[0]["step"] == 0 and vals[-1]["step"] == 30
    print(f"SFT val loss {vals[0]['val_loss']:.3f} -> {vals[-1]['val_loss']:.3f}")
    assert vals[-1]["val_loss"] < vals[0]["val_loss"] - 0.5
    assert summary["last_eval"] == vals[-1] and json.loads((out / "summary.json").read_text())["steps"] == 30
    assert (out / "loss.png").stat().st_size > 0
    load_model(out / "final")
