"""Training a custom byte-level BPE tokenizer with Qwen's pre-tokenization, for experiments.

    tok = train_bpe(texts, TrainTokenizerConfig(vocab_size=8000))
    tok.encode("Numbers: 12345").ids

Same pre-tokenization as Qwen (`stages.tokenize.tokenizer.PATTERN`: every digit its own piece, contractions,
letter runs, punctuation runs, newlines, spaces), then byte-level BPE (Hugging Face `tokenizers`),
with Qwen's special tokens (<|endoftext|>, <|im_start|>, <|im_end|>) first in the vocabulary.
`bytes_per_token` measures compression, to compare a trained tokenizer with the real Qwen one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stages.tokenize.tokenizer import ENDOFTEXT, IM_END, IM_START, PATTERN


@dataclass(frozen=True)
class TrainTokenizerConfig:
    vocab_size: int = 32000  # including the 256 byte tokens and the specials
    min_frequency: int = 2
    max_docs: int = 200_000  # documents sampled to the driver for training
    held_out: float = 0.05  # share of sampled documents kept for the compression report
    seed: int = 0


def new_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterable[str], config: TrainTokenizerConfig = TrainTokenizerConfig()):
    """A `tokenizers.Tokenizer` trained on `texts`."""
    from tokenizers import pre_tokenizers, trainers

    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, min_frequency=config.min_frequency,
                                  special_tokens=[ENDOFTEXT, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def bytes_per_token(texts: list[str], encode) -> float:
    """UTF-8 bytes per token over `texts` with `encode(text) -> list of ids` (higher: better compression)."""
    tokens = sum(len(encode(t)) for t in texts)
    return sum(len(t.encode()) for t in texts) / max(1, tokens)
