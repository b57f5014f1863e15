"""A Bloom filter over 128-bit digests: a numpy bit array, sized from the expected count and the false-positive rate.

Sizing (Bloom 1970; the standard optimum): for n expected items and false-positive rate p,
m = ceil(-n ln p / (ln 2)^2) bits (rounded up to whole 64-bit words) and k = max(1, round(m / n ln 2))
hash functions. The k bit positions of an item come from two 64-bit hashes h1, h2 (the two halves of a
keyed BLAKE2b digest, `digests`) by double hashing, g_i = (h1 + i h2) mod m (Kirsch & Mitzenmacher
2006), with h2 forced odd. Filters with the same m, k and seed merge by OR (`union`), which is what
inserting both item sets into one filter gives; that is how Spark builds one from partitions.

The file (`save` / `load`; `.qfb` by convention) is written atomically through `common.fs.put_file`
(temporary name, then rename; an object store publishes on completed upload):

    b"QFBLOOM1" | header length (uint32 LE) | header (UTF-8 JSON: m, k, n_added, seed, settings, ...)
    | the bit array (m / 8 bytes, 64-bit little-endian words) | BLAKE2b-128 of everything before it

`settings` is free JSON a user of the filter stores to refuse a reload under other rules (the line
dedup stage records its unit and normalisation there). A truncated or altered file fails `load` with
one line naming the path (`BloomFileError`, a `UserError`).

    bloom = BloomFilter.sized(n=100_000, p=0.01)
    bloom.add(digests(["a line", "another"]))
    bloom.contains(digests(["a line", "never seen"]))      # -> array([ True, False])
    measured_fpr(bloom, 100_000)                           # probes items never inserted
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Iterable

import numpy as np

from common import fs
from common.errors import UserError

MAGIC = b"QFBLOOM1"
CHECKSUM_BYTES = 16
LN2 = math.log(2)


class BloomFileError(UserError):
    """A filter file that cannot be used: missing, truncated, altered or of another kind."""


def salt(seed: int) -> bytes:
    """The BLAKE2b salt of a seed (16 bytes): different seeds give independent hash families."""
    return (seed % 2 ** 128).to_bytes(16, "little")


def digests(items: Iterable[str | bytes], seed: int = 0) -> np.ndarray:
    """(n, 2) uint64: the two 64-bit halves of each item's 128-bit BLAKE2b digest under `seed`."""
    key = salt(seed)
    raw = b"".join(hashlib.blake2b(i.encode() if isinstance(i, str) else i, digest_size=16, salt=key).digest()
                   for i in items)
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2)


