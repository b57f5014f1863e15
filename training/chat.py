"""ChatML chat with a checkpoint: one user turn per stdin line, the reply printed after it.

    echo "What is 2+2?" | python -m training.chat --checkpoint runs/ckpt/final
    python -m training.chat --checkpoint C --temperature 0.7 --top-p 0.8   # interactive

Prompt format (Qwen ChatML): <|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n...<|im_end|>\\n
<|im_start|>assistant\\n; generation stops at <|im_end|> or <|endoftext|>. User text is encoded as plain
text, so a typed "<|im_end|>" cannot inject a turn boundary.
"""
from __future__ import annotations

import argparse
import sys

import torch

from training.checkpoint import load_model
from training.generate import SamplingConfig, generate
from stages.tokenizer import load_encoding


def chatml_ids(enc, turns: list[tuple[str, str]]) -> list[int]:
    """turns [(role, text)] -> ids ending with an open assistant turn."""
    start, end, nl = enc.encode_single_token("<|im_start|>"), enc.encode_single_token("<|im_end|>"), enc.encode("\n")
    ids = []
    for role, text in turns:
        ids += [start] + enc.encode(f"{role}\n") + enc.encode(text, disallowed_special=()) + [end] + nl
    return ids + [start] + enc.encode("assistant\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.chat", description="ChatML chat over stdin lines")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--system", default="You are a helpful assistant.")
    p.add_argument("--tiktoken", default=None, help="BPE ranks file (default $QWEN_TIKTOKEN or assets/qwen.tiktoken)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    enc, model = load_encoding(args.tiktoken), load_model(args.checkpoint).eval()
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, repetition_penalty=args.repetition_penalty)
    gen, turns = torch.Generator().manual_seed(args.seed), [("system", args.system)]
    for line in sys.stdin:
        turns.append(("user", line.rstrip("\n")))
        reply = generate(model, [chatml_ids(enc, turns)], sampling, generator=gen)[0]
        text = enc.decode([t for t in reply if t not in sampling.stop_tokens])
        print(text, flush=True)
        turns.append(("assistant", text))


if __name__ == "__main__":
    main()
