"""Mix: instruction data -> ChatML conversations, SFT and preference shards, and a pretraining stream mixed at a ratio.

    python -m jobs.mix_instructions --input ../shared/data/self-instruct/*.jsonl ../shared/data/hh-rlhf/*.jsonl.gz \\
        --pretrain runs/demo/upsample --output runs/demo/mix [--set mix.pretrain_ratio=0.05]
    spark-submit dist/submit.py mix_instructions --input ... --output ...

Inputs are JSONL files (plain or .gz) in any of the formats of `stages/chatml.py`, recognised per line.
Writes four folders under --output, each committed atomically:
    instructions/  one row per conversation (kept/rejected: bad_record, prompt_mismatch, contam_<benchmark>)
    sft/           packed SFT shards with loss masks (pipeline/chat_shards.py)
    preference/    prompt / chosen / rejected ids
    pretrain/      the --pretrain documents plus the SFT conversations as ChatML documents (source
                   `mix.pretrain_source`), repeated so they hold `mix.pretrain_ratio` of the tokens
                   (Qwen2 sec. 3.1 mixes instruction data into pretraining); without --pretrain, the
                   ChatML documents alone.
Instruction data is decontaminated against `[decontam] benchmarks` (drop mode) when `mix.decontam` is true.
"""

from __future__ import annotations

import dataclasses
from functools import reduce

from jobs.upsample import source_tokens, upsample
from pipeline import chat_shards, cli, io, runner
from pipeline.io import KEPT
from pipeline.spark import spark_session
from stages.chatml import EncodeChat, EncodePreference, ParseInstructions
from stages.decontam import Decontaminate, build_index
from stages.mixture import CountTokens, MixtureConfig, instruction_factor


def main(argv: list[str] | None = None) -> dict:
    parser = cli.stage_args("mix", __doc__.splitlines()[0])
    parser.add_argument("--pretrain", nargs="*", default=[], help="pretraining document stage folder(s) to mix into")
    args = parser.parse_args(argv)
    recipe = cli.load(args)
    config, rows = recipe.section("mix"), recipe.section("spark").arrow_batch_rows
    run_config = cli.run_config(recipe, args, "mix", "decontam")
    out = io.absolute(args.output)
    with spark_session("mix", recipe.section("spark"), args.master) as spark:
        convs = conversations(spark, args.input, recipe, rows).persist()
        results = {"instructions": io.write_split(convs, f"{out}/instructions", stage="instructions", config=run_config)}
        sft = runner.apply(convs.filter(f"{KEPT} AND kind = 'sft'"), EncodeChat(config), rows).persist()
        sft_stats = {"conversations": sft.count(), "too_long": sft.filter("drop_reason = 'too_long'").count()}
        results["sft"] = chat_shards.write_sft(sft.filter(KEPT), f"{out}/sft", config, run_config, sft_stats)
        pairs = runner.apply(convs.filter(f"{KEPT} AND kind = 'preference'"), EncodePreference(config), rows)
        results["preference"] = chat_shards.write_preference(pairs, f"{out}/preference", config, run_config, {})
        results["pretrain"] = pretrain_mix(spark, sft.filter(KEPT), args.pretrain, config, f"{out}/pretrain",
                                           run_config, rows)
        sft.unpersist()
        convs.unpersist()
    print(f"[mix] sft: {results['sft']['splits']['train']['conversations']} train conversations; preference: "
          f"{results['preference']['splits']['train']['rows']} train pairs; pretrain: {results['pretrain']['kept']} "
          f"documents; output: {out}")
    return results


def conversations(spark, inputs: list[str], recipe, rows: int):
    """JSONL lines -> judged conversations, decontaminated (drop mode) when the recipe says so."""
    config, dconfig = recipe.section("mix"), recipe.section("decontam")
    lines = spark.read.text(inputs).selectExpr("value AS line", "_metadata.file_path AS file")
    parsed = runner.apply(lines, ParseInstructions(config), rows)
    if not (config.decontam and dconfig.benchmarks):
        return parsed
    index = build_index(dconfig.benchmarks, dconfig.ngram, dconfig.min_short_words)
    stage = Decontaminate(dataclasses.replace(dconfig, mode="drop"), spark.sparkContext.broadcast(index))
    clean = runner.apply(parsed.filter(KEPT), stage, rows)
    return clean.unionByName(parsed.filter(f"NOT ({KEPT})"), allowMissingColumns=True)


def pretrain_mix(spark, sft, pretrain: list[str], config, output: str, run_config: dict, rows: int) -> dict:
    """Writes the pretraining stream with the ChatML documents at `pretrain_ratio` of the tokens."""
    chat = sft.selectExpr("id", "text", f"'{config.pretrain_source}' AS source")
    if not pretrain:
        return io.write_split(runner.apply(chat, CountTokens(), rows), output, stage="pretrain", config=run_config)
    base = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), [io.read_stage(spark, p) for p in pretrain])
    docs = runner.apply(base.unionByName(chat, allowMissingColumns=True), CountTokens(), rows).persist()
    tokens = source_tokens(docs)
    chat_tokens = tokens.pop(config.pretrain_source, 0)
    factor = instruction_factor(sum(tokens.values()), chat_tokens, config.pretrain_ratio)
    mixture = MixtureConfig(source_weights={config.pretrain_source: factor}, seed=config.seed)
    judged, report = upsample(docs, mixture, rows)
    stats = io.write_split(judged, output, stage="pretrain", config=run_config, extra=report)
    judged.unpersist()
    docs.unpersist()
    return stats


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
