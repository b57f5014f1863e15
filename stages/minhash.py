"""MinHash signatures and LSH bands, vectorised over a batch, bit-for-bit compatible with datasketch.

    params = MinHashParams(num_perm=112, bands=14, rows=8, ngram=5)     # FineWeb's setting
    sigs = signatures(["a text ...", "another ..."], params)            # (2, 112) uint32
    keys = band_keys(sigs, params)                                      # per document: 14 band byte strings

A signature row equals `datasketch.MinHash(num_perm, seed, scheme=params.scheme)` updated with the same
shingles (`shingles(text, params)`), so rows load into `datasketch.LeanMinHash(seed=..., hashvalues=row,
scheme=...)` and `MinHashLSH(params=(bands, rows))`. The permutation schemes are datasketch's:

- "affine32" (datasketch >= 2.0 default): h = fmix32(sha1_32(shingle)); value = a*h + b mod 2^32, a odd.
- "legacy" (datasketch < 2.0): h = sha1_32(shingle); value = ((a*h + b) mod 2^64) mod (2^61 - 1), low 32
  bits. (datasketch multiplies in uint64 and lets it wrap before taking the Mersenne modulus; so do we.)

sha1_32 is the first 4 bytes of SHA-1, little-endian. a, b are drawn from `np.random.RandomState(seed)`
in datasketch's order. `hash="xxh64"` (datatrove's choice, not datasketch's default) puts the low 32 bits
of XXH64 (seed 0) in place of sha1_32: the rows then equal datasketch's `MinHash(hashfunc=lambda s:
xxhash.xxh64_intdigest(s) & 0xFFFFFFFF)`; on one core it hashes an article's 30-byte shingle in ~20 ns,
SHA-1 in ~33 ns with the x86 SHA extensions, ~45 ns in AVX2 lanes, ~80 ns in SSE2 lanes (`stages/_minhash.c`).

Two implementations, the same values (tests compare them with each other and with datasketch):

- native (`stages/_minhash.c`, built by `make setup`): one C call per batch normalises each text into
  one UTF-8 buffer (the same rule as `normalize_text`, code point by code point), hashes every shingle
  span in place (SHA-1 with the x86 SHA extensions where the CPU has them, else eight at a time in
  vector lanes; or XXH64) and applies the permutations 32 at a time over the text's hashes, keeping
  the minimum; no Python object per shingle, no (shingles x num_perm) matrix.
- numpy (`native=False`, and the fallback, with a warning, when the module is not built): word shingle
  spans in the batch's joined UTF-8 text are found with numpy and sliced straight into hashlib's SHA-1
  (or the `xxhash` package), and the per-document minimum of a (shingles x num_perm) matrix is taken
  with `np.minimum.reduceat`, in chunks.

Bands: `optimal_bands(threshold, num_perm)` picks (bands, rows) minimising the weighted false positive
and false negative areas under the LSH S-curve, as datasketch's `MinHashLSH` does (Leskovec et al.,
Mining of Massive Datasets, ch. 3). The areas are integrated with Gauss-Legendre quadrature, exact
here because the integrand is a polynomial of degree bands*rows <= num_perm.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

MERSENNE = np.uint64((1 << 61) - 1)
MASK32 = np.uint64((1 << 32) - 1)
EMPTY = {"affine32": np.uint32(0xFFFFFFFF), "legacy": MASK32}  # datasketch's value for an empty set
CHUNK_SHINGLES = 8192  # rows of the (shingles x num_perm) matrix held at once: 8192 x 128 x 8 B = 8 MiB
HASHES = ("sha1", "xxh64")  # per shingle: datasketch's sha1_hash32, or the low 32 bits of XXH64
_MODES = {"word": 0, "char": 1, "auto": 2}  # the native module's codes
_HASH_CODES = {"sha1": 0, "xxh64": 1}
_SCHEME_CODES = {"affine32": 0, "legacy": 1}


@dataclass(frozen=True)
class MinHashParams:
    num_perm: int = 112  # FineWeb (Penedo et al. 2024): 112 hashes in 14 bands of 8
    bands: int = 14
    rows: int = 8
    ngram: int = 5  # word 5-grams (FineWeb, Gopher)
    seed: int = 1  # datasketch's default seed
    scheme: str = "affine32"  # or "legacy" (datasketch < 2.0)
    shingle: str = "word"  # "word", "char" (languages without spaces) or "auto" (per document)
    char_ngram: int = 5
    hash: str = "sha1"  # datasketch's sha1_hash32; "xxh64": faster, not datasketch's default signatures

    def __post_init__(self):
        if self.scheme not in EMPTY:
            raise ValueError(f"scheme must be 'affine32' or 'legacy', got {self.scheme!r}")
        if self.hash not in HASHES:
            raise ValueError(f"hash must be 'sha1' or 'xxh64', got {self.hash!r}")
        if self.shingle not in ("word", "char", "auto"):
            raise ValueError(f"shingle must be 'word', 'char' or 'auto', got {self.shingle!r}")
        if self.bands * self.rows > self.num_perm or min(self.bands, self.rows, self.ngram) < 1:
            raise ValueError(f"need bands*rows <= num_perm, got {self.bands}x{self.rows} > {self.num_perm}")

    @classmethod
    def for_threshold(cls, threshold: float, num_perm: int = 128, weights=(0.5, 0.5), **kw) -> MinHashParams:
        bands, rows = optimal_bands(threshold, num_perm, *weights)
        return cls(num_perm=num_perm, bands=bands, rows=rows, **kw)


# ---------------------------------------------------------------------------- band choice


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising fp_weight * FP area + fn_weight * FN area (datasketch's criterion)."""
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=float)
    b, r = pairs[:, :1], pairs[:, 1:]
    s_lo, w_lo = _gauss_legendre(0.0, threshold, num_perm)
    s_hi, w_hi = _gauss_legendre(threshold, 1.0, num_perm)
    fp = (1 - (1 - s_lo ** r) ** b) @ w_lo  # P(candidate) integrated over [0, t]
    fn = ((1 - s_hi ** r) ** b) @ w_hi  # P(not candidate) integrated over [t, 1]
    error = fp_weight * fp + fn_weight * fn
    best = int(np.argmin(error))  # first minimum, in datasketch's (b, r) scan order
    return int(pairs[best, 0]), int(pairs[best, 1])


