"""The fast encoder gives exactly tiktoken's ids: every code point in many contexts, real text, random mixes."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from stages.fast_bpe import LETTER, NUMBER, PROBES, SPACE, fast_encoder, unicode_classes
from stages.packing import DocEncoder, TokenizeConfig
from stages.tokenizer import QwenTokenizer

CONTEXTS = [*PROBES, "{c}1{c}", "\t{c}\n\n", "{c}!", "'{c}{c}"]


@pytest.fixture(scope="module")
def tok():
    return QwenTokenizer()


@pytest.fixture(scope="module")
def fast(tok):
    encoder = fast_encoder(tok.path)
    assert encoder.native is not None, "stages._qwen_bpe is not built: run `make setup`"
    return encoder


def same(fast, tok, text: str) -> bool:
    return fast.encode(text).tolist() == tok.encoding.encode_ordinary(text)


def test_every_code_point_in_every_context(fast, tok):
    """Each code point (surrogates aside) in 13 contexts that tell letters, numbers, spaces, line breaks
    and the rest apart; checked 256 code points per text, then one by one where a text differs."""
    wrong = []
    for start in range(0, 0x110000, 256):
        points = [c for c in range(start, start + 256) if not 0xD800 <= c < 0xE000]
        text = "|".join(ctx.format(c=chr(c)) for c in points for ctx in CONTEXTS)
        if points and not same(fast, tok, text):
            wrong += [c for c in points if not same(fast, tok, "|".join(x.format(c=chr(c)) for x in CONTEXTS))]
    assert not wrong, [hex(c) for c in wrong[:20]]


def test_real_text_and_golden_ids(fast, tok, shared_data):
    cases = json.loads((shared_data / "qwen-tokenizer" / "golden_qwen2.5_ids.json").read_text())
    plain = [case for case in cases if "<|" not in case["text"]]   # special tokens are tiktoken's to encode
    assert len(plain) >= 9 and all(fast.encode(case["text"]).tolist() == case["ids"] for case in plain)
    gold = json.loads((shared_data / "article-extraction-benchmark" / "ground-truth.json").read_text())
    texts = [v["articleBody"] for v in gold.values()]
    assert len(texts) > 100 and all(same(fast, tok, t) for t in texts)


def test_random_mixtures_of_the_hard_cases(fast, tok):
    """Runs of spaces before letters, numbers and punctuation; line breaks inside space runs; contractions
    in any case (and U+017F, which folds to s); long pieces outside the vocabulary; CJK, emoji, accents."""
    alphabet = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\xa0", "'", "'S", "'ll", "'RE", "'\u017f", "ab", "Zé", "123",
                "٣", "Ⅻ", "!!", "...", "«", "中文", "🙂", "e\u0301", "\x1c", "x" * 70, "#$%" * 30, "\u0085"]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        assert same(fast, tok, text), repr(text)


def test_surrogates_and_the_reference_encoder(fast, tok, shared_data):
    """Lone surrogates become U+FFFD as in tiktoken's encode_ordinary, with either encoder; the two
    `tokenize.encoder` choices give the same ids."""
    gold = json.loads((shared_data / "article-extraction-benchmark" / "ground-truth.json").read_text())
    texts = ["lone \ud800 surrogate", "\udfff", *[v["articleBody"] for v in list(gold.values())[:20]]]
    fast_docs, reference = DocEncoder(), DocEncoder(TokenizeConfig(encoder="tiktoken"))
    for text in texts:
        expected = tok.encoding.encode_ordinary(text)
        assert fast_docs.encode(text, "web").tolist() == expected == reference.encode(text, "web").tolist()
    with pytest.raises(ValueError, match="tokenize.encoder"):
        TokenizeConfig(encoder="sentencepiece")


def test_class_table_agrees_with_the_unicode_categories():
    import unicodedata

    table, _ = unicode_classes()
    for c in (0x41, 0xE9, 0x4E2D, 0x1F642, 0x30, 0x663, 0x2167, 0x20, 0x3000, 0x1C, 0x2E):
        category = unicodedata.category(chr(c))
        assert bool(table[c] & LETTER) == category.startswith("L"), hex(c)
        assert bool(table[c] & NUMBER) == category.startswith("N"), hex(c)
    assert table[0x1C] & SPACE == 0 and table[0x85] & SPACE and table[0x3000] & SPACE
