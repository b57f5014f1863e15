"""The fast exact Qwen encoder: the C scanner and merger of stages/tokenize/_qwen_bpe.c, with tiktoken as fallback.

    encoder = fast_encoder(QwenTokenizer().path)   # cached per process
    ids = encoder.encode(text)                     # np.ndarray[int32], == encoding.encode_ordinary(text)

tiktoken spends most of its time in its backtracking regex; the C module matches Qwen's pre-tokenizer
pattern with a hand-written scanner over a table of character classes (letter, number, White_Space)
and merges each piece exactly as tiktoken does, about 2-2.5x faster on one core; a pre-token of a
megabyte (base64, minified code, a run of one character) merges in O(n log n), like tiktoken's own
long-piece path, where rescanning took minutes (bench/bench_encoder_hostile.py). The table comes from
the `regex` package's Unicode data; the code points recent Unicode versions added (where Python's
`unicodedata` disagrees) are calibrated against the installed tiktoken, whose Unicode version may be
older (tests/stages/test_fast_bpe.py checks every code point in several contexts). Lone surrogates become
U+FFFD first, as in tiktoken's `encode_ordinary`. Without the built module (no compiler at set-up, or
a cluster environment without it) the encoder is tiktoken: the same ids, slower; `.native` says which.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from common.fs import shipped

log = logging.getLogger(__name__)

LETTER, NUMBER, SPACE = 1, 2, 4
# Unicode White_Space, what `\s` matches in tiktoken's regex engine (str.isspace() also takes U+001C-001F)
WHITE_SPACE = [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
               0x205F, 0x3000]


# contexts in which letters, numbers and other characters give different tiktoken ids
PROBES = ["x{c}y", " {c}a", "  {c}", "1{c}1", "!{c}b", "{c}{c}", "\n{c} ", "'{c}", " {c}\n", "{c}  x", "a {c} 12",
          "{c}'s", "\r\n{c}\t"]


def unicode_classes() -> tuple[np.ndarray, np.ndarray]:
    """One byte per code point (LETTER for \\p{L}, NUMBER for \\p{N}, SPACE for White_Space) from the
    `regex` package's Unicode data, and the code points whose class Python's older `unicodedata`
    disagrees on (assigned in recent Unicode versions)."""
    import regex
    import unicodedata

    table, older = np.zeros(0x110000, np.uint8), np.zeros(0x110000, np.uint8)
    every = "".join(map(chr, range(0x110000)))
    for pattern, bit in ((r"\p{L}+", LETTER), (r"\p{N}+", NUMBER)):
        for m in regex.finditer(pattern, every):
            table[m.start():m.end()] |= bit
    for c in np.nonzero(table)[0].tolist():
        kind = unicodedata.category(chr(c))[0]
        older[c] = LETTER if kind == "L" else NUMBER if kind == "N" else 0
    table[WHITE_SPACE] |= SPACE
    older[WHITE_SPACE] |= SPACE
    return table, np.nonzero(table != older)[0]


def char_classes(module, tokens: list[bytes], reference) -> bytes:
    """The class table, calibrated against the installed tiktoken: each disputed code point takes the
    class (letter, number or neither) under which the C encoder gives tiktoken's ids in every probe."""
    table, disputed = unicode_classes()
    regex_classes, candidates = table[disputed].copy(), {}
    for cls in (regex_classes, *(np.full(len(disputed), k, np.uint8) for k in (LETTER, NUMBER, 0))):
        trial = table.copy()
        trial[disputed] = cls
        candidates.setdefault(bytes(cls), (cls, module.Encoder(tokens, trial.tobytes())))

    def settle(indices: np.ndarray) -> bool:
        """Gives the disputed code points at `indices` the first candidate's classes that match tiktoken."""
        text = "|".join(p.format(c=chr(c)) for c in disputed[indices].tolist() for p in PROBES)
        expected = reference.encode_ordinary(text)
        for cls, encoder in candidates.values():
            if np.frombuffer(encoder.encode(text), np.int32).tolist() == expected:
                table[disputed[indices]] = cls[indices]
                return True
        return False

    def calibrate(indices: np.ndarray) -> None:   # a whole run at once, halving it where it does not settle
        if not settle(indices):
            if len(indices) == 1:
                table[disputed[indices]] = regex_classes[indices]
            else:
                calibrate(indices[:len(indices) // 2])
                calibrate(indices[len(indices) // 2:])

    for start in range(0, len(disputed), 256):
        calibrate(np.arange(start, min(start + 256, len(disputed))))
    return table.tobytes()


def _native_module():
    try:
        from stages.tokenize import _qwen_bpe
    except ImportError:
        try:
            import _qwen_bpe   # the copy tools/dist.py puts in a cluster environment's site-packages
        except ImportError:
            return None
    return _qwen_bpe


class FastEncoder:
    """`encode(text)` -> int32 ids of the text with no special tokens, like tiktoken's `encode_ordinary`;
    with `native=False` (or no built module) tiktoken itself computes them."""

    def __init__(self, ranks_path: str, native: bool = True):
        from stages.tokenize.tokenizer import load_encoding, read_ranks

        self.reference = load_encoding(ranks_path)
        module = _native_module() if native else None
        self.native = None
        if module is None:
            if native:
                log.warning("stages.tokenize._qwen_bpe is not built (run `make setup`); tokenizing with tiktoken")
            return
        ranks = getattr(self.reference, "_mergeable_ranks", None) or read_ranks(Path(shipped(ranks_path)))
        tokens = [b""] * len(ranks)
        for token, rank in ranks.items():
            tokens[rank] = token
        self.native = module.Encoder(tokens, char_classes(module, tokens, self.reference))

    def encode(self, text: str) -> np.ndarray:
        try:
            return self._encode(text)
        except UnicodeEncodeError:   # lone surrogates become U+FFFD, as tiktoken's encode_ordinary does
            return self._encode(without_surrogates(text))

    def _encode(self, text: str) -> np.ndarray:
        if self.native is not None:
            return np.frombuffer(self.native.encode(text), np.int32)
        # tiktoken's numpy output skips the Python list (ids < 2**31, so the view is exact)
        return self.reference.encode_to_numpy(text, allowed_special=set(), disallowed_special=()).view(np.int32)


def without_surrogates(text: str) -> str:
    """`text` with each lone surrogate (not encodable as UTF-8) replaced by U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@functools.cache
def fast_encoder(ranks_path: str, native: bool = True) -> FastEncoder:
    return FastEncoder(ranks_path, native)
