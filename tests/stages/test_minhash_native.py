"""The C MinHash module (stages/_minhash.c) against hashlib, xxhash, datasketch and the numpy path."""

from __future__ import annotations

import hashlib
import random
import struct

import numpy as np
import pytest
import xxhash
from datasketch import MinHash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.recipe import ConfigError, build
from stages.dedup import DedupConfig, text_key, text_keys
from stages.minhash import (EMPTY, MinHashParams, native_module, normalize_text, normalized_utf8, sha1_32, shingles,
                            signatures, signatures_of_shingles)

NATIVE = native_module()
# The CPU paths this machine has: SHA extensions, AVX2 (eight-lane SHA-1, permutations), portable C.
FEATURES = [(True, True), (False, True), (False, False)]

# Characters that have broken normalisers: case folds that expand (ß -> ss, ﬃ -> ffi, İ -> i + U+0307),
# final sigma, white space Python's str.split knows (\x1c-\x1f, \x85, NBSP, U+2028, ideographic space),
# punctuation in and out of ASCII, combining marks that NFC composes, Hangul jamo, astral letters and
# emoji, NUL, text without spaces.
HOSTILE = ["ß", "ẞ", "ﬃ", "İ", "ı", "Σ", "ς", "ſ", "\u212b", "\u00c5", "A\u030a", "e\u0301", "\u1100\u1161\u11a8",
           "ᾼ", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u2028", "\u3000", "\t", "\n", "\r", " ",
           "\x00", "-", "—", "«", "»", "¿", "、", "。", "'", "\u2019", "\u201c", "\u05be", "𝔘𝔫𝔦", "😀", "👍🏽", "ℌ",
           "Ⅻ", "µ", "Ǆ", "ǅ", "我们今天在河边看到", "ภาษาไทย", "The", "QUICK", "fox", "x1", "A.B", "dog's"]
TEXTS = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(HOSTILE)), max_size=40).map("".join)


@pytest.fixture(autouse=True)
def restore_features():
    assert NATIVE is not None, "stages._minhash is not built: run `make setup`"
    yield
    NATIVE.set_features(True, True)


def datasketch_row(text: str, params: MinHashParams) -> np.ndarray:
    hashfunc = None if params.hash == "sha1" else (lambda b: xxhash.xxh64_intdigest(b) & 0xFFFFFFFF)
    m = MinHash(num_perm=params.num_perm, seed=params.seed, scheme=params.scheme, hashfunc=hashfunc)
    m.update_batch(list(shingles(text, params)))
    return m.hashvalues


def spans(items: list[bytes]) -> tuple[bytes, np.ndarray]:
    return b"".join(items), np.cumsum([0] + [len(x) for x in items]).astype(np.int64)


# ---------------------------------------------------------------------------- hashes


@pytest.mark.parametrize("features", FEATURES)
def test_sha1_32_equals_hashlib_at_every_padding_boundary(features):
    NATIVE.set_features(*features)
    rng = random.Random(0)
    items = [bytes(rng.randrange(256) for _ in range(n)) for n in range(300) for _ in range(3)]
    buf, offsets = spans(items)
    out = np.zeros(len(items), np.uint32)
    NATIVE.hashes(buf, offsets, 0, out)
    assert out.tolist() == [struct.unpack("<I", hashlib.sha1(x).digest()[:4])[0] for x in items]


def test_xxh64_equals_the_xxhash_package():
    rng = random.Random(1)
    items = [bytes(rng.randrange(256) for _ in range(n)) for n in range(300) for _ in range(2)]
    for seed in (0, 1, 2**64 - 1, 0x9E3779B185EBCA87):
        assert [NATIVE.xxh64(x, seed) for x in items] == [xxhash.xxh64_intdigest(x, seed=seed) for x in items]
    buf, offsets = spans(items)
    out = np.zeros(len(items), np.uint32)
    NATIVE.hashes(buf, offsets, 1, out)
    assert out.tolist() == [xxhash.xxh64_intdigest(x) & 0xFFFFFFFF for x in items]


