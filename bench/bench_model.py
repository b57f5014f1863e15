"""Benchmark our model against transformers on this machine: one training step (forward + backward)
of a dense Qwen2, and one MoE layer (forward + backward) against Qwen2MoeSparseMoeBlock.

    python -m bench.bench_model                       # Markdown table + runs/bench/model.json
    python bench/bench_model.py --repeats 3 --threads 1 --out /tmp/model.json

Both sides get the same weights and inputs (checked equal before timing), fp32, SDPA attention.
Times are the median of --repeats runs after --warmup runs; ratio = transformers / ours (> 1: we are faster).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # allow `python bench/bench_model.py`

from training.model.hf import from_pretrained  # noqa: E402
from training.model.moe import SparseMoE  # noqa: E402

DENSE = dict(vocab_size=32768, hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=4096)
# Routing of Qwen1.5-MoE-A2.7B (60 experts, top-4) and Qwen2-57B-A14B (64 experts, top-8), narrower layers.
MOE = dict(hidden_size=512, moe_intermediate_size=256, shared_expert_intermediate_size=1024, norm_topk_prob=False)
MOE_ROUTING = [(16, 2), (60, 4), (64, 8)]


def timeit(steps: list, warmup: int, repeats: int) -> list[float]:
    """Median seconds per step; steps alternate within each repeat so load changes hit both sides."""
    for _ in range(warmup):
        for step in steps:
            step()
    times = [[] for _ in steps]
    for _ in range(repeats):
        for step, out in zip(steps, times):
            start = time.perf_counter()
            step()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def train_step(model, ids):
    def step():
        model.zero_grad(set_to_none=True)
        logits = model(ids).logits                                       # [B, T, V]
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
    return step


def bench_dense(batch: int, seq: int, warmup: int, repeats: int) -> dict:
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(Qwen2Config(**DENSE, attn_implementation="sdpa"), dtype=torch.float32)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = from_pretrained(d)
    ids = torch.randint(0, DENSE["vocab_size"], (batch, seq))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max() < 1e-3
    hf.train(), ours.train()
    t_hf, t_ours = timeit([train_step(hf, ids), train_step(ours, ids)], warmup, repeats)
    return dict(name=f"dense fwd+bwd {batch}x{seq}, {ours.num_params() / 1e6:.1f}M params",
                transformers_s=t_hf, ours_s=t_ours, ratio=t_hf / t_ours)


def moe_pair(num_experts: int, top_k: int):
    from transformers import Qwen2MoeConfig
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock

    torch.manual_seed(0)
    cfg = Qwen2MoeConfig(**MOE, num_experts=num_experts, num_experts_per_tok=top_k)
    hf = Qwen2MoeSparseMoeBlock(cfg)
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.05)
    ours = SparseMoE(cfg.hidden_size, num_experts, top_k, cfg.moe_intermediate_size,
                     cfg.shared_expert_intermediate_size, cfg.norm_topk_prob)
    ours.load_state_dict(hf.state_dict())   # same names and stacked shapes as transformers 5
    return hf, ours


def bench_moe(num_experts: int, top_k: int, batch: int, seq: int, warmup: int, repeats: int) -> dict:
    hf, ours = moe_pair(num_experts, top_k)
    x = torch.randn(batch, seq, MOE["hidden_size"])
    with torch.no_grad():
        assert (hf(x) - ours(x)[0]).abs().max() < 1e-4

    def step(fn):
        def run():
            xg = x.clone().requires_grad_(True)
            fn(xg).sum().backward()
        return run
    t_hf, t_ours = timeit([step(hf), step(lambda t: ours(t)[0])], warmup, repeats)
    # matmul work both sides must do: 3 (fwd + 2 bwd) x 2 flops x tokens x H x (routed + shared widths)
    flops = 6 * batch * seq * MOE["hidden_size"] * (3 * top_k * MOE["moe_intermediate_size"]
                                                     + 3 * MOE["shared_expert_intermediate_size"] + num_experts)
    return dict(name=f"MoE layer fwd+bwd {batch}x{seq}, {num_experts} experts top-{top_k}",
                transformers_s=t_hf, ours_s=t_ours, ratio=t_hf / t_ours, ours_gflops=flops / t_ours / 1e9)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="runs/bench", help="folder for model.json and model.md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    rows = [bench_dense(args.batch, args.seq, args.warmup, args.repeats)]
    rows += [bench_moe(e, k, args.batch, args.seq, args.warmup, args.repeats) for e, k in MOE_ROUTING]
    table = ["### Model: one forward+backward step on this CPU (fp32, median, same weights and batch)", "",
             "| benchmark | transformers (s) | ours (s) | speed-up | ours GFLOP/s |", "|---|---|---|---|---|"]
    for r in rows:
        gflops = f"{r['ours_gflops']:.0f}" if "ours_gflops" in r else "-"
        table.append(f"| {r['name']} | {r['transformers_s']:.4f} | {r['ours_s']:.4f} | {r['ratio']:.2f}x | {gflops} |")
    print("\n".join(table))
    meta = dict(torch=torch.__version__, transformers=transformers.__version__, threads=torch.get_num_threads(),
                machine=platform.machine(), processor=platform.processor(), args=vars(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(json.dumps(dict(meta=meta, results=rows), indent=2) + "\n")
    (out / "model.md").write_text("\n".join(table) + "\n")
    print(f"wrote {out / 'model.json'}")


if __name__ == "__main__":
    main()
