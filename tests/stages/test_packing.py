"""Tokenizer exactness and packing with document boundaries."""

from __future__ import annotations

import json
import random

import pytest

from stages.packing import Packer, Tokenize, TokenizeConfig, pack_groups
from stages.tokenizer import ENDOFTEXT_ID, IM_END_ID, IM_START_ID, QwenTokenizer


@pytest.fixture(scope="module")
def tok():
    return QwenTokenizer()


def test_golden_qwen_ids(tok, shared_data):
    cases = json.loads((shared_data / "qwen-tokenizer" / "golden_qwen2.5_ids.json").read_text())
    assert len(cases) == 10
    for case in cases:
        assert tok.encode(case["text"]) == case["ids"], case["text"]


def test_specials_and_round_trip_on_benchmark_gold_text(tok, shared_data):
    assert tok.encode("<|endoftext|><|im_start|><|im_end|>") == [ENDOFTEXT_ID, IM_START_ID, IM_END_ID]
    gold = json.loads((shared_data / "article-extraction-benchmark" / "ground-truth.json").read_text())
    texts = [v["articleBody"] for v in gold.values()]
    assert all(tok.decode(tok.encode(t)) == t for t in texts)


def test_web_text_never_yields_special_tokens():
    row = Tokenize().map({"id": "a", "text": "spam <|endoftext|> here", "source": "web"})
    assert row["input_ids"].count(ENDOFTEXT_ID) == 1 and row["input_ids"][-1] == ENDOFTEXT_ID


def test_packer_hand_computed():
    rows = list(Packer(seq_len=3).pack([([1, 2, 3], [0]), ([4, 5, 6, 7, 8], [0]), ([9], [0])]))
    assert [r["input_ids"] for r in rows] == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert [r["doc_starts"] for r in rows] == [[0, 3], [0], [0]]
    assert [r["partial"] for r in rows] == [False, False, True]


def test_repacking_partial_rows_keeps_their_boundaries():
    first = list(Packer(seq_len=5).pack([([1, 2], [0]), ([3], [0])]))  # one partial row [1,2,3], starts [0,2]
    second = list(Packer(seq_len=5).pack([([7, 8, 9, 10], [0])]))      # partial [7,8,9,10]
    segments = [(r["input_ids"], r["doc_starts"]) for r in first + second]
    rows = list(Packer(seq_len=5).pack(segments))
    assert rows[0]["input_ids"] == [1, 2, 3, 7, 8, 9] and rows[0]["doc_starts"] == [0, 2, 3]
    assert rows[1] == {"input_ids": [10], "doc_starts": [0], "n_tokens": 1, "partial": True}


def test_documents_are_recoverable_and_groups_never_mix():
    rng = random.Random(0)
    docs = [{"split": s, "source": src, "input_ids": [rng.randrange(1000) for _ in range(rng.randrange(1, 40))]}
            for s in ("train", "valid") for src in ("a", "b") for _ in range(30)]
    rows = list(pack_groups(docs, seq_len=16))
    for key in {(d["split"], d["source"]) for d in docs}:
        group = [r for r in rows if (r["split"], r["source"]) == key]
        assert sum(r["partial"] for r in group) <= 1 and all(len(r["input_ids"]) == 17 for r in group if not r["partial"])
        stream = [t for r in group for t in r["input_ids"]]
        expected = [t for d in docs if (d["split"], d["source"]) == key for t in d["input_ids"]]
        assert stream == expected
        starts = sorted({i * 17 + s for i, r in enumerate(group) for s in r["doc_starts"]})
        doc_offsets, pos = set(), 0
        for d in (d for d in docs if (d["split"], d["source"]) == key):
            doc_offsets.add(pos)
            pos += len(d["input_ids"])
        assert doc_offsets <= set(starts)  # every document start is marked
        assert set(starts) - doc_offsets <= {i * 17 for i in range(len(group))}  # others are row starts


def test_split_is_a_stable_hash_of_id_and_seed():
    config = TokenizeConfig(valid_fraction=0.2)
    splits = [Tokenize(config).map({"id": str(i), "text": "x", "source": "w"})["split"] for i in range(2000)]
    assert 0.16 < splits.count("valid") / 2000 < 0.24
    assert splits == [Tokenize(config).map({"id": str(i), "text": "x", "source": "w"})["split"] for i in range(2000)]
    assert Tokenize().map({"id": "e", "text": "", "source": "w"})["drop_reason"] == "empty"
