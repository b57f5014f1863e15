"""Helpers for the trainer tests: tiny packed shards written with pyarrow, and a tiny recipe."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

VOCAB, SEQ = 256, 16
SCHEMA = pa.schema([("split", pa.string()), ("source", pa.string()), ("input_ids", pa.list_(pa.int32())),
                    ("doc_starts", pa.list_(pa.int32())), ("n_tokens", pa.int32()), ("partial", pa.bool_())])


def pack(docs: list[list[int]], width: int) -> list[tuple[list[int], list[int]]]:
    """Greedy packing (independent of stages/tokenize/packing.py): rows of `width` tokens and their doc starts."""
    rows, ids, starts = [], [], []
    for doc in docs:
        pos = 0
        while pos < len(doc):
            starts.append(len(ids))
            take = doc[pos:pos + width - len(ids)]
            ids += take
            pos += len(take)
            if len(ids) == width:
                rows.append((ids, starts))
                ids, starts = [], []
    if ids:
        rows.append((ids, starts))
    return rows


def make_docs(n: int, seed: int) -> list[list[int]]:
    """Learnable documents: counting sequences mod VOCAB from a random start, ending in token 0."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        start, length = rng.randrange(1, VOCAB), rng.randrange(3, 30)
        docs.append([1 + (start + i) % (VOCAB - 1) for i in range(length)] + [0])
    return docs


def write_shards(root: Path, train_docs: int = 120, valid_docs: int = 12, seq_len: int = SEQ,
                 row_group_rows: int = 8, files: int = 2) -> Path:
    """<root>/{train,valid}/part-*.parquet + manifest.json, like jobs.tokenize writes."""
    width = seq_len + 1
    splits = {}
    for split, n, seed in (("train", train_docs, 1), ("valid", valid_docs, 2)):
        rows = pack(make_docs(n, seed), width)
        (root / split).mkdir(parents=True, exist_ok=True)
        per_file = -(-len(rows) // files)
        for f in range(files):
            chunk = rows[f * per_file:(f + 1) * per_file]
            table = pa.table({"split": [split] * len(chunk), "source": ["web"] * len(chunk),
                              "input_ids": [r[0] for r in chunk], "doc_starts": [r[1] for r in chunk],
                              "n_tokens": [len(r[0]) for r in chunk],
                              "partial": [len(r[0]) < width for r in chunk]}, schema=SCHEMA)
            pq.write_table(table, root / split / f"part-{f:05d}.zstd.parquet", row_group_size=row_group_rows,
                           compression="zstd")
        splits[split] = {"rows": len(rows), "tokens": sum(len(r[0]) for r in rows)}
    manifest = {"schema_version": 1, "tokenizer": {"name": "test", "vocab_size": VOCAB, "eos_id": 0},
                "seq_len": seq_len, "row_width": width, "splits": splits}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def recipe_args(shards: Path, out: Path, *sets: str) -> list[str]:
    """CLI arguments for a tiny fp32 CPU run (2 layers, hidden 32, vocab 256)."""
    base = ["model.overrides={vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, "
            "num_kv_heads=2, max_position_embeddings=64}",
            "train.device=\"cpu\"", "train.dtype=\"float32\"", "train.export_hf=false", "train.eval_every=0",
            "train.save_every=0", "data.eval_batch=4", "optim.lr=1e-2", "optim.warmup_steps=2",
            "train.micro_batch_size=2", "train.grad_accum_steps=2", "train.steps=20", "data.eval_rows=0"]
    argv = ["--recipe", str(Path(__file__).resolve().parents[2] / "training/recipes/demo.toml"),
            "--data", str(shards), "--out", str(out)]
    for s in base + list(sets):
        argv += ["--set", s]
    return argv
