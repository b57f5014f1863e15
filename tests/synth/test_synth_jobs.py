"""The synthesis jobs through Spark with real tiny checkpoints and the real Qwen tokenizer.

The checkpoints are debug-flavor Qwens whose weights are set by hand so that the next token depends only
on the current one (attention and MLP outputs zeroed; embeddings one-hot; lm_head rows pointing at the
successor): a tiny "bigram" model whose every possible output is known, with a 50/50 branch where a
right and a wrong answer part. So the test knows, for each sample the job draws, whether it is correct.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from stages.chatml import render
from stages.synthesis import MATH_ASK, SynthConfig
from stages.tokenize.tokenizer import IM_END_ID, QwenTokenizer
from training.model.checkpoint import save_model
from training.model.flavors import FLAVORS
from training.model.qwen import Qwen

SYSTEM = SynthConfig().system_prompt


@pytest.fixture(scope="module")
def tok():
    return QwenTokenizer()


def bigram_model(tok, texts: list[str]) -> Qwen:
    """A Qwen that, after "\\n" (the end of every ChatML generation prompt), writes one of `texts`
    (they must share a prefix and branch at one token, with each other token having one successor)."""
    cfg = dataclasses.replace(FLAVORS["debug"], tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen(cfg).eval()
    nl = tok.encoding.encode_ordinary("\n")[-1]
    successors: dict[int, set[int]] = {}
    for text in texts:
        ids = [nl, *tok.encoding.encode_ordinary(text), IM_END_ID]
        for a, b in zip(ids, ids[1:]):
            successors.setdefault(a, set()).add(b)
    index = {t: i for i, t in enumerate(successors)}
    assert len(index) <= cfg.hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")) or name in ("model.embed_tokens.weight",
                                                                                  "lm_head.weight"):
                p.zero_()
        for t, nexts in successors.items():
            model.model.embed_tokens.weight[t, index[t]] = 1.0
            for b in nexts:
                model.lm_head.weight[b, index[t]] = 20.0  # x 8 after RMSNorm: logit 160 against 0
    return model


MATH_TEXTS = ["The answer is 7.", "The answer is 8."]
CODE_TEXTS = ["print(7)", "print(7/0)"]


@pytest.fixture(scope="module")
def math_ckpt(tmp_path_factory, tok):
    path = tmp_path_factory.mktemp("ckpt") / "math"
    save_model(bigram_model(tok, MATH_TEXTS), path)
    return path


@pytest.fixture(scope="module")
def code_hf_dir(tmp_path_factory, tok):
    """The code model as a Hugging Face directory (the other checkpoint format the jobs take)."""
    from training.model.hf import save_pretrained

    path = tmp_path_factory.mktemp("ckpt") / "code-hf"
    save_pretrained(bigram_model(tok, CODE_TEXTS), path)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def read_parquet(folder) -> list[dict]:
    files = sorted(folder.rglob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


@pytest.mark.slow
def test_sampler_writes_only_known_texts(math_ckpt, tok):
    from synth.engine import ModelSampler, load_checkpoint

    model = load_checkpoint(str(math_ckpt), "cpu")
    assert load_checkpoint(str(math_ckpt), "cpu") is model  # cached: loaded once per process
    sampler = ModelSampler(model, SynthConfig(max_new_tokens=12), tok)
    convs = [[{"role": "user", "content": "What is 3 + 4?"}], [{"role": "user", "content": "Hi"}]]
    out = sampler(convs, 8)
    assert [len(o) for o in out] == [8, 8]
    assert set(itertools.chain(*out)) == set(MATH_TEXTS)  # both branches drawn
    assert sampler(convs, 8) == out  # seeded by the batch: reproducible


def check_sft(folder, tok, expected_convs: list[list[dict]]):
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "sft" and manifest["columns"] == ["split", "input_ids", "loss_mask", "doc_starts",
                                                                  "n_tokens"]
    schema = pq.read_schema(next((folder / "train").rglob("*.parquet")))
    assert schema.field("input_ids").type == pa.list_(pa.int32())
    assert schema.field("loss_mask").type == pa.list_(pa.int8())
    assert schema.field("doc_starts").type == pa.list_(pa.int32())
    rows = read_parquet(folder / "train")
    segments = []  # (decoded conversation, decoded trained tokens), split at doc_starts
    for row in rows:
        bounds = [*row["doc_starts"], row["n_tokens"]]
        for lo, hi in zip(bounds, bounds[1:]):
            ids, mask = row["input_ids"][lo:hi], row["loss_mask"][lo:hi]
            segments.append((tok.decode(ids), tok.decode([t for t, m in zip(ids, mask) if m])))
    assert manifest["splits"]["train"]["conversations"] == len(expected_convs)
    assert sorted(segments) == sorted((render(c), c[-1]["content"] + "<|im_end|>") for c in expected_convs)
    return manifest


@pytest.mark.spark
@pytest.mark.slow
def test_rejection_job(spark, tmp_path, math_ckpt, tok):
    from synth import rejection

    problems = [{"id": "p7", "question": "What is 3 + 4?", "answer": "3 + 4 = 7\n#### 7"},
                {"id": "p5", "question": "What is 2 + 3?", "answer": "#### 5"}]
    out = tmp_path / "math"
    stats = rejection.main(["--model", str(math_ckpt), "--input", write_jsonl(tmp_path / "p.jsonl", problems),
                            "--output", str(out), "--set", "synth.samples=16", "--set", "synth.max_new_tokens=12",
                            "--set", "synth.batch_size=2"])
    assert stats["samples"]["kept"] == 1 and stats["samples"]["by_reason"] == {"no_good_sample": 1}
    kept, = read_parquet(out / "samples" / "kept")
    assert kept["id"] == "p7" and len(kept["samples"]) == 16
    assert kept["verdicts"] == [s == "The answer is 7." for s in kept["samples"]]  # judged independently here
    assert kept["kept"] == ["The answer is 7."]  # unique correct samples
    rejected, = read_parquet(out / "samples" / "rejected")
    assert rejected["id"] == "p5" and not any(rejected["verdicts"])
    question = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 3 + 4?" + MATH_ASK}]
    check_sft(out / "sft", tok, [[*question, {"role": "assistant", "content": "The answer is 7."}]])
    pairs = read_parquet(out / "preference" / "train")
    assert len(pairs) == 1 and pairs[0]["source"] == "synth-math"
    assert pairs[0]["chosen_ids"] == [*tok.encoding.encode_ordinary("The answer is 7."), IM_END_ID]
    assert pairs[0]["rejected_ids"] == [*tok.encoding.encode_ordinary("The answer is 8."), IM_END_ID]
    assert tok.decode(pairs[0]["prompt_ids"]) == render(question, generation_prompt=True)
    manifest = json.loads((out / "preference" / "manifest.json").read_text())
    assert manifest["kind"] == "preference" and manifest["splits"]["train"]["rows"] == 1
    assert all((out / d / "_SUCCESS").exists() for d in ("samples", "sft", "preference"))
    trains_on(out, math_ckpt, tmp_path)


def trains_on(out, ckpt, tmp_path, preference: bool = True):
    """The SFT (and DPO) trainers read the synthesised shards as they are (one step each)."""
    from training.align import dpo, sft

    common = ["--init", str(ckpt), "--set", "train.steps=1", "--set", "train.device=\"cpu\""]
    done = sft.main(["--data", str(out / "sft"), "--out", str(tmp_path / "sft"), *common])
    assert done["steps"] == 1 and (tmp_path / "sft" / "final").is_dir()
    assert done["last_train"]["tokens"] > 0   # the step saw the shards' rows
    if not preference:
        return
    done = dpo.main(["--data", str(out / "preference"), "--out", str(tmp_path / "dpo"), *common])
    assert done["steps"] == 1 and (tmp_path / "dpo" / "final").is_dir()


@pytest.mark.spark
@pytest.mark.slow
def test_execution_job_with_hf_checkpoint(spark, tmp_path, code_hf_dir, math_ckpt, tok):
    from synth import execution

    problems = [{"task_id": "c1", "prompt": "Print seven.", "test": "assert True"},
                {"task_id": "c2", "prompt": "Print nothing.", "test_list": ["assert 1 == 2"]}]
    out = tmp_path / "code"
    stats = execution.main(["--model", str(code_hf_dir), "--input", write_jsonl(tmp_path / "c.jsonl", problems),
                            "--output", str(out), "--set", "synth.samples=8", "--set", "synth.max_new_tokens=12",
                            "--set", "synth.timeout=5"])
    assert stats["samples"]["kept"] == 1
    kept, = read_parquet(out / "samples" / "kept")
    assert kept["id"] == "c1" and set(kept["samples"]) == set(CODE_TEXTS)
    assert kept["verdicts"] == [s == "print(7)" for s in kept["samples"]]  # print(7/0) raises: a failure
    pairs = read_parquet(out / "preference" / "train")
    assert [(tok.decode(p["chosen_ids"]), tok.decode(p["rejected_ids"])) for p in pairs] == [
        ("print(7)<|im_end|>", "print(7/0)<|im_end|>")]
    assert stats["sft"]["splits"]["train"]["conversations"] == 1
    trains_on(out, math_ckpt, tmp_path)   # any of our checkpoints with the Qwen vocabulary


@pytest.mark.spark
@pytest.mark.slow
def test_select_then_evolve(spark, tmp_path, shared_data, math_ckpt, tok):
    from synth import evolve, select

    with open(shared_data / "self-instruct" / "seed_tasks.jsonl", encoding="utf-8") as f:
        seeds = [json.loads(line) for line in itertools.islice(f, 12)]
    rows = [{"id": s["id"], "instruction": s["instruction"]} for s in seeds]
    rows += [{"id": f"zz-dup-{i}", "instruction": s["instruction"].upper() + " Thanks."}
             for i, s in enumerate(seeds[:3])]
    sel = tmp_path / "select"
    stats = select.main(["--input", write_jsonl(tmp_path / "i.jsonl", rows), "--output", str(sel)])
    assert stats["by_reason"].get("near_duplicate", 0) >= 3
    rejected_ids = {r["id"] for r in read_parquet(sel / "rejected")}
    assert {f"zz-dup-{i}" for i in range(3)} <= rejected_ids  # the planted copies sort last: they go
    n_selected = stats["kept"]

    out = tmp_path / "evolve"
    stats = evolve.main(["--model", str(math_ckpt), "--input", str(sel), "--output", str(out),
                         "--set", "synth.max_new_tokens=12", "--set", "synth.batch_size=4"])
    evolved = read_parquet(out / "instructions" / "kept")
    assert stats["instructions"]["docs_in"] == n_selected == len(evolved)  # the bigram model's text passes the checks
    originals = {r["instruction"] for r in rows}
    for row in evolved:
        assert row["instruction"] in MATH_TEXTS and row["original"] in originals
        assert row["method"] in SynthConfig().evolve_methods and row["id"].endswith("." + row["method"])
        assert row["messages"][1] == {"role": "user", "content": row["instruction"]}
        assert row["messages"][2]["role"] == "assistant" and row["messages"][2]["content"] in MATH_TEXTS
    assert stats["sft"]["splits"]["train"]["conversations"] == len(evolved)
    trains_on(out, math_ckpt, tmp_path, preference=False)
