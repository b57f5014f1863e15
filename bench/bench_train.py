"""Trainer throughput: training tokens/s of `training.train` against a plain `transformers` training step
of the same model config, weights and batch on this machine.

    python -m bench.bench_train --out runs/bench        # also run by `make bench`
    python -m bench.bench_train --flavor qwen2-0.5b --seq 2048 --batch 4 --device cuda --dtype bfloat16

Ours: `Trainer.train_step` (Parquet shard loader, document-masked forward, loss, backward, clipping,
AdamW, schedule) on shards written to a temporary folder. Transformers: `Qwen2ForCausalLM` (SDPA) loaded
from our initial weights, forward, the same cross-entropy, backward, clipping, `torch.optim.AdamW`.
Rows hold one document each, so both compute the same thing; the first step's losses are checked
equal before timing. Reported: median step time over --repeats steps (the two sides alternate, so load
changes hit both), tokens/s, ratio = ours / transformers (> 1: we are faster), MFU where the peak is known.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # allow `python bench/bench_train.py`

from bench.data import timed  # noqa: E402
from training import dist  # noqa: E402
from training.data import IGNORE, ShardData, StepLoader  # noqa: E402
from training.metrics import flops_per_token, peak_flops  # noqa: E402
from common.recipe import Recipe  # noqa: E402
from training.cli import load_recipe  # noqa: E402
from training.loop import Trainer  # noqa: E402
from training.train import SECTIONS, Pretraining  # noqa: E402

# bench_model.py's dense config: a 39M-parameter Qwen2 (8 layers, hidden 512) with a 32k vocabulary.
SMALL = ("model.overrides={vocab_size=32768, hidden_size=512, intermediate_size=1408, num_layers=8, num_heads=8, "
         "num_kv_heads=2, max_position_embeddings=4096}")


def write_shards(root: Path, rows: int, seq: int, vocab: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (rows, seq + 1), generator=gen).int().tolist()
    table = pa.table({"split": ["train"] * rows, "source": ["bench"] * rows, "input_ids": ids,
                      "doc_starts": [[0]] * rows, "n_tokens": [seq + 1] * rows, "partial": [False] * rows},
                     schema=pa.schema([("split", pa.string()), ("source", pa.string()),
                                       ("input_ids", pa.list_(pa.int32())), ("doc_starts", pa.list_(pa.int32())),
                                       ("n_tokens", pa.int32()), ("partial", pa.bool_())]))
    (root / "train").mkdir(parents=True)
    pq.write_table(table, root / "train" / "part-0.parquet", row_group_size=64)
    manifest = {"seq_len": seq, "row_width": seq + 1, "tokenizer": {"vocab_size": vocab}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def make_recipe(args, shards: Path) -> Recipe:
    sets = [f'data.root="{shards}"', "data.shuffle=false", f"train.micro_batch_size={args.batch}",
            "train.grad_accum_steps=1", f'train.device="{args.device}"', f'train.dtype="{args.dtype}"',
            f"train.compile={str(args.compile).lower()}", "optim.warmup_steps=0", "optim.lr=1e-4"]
    sets.append(f'model.flavor="{args.flavor}"' if args.flavor else SMALL)
    return load_recipe(None, SECTIONS, sets)


def hf_side(trainer: Trainer, args):
    """A transformers model with our initial weights and a plain training step on the same batches."""
    from transformers import AutoModelForCausalLM

    from training.model.hf import save_pretrained

    with tempfile.TemporaryDirectory() as d:
        save_pretrained(trainer.raw, d)
        hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa")
    hf.to(trainer.env.device).train()
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=trainer.env.device.type == "cuda" or None)
    loader = StepLoader(ShardData(args.shards, "train"), args.batch, 1, shuffle=False)
    autocast = trainer.bf16

    def step() -> float:
        batch = loader.next_step()[0].to(trainer.env.device)
        with torch.autocast(trainer.env.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = hf(batch.input_ids).logits                                  # [B, T, V]
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())
    return step


def run(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp, dist.distributed(args.device) as env:
        args.shards = write_shards(Path(tmp) / "shards", args.batch * (args.warmup + args.repeats + 2), args.seq,
                                   args.vocab)
        recipe = make_recipe(args, args.shards)
        torch.manual_seed(recipe.train.seed)
        trainer = Trainer(Pretraining(recipe, env), recipe, env, Path(tmp) / "out")
        trainer.setup(resume=False)
        hf_step = None if args.no_hf else hf_side(trainer, args)
        step = lambda: trainer.phase.train_step(trainer, 0)
        first = step()["loss"]
        if hf_step:
            hf_first = hf_step()
            assert abs(first - hf_first) < (1e-2 if trainer.bf16 else 1e-4), (first, hf_first)
        ours, theirs = [], []
        for i in range(args.warmup + args.repeats):
            t_ours = timed(step, env.device)
            t_hf = timed(hf_step, env.device) if hf_step else float("nan")
            if i >= args.warmup:
                ours.append(t_ours)
                theirs.append(t_hf)
        return summarize(trainer, args, statistics.median(ours), statistics.median(theirs) if hf_step else None)


def summarize(trainer: Trainer, args, t_ours: float, t_hf: float | None) -> dict:
    tokens = args.batch * args.seq
    cfg = trainer.phase.cfg
    fpt = flops_per_token(trainer.raw.num_params(), 0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size,
                          cfg.num_layers, cfg.hidden_size, args.seq)
    peak = peak_flops(trainer.env.device)
    return dict(name=f"{args.flavor or 'qwen2 8x512'} ({trainer.raw.num_params() / 1e6:.1f}M params), batch "
                     f"{args.batch}x{args.seq}, {args.dtype}, {trainer.env.device.type}",
                ours_s=t_ours, ours_tokens_per_s=tokens / t_ours,
                transformers_s=t_hf, transformers_tokens_per_s=tokens / t_hf if t_hf else None,
                ratio=t_hf / t_ours if t_hf else None,
                mfu=fpt * tokens / t_ours / peak if peak else None)


def markdown(r: dict) -> str:
    hf = f"{r['transformers_tokens_per_s']:.0f}" if r["transformers_s"] else "-"
    ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "- (peak unknown)"
    return "\n".join(["### Trainer: training tokens/s, ours vs a plain transformers step (median step)", "",
                      "| config | ours tok/s | transformers tok/s | ours / transformers | MFU |",
                      "|---|---|---|---|---|",
                      f"| {r['name']} | {r['ours_tokens_per_s']:.0f} | {hf} | {ratio} | {mfu} |",
                      ""])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="bench.bench_train", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--flavor", default="", help="a FLAVORS name (default: bench_model's 30M config)")
    p.add_argument("--vocab", type=int, default=32768, help="token ids drawn below this")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 (autocast)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no-hf", action="store_true", help="time ours only")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    result = run(args)
    meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                args={k: str(v) for k, v in vars(args).items()})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(dict(meta=meta, result=result), indent=2) + "\n")
    (out / "train.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