def test_hash_spans_refuse_bad_offsets():
    out = np.zeros(1, np.uint32)
    with pytest.raises(ValueError):
        NATIVE.hashes(b"abc", np.array([0, 4], np.int64), 0, out)
    with pytest.raises(ValueError):
        NATIVE.hashes(b"abc", np.array([2, 1], np.int64), 0, out)
    with pytest.raises(ValueError):
        NATIVE.hashes(b"abc", np.array([0, 3], np.int64), 2, out)


# ---------------------------------------------------------------------------- signatures


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(TEXTS, min_size=1, max_size=6), scheme=st.sampled_from(["affine32", "legacy"]),
       shingle=st.sampled_from(["word", "char", "auto"]), hash_=st.sampled_from(["sha1", "xxh64"]),
       ngram=st.integers(1, 5), features=st.sampled_from(FEATURES))
def test_hostile_text_signatures_equal_datasketch_and_numpy(texts, scheme, shingle, hash_, ngram, features):
    NATIVE.set_features(*features)
    params = MinHashParams(num_perm=40, bands=5, rows=8, ngram=ngram, char_ngram=ngram + 1, scheme=scheme,
                           shingle=shingle, hash=hash_)
    native = signatures(texts, params)
    assert native.dtype == EMPTY[scheme].dtype and native.shape == (len(texts), 40)
    assert np.array_equal(native, signatures(texts, params, native=False))
    for text, row in zip(texts, native):
        assert np.array_equal(row, datasketch_row(text, params)), text


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.one_of(TEXTS, st.none()), max_size=5))
def test_normalized_equals_normalize_text(texts):
    expected = [normalize_text(t or "").encode() for t in texts]
    assert normalized_utf8(texts) == expected == normalized_utf8(texts, native=False)
    assert text_keys(texts) == [text_key(t) for t in texts]


@pytest.fixture(scope="module")
def articles(shared_data):
    from bench.data import article_pages

    return [gold for _, _, _, gold in article_pages(shared_data) if gold.strip()]


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("hash_", ["sha1", "xxh64"])
def test_article_signatures_equal_datasketch(articles, scheme, hash_):
    params = MinHashParams(num_perm=128, bands=16, rows=8, scheme=scheme, hash=hash_)
    sample = articles[::6]
    for text, row in zip(sample, signatures(sample, params)):
        assert np.array_equal(row, datasketch_row(text, params))


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_article_signatures_equal_numpy(articles, scheme, features):
    NATIVE.set_features(*features)
    params = MinHashParams(num_perm=112, scheme=scheme, shingle="auto")
    assert np.array_equal(signatures(articles, params), signatures(articles, params, native=False))


def test_article_normalisation_equals_normalize_text(articles):
    assert normalized_utf8(articles) == [normalize_text(t).encode() for t in articles]


