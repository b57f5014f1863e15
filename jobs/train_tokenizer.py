"""Train tokenizer: a custom byte-level BPE (Qwen's pre-tokenization, digits split) on a stage's text.

    python -m jobs.train_tokenizer --input runs/demo/dedup --output runs/demo/tokenizer \
        [--set train_tokenizer.vocab_size=16000]

A seeded sample of up to `max_docs` documents comes to the driver (BPE training runs on one machine);
`held_out` of them are kept aside to compare compression (bytes per token) with the real Qwen tokenizer.
Writes `tokenizer.json` (loadable with `tokenizers.Tokenizer.from_file`) and `report.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import cli, io
from pipeline.spark import spark_session
from stages.tokenize.bpe import bytes_per_token, train_bpe
from stages.tokenize.tokenizer import QwenTokenizer


def sample_texts(spark, path: str, config) -> tuple[list[str], list[str]]:
    """(train, held-out) texts: a seeded sample of the stage, split by a hash of the id."""
    docs = io.read_stage(spark, path).select("id", "text")
    total = docs.count()
    if total > config.max_docs:
        docs = docs.sample(fraction=config.max_docs / total, seed=config.seed)
    rows = sorted(docs.selectExpr("id", "text", f"pmod(xxhash64(id, {config.seed}), 10000) AS h").collect())
    cut = config.held_out * 10000
    return [r["text"] for r in rows if r["h"] >= cut], [r["text"] for r in rows if r["h"] < cut]


def main(argv: list[str] | None = None) -> dict:
    args = cli.stage_args("train_tokenizer", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    config = recipe.section("train_tokenizer")
    with spark_session("train_tokenizer", recipe.section("spark"), args.master) as spark:
        train, held = sample_texts(spark, args.input[0], config)
    tok = train_bpe(train, config)
    qwen = QwenTokenizer().encoding.encode_ordinary
    report = {"train_docs": len(train), "held_out_docs": len(held), "vocab_size": tok.get_vocab_size(),
              "bytes_per_token": round(bytes_per_token(held, lambda t: tok.encode(t).ids), 4),
              "qwen_bytes_per_token": round(bytes_per_token(held, qwen), 4), "config": cli.run_config(recipe, args, "train_tokenizer")}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json.partial"))
    (out / "tokenizer.json.partial").replace(out / "tokenizer.json")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"[train_tokenizer] vocab {report['vocab_size']}: {report['bytes_per_token']} bytes/token on held-out text "
          f"(Qwen: {report['qwen_bytes_per_token']}); output: {out}")
    return report


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