def _gauss_legendre(lo: float, hi: float, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [lo, hi], exact for polynomials up to `degree`."""
    x, w = np.polynomial.legendre.leggauss(degree // 2 + 1)
    return (hi - lo) / 2 * x + (hi + lo) / 2, (hi - lo) / 2 * w


# ---------------------------------------------------------------------------- shingles


def normalize_text(text: str) -> str:
    """NFC, case folded, Unicode punctuation (categories P*) replaced by spaces, whitespace collapsed.

    ASCII text takes a byte-level path with the same result (NFC is the identity there, casefold is
    lower, and the ASCII P* characters are replaced with a 256-byte table)."""
    if text.isascii():
        return " ".join(text.encode().lower().translate(_ASCII_PUNCTUATION).decode().split())
    folded = unicodedata.normalize("NFC", text).casefold()
    return " ".join(folded.translate(_punctuation_table()).split())


_ASCII_PUNCTUATION = bytes(32 if unicodedata.category(chr(c)).startswith("P") else c for c in range(256))


@lru_cache(maxsize=1)
def _punctuation_table() -> dict[int, str]:
    return {c: " " for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("P")}


def normalized_utf8(texts: list[str | None], native: bool = True) -> list[bytes]:
    """`normalize_text(t or "").encode()` of each text, in one C call when the module is built."""
    module = native_module() if native else None
    if module is None:
        return [normalize_text(t or "").encode() for t in texts]
    return module.normalized(texts)


def shingles(text: str | None, params: MinHashParams = MinHashParams()) -> set[bytes]:
    """The set of UTF-8 shingles of a text: word n-grams, or character n-grams of the normalised text.

    Words come from `normalize_text` (NFC, case folded, punctuation removed), so "Hello, World" and
    "hello world" share shingles. A text shorter than n units gives one shingle (the whole text); an
    empty text gives none (its signature is datasketch's empty value; it never joins a band bucket).
    """
    norm = normalize_text(text or "")
    words = norm.split()
    if not words:
        return set()
    if params.shingle == "char" or (params.shingle == "auto" and _unsegmented(norm, words)):
        n = params.char_ngram
        return {norm[i:i + n].encode() for i in range(max(1, len(norm) - n + 1))}
    n, words = params.ngram, norm.encode().split(b" ")  # same bytes as " ".join(gram).encode(), faster
    if len(words) <= n:
        return {b" ".join(words)}
    return set(map(b" ".join, zip(*(words[i:] for i in range(n)))))


def _unsegmented(norm: str, words: list[str]) -> bool:
    """True for text written without spaces (Chinese, Japanese, Thai): mean 'word' over 20 characters."""
    return len(norm) > 20 * len(words)


# ---------------------------------------------------------------------------- signatures


@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) drawn from RandomState(seed) in datasketch's order, as row vectors of the scheme's dtype."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":  # one (a, b) pair per permutation, interleaved draws
        ab = np.array([(gen.randint(1, MERSENNE, dtype=np.uint64), gen.randint(0, MERSENNE, dtype=np.uint64))
                       for _ in range(num_perm)], dtype=np.uint64)
        return ab[:, 0].copy(), ab[:, 1].copy()
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def sha1_32(items: list[bytes]) -> np.ndarray:
    """datasketch's `sha1_hash32` of every item, as one uint32 array."""
    sha1 = hashlib.sha1
    digests = np.frombuffer(b"".join([sha1(x).digest() for x in items]), dtype="<u4")
    return digests.reshape(-1, 5)[:, 0].astype(np.uint32)  # 20-byte digests: first 4 bytes each


def hash32(items: list[bytes], hash: str = "sha1") -> np.ndarray:
    """The 32-bit shingle hash of every item (`MinHashParams.hash`), by hashlib or the xxhash package."""
    if hash == "sha1":
        return sha1_32(items)
    try:
        from xxhash import xxh64_intdigest
    except ImportError:
        raise ImportError("hash = 'xxh64' needs the compiled stages._minhash (run `make setup`) "
                          "or the xxhash package") from None
    return np.fromiter((xxh64_intdigest(x) & 0xFFFFFFFF for x in items), dtype=np.uint32, count=len(items))


def fmix32(h: np.ndarray) -> np.ndarray:
    """The MurmurHash3 32-bit finalizer (a bijection), which datasketch's affine32 applies first."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@lru_cache(maxsize=1)
def native_module():
    """stages._minhash, or None (with one warning) when it is not built."""
    try:
        from stages import _minhash
    except ImportError:
        try:
            import _minhash  # the copy tools/dist.py puts in a cluster environment's site-packages
        except ImportError:
            log.warning("stages._minhash is not built (run `make setup`); MinHash signatures use numpy (slower)")
            return None
    return _minhash


def signatures(texts: list[str | None], params: MinHashParams = MinHashParams(), native: bool = True) -> np.ndarray:
    """MinHash signatures of a batch of texts, shape (len(texts), num_perm): one call of the C module,
    or with `native=False` (or no built module) the numpy path."""
    module = native_module() if native else None
    if module is None:
        return _numpy_signatures(texts, params)
    a, b = permutations(params.num_perm, params.seed, params.scheme)
    out = np.empty((len(texts), params.num_perm), EMPTY[params.scheme].dtype)
    module.signatures(texts, _MODES[params.shingle], params.ngram, params.char_ngram, _HASH_CODES[params.hash],
                      _SCHEME_CODES[params.scheme], a, b, out)
    return out


def _numpy_signatures(texts: list[str | None], params: MinHashParams) -> np.ndarray:
    """Word shingles are not built as objects: the batch's normalised texts are joined into one byte
    string, shingle spans are found with numpy and each span is hashed in place (`_word_shingle_hashes`).
    Texts written without spaces take the character-shingle path of `shingles`."""
    norms = [normalize_text(t or "") for t in texts]
    chars = [params.shingle == "char" or (params.shingle == "auto" and bool(x) and _unsegmented(x, x.split()))
             for x in norms]
    hashes, doc_of = _word_shingle_hashes([b"" if c else x.encode() for x, c in zip(norms, chars)], params.ngram,
                                          params.hash)
    if any(chars):
        sets = [list(shingles(t, params)) if c else [] for t, c in zip(texts, chars)]
        extra = hash32([x for s in sets for x in s], params.hash)
        hashes = np.concatenate([hashes, extra])
        doc_of = np.concatenate([doc_of, np.repeat(np.arange(len(sets)), [len(s) for s in sets])])
        order = np.argsort(doc_of, kind="stable")
        hashes, doc_of = hashes[order], doc_of[order]
    return _signatures_of_hashes(hashes, doc_of, len(texts), params)


def _word_shingle_hashes(encoded: list[bytes], n: int, hash: str = "sha1") -> tuple[np.ndarray, np.ndarray]:
    """The hash32 of every word n-gram occurrence of each (normalised, UTF-8) text, and its text's index.

    The same byte strings as `shingles` (a text of at most n words is one shingle), duplicates included."""
    big = b"\n".join(encoded)
    raw = np.frombuffer(big, np.uint8)
    seps = np.flatnonzero((raw == 32) | (raw == 10))
    starts, ends = np.r_[0, seps + 1], np.r_[seps, len(big)]
    doc = np.repeat(np.arange(len(encoded)), [x.count(b" ") + 1 for x in encoded])
    real = ends > starts                                   # empty texts leave a zero-length "word"
    starts, ends, doc = starts[real], ends[real], doc[real]
    first = np.searchsorted(doc, np.arange(len(encoded)))  # each text's first word
    words = np.bincount(doc, minlength=len(encoded))
    i = np.arange(max(0, len(doc) - n + 1))
    full = i[doc[i] == doc[i + n - 1]] if len(i) else i   # n-grams inside one text
    short = np.flatnonzero((words > 0) & (words < n))      # texts shorter than n words: the whole text
    s = np.concatenate([starts[full], starts[first[short]]])
    e = np.concatenate([ends[full + n - 1], ends[first[short] + words[short] - 1]])
    owner = np.concatenate([doc[full], short])
    if len(short):   # the short texts' shingles were appended: back into text order
        order = np.argsort(owner, kind="stable")
        s, e, owner = s[order], e[order], owner[order]
    if hash != "sha1":
        return hash32([big[x:y] for x, y in zip(s.tolist(), e.tolist())], hash), owner
    sha1 = hashlib.sha1
    digests = b"".join([sha1(big[x:y]).digest() for x, y in zip(s.tolist(), e.tolist())])
    return np.frombuffer(digests, "<u4").reshape(-1, 5)[:, 0].astype(np.uint32), owner


def signatures_of_shingles(sets: list, params: MinHashParams = MinHashParams(), native: bool = True) -> np.ndarray:
    """Signatures of a batch of shingle collections (bytes); duplicates inside a collection are harmless."""
    lists = [list(s) for s in sets]
    counts = np.fromiter((len(s) for s in lists), dtype=np.int64, count=len(lists))
    items = [x for s in lists for x in s]
    module = native_module() if native else None
    if module is None:
        return _signatures_of_hashes(hash32(items, params.hash), np.repeat(np.arange(len(lists)), counts),
                                     len(lists), params)
    spans = np.zeros(len(items) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, items), dtype=np.int64, count=len(items)), out=spans[1:])
    docs = np.zeros(len(lists) + 1, np.int64)
    np.cumsum(counts, out=docs[1:])
    a, b = permutations(params.num_perm, params.seed, params.scheme)
    out = np.empty((len(lists), params.num_perm), EMPTY[params.scheme].dtype)
    module.span_signatures(b"".join(items), spans, docs, _HASH_CODES[params.hash], _SCHEME_CODES[params.scheme],
                           a, b, out)
    return out


def _signatures_of_hashes(hashes: np.ndarray, doc_of: np.ndarray, n_docs: int, params: MinHashParams) -> np.ndarray:
    """Per-document minima of the permuted shingle hashes (`doc_of` sorted); EMPTY for documents without any."""
    a, b = permutations(params.num_perm, params.seed, params.scheme)
    out = np.full((n_docs, params.num_perm), EMPTY[params.scheme])
    if params.scheme == "affine32":
        hashes = fmix32(hashes)
    for start in range(0, len(hashes), CHUNK_SHINGLES):
        h, docs = hashes[start:start + CHUNK_SHINGLES], doc_of[start:start + CHUNK_SHINGLES]
        values = _permute(h, a, b, params.scheme)
        firsts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])  # each document's first row in the chunk
        owners = docs[firsts]
        out[owners] = np.minimum(out[owners], np.minimum.reduceat(values, firsts, axis=0))
    return out


def _permute(h: np.ndarray, a: np.ndarray, b: np.ndarray, scheme: str) -> np.ndarray:
    """(len(h), num_perm) permuted hash values; integer overflow wraps, as in datasketch."""
    if scheme == "affine32":
        return h[:, None] * a[None, :] + b[None, :]
    wide = h.astype(np.uint64)[:, None] * a[None, :] + b[None, :]
    return (wide % MERSENNE) & MASK32


# ---------------------------------------------------------------------------- bands


def band_keys(sigs: np.ndarray, params: MinHashParams = MinHashParams()) -> list[list[bytes] | None]:
    """Per document, `bands` byte strings: band i is the raw bytes of columns [i*rows, (i+1)*rows).

    The raw bytes (no further hashing) make buckets exactly datasketch's MinHashLSH buckets. Rows of
    documents without shingles (all values EMPTY) get None: they are never candidates.
    """
    width = params.bands * params.rows
    block = np.ascontiguousarray(sigs[:, :width]).astype(sigs.dtype.newbyteorder(">"))
    raw = block.view(np.uint8).reshape(len(sigs), params.bands, -1)
    empty = (sigs == EMPTY[params.scheme]).all(axis=1)
    return [None if empty[i] else [bytes(band) for band in raw[i]] for i in range(len(sigs))]


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity of two sets (1.0 for two empty sets, as datasketch estimates)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """MinHash Jaccard estimate: the fraction of equal signature values (datasketch's `jaccard`)."""
    return float(np.count_nonzero(sig_a == sig_b)) / len(sig_a)
