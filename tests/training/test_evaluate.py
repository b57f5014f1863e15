"""Evaluation harness: scorers on known answers, batched log-likelihoods against a per-row reference,
perplexity against per-document forwards, the GSM8K parser and HumanEval execution on the real sets."""
from __future__ import annotations

import dataclasses
import json
import math

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from tests.stages.test_synthesis import SKIP_CHECK as SKIP_THEIR_CHECK
from train_testlib import write_shards
from training.evaluate import gsm8k, humaneval, multiple_choice as mc
from training.evaluate.perplexity import PerplexityConfig, perplexity
from training.evaluate.scoring import loglikelihoods
from training.model.flavors import FLAVORS
from training.model.qwen import Qwen


def tiny_model(vocab: int = 256, seed: int = 0) -> Qwen:
    torch.manual_seed(seed)
    return Qwen(dataclasses.replace(FLAVORS["debug"], vocab_size=vocab, hidden_size=32, intermediate_size=64)).eval()


# ------------------------------------------------------------------ multiple choice
ITEMS = [mc.Item("2 + 2 = ?", ("3", "4", "5", "6"), 1, "math"),
         mc.Item("Capital of France?", ("Paris", "Rome", "Oslo", "Bern"), 0, "geo"),
         mc.Item("Largest planet?", ("Mars", "Venus", "Earth", "Jupiter"), 3, "geo")]


def fake_score(known: dict[str, int]):
    """Log-likelihoods we choose: -1 for the letter `known[question]`, -5 for the others."""
    def score(pairs):
        out = []
        for context, continuation in pairs:
            question = context.rsplit("\n\n", 1)[-1].split("\n", 1)[0]
            out.append(-1.0 if continuation == f" {mc.LETTERS[known[question]]}" else -5.0)
        return out
    return score


def test_scorer_picks_the_most_likely_choice():
    right = {it.question: it.answer for it in ITEMS}
    assert mc.accuracy(ITEMS, lambda it: [], fake_score(right))["accuracy"] == 1.0
    wrong_geo = {**right, "Largest planet?": 0}        # one of two geo items answered wrong
    result = mc.accuracy(ITEMS, lambda it: ITEMS[:1], fake_score(wrong_geo))
    assert result["accuracy"] == pytest.approx(2 / 3) and result["per_subject"] == {"math": 1.0, "geo": 0.5}


def test_predict_takes_the_argmax_of_given_scores():
    scores = {" A": -3.2, " B": -0.7, " C": -2.0, " D": -9.0}
    choice, got = mc.predict("ctx", 4, lambda pairs: [scores[c] for _, c in pairs])
    assert choice == 1 and got == [-3.2, -0.7, -2.0, -9.0]


def test_mmlu_prompt_format_and_real_files(shared_data):
    shot = mc.Item("Q1", ("a", "b", "c", "d"), 2, "college_biology")
    text = mc.prompt(mc.Item("Q2", ("w", "x", "y", "z"), 0, "college_biology"), [shot])
    assert text == ("The following are multiple choice questions (with answers) about college biology.\n\n"
                    "Q1\nA. a\nB. b\nC. c\nD. d\nAnswer: C\n\nQ2\nA. w\nB. x\nC. y\nD. z\nAnswer:")
    test, dev = mc.load_mmlu(shared_data / "mmlu", "test"), mc.load_mmlu(shared_data / "mmlu", "dev")
    assert len(test) == len(dev) == 57                       # SOURCE.txt: 14042 test + 285 dev questions
    assert sum(map(len, test.values())) == 14042 and sum(map(len, dev.values())) == 285
    assert all(0 <= it.answer < 4 for items in test.values() for it in items)


def test_batched_loglikelihoods_equal_one_row_at_a_time():
    model = tiny_model()
    pairs = [([5, 6, 7, 8, 9], [10]), ([3], [4, 5, 6]), ([1, 2, 3, 4, 5, 6, 7, 8], [9, 9]), ([42, 43], [44])]
    got = loglikelihoods(model, pairs, batch_size=3)         # left padding + mask in the first batch
    for (ctx, cont), (lp, is_greedy) in zip(pairs, got):
        with torch.no_grad():
            logp = F.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), -1)
        steps = [logp[len(ctx) - 1 + i] for i in range(len(cont))]
        assert lp == pytest.approx(sum(float(s[t]) for s, t in zip(steps, cont)), abs=1e-4)
        assert is_greedy == all(int(s.argmax()) == t for s, t in zip(steps, cont))


