"""The decontam, upsample and mix_instructions jobs through Spark, against the pure stages and hand counts."""

from __future__ import annotations

import csv
import gzip
import json

import pyarrow.parquet as pq
import pytest

from bench.data import article_pages
from pipeline import io
from stages.chatml import EncodeChat, EncodePreference, MixConfig, ParseInstructions
from stages.decontam import DecontamConfig, Decontaminate, build_index
from stages.tokenize.tokenizer import QwenTokenizer

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def write_docs(spark, rows: list[tuple], out) -> str:
    return io.write_docs(spark, rows, str(out))


def read_rows(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


# ---------------------------------------------------------------- decontam


@pytest.fixture(scope="module")
def planted(shared_data):
    """Real articles; every fourth one carries a GSM8K question or an MMLU item inside."""
    gsm = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    with open(shared_data / "mmlu" / "test" / "astronomy_test.csv", newline="") as handle:
        mmlu = list(csv.reader(handle))[1:]
    rows, want = [], {}
    for i, (name, _, _, gold) in enumerate(article_pages(shared_data, 80)):
        text = gold
        if i % 8 == 0:
            text, want[name] = gold + "\n" + gsm[i]["question"].lower(), "contam_gsm8k"
        elif i % 8 == 4:
            item = "\n".join(mmlu[i][:5])  # question and the four choices, one a line
            text, want[name] = item + "\n" + gold, "contam_mmlu"
        rows.append((name, text, "news"))
    return rows, want


def bench_set(data) -> str:
    return (f'decontam.benchmarks={{gsm8k="{data}/gsm8k/test.jsonl", '
            f'humaneval="{data}/humaneval/HumanEval.jsonl.gz", mmlu="{data}/mmlu/test"}}')


def test_decontam_job_matches_the_stage(spark, shared_data, planted, tmp_path):
    from jobs import decontam

    rows, want = planted
    docs = write_docs(spark, rows, tmp_path / "docs")
    stats = decontam.main(["--input", docs, "--output", str(tmp_path / "out"), "--set", bench_set(shared_data)])
    rejected = {r["id"]: r["drop_reason"] for r in read_rows(tmp_path / "out" / "rejected")}
    assert rejected == want
    assert {r["id"] for r in read_rows(tmp_path / "out" / "kept")} == {r[0] for r in rows} - set(want)
    index = build_index({"gsm8k": f"{shared_data}/gsm8k/test.jsonl", "mmlu": f"{shared_data}/mmlu/test",
                         "humaneval": f"{shared_data}/humaneval/HumanEval.jsonl.gz"})
    pure = Decontaminate(DecontamConfig(), index).run([{"id": r[0], "text": r[1]} for r in rows])
    assert {o["id"]: o["drop_reason"] for o in pure if o["drop_reason"]} == rejected
    report = stats["benchmarks"]
    assert report["gsm8k"]["docs"] == sum(v == "contam_gsm8k" for v in want.values())
    assert report["mmlu"]["docs"] == sum(v == "contam_mmlu" for v in want.values())
    assert report["humaneval"]["docs"] == 0 and report["humaneval"]["items"] == 164
    assert report["gsm8k"]["items"] == len((shared_data / "gsm8k" / "test.jsonl").read_text().splitlines())


def test_decontam_job_cut_mode_keeps_documents(spark, shared_data, planted, tmp_path):
    from jobs import decontam

    rows, want = planted
    docs = write_docs(spark, rows, tmp_path / "docs")
    decontam.main(["--input", docs, "--output", str(tmp_path / "out"), "--set", bench_set(shared_data),
                   "--set", "decontam.mode=cut", "--set", "decontam.min_piece_chars=50"])
    kept = {r["id"]: r for r in read_rows(tmp_path / "out" / "kept")}
    rejected = {r["id"] for r in read_rows(tmp_path / "out" / "rejected")}
    assert set(kept) | rejected == {r[0] for r in rows}
    cut = [name for name in want if name in kept]
    assert len(cut) >= len(want) // 2
    for name in cut:
        original = dict((r[0], r[1]) for r in rows)[name]
        assert kept[name]["contam_benchmark"] and len(kept[name]["text"]) < len(original)


# ---------------------------------------------------------------- upsample -> tokenize

TARGETS = {"news": 0.5, "blogs": 0.3, "forum": 0.2}


@pytest.fixture(scope="module")
def paragraph_rows(shared_data):
    """Real paragraphs of the benchmark articles in three sources of very different sizes."""
    rows = []
    for i, (name, _, _, gold) in enumerate(article_pages(shared_data, 120)):
        source = "news" if i % 10 < 7 else "blogs" if i % 10 < 9 else "forum"
        rows += [(f"{name}/{k}", p, source) for k, p in enumerate(gold.split("\n")) if p.strip()]
    return rows


def test_upsample_then_tokenize_hits_the_token_shares(spark, paragraph_rows, tmp_path):
    from jobs import tokenize, upsample

    docs = write_docs(spark, paragraph_rows, tmp_path / "docs")
    shares = "{" + ", ".join(f"{k}={v}" for k, v in TARGETS.items()) + "}"
    stats = upsample.main(["--input", docs, "--output", str(tmp_path / "up"), "--set", f"upsample.target_shares={shares}"])
    tok = QwenTokenizer()
    before = {}
    for _, text, source in paragraph_rows:
        before[source] = before.get(source, 0) + len(tok.encoding.encode_ordinary(text)) + 1
    assert stats["tokens_before"] == before
    tokenize.main(["--input", str(tmp_path / "up"), "--output", str(tmp_path / "shards"),
                   "--set", "tokenize.seq_len=512", "--set", "tokenize.valid_fraction=0.0"])
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    tokens = manifest["splits"]["train"]["tokens_per_source"]
    total = sum(tokens.values())
    assert all(abs(tokens[s] / total - TARGETS[s]) < 0.005 for s in TARGETS), tokens
    assert tokens == stats["tokens_after"]
    kept = read_rows(tmp_path / "up" / "kept")
    assert {r["orig_id"] for r in kept} == {r[0] for r in paragraph_rows} and len({r["id"] for r in kept}) == len(kept)


def test_upsample_job_weights_by_cluster_size(spark, paragraph_rows, tmp_path):
    """dup_cluster_size ranges -> repeat factors, times the source weights, through Spark's SQL ranges."""
    import pyarrow as pa

    from jobs import upsample

    sizes = [1, 2, 5, None, 150, 4]
    rows = [(*r, sizes[i % len(sizes)]) for i, r in enumerate(paragraph_rows[:300])]
    schema = pa.schema([*io.TEXT_DOCS, pa.field("dup_cluster_size", pa.int64())])
    docs = io.write_docs(spark, rows, str(tmp_path / "docs"), schema)
    stats = upsample.main(["--input", docs, "--output", str(tmp_path / "up"), "--set", "upsample.source_weights={blogs=2.0}",
                           "--set", "upsample.cluster_repeats=[[1, 1, 1.0], [2, 4, 2.0], [5, 100, 3.0], [101, 0, 1.0]]"])
    factor = {1: 1, 2: 2, 4: 2, 5: 3, None: 1, 150: 1}
    copies: dict = {}
    for r in read_rows(tmp_path / "up" / "kept"):
        copies[r["orig_id"]] = copies.get(r["orig_id"], 0) + 1
    assert copies == {i: (2 if s == "blogs" else 1) * factor[size] for i, _, s, size in rows}
    assert stats["factors"]["blogs//5-100"] == 6.0 and stats["factors"]["news//101+"] == 1.0


# ---------------------------------------------------------------- mix_instructions


@pytest.fixture(scope="module")
def instruction_files(shared_data, tmp_path_factory):
    """Real self-instruct tasks and hh-rlhf pairs (first 150), plus hand-made Alpaca / ShareGPT / OpenAI records,
    one of which carries a GSM8K test question."""
    folder = tmp_path_factory.mktemp("instr")
    hh = gzip.open(shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt").read().splitlines()[:150]
    (folder / "hh.jsonl.gz").write_bytes(gzip.compress(("\n".join(hh) + "\n").encode()))
    question = json.loads((shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[7])["question"]
    own = [{"instruction": "Name a prime number.", "input": "", "output": "7"},
           {"instruction": question, "input": "", "output": "I do not know."},
           {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
           {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}]
    (folder / "own.jsonl").write_text("".join(json.dumps(r) + "\n" for r in own))
    seed = shared_data / "self-instruct" / "seed_tasks.jsonl"
    return [str(seed), str(folder / "hh.jsonl.gz"), str(folder / "own.jsonl")]


def pure_conversations(files: list[str]) -> list[dict]:
    rows = []
    for path in files:
        opener = gzip.open if path.endswith(".gz") else open
        rows += [{"line": line, "file": path} for line in opener(path, "rt").read().splitlines() if line.strip()]
    return ParseInstructions(MixConfig()).run(rows)


def test_mix_job_outputs(spark, shared_data, instruction_files, paragraph_rows, tmp_path):
    from jobs import mix_instructions

    web = write_docs(spark, paragraph_rows[:400], tmp_path / "web")
    out = tmp_path / "mix"
    mix_instructions.main(["--input", *instruction_files, "--pretrain", web, "--output", str(out),
                           "--set", bench_set(shared_data), "--set", "mix.pretrain_ratio=0.2",
                           "--set", "mix.seq_len=1024"])
    pure = pure_conversations(instruction_files)
    rejected = read_rows(out / "instructions" / "rejected")
    assert [r["drop_reason"] for r in rejected] == ["contam_gsm8k"]
    sft = [c for c in pure if c["kind"] == "sft" and c["drop_reason"] is None and c["id"] != rejected[0]["id"]]
    assert len(sft) == sum(c["kind"] == "sft" and c["drop_reason"] is None for c in pure) - 1
    encoded = [e for e in EncodeChat(MixConfig(seq_len=1024)).run(sft) if e["drop_reason"] is None]
    pairs = [c for c in pure if c["kind"] == "preference" and c["drop_reason"] is None]
    # SFT rows: whole conversations, never over seq_len + 1, loss tokens as the pure encoding counts them
    rows = read_rows(out / "sft" / "train") + read_rows(out / "sft" / "valid")
    assert all(r["n_tokens"] <= 1025 for r in rows)
    got = sorted(tuple(r["input_ids"][s:e]) for r in rows
                 for s, e in zip(r["doc_starts"], r["doc_starts"][1:] + [r["n_tokens"]]))
    assert got == sorted(tuple(e["input_ids"]) for e in encoded)
    assert sum(map(sum, (r["loss_mask"] for r in rows))) == sum(map(sum, (e["loss_mask"] for e in encoded)))
    # preference rows: one per pair, ids as the pure encoder gives them
    prefs = read_rows(out / "preference" / "train") + read_rows(out / "preference" / "valid")
    want = {e["id"]: e["chosen_ids"] for e in EncodePreference(MixConfig()).run(pairs)}
    assert {r["id"]: r["chosen_ids"] for r in prefs} == want
    # pretraining stream: instruction tokens are 20% of the total, web documents kept once each
    stats = json.loads((out / "pretrain" / "_stats.json").read_text())
    assert abs(stats["shares_after"]["instruct"] - 0.2) < 0.005
    kept = read_rows(out / "pretrain" / "kept")
    assert sum(r["source"] != "instruct" for r in kept) == 400
