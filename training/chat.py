"""ChatML chat with a checkpoint: one user turn per stdin line, the reply printed after it.

    echo "What is 2+2?" | python -m training.chat --checkpoint runs/ckpt/final
    python -m training.chat --checkpoint C --temperature 0.7 --top-p 0.8   # interactive
    python -m training.chat --checkpoint C --code-interpreter              # ReAct + sandboxed Python (training/interpreter.py)

Prompt format (Qwen ChatML): <|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n...<|im_end|>\\n
<|im_start|>assistant\\n; generation stops at <|im_end|> or <|endoftext|>. User text is encoded as plain
text, so a typed "<|im_end|>" cannot inject a turn boundary.
"""
from __future__ import annotations

import argparse
import sys

import torch

from training.model.checkpoint import load_model
from training.generate import SamplingConfig, generate
from stages.tokenize.tokenizer import load_encoding


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
    p.add_argument("--code-interpreter", action="store_true",
                   help="let the model run Python in the sandbox (ReAct steps; the trace goes to stderr)")
    p.add_argument("--max-tool-calls", type=int, default=5)
    p.add_argument("--tool-timeout", type=float, default=10.0, help="seconds per code run")
    args = p.parse_args(argv)
    enc, model = load_encoding(args.tiktoken), load_model(args.checkpoint).eval()
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, repetition_penalty=args.repetition_penalty)
    gen, turns = torch.Generator().manual_seed(args.seed), [("system", args.system)]

    def reply(messages: list[dict]) -> str:
        ids = generate(model, [chatml_ids(enc, [(m["role"], m["content"]) for m in messages])], sampling, generator=gen)[0]
        return enc.decode([t for t in ids if t not in sampling.stop_tokens])

    if args.code_interpreter:
        return code_interpreter_chat(reply, args)
    for line in sys.stdin:
        turns.append(("user", line.rstrip("\n")))
        reply = generate(model, [chatml_ids(enc, turns)], sampling, generator=gen)[0]
        text = enc.decode([t for t in reply if t not in sampling.stop_tokens])
        print(text, flush=True)
        turns.append(("assistant", text))


def code_interpreter_chat(reply, args) -> None:
    """One question per stdin line, answered through the code-interpreter loop."""
    from training.interpreter import final_answer, interpret

    for line in sys.stdin:
        messages = interpret(line.rstrip("\n"), reply, system=args.system, max_calls=args.max_tool_calls,
                             timeout=args.tool_timeout)
        for m in messages[1:]:
            print(f"[{m['role']}] {m['content']}", file=sys.stderr)
        print(final_answer(messages), flush=True)


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
