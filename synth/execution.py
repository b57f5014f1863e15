"""Execution feedback (Qwen2 sec. 4.1.2): k code solutions per problem, run against its tests in the sandbox.

    python -m synth.execution --model CKPT --input ../shared/data/humaneval/HumanEval.jsonl.gz \\
        --output runs/demo/synth/code [--set synth.samples=8 --set synth.timeout=5]
    spark-submit synth/execution.py --model ... --input ... --output ...

Input rows: `prompt` (or `question` / `text`) and tests as `tests` / `test` (a program; HumanEval's
`def check(candidate)` is called on `entry_point`) or `test_list` (MBPP's asserts). Each sample runs in
`common.sandbox` (separate process, timeout, no network, scratch directory); exceptions and timeouts
fail. Writes samples/, sft/ (passing samples) and preference/ (passing vs failing), like synth.rejection.
"""

from __future__ import annotations

from synth.engine import run_judged


def main(argv: list[str] | None = None) -> dict:
    return run_judged("execution", "code", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
