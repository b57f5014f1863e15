"""Repetition counting for the Gopher and FineWeb rules: repeated items, and n-grams hashed with numpy.

    duplicates(lines)                           # (lines seen before, characters in them)
    grams = TokenNgrams(view.words)             # built once per document (TextView.grams)
    grams.top_chars(2), grams.repeated_chars(5) # characters in the top 2-gram / in repeated 5-grams

The definitions are Gopher's (Rae et al. 2021, table A1), as datatrove implements them.
"""

from __future__ import annotations

import numpy as np


def duplicates(items: list[str]) -> tuple[int, int]:
    """(items seen before, characters in them), counting each repeat after the first occurrence."""
    seen, count, chars = set(), 0, 0
    for item in items:
        if item in seen:
            count, chars = count + 1, chars + len(item)
        else:
            seen.add(item)
    return count, chars


def top_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram: its length (words joined by spaces) x count."""
    return TokenNgrams(tokens).top_chars(n)


def repeated_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters of n-grams that occurred before; a repeat skips ahead n words so none counts twice."""
    return TokenNgrams(tokens).repeated_chars(n)


class TokenNgrams:
    """n-grams of a token list as 64-bit polynomial hashes of token ids (numpy), for the repetition rules.

    Equal n-grams get equal hashes; two different ones collide with probability ~n / 2**64. Counting
    on hashes instead of joined strings makes the rules fast enough for 600 docs/s per core.
    """

    BASE = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, tokens: list[str]):
        vocab: dict[str, int] = {}
        ids = np.array([vocab.setdefault(t, len(vocab) + 1) for t in tokens], dtype=np.uint64)
        self.chars = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int64)
        self._hashes = {1: ids}
        self._unrepeated_from = len(tokens) + 1  # no n-gram of this size or longer occurs twice

    def hashes(self, n: int) -> np.ndarray:
        """Hashes of the n-grams at every start position: h(n) = h(n - 1) * BASE + id of the n-th word."""
        if n not in self._hashes:
            shorter, ids = self.hashes(n - 1), self._hashes[1]
            with np.errstate(over="ignore"):
                self._hashes[n] = shorter[:-1] * self.BASE + ids[n - 1:] if len(shorter) else shorter
        return self._hashes[n]

    def gram_chars(self, start: np.ndarray | int, n: int):
        """Characters of the n-grams starting at `start`, without separators."""
        return self.chars[start + n] - self.chars[start]

    def top_chars(self, n: int) -> int:
        """Most frequent n-gram's length with spaces x its count (ties: the one seen first)."""
        hashes = self.hashes(n)
        if not len(hashes):
            return 0
        _, first, counts = np.unique(hashes, return_index=True, return_counts=True)
        best = counts.max()
        start = int(first[counts == best].min())
        return int(self.gram_chars(start, n) + n - 1) * int(best)

    def repeated_chars(self, n: int) -> int:
        """The greedy scan (a repeat skips n words) visits only n-grams that occur more than once:
        at the others it would just step one word, and they can never be repeats."""
        hashes = self.hashes(n)
        if not len(hashes) or n >= self._unrepeated_from:
            return 0  # a repeated n-gram would contain a repeated shorter one
        _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
        candidates = np.flatnonzero(counts[inverse] > 1).tolist()
        if not candidates:
            self._unrepeated_from = min(self._unrepeated_from, n)
            return 0
        seen, total, i, values = set(), 0, 0, hashes.tolist()
        for p in candidates:
            if p < i:
                continue  # inside a repeat already counted
            if values[p] in seen:
                total, i = total + int(self.chars[p + n] - self.chars[p]), p + n
            else:
                seen.add(values[p])
                i = p + 1
        return total
