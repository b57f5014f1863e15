"""Rejection sampling (Qwen2 sec. 4.1.2): k samples per math problem; keep those whose final answer matches.

    python -m synth.rejection --model runs/demo/train/final --input ../shared/data/gsm8k/train.jsonl \\
        --output runs/demo/synth/math [--set synth.samples=8 --set synth.temperature=0.7]
    spark-submit synth/rejection.py --model ... --input ... --output ...

Input rows (Parquet, a stage folder or JSON lines): `question` or `prompt`, and `answer` (a bare answer
or a GSM8K solution ending in `#### N`); `id` optional. `--model` is our checkpoint folder or a Hugging
Face Qwen2 directory, loaded once per executor. Writes under --output, each folder committed atomically:
    samples/     kept (problems with a correct sample) / rejected (no_good_sample): samples, verdicts
    sft/         the correct samples as SFT shards (pipeline/chat_shards.py layout)
    preference/  one (correct, incorrect) pair per problem where both exist, for DPO
"""

from __future__ import annotations

from synth.engine import run_judged


def main(argv: list[str] | None = None) -> dict:
    return run_judged("rejection", "math", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