# ------------------------------------------------------------------ perplexity
def test_perplexity_equals_per_document_forwards(tmp_path):
    root = write_shards(tmp_path / "shards", train_docs=4, valid_docs=10, seq_len=24, files=1)
    model = tiny_model()
    got = perplexity(model, PerplexityConfig(shards=str(root), batch_size=3))
    total, tokens = 0.0, 0
    for f in sorted((root / "valid").glob("*.parquet")):
        for row in pq.read_table(f).to_pylist():
            ids, starts = row["input_ids"], row["doc_starts"]
            if not starts or starts[0] != 0:
                starts = [0] + starts                     # a continued document opens the row
            for s, e in zip(starts, starts[1:] + [len(ids)]):
                # positions s..e-1 see only their document; each predicts the next token of the row
                n = min(e, len(ids) - 1) - s
                if n <= 0:
                    continue
                with torch.no_grad():
                    logits = model(torch.tensor([ids[s:s + n]])).logits[0]
                total += float(F.cross_entropy(logits, torch.tensor(ids[s + 1:s + 1 + n]), reduction="sum"))
                tokens += n
    assert got["tokens"] == tokens
    assert got["loss"] == pytest.approx(total / tokens, rel=1e-5)
    assert got["ppl"] == pytest.approx(math.exp(total / tokens), rel=1e-5)


# ------------------------------------------------------------------ GSM8K
def test_gsm8k_parser_gives_100_percent_on_the_reference_answers(shared_data):
    examples = gsm8k.load(shared_data / "gsm8k" / "test.jsonl")
    assert len(examples) == 1319
    for ex in examples:   # independent reading of the gold number: the text after '####', commas removed
        gold = float(ex["answer"].split("####")[-1].strip().replace(",", ""))
        assert float(gsm8k.parse_answer(ex["answer"])) == gold
    assert sum(gsm8k.is_correct(ex["answer"], ex) for ex in examples) == len(examples)


@pytest.mark.parametrize("text, number", [
    ("She pays 3 * $4 = $12.\n#### 12", "12"), ("so the total is $1,250.00.", "1250"),
    ("The answer is -7 degrees", "-7"), ("#### 0.50", "0.5"), ("x is 3 and then 4. #### 5 apples", "5"),
    ("no digits here", None)])
def test_gsm8k_parser_hand_cases(text, number):
    assert gsm8k.parse_answer(text) == number


def test_gsm8k_prompt_and_cut():
    shot = {"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"}
    assert gsm8k.prompt("2+2?", [shot]) == "Question: 1+1?\nAnswer: 1+1=2\n#### 2\n\nQuestion: 2+2?\nAnswer:"
    assert gsm8k.cut(" 2+2=4\n#### 4\n\nQuestion: next") == " 2+2=4\n#### 4"


# ------------------------------------------------------------------ HumanEval
def test_humaneval_cut_stops_at_the_next_top_level_statement():
    assert humaneval.cut("    return x\n\ndef other():\n    pass") == "    return x\n"
    assert humaneval.cut("    return x\nif __name__ == '__main__':\n    f()") == "    return x"


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_and_empty_completions_fail(shared_data):
    problems = humaneval.load(shared_data / "humaneval" / "HumanEval.jsonl.gz")
    assert len(problems) == 164
    canonical = humaneval.execute(problems, [p["canonical_solution"] for p in problems], timeout=20, workers=4)
    assert humaneval.pass_at_1(canonical) == 1.0, [r for r in canonical if not r["passed"]][:3]
    empty = humaneval.execute(problems, [""] * len(problems), timeout=20, workers=4)
    assert humaneval.pass_at_1(empty) == 0.0


