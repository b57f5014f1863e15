"""What the synthesis jobs share: a model loaded once per executor, a sampler on it, the stages that
sample and judge, and the writers of SFT / preference shards in the layout of `pipeline/chat_shards.py`.

Jobs: synth/rejection.py (math), synth/execution.py (code), synth/evolve.py, synth/select.py.

The model is a checkpoint folder of ours (`model_config.json`, `training.model.checkpoint.save_model`) or a
Hugging Face Qwen2 directory (`config.json`, loaded by `training.model.hf.from_pretrained`). Stage objects
carry only its path; the first batch on an executor loads it into the module-level `_MODELS` cache,
which Spark's reused Python workers keep for every later task.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import pyarrow as pa

from pipeline import chat_shards, cli, io, runner, schemas
from pipeline.io import KEPT
from stages import synthesis
from stages.base import Doc, Stage, drop, keep
from stages.chatml import MESSAGES, EncodeChat, EncodePreference, MixConfig, encode_chat
from stages.synthesis import Message, SynthConfig
from stages.tokenize.tokenizer import IM_START_ID, QwenTokenizer

_MODELS: dict[tuple, object] = {}


# ---------------------------------------------------------------- the model on an executor


def resolve_device(device: str) -> str:
    import torch

    if device in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_checkpoint(path: str, device: str = "auto", dtype: str = "") -> object:
    """Our checkpoint or an HF Qwen2 directory, loaded once per process (cached by path, device, dtype)."""
    import torch

    from training.model import checkpoint, hf

    key = (os.path.abspath(path), resolve_device(device), dtype)
    if key not in _MODELS:
        torch_dtype = getattr(torch, dtype) if dtype else None
        folder = Path(path)
        if (folder / checkpoint.CONFIG).exists():
            model = checkpoint.load_model(folder, torch_dtype)
        elif (folder / "config.json").exists():
            model = hf.from_pretrained(folder, torch_dtype)
        else:
            raise FileNotFoundError(f"{path}: neither {checkpoint.CONFIG} (ours) nor config.json (Hugging Face)")
        _MODELS[key] = model.to(key[1]).eval()
    return _MODELS[key]


class ModelSampler:
    """A `stages.synthesis.Sampler` on a Qwen model: ChatML prompts, k samples each, decoded replies."""

    def __init__(self, model, config: SynthConfig, tokenizer: QwenTokenizer):
        self.model, self.config, self.tok = model, config, tokenizer

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        ids, _ = encode_chat(messages, self.tok)
        return [*ids, IM_START_ID, *self.tok.encoding.encode_ordinary("assistant\n")]

    def __call__(self, convs: list[list[Message]], k: int) -> list[list[str]]:
        import torch

        from training.generate import SamplingConfig, generate

        cfg = SamplingConfig(max_new_tokens=self.config.max_new_tokens, temperature=self.config.temperature,
                             top_p=self.config.top_p)
        prompts = [self.prompt_ids(c) for c in convs for _ in range(k)]
        device = next(self.model.parameters()).device
        digest = hashlib.sha1(repr((self.config.seed, convs)).encode()).digest()  # same batch, same samples
        generator = torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        out = generate(self.model, prompts, cfg, generator=generator)
        texts = [self.tok.decode([t for t in row if t not in cfg.stop_tokens]) for row in out]
        return [texts[i * k:(i + 1) * k] for i in range(len(convs))]


class ModelStage(Stage):
    """A stage that needs the model: it holds the path and builds the sampler on first use."""

    def __init__(self, model_path: str, config: SynthConfig, device: str = "auto", dtype: str = "",
                 threads: int = 0):
        self.model_path, self.config, self.device, self.dtype, self.threads = model_path, config, device, dtype, threads
        self.tokenizer = QwenTokenizer(config.tokenizer or None)  # its path resolved here, on the driver
        self._sampler = None

    def __getstate__(self):
        return {**self.__dict__, "_sampler": None}  # ship the path, never the weights

    @property
    def sampler(self) -> ModelSampler:
        if self._sampler is None:
            if self.threads:
                import torch

                torch.set_num_threads(self.threads)
            model = load_checkpoint(self.model_path, self.device, self.dtype)
            self._sampler = ModelSampler(model, self.config, self.tokenizer)
        return self._sampler

    def chunks(self, docs: Iterable[Doc]) -> Iterator[list[Doc]]:
        it = iter(docs)
        while chunk := list(islice(it, max(1, self.config.batch_size))):
            yield chunk


# ---------------------------------------------------------------- sample and judge

RESULT_FIELDS = (pa.field("messages", MESSAGES), pa.field("samples", pa.list_(pa.string())),
                 pa.field("verdicts", pa.list_(pa.bool_())), pa.field("kept", pa.list_(pa.string())),
                 pa.field("chosen", pa.list_(pa.string())), pa.field("rejected", pa.list_(pa.string())),
                 pa.field("n_kept", pa.int32()))


class Synthesize(ModelStage):
    """Problems -> k samples each, judged (math answers or sandboxed tests); rejected when none is good."""

    name = "synthesize"
    adds = (pa.field("id", pa.string()), *RESULT_FIELDS)

    def __init__(self, kind: str, model_path: str, config: SynthConfig, **kw):
        super().__init__(model_path, config, **kw)
        self.kind = kind

    def process(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        for chunk in self.chunks(docs):
            for row, res in zip(chunk, synthesis.synthesize(chunk, self.sampler, self.kind, self.config)):
                yield self.result_row(row, res)

    def result_row(self, row: Doc, res: dict) -> Doc:
        out = {**row, "id": res["id"], "messages": res["messages"], "samples": res["samples"],
               "verdicts": res["verdicts"], "kept": res["kept"], "chosen": [c for c, _ in res["pairs"]],
               "rejected": [r for _, r in res["pairs"]], "n_kept": len(res["kept"])}
        if res["kept"]:
            return keep(out)
        return drop(out, "no_good_sample", f"0 of {len(res['samples'])} samples passed")


# ---------------------------------------------------------------- flattening and shards

CONV_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("source", pa.string()),
                         pa.field("messages", MESSAGES)])
PAIR_SCHEMA = pa.schema([*CONV_SCHEMA, pa.field("chosen", pa.string()), pa.field("rejected", pa.string())])


def flat_map(df, fn, schema: pa.Schema):
    """Each row -> any number of rows (dicts in `schema`), through Arrow."""
    def run(batches):
        for batch in batches:
            rows = [out for row in batch.to_pylist() for out in fn(row)]
            yield pa.RecordBatch.from_pylist(rows, schema=schema)
    return df.mapInArrow(run, schemas.spark(schema))


def to_conversations(results, source: str):
    """Kept samples -> SFT conversations (problem + sample as the assistant turn)."""
    def fn(row):
        res = {"id": row["id"], "messages": row["messages"], "kept": row["kept"]}
        return [{**r, "source": source} for r in synthesis.sft_rows(res)]
    return flat_map(results, fn, CONV_SCHEMA)


def to_pairs(results, source: str):
    """(chosen, rejected) samples -> preference rows."""
    def fn(row):
        res = {"id": row["id"], "messages": row["messages"], "pairs": list(zip(row["chosen"], row["rejected"]))}
        return [{**r, "source": source} for r in synthesis.pair_rows(res)]
    return flat_map(results, fn, PAIR_SCHEMA)


def mix_config(config: SynthConfig) -> MixConfig:
    """The chat-shard settings of a synthesis run (system prompt, sequence length, valid split, tokenizer)."""
    return MixConfig(system_prompt=config.system_prompt, seq_len=config.seq_len, valid_fraction=config.valid_fraction,
                     seed=config.seed, tokenizer=config.tokenizer, decontam=False)


def write_sft(convs, output: str, config: SynthConfig, run_config: dict, rows: int) -> dict:
    mix = mix_config(config)
    encoded = runner.apply(convs, EncodeChat(mix), rows).persist()
    stats = {"conversations": encoded.count(), "too_long": encoded.filter("drop_reason = 'too_long'").count()}
    manifest = chat_shards.write_sft(encoded.filter(KEPT), output, mix, run_config, stats)
    encoded.unpersist()
    return manifest


def write_preference(pairs, output: str, config: SynthConfig, run_config: dict, rows: int) -> dict:
    mix = mix_config(config)
    encoded = runner.apply(pairs, EncodePreference(mix), rows)
    return chat_shards.write_preference(encoded, output, mix, run_config, {})


# ---------------------------------------------------------------- inputs and the common job


def read_prompts(spark, inputs: list[str], limit: int = 0):
    """Parquet files / a stage folder (its kept rows), or JSON lines (.jsonl, .json, .jsonl.gz); adds a
    stable `id` (task_id, else a hash of the prompt) when the rows have none; the first `limit` rows
    when limit > 0 (toy runs)."""
    from pyspark.sql import functions as F

    jsonl = all(p.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")) for p in inputs)
    df = spark.read.json(inputs) if jsonl else io.read_stage(spark, inputs[0]) if len(inputs) == 1 \
        else spark.read.parquet(*inputs)
    if "id" not in df.columns:
        text = next(c for c in ("task_id", "prompt", "question", "instruction", "text") if c in df.columns)
        df = df.withColumn("id", F.col(text) if text == "task_id" else F.substring(F.sha1(F.col(text)), 1, 16))
    df = df.drop("drop_reason", "drop_detail")
    return df.limit(limit) if limit > 0 else df


def job_args(name: str, description: str, model: bool = True):
    parser = cli.stage_args(name, description, package="synth")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N input rows (0: all)")
    if model:
        parser.add_argument("--model", required=True, help="checkpoint folder (ours) or Hugging Face Qwen2 directory")
        parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: cuda when available)")
        parser.add_argument("--dtype", default="", help="e.g. bfloat16 (default: as saved)")
        parser.add_argument("--threads", type=int, default=0, help="torch threads per executor task (0: default)")
    return parser


def model_kwargs(args) -> dict:
    return {"device": args.device, "dtype": args.dtype, "threads": args.threads}


def run_judged(name: str, kind: str, description: str, argv: list[str] | None) -> dict:
    """The rejection-sampling / execution-feedback job: problems -> samples/, sft/, preference/."""
    from pipeline.spark import spark_session

    args = job_args(name, description).parse_args(argv)
    recipe = cli.load(args)
    config, rows = recipe.section("synth"), recipe.section("spark").arrow_batch_rows
    run_config = cli.run_config(recipe, args, "synth")
    out, source = io.absolute(args.output), f"synth-{kind}"
    with spark_session(name, recipe.section("spark"), args.master) as spark:
        stage = Synthesize(kind, args.model, config, **model_kwargs(args))
        results = runner.apply(read_prompts(spark, args.input, args.limit), stage, max(1, config.batch_size)).persist()
        stats = {"samples": io.write_split(results, f"{out}/samples", stage=name, config=run_config)}
        kept = results.filter(KEPT)
        stats["sft"] = write_sft(to_conversations(kept, source), f"{out}/sft", config, run_config, rows)
        stats["preference"] = write_preference(to_pairs(kept, source), f"{out}/preference", config, run_config, rows)
        results.unpersist()
    s = stats["samples"]
    print(f"[{name}] {s['docs_in']} problems, {s['kept']} with a good sample; sft: "
          f"{stats['sft']['splits']['train']['conversations']} train conversations; preference: "
          f"{stats['preference']['splits']['train']['rows']} train pairs; output: {out}")
    return stats
