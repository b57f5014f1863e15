"""Instruction evolution (Evol-Instruct, Xu et al. 2023; Qwen2 sec. 4.1.1): a model rewrites each
instruction one step harder, the rewrite is checked, and the model's answer to it becomes SFT data.

    python -m synth.evolve --model CKPT --input runs/demo/synth/select --output runs/demo/synth/evolve \\
        [--set 'synth.evolve_methods=["constraints","deepen"]']
    spark-submit synth/evolve.py --model ... --input ... --output ...

Input rows: `instruction` (or `prompt` / `question` / `text`), `id` optional. Each row gets one method
(`synth.evolve_methods`, chosen by a hash of its id), the prompt of `stages.synthesis.evolve_prompt`,
and one sampled rewrite; rewrites failing WizardLM's elimination checks are rejected with the reason
(too_short, apology, template_leak, unchanged). Writes under --output:
    instructions/  kept / rejected evolved instructions (`instruction`, `original`, `method`); rerun the job
                   on this folder to evolve again
    sft/           evolved instruction + the model's answer, as SFT shards (pipeline/chat_shards.py)
At toy scale the model is tiny, so only the format of its output is checked; quality needs a real model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from pipeline import cli, io, runner
from pipeline.io import KEPT
from pipeline.spark import spark_session
from stages import synthesis
from stages.base import Doc, drop, keep
from stages.chatml import MESSAGES, with_system
from synth.engine import CONV_SCHEMA, ModelStage, flat_map, job_args, model_kwargs, read_prompts, write_sft


class Evolve(ModelStage):
    name = "evolve"
    adds = (pa.field("id", pa.string()), pa.field("method", pa.string()), pa.field("original", pa.string()),
            pa.field("instruction", pa.string()), pa.field("messages", MESSAGES))
    drops = ("prompt", "question", "text")

    def ask(self, text: str) -> list[dict]:
        return with_system([{"role": "user", "content": text}], self.config.system_prompt)

    def process(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        cfg = self.config
        for chunk in self.chunks(docs):
            originals = [synthesis.problem_text(d) for d in chunk]
            methods = [synthesis.method_for(d["id"], cfg.evolve_methods) for d in chunk]
            outs = self.sampler([self.ask(synthesis.evolve_prompt(t, m)) for t, m in zip(originals, methods)], 1)
            parsed = [synthesis.parse_evolved(o[0], t, cfg.min_evolved_words) for o, t in zip(outs, originals)]
            good = [e for e, _ in parsed if e]
            replies = iter(self.sampler([self.ask(e) for e in good], 1) if good else [])
            for doc, text, method, out, (evolved, why) in zip(chunk, originals, methods, outs, parsed):
                base = {k: v for k, v in doc.items() if k not in self.drops}
                row = {**base, "id": f"{doc['id']}.{method}", "method": method, "original": text,
                       "instruction": evolved, "messages": None}
                if evolved:
                    row["messages"] = [*self.ask(evolved), {"role": "assistant", "content": next(replies)[0]}]
                yield keep(row) if why is None else drop(row, why, out[0][:200])  # the raw output, to see why


def main(argv: list[str] | None = None) -> dict:
    args = job_args("evolve", __doc__.splitlines()[0]).parse_args(argv)
    recipe = cli.load(args)
    config, rows = recipe.section("synth"), recipe.section("spark").arrow_batch_rows
    run_config = cli.run_config(recipe, args, "synth")
    out = io.absolute(args.output)
    with spark_session("evolve", recipe.section("spark"), args.master) as spark:
        stage = Evolve(args.model, config, **model_kwargs(args))
        evolved = runner.apply(read_prompts(spark, args.input, args.limit), stage, max(1, config.batch_size)).persist()
        stats = {"instructions": io.write_split(evolved, f"{out}/instructions", stage="evolve", config=run_config)}
        convs = flat_map(evolved.filter(KEPT), lambda r: [{"id": r["id"], "source": "synth-evolve",
                                                          "messages": r["messages"]}], CONV_SCHEMA)
        stats["sft"] = write_sft(convs, f"{out}/sft", config, run_config, rows)
        evolved.unpersist()
    s = stats["instructions"]
    print(f"[evolve] {s['docs_in']} instructions -> {s['kept']} evolved ({s['by_reason'] or 'none rejected'}); "
          f"output: {out}")
    return stats


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
