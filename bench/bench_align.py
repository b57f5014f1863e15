"""Alignment step cost: our response-only log-probs (`training.align.base.sequence_logprob`, the lm_head run
only on the positions that predict response tokens) against the usual full-logits way (logits of every
position, log_softmax, gather, mask), for one DPO policy forward + backward on the same batch.

    python -m bench.bench_align --out runs/bench          # debug flavor (151,936-token vocabulary), CPU
    python -m bench.bench_align --pairs 16 --prompt 256 --response 128 --device cuda

Both sides are checked equal (summed log-probs within 1e-4) before timing; they alternate, so load
changes hit both. Reported: median seconds per step over --repeats, tokens/s, speed-up = full / ours.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # allow `python bench/bench_align.py`

from bench.data import timed  # noqa: E402
from training.align.base import concat_right_pad, sequence_logprob  # noqa: E402
from training.dist import pick_device  # noqa: E402
from training.model.flavors import FLAVORS  # noqa: E402
from training.model.qwen import Qwen  # noqa: E402


def full_logprob(model: Qwen, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The textbook way: [B, T, V] logits -> log_softmax -> gather -> masked sum."""
    logp = torch.log_softmax(model(ids).logits[:, :-1].float(), -1)          # [B, T-1, V]
    return (logp.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]).sum(1)


def make_batch(args, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    rows = 2 * args.pairs                                                      # chosen + rejected
    prompts = torch.randint(0, vocab, (rows, args.prompt), generator=gen).tolist()
    responses = torch.randint(0, vocab, (rows, args.response), generator=gen).tolist()
    return concat_right_pad(prompts, responses)


def run(args) -> dict:
    device = pick_device(args.device, 0)
    torch.manual_seed(0)
    model = Qwen(FLAVORS[args.flavor]).to(device).train()
    ids, mask = (t.to(device) for t in make_batch(args, model.cfg.vocab_size))
    with torch.no_grad():
        ours, full = sequence_logprob(model, ids, mask), full_logprob(model, ids, mask)
    assert torch.allclose(ours, full, atol=1e-4, rtol=1e-5), (ours, full)

    def step(fn):
        return lambda: (fn(model, ids, mask).sum().backward(), model.zero_grad(set_to_none=True))
    times = {"ours": [], "full": []}
    for i in range(args.warmup + args.repeats):
        for name, fn in (("ours", sequence_logprob), ("full", full_logprob)):
            t = timed(step(fn), device)
            if i >= args.warmup:
                times[name].append(t)
    tokens = ids.numel()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"flavor": args.flavor, "device": str(device), "pairs": args.pairs, "prompt": args.prompt,
            "response": args.response, "tokens": tokens, "seconds_ours": med["ours"], "seconds_full": med["full"],
            "tokens_per_s_ours": tokens / med["ours"], "tokens_per_s_full": tokens / med["full"],
            "speedup": med["full"] / med["ours"], "machine": platform.machine(), "threads": torch.get_num_threads()}


def markdown(r: dict) -> str:
    return (f"## Alignment: response-only log-probs vs full logits\n\n"
            f"DPO policy forward + backward, {r['flavor']} flavor, {r['pairs']} pairs (prompt {r['prompt']}, "
            f"response {r['response']} tokens), {r['device']}, {r['threads']} threads.\n\n"
            f"| | s / step | tokens/s |\n|---|---|---|\n"
            f"| ours (`sequence_logprob`) | {r['seconds_ours']:.3f} | {r['tokens_per_s_ours']:.0f} |\n"
            f"| full logits + log_softmax | {r['seconds_full']:.3f} | {r['tokens_per_s_full']:.0f} |\n\n"
            f"Speed-up: {r['speedup']:.2f}x (same values within 1e-4).\n")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="bench.bench_align", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--flavor", default="debug")
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--response", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "align.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "align.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
