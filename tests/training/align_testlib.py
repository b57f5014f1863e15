"""Helpers for the alignment tests: a tiny small-vocab Qwen saved as a checkpoint, and tiny SFT and
preference shards written with pyarrow in the layout of pipeline/chat_shards.py."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from training.model.checkpoint import save_model
from training.model.qwen import ModelConfig, Qwen

VOCAB = 64
USER, ASSISTANT, END = 1, 2, 3           # stand-ins for the ChatML headers and <|im_end|>


def tiny_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                tie_word_embeddings=True, max_position_embeddings=256)
    return ModelConfig(**{**base, **overrides})


def save_tiny_model(path: Path, seed: int = 0, **overrides) -> Path:
    torch.manual_seed(seed)
    save_model(Qwen(tiny_config(**overrides)), path)
    return path


def conversation(rng: random.Random) -> tuple[list[int], list[int]]:
    """USER q.. ASSISTANT (q+1).. END: the reply is the question shifted by one id (a learnable rule)."""
    q = [rng.randrange(10, VOCAB - 1) for _ in range(rng.randrange(2, 6))]
    ids = [USER, *q, ASSISTANT, *[t + 1 for t in q], END]
    mask = [0] * (len(q) + 2) + [1] * (len(q) + 1)
    return ids, mask


def write_sft_shards(root: Path, rows_per_split: dict[str, int], convs_per_row: int = 3, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for split, n in rows_per_split.items():
        rows = []
        for _ in range(n):
            ids, mask, starts = [], [], []
            for _ in range(convs_per_row):
                c_ids, c_mask = conversation(rng)
                starts.append(len(ids))
                ids, mask = ids + c_ids, mask + c_mask
            rows.append({"split": split, "input_ids": ids, "loss_mask": mask, "doc_starts": starts,
                         "n_tokens": len(ids)})
        schema = pa.schema([("split", pa.string()), ("input_ids", pa.list_(pa.int32())),
                            ("loss_mask", pa.list_(pa.int8())), ("doc_starts", pa.list_(pa.int32())),
                            ("n_tokens", pa.int32())])
        (root / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema), root / split / "part-0.parquet")
    (root / "manifest.json").write_text(json.dumps({"kind": "sft", "seq_len": 64}))
    return root


def write_preference_shards(root: Path, pairs: dict[str, list[dict]]) -> Path:
    """pairs: split -> [{prompt_ids, chosen_ids, rejected_ids}]."""
    schema = pa.schema([("id", pa.string()), ("source", pa.string()), ("split", pa.string()),
                        ("prompt_ids", pa.list_(pa.int32())), ("chosen_ids", pa.list_(pa.int32())),
                        ("rejected_ids", pa.list_(pa.int32()))])
    for split, rows in pairs.items():
        full = [{"id": f"{split}-{i}", "source": "synthetic", "split": split, **r} for i, r in enumerate(rows)]
        (root / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(full, schema), root / split / "part-0.parquet")
    (root / "manifest.json").write_text(json.dumps({"kind": "preference"}))
    return root


def rule_pairs(n: int, seed: int, length: int = 4) -> list[dict]:
    """A clear preference rule: after a random prompt, the chosen reply repeats one "good" token
    (id 5) and the rejected one repeats a "bad" token (id 6), with random filler mixed in."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = [USER, *[rng.randrange(10, VOCAB) for _ in range(rng.randrange(2, 5))], ASSISTANT]
        filler = [rng.randrange(10, VOCAB) for _ in range(length)]
        good = [5 if rng.random() < 0.5 else f for f in filler] + [5, END]
        bad = [6 if rng.random() < 0.5 else f for f in filler] + [6, END]
        rows.append({"prompt_ids": prompt, "chosen_ids": good, "rejected_ids": bad})
    return rows
