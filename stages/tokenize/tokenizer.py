"""The real Qwen tokenizer: a `tiktoken` encoding built from Qwen's BPE ranks and pre-tokenizer.

    tok = QwenTokenizer()                      # $QWEN_TIKTOKEN, else <repo>/assets/qwen.tiktoken
    ids = tok.encode("<|im_start|>user\\nhi", allowed_special="all")
    tok.decode(ids)

The ranks file (151,643 byte-level BPE merges) is the `qwen.tiktoken` that `make setup` takes from the
`dashscope` 2.0.2 wheel (see tools/assets.py). Special tokens follow Qwen: <|endoftext|> 151643,
<|im_start|> 151644, <|im_end|> 151645, then <|extra_0|> ... <|extra_204|>. The encoding loads lazily,
so a tokenizer object pickles small and ships to Spark executors.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
from pathlib import Path

from common.fs import shipped

REPO = Path(__file__).resolve().parents[2]
# Qwen's pre-tokenizer: contractions, letters, single digits, punctuation runs, newlines, spaces.
PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
           r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
ENDOFTEXT_ID, IM_START_ID, IM_END_ID = 151643, 151644, 151645
NUM_EXTRA = 205


def ranks_path(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("QWEN_TIKTOKEN") or REPO / "assets" / "qwen.tiktoken")


def read_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.cache
def load_encoding(path: str | Path | None = None):
    """The `tiktoken.Encoding` for a ranks file (cached per process)."""
    import tiktoken

    path = Path(shipped(str(ranks_path(path))))
    if not path.exists():
        raise FileNotFoundError(f"Qwen BPE ranks not found at {path}; run `make setup` or set QWEN_TIKTOKEN")
    ranks = read_ranks(path)
    names = [ENDOFTEXT, IM_START, IM_END] + [f"<|extra_{i}|>" for i in range(NUM_EXTRA)]
    specials = {name: len(ranks) + i for i, name in enumerate(names)}
    return tiktoken.Encoding("qwen", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=specials)


class QwenTokenizer:
    """Picklable handle on the Qwen encoding; `encode` / `decode` / `checksum`."""

    eos_id = ENDOFTEXT_ID

    def __init__(self, path: str | Path | None = None):
        self.path = str(ranks_path(path))

    @property
    def encoding(self):
        return load_encoding(self.path)

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str, allowed_special: str | set = "all") -> list[int]:
        return self.encoding.encode(text, allowed_special=allowed_special, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode(ids)

    def checksum(self) -> str:
        return hashlib.sha256(Path(shipped(self.path)).read_bytes()).hexdigest()