# Wrong completions (HumanEval bodies, some with top-level code after them) that try to pass without the
# tests running to their end: each one must fail.
SKIP_CHECK = "    return None\n" + SKIP_THEIR_CHECK   # a body, then the trace trick
CHEATS = {
    "os._exit in the body": "    import os\n    os._exit(0)\n",
    "sys.exit in the body": "    import sys\n    sys.exit(0)\n",
    "SystemExit": "    raise SystemExit(0)\n",
    "exit()": "    exit()\n",
    "quit()": "    quit()\n",
    "exit before the tests": "    return None\n\n\nimport os\nos._exit(0)\n",
    "signal handler exits 0": "    import os, signal\n    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
                              "    os.kill(os.getpid(), signal.SIGTERM)\n",
    "kills itself": "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    "prints guessed sentinels": "    print('0' * 32, 'done', 'OK', 'qf.sandbox.done', flush=True)\n    return None\n",
    "atexit exits 0 after the failure": "    return None\n\n\nimport atexit, os\n"
                                        "atexit.register(lambda: os._exit(0))\n",
    "redefines check": "    return None\n\n\ndef check(candidate):\n    pass\n",
    "keeps its own check with a trace function": SKIP_CHECK,
}


def test_humaneval_exits_and_fakes_fail_and_canonical_solutions_pass(shared_data):
    """pass@1 counts a problem only when its check ran to the end: no exit status 0 or printed text fakes it."""
    problems = humaneval.load(shared_data / "humaneval" / "HumanEval.jsonl.gz")[:3]
    canonical = humaneval.execute(problems, [p["canonical_solution"] for p in problems], timeout=20, workers=2)
    assert [r["passed"] for r in canonical] == [True] * 3, canonical
    cheats = humaneval.execute([problems[0]] * len(CHEATS), list(CHEATS.values()), timeout=20, workers=2)
    assert [name for name, r in zip(CHEATS, cheats) if r["passed"]] == []
    assert humaneval.pass_at_1(cheats) == 0.0
    exited = dict(zip(CHEATS, cheats))["sys.exit in the body"]
    assert exited["error"] == "exited with status 0 before the tests finished"


# ------------------------------------------------------------------ command line
def test_cli_writes_results_and_summary(tmp_path, shared_data, monkeypatch):
    from training.model.checkpoint import save_model
    from training.evaluate.__main__ import main

    torch.manual_seed(0)
    save_model(Qwen(dataclasses.replace(FLAVORS["debug"], num_layers=1)), tmp_path / "ckpt")
    shards = write_shards(tmp_path / "shards", train_docs=4, valid_docs=6, seq_len=24, files=1)
    monkeypatch.setenv("SHARED_DATA", str(shared_data))
    results = main(["--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "eval"), "--tasks", "ppl,mmlu",
                    "--limit", "2", "--shards", str(shards), "--set", 'mmlu.subjects=["virology"]',
                    "--set", "mmlu.shots=1"])
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["results"]["mmlu"]["n"] == 2 and saved["results"]["ppl"]["rows"] == results["ppl"]["rows"] > 0
    assert 0.0 <= results["mmlu"]["accuracy"] <= 1.0
    summary = (tmp_path / "eval" / "summary.md").read_text()
    assert "| mmlu | accuracy |" in summary and "| ppl | perplexity |" in summary


class LetterTokenizer:
    """Characters as ids (mod 256) but ' A'..' D' as one token each, like Qwen's tokenizer."""

    def encode(self, text: str) -> list[int]:
        if text in (" A", " B", " C", " D"):
            return [200 + "ABCD".index(text[1])]
        return [ord(ch) % 190 for ch in text]


def test_model_scorer_one_forward_path_equals_the_batched_path():
    model = tiny_model()
    pairs = [("Q: which?\nAnswer:", f" {x}") for x in "ABCD"]
    fast = mc.model_scorer(model, LetterTokenizer())(pairs)
    tok = LetterTokenizer()
    slow = [lp for lp, _ in loglikelihoods(model, [(tok.encode(c), tok.encode(x)) for c, x in pairs], batch_size=2)]
    assert fast == pytest.approx(slow, abs=1e-5)
