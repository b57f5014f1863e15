"""Tokenizer exactness and packing with document boundaries."""

from __future__ import annotations

import json
import random

import pytest

import pyarrow as pa

from stages.tokenize.packing import DocEncoder, TokenizeConfig, pack_batches, split_of_doc
from stages.tokenize.tokenizer import ENDOFTEXT_ID, IM_END_ID, IM_START_ID, QwenTokenizer


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


def reference_pack(segments, width):
    """Packing written plainly from the definition: a stream of (tokens, starts) cut into rows."""
    stream, starts = [], set()
    for tokens, seg_starts in segments:
        starts |= {len(stream) + s for s in seg_starts}
        stream += tokens
    rows = []
    for k in range(0, len(stream), width):
        row = stream[k:k + width]
        rows.append((row, sorted({0} | {s - k for s in starts if k <= s < k + width}), len(row) < width))
    return rows


def as_rows(batches):
    return [(r["input_ids"], r["doc_starts"], r["partial"]) for b in batches for r in b.to_pylist()]


def doc_batch(docs, split="train", source="web"):
    return pa.RecordBatch.from_pylist(
        [{"split": split, "source": source, "input_ids": d} for d in docs],
        schema=pa.schema([("split", pa.string()), ("source", pa.string()), ("input_ids", pa.list_(pa.int32()))]))


def test_packing_hand_computed():
    rows = as_rows(pack_batches([doc_batch([[1, 2, 3], [4, 5, 6, 7, 8], [9]])], seq_len=3))
    assert rows == [([1, 2, 3, 4], [0, 3], False), ([5, 6, 7, 8], [0], False), ([9], [0], True)]
    eos = ENDOFTEXT_ID
    packed = [r for b in pack_batches([doc_batch([[1, eos], [2, 3, eos], [4, eos]])], seq_len=3) for r in b.to_pylist()]
    assert [r["n_docs"] for r in packed] == [1, 2] and [r["n_tokens"] for r in packed] == [4, 3]


def test_packing_equals_the_reference_across_batches():
    rng = random.Random(0)
    docs = [[rng.randrange(1000) for _ in range(rng.randrange(1, 40))] for _ in range(60)]
    batches = [doc_batch(docs[i:i + 7]) for i in range(0, 60, 7)]
    assert as_rows(pack_batches(batches, seq_len=16)) == reference_pack([(d, [0]) for d in docs], 17)


def test_repacking_partial_rows_keeps_their_boundaries():
    tails = pa.RecordBatch.from_pylist(
        [{"split": "train", "source": "web", "input_ids": [1, 2, 3], "doc_starts": [0, 2]},
         {"split": "train", "source": "web", "input_ids": [7, 8, 9, 10], "doc_starts": [0]}],
        schema=pa.schema([("split", pa.string()), ("source", pa.string()), ("input_ids", pa.list_(pa.int32())),
                          ("doc_starts", pa.list_(pa.int32()))]))
    rows = as_rows(pack_batches([tails], seq_len=5))
    assert rows == [([1, 2, 3, 7, 8, 9], [0, 2, 3], False), ([10], [0], True)]


def test_groups_never_mix_and_each_ends_with_at_most_one_short_row():
    rng = random.Random(1)
    groups = [(s, src) for s in ("train", "valid") for src in ("a", "b")]
    docs = {g: [[rng.randrange(1000) for _ in range(rng.randrange(1, 40))] for _ in range(30)] for g in groups}
    batches = [doc_batch(docs[g][i:i + 9], *g) for g in groups for i in range(0, 30, 9)]
    out = [r for b in pack_batches(batches, seq_len=16) for r in b.to_pylist()]
    for g in groups:
        mine = [(r["input_ids"], r["doc_starts"], r["partial"]) for r in out if (r["split"], r["source"]) == g]
        assert mine == reference_pack([(d, [0]) for d in docs[g]], 17)


def texts(rows) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{"split": "train", "source": s, "text": t} for s, t in rows])