def optimal_size(n: int, p: float) -> tuple[int, int]:
    """(m bits, k hashes) for `n` items at false-positive rate `p`; m rounded up to 64-bit words."""
    if n <= 0 or not 0 < p < 1:
        raise ValueError(f"a Bloom filter needs n > 0 and 0 < p < 1, got n={n}, p={p}")
    m = math.ceil(-n * math.log(p) / LN2 ** 2)
    m = max(64, -(-m // 64) * 64)
    return m, max(1, round(m / n * LN2))


class BloomFilter:
    """m bits in uint64 words, k positions per item, items given as `digests` rows."""

    def __init__(self, m: int, k: int, seed: int = 0, words: np.ndarray | None = None, n_added: int = 0,
                 settings: dict | None = None):
        if m <= 0 or m % 64 or k <= 0:
            raise ValueError(f"a Bloom filter needs m a positive multiple of 64 and k > 0, got m={m}, k={k}")
        self.m, self.k, self.seed, self.n_added = m, k, seed, n_added
        self.settings = dict(settings or {})
        self.words = np.zeros(m // 64, dtype=np.uint64) if words is None else words

    @classmethod
    def sized(cls, n: int, p: float, seed: int = 0, settings: dict | None = None) -> "BloomFilter":
        m, k = optimal_size(n, p)
        return cls(m, k, seed, settings={**(settings or {}), "expected_items": n, "fp_rate": p})

    def positions(self, hashes: np.ndarray) -> np.ndarray:
        """(k, n) uint64 bit positions of (n, 2) digests: (h1 + i h2) mod m, h2 odd."""
        h1, h2 = hashes[:, 0], hashes[:, 1] | np.uint64(1)
        steps = np.arange(self.k, dtype=np.uint64)[:, None]
        with np.errstate(over="ignore"):  # wrap-around mod 2^64 is part of the hash
            return (h1[None, :] + steps * h2[None, :]) % np.uint64(self.m)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Bool per row: True when all k bits are set (a false positive at rate ~`expected_fpr`)."""
        if len(hashes) == 0:
            return np.zeros(0, dtype=bool)
        pos = self.positions(hashes)
        bits = (self.words[pos >> np.uint64(6)] >> (pos & np.uint64(63))) & np.uint64(1)
        return bits.all(axis=0)

    def add(self, hashes: np.ndarray) -> int:
        """Inserts the rows; returns how many distinct rows were new (not all bits set before)."""
        if len(hashes) == 0:
            return 0
        hashes = np.unique(hashes, axis=0)
        new = int((~self.contains(hashes)).sum())
        pos = self.positions(hashes).ravel()
        np.bitwise_or.at(self.words, pos >> np.uint64(6), np.uint64(1) << (pos & np.uint64(63)))
        self.n_added += new
        return new

    def union(self, other: "BloomFilter") -> "BloomFilter":
        """This filter with `other`'s bits OR-ed in (same m, k, seed); n_added adds up (an upper bound)."""
        if (self.m, self.k, self.seed) != (other.m, other.k, other.seed):
            raise ValueError(f"cannot merge Bloom filters of (m, k, seed) {(self.m, self.k, self.seed)} and "
                             f"{(other.m, other.k, other.seed)}")
        self.words |= other.words
        self.n_added += other.n_added
        return self

    def expected_fpr(self, n: int | None = None) -> float:
        """(1 - e^(-k n / m))^k for n items (default: those added)."""
        n = self.n_added if n is None else n
        return (1 - math.exp(-self.k * n / self.m)) ** self.k

    def header(self) -> dict:
        return {"m": self.m, "k": self.k, "n_added": self.n_added, "seed": self.seed, "settings": self.settings}

    def to_bytes(self) -> bytes:
        head = json.dumps(self.header(), sort_keys=True).encode()
        body = MAGIC + struct.pack("<I", len(head)) + head + self.words.astype("<u8").tobytes()
        return body + hashlib.blake2b(body, digest_size=CHECKSUM_BYTES).digest()

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "Bloom filter") -> "BloomFilter":
        """Parses `to_bytes` output; any damage is a `BloomFileError` naming `name`."""
        body, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4 + CHECKSUM_BYTES:
            raise BloomFileError(f"{name} is not a Bloom filter file (no {MAGIC.decode()} header)")
        if hashlib.blake2b(body, digest_size=CHECKSUM_BYTES).digest() != checksum:
            raise BloomFileError(f"{name} is corrupt: checksum mismatch (truncated or altered)")
        (size,) = struct.unpack_from("<I", body, len(MAGIC))
        start = len(MAGIC) + 4 + size
        head = json.loads(body[len(MAGIC) + 4:start])
        words = np.frombuffer(body[start:], dtype="<u8").astype(np.uint64)
        if words.size * 64 != head["m"]:
            raise BloomFileError(f"{name} is corrupt: {words.size * 64} bits stored, header says {head['m']}")
        return cls(head["m"], head["k"], head["seed"], words, head["n_added"], head.get("settings"))

    def save(self, path: str) -> None:
        """Writes the file atomically (temporary file, then `common.fs.put_file`)."""
        with tempfile.NamedTemporaryFile(suffix=".qfb", delete=False) as tmp:
            tmp.write(self.to_bytes())
        try:
            fs.put_file(tmp.name, path)
        finally:
            os.unlink(tmp.name)

    @classmethod
    def load(cls, path: str) -> "BloomFilter":
        if not fs.is_file(path):
            raise BloomFileError(f"Bloom filter file {path} does not exist")
        return cls.from_bytes(fs.read_bytes(path), f"Bloom filter file {path}")


def measured_fpr(bloom: BloomFilter, probes: int, seed: int = 12345) -> float:
    """The fraction of `probes` distinct items never inserted that the filter claims to contain."""
    if probes <= 0:
        return 0.0
    items = (f"\0probe\0{seed}\0{i}" for i in range(probes))  # a NUL prefix no normalised text unit has
    return float(bloom.contains(digests(items, bloom.seed)).mean())