@pytest.mark.parametrize("features", FEATURES)
def test_legacy_modulus_at_its_edges(features):
    """(a*h + b) mod 2^64 landing on multiples of 2^61 - 1 and near 2^64, where a fast Mersenne reduction
    is easiest to get wrong (random permutations practically never reach them)."""
    NATIVE.set_features(*features)
    mersenne, h = (1 << 61) - 1, int(sha1_32([b"x"])[0])
    targets = [0, 1, mersenne - 1, mersenne, mersenne + 1, 2 * mersenne, 7 * mersenne, 8 * mersenne, 2**64 - 1,
               2**64 - 2, 2**63, 2**61, 2**61 + 6, 2**32 - 1, 2**32]
    targets *= 3   # past one block of 32 permutations
    a = np.array([1 if i < len(targets) // 2 else 1 << 32 for i in range(len(targets))], np.uint64)
    b = np.array([(t - int(x) * h) % 2**64 for t, x in zip(targets, a)], np.uint64)
    out = np.zeros((1, len(targets)), np.uint64)
    NATIVE.span_signatures(b"x", np.array([0, 1], np.int64), np.array([0, 1], np.int64), 0, 1, a, b, out)
    assert out[0].tolist() == [(t % mersenne) & 0xFFFFFFFF for t in targets]


def test_num_perm_not_a_multiple_of_the_block():
    texts = ["one two three four five six seven", "Ünïcödé naïve façade déjà vu encore une fois"]
    for num_perm in (1, 31, 33, 100, 257):
        params = MinHashParams(num_perm=num_perm, bands=1, rows=1, ngram=2)
        assert np.array_equal(signatures(texts, params), signatures(texts, params, native=False))


def test_empty_short_and_punctuation_only_documents():
    params = MinHashParams(num_perm=16, bands=4, rows=4, ngram=5)
    texts = ["", None, "...!?", " \n\t ", "a b c", "Hello, World", "one two three four five"]
    sigs = signatures(texts, params)
    assert (sigs[:4] == EMPTY["affine32"]).all()
    for text, row in zip(texts[4:], sigs[4:]):
        assert len(shingles(text, params)) == 1 and np.array_equal(row, datasketch_row(text, params))
    assert signatures([], params).shape == (0, 16)
    legacy = signatures(["", "a"], MinHashParams(num_perm=16, bands=4, rows=4, scheme="legacy"))
    assert legacy.dtype == np.uint64 and (legacy[0] == EMPTY["legacy"]).all() and (legacy[1] < 2**32).all()


def test_long_documents_grow_the_buffers():
    rng = random.Random(2)
    vocab = ["straße", "ﬃx", "İstanbul", "word", "ΣΊΣΥΦΟΣ", "𝔘𝔫𝔦", "—", "a.b", "x"]
    texts = [" ".join(rng.choice(vocab) for _ in range(n)) for n in (1, 10, 1000, 40000)]
    texts.append("字" * 50000)
    for shingle in ("word", "auto"):
        params = MinHashParams(num_perm=64, bands=8, rows=8, shingle=shingle)
        assert np.array_equal(signatures(texts, params), signatures(texts, params, native=False))


def test_surrogates_raise_like_encode():
    for native in (True, False):
        with pytest.raises(UnicodeEncodeError):
            signatures(["fine", "bad \ud800 text"], MinHashParams(), native=native)


def test_texts_must_be_strings():
    with pytest.raises(TypeError):
        signatures([b"bytes"], MinHashParams())


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("hash_", ["sha1", "xxh64"])
def test_signatures_of_shingles_native_equal_numpy_and_datasketch(scheme, hash_):
    params = MinHashParams(num_perm=64, bands=8, rows=8, scheme=scheme, hash=hash_, ngram=2)
    texts = ["the quick brown fox", "", "the quick brown dog", "ß ﬃ İ"]
    sets = [shingles(t, params) for t in texts]
    native = signatures_of_shingles(sets, params)
    assert np.array_equal(native, signatures_of_shingles(sets, params, native=False))
    assert np.array_equal(native, signatures(texts, params))
    for text, row in zip(texts, native):
        assert np.array_equal(row, datasketch_row(text, params))


# ---------------------------------------------------------------------------- config


def test_hash_setting():
    assert DedupConfig().hash == "sha1" and DedupConfig(hash="xxh64").minhash().hash == "xxh64"
    assert DedupConfig(hash="xxh64").key_settings()["hash"] == "xxh64"
    with pytest.raises(ConfigError, match=r"^dedup\.hash must be 'sha1' or 'xxh64', got 'md5'$"):
        build(DedupConfig, {"hash": "md5"}, "dedup")
    with pytest.raises(ValueError, match="hash"):
        MinHashParams(hash="sha256")


def test_xxh64_signatures_differ_from_sha1():
    text = ["a few words that make several shingles for the test"]
    assert not np.array_equal(signatures(text, MinHashParams()), signatures(text, MinHashParams(hash="xxh64")))