def test_encoder_matches_per_document_encoding_and_counts_empty_documents(tok):
    rows = [("w", "Hello world"), ("w", ""), ("w", "Numbers: 12345"), ("w", None), ("v", "spam <|endoftext|> here")]
    encoder = DocEncoder()
    out = encoder.encode_batch(texts(rows)).to_pylist()
    expected = [(s, tok.encoding.encode_ordinary(t) + [ENDOFTEXT_ID]) for s, t in rows if t]
    assert [(r["source"], r["input_ids"]) for r in out] == expected and encoder.empty == 2
    assert out[2]["input_ids"].count(ENDOFTEXT_ID) == 1  # the literal marker in the text is not the special token


class Panic(BaseException):
    """Like pyo3's PanicException (a tiktoken panic, e.g. on 1 MB of spaces): a BaseException, not an Exception."""


@pytest.mark.parametrize("exception", [Panic("regex stack overflow"), ValueError("bad"), MemoryError()])
def test_a_document_the_encoder_fails_on_is_counted_and_dropped(tok, monkeypatch, exception):
    """Web text through `tokenize.encoder = "tiktoken"` and ChatML documents: the failing documents are left
    out and counted in `encode_errors` (not `empty`), the rest of the batch is encoded as usual."""
    real = tok.encoding.encode_to_numpy

    def flaky(text, **kwargs):
        if "BOOM" in text:
            raise exception
        return real(text, **kwargs)

    monkeypatch.setattr(tok.encoding, "encode_to_numpy", flaky)   # the one cached Encoding both paths use
    rows = [("web", "before"), ("web", "BOOM"), ("web", ""), ("instruct", "<|im_start|>BOOM<|im_end|>"),
            ("instruct", "<|im_start|>user\nhi<|im_end|>"), ("web", "after")]
    encoder = DocEncoder(TokenizeConfig(encoder="tiktoken"))
    out = encoder.encode_batch(texts(rows)).to_pylist()
    assert [r["input_ids"][:-1] for r in out] == [tok.encode(t) for s, t in rows if t and "BOOM" not in t]
    assert (encoder.encode_errors, encoder.empty) == (2, 1)


def test_interrupts_are_not_swallowed(tok, monkeypatch):
    def interrupted(text, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tok.encoding, "encode_to_numpy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        DocEncoder(TokenizeConfig(encoder="tiktoken")).encode_batch(texts([("web", "text")]))


def test_lone_surrogates_become_replacement_characters_in_every_path(tok):
    """As tiktoken's encode / encode_ordinary do; ChatML documents too (`encode_to_numpy` alone would raise)."""
    chat, fixed = "<|im_start|>user\n\ud800 hi<|im_end|>", "<|im_start|>user\n\ufffd hi<|im_end|>"
    encoders = [DocEncoder(), DocEncoder(TokenizeConfig(encoder="tiktoken"))]
    assert all(e.encode(chat, "instruct").tolist() == tok.encode(fixed) for e in encoders)
    assert all(e.encode("a \udfff b", "web").tolist() == tok.encoding.encode_ordinary("a \ufffd b") for e in encoders)


def test_split_is_a_stable_hash_of_id_and_seed():
    config = TokenizeConfig(valid_fraction=0.2)
    splits = [split_of_doc(config, str(i)) for i in range(2000)]
    assert 0.16 < splits.count("valid") / 2000 < 0.24
    assert splits != [split_of_doc(TokenizeConfig(valid_fraction=0.2, seed=1), str(i)) for i in range(2000)]


def test_chatml_sources_keep_their_markers_and_copies_follow_their_original(tok):
    chat = "<|im_start|>user\nhi<|im_end|>\n"
    out = DocEncoder().encode_batch(texts([("instruct", chat), ("web", chat)])).to_pylist()
    assert out[0]["input_ids"][:-1] == tok.encode(chat) and IM_START_ID in out[0]["input_ids"]
    assert IM_START_ID not in out[1]["input_ids"]
    config = TokenizeConfig(valid_fraction=0.5)
    splits = [split_of_doc(config, f"{i}#{k}", str(i)) for i in range(50) for k in range(3)]
    assert all(len(set(splits[i:i + 3])) == 1 for i in range(0, 150, 3)) and len(set(splits)) == 2
