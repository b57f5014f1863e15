"""The custom BPE trainer: Qwen's pre-tokenization (digits split), specials, lossless round trip."""

from __future__ import annotations

import regex

from stages.tokenize.bpe import TrainTokenizerConfig, bytes_per_token, new_tokenizer, train_bpe
from stages.tokenize.tokenizer import ENDOFTEXT, PATTERN


def test_pre_tokenization_matches_qwens_regex():
    """The pieces equal those of Qwen's pre-tokenizer regex applied directly (the `regex` module)."""
    tok = new_tokenizer()
    for text in ("I'm 2026 ok!\n\n x", "Don't   stop: 3.14159, naïve café\tend  ", "日本語 テキスト 123"):
        pieces = [tok.decoder.decode([p]) for p, _ in tok.pre_tokenizer.pre_tokenize_str(text)]
        assert pieces == regex.findall(PATTERN, text)


def test_trained_tokenizer_round_trips_and_compresses(shared_data):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text()
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    tok = train_bpe(paragraphs[:3000], TrainTokenizerConfig(vocab_size=2000))
    assert tok.token_to_id(ENDOFTEXT) == 0 and tok.get_vocab_size() == 2000
    held = paragraphs[3000:3200]
    assert all(tok.decode(tok.encode(p).ids) == p for p in held)
    assert all(len(tok.encode(d).ids) == len(d) for d in ("1234", "99"))  # every digit its own token
    assert bytes_per_token(held, lambda t: tok.encode(t).ids) > 2.5  # far better than bytes (1.0)
