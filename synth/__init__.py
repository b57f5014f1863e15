"""Automated alignment-data synthesis (Qwen2 report, sec. 4.1): Spark jobs that run a model.

    python -m synth.rejection --model runs/demo/train/final --input ../shared/data/gsm8k/train.jsonl \\
        --output runs/demo/synth/math [--set synth.samples=8]
    python -m synth.execution --model CKPT --input problems.parquet --output runs/demo/synth/code
    python -m synth.evolve    --model CKPT --input instructions.parquet --output runs/demo/synth/evolve
    python -m synth.select    --input instructions.parquet --output runs/demo/synth/select

This layer may import pipeline/, stages/ and training/ (and pyspark and torch); the pure logic is in
stages/synthesis.py and common/sandbox.py, the shared Spark/model plumbing in synth/engine.py.
SFT and preference outputs use the layout of pipeline/chat_shards.py, so the alignment trainers read them.
"""
