"""MinHash signatures, band choice and dedup keys against datasketch (the reference) and by hand."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

from stages.dedup import DedupConfig, DedupKeys, normalize_url, parse_order, survivor_key, text_key
from stages.minhash import MinHashParams, band_keys, estimate, optimal_bands, shingles, signatures

DOCS = [
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "The quick brown fox jumps over the lazy dog near the river bank tonight!",
    "Completely different words make up this particular sentence about Spark clusters and data.",
    "short text",
    "",
    "我们今天在河边看到了一只很快的棕色狐狸跳过了一只懒狗",
    "Ünïcödé CAFÉ café — naïve façade, déjà vu; " * 5,
]


def datasketch_minhash(doc: str, params: MinHashParams) -> MinHash:
    m = MinHash(num_perm=params.num_perm, seed=params.seed, scheme=params.scheme)
    for shingle in shingles(doc, params):
        m.update(shingle)
    return m


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize(("num_perm", "seed"), [(128, 1), (64, 42), (112, 7)])
@pytest.mark.parametrize("shingle", ["word", "char", "auto"])
def test_signatures_equal_datasketch_hashvalues(scheme, num_perm, seed, shingle):
    params = MinHashParams(num_perm=num_perm, bands=8, rows=8, seed=seed, scheme=scheme, shingle=shingle, ngram=3)
    sigs = signatures(DOCS, params)
    assert sigs.shape == (len(DOCS), num_perm)
    for doc, sig in zip(DOCS, sigs):
        reference = datasketch_minhash(doc, params).hashvalues
        assert sig.dtype == reference.dtype and np.array_equal(sig, reference)


def test_chunking_does_not_change_signatures(monkeypatch):
    params = MinHashParams(num_perm=64, bands=8, rows=8)
    docs = [" ".join(f"w{i * j % 97}" for j in range(300)) for i in range(20)]
    whole = signatures(docs, params)
    monkeypatch.setattr("stages.minhash.CHUNK_SHINGLES", 37)  # documents straddle chunk borders
    assert np.array_equal(signatures(docs, params), whole)


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_signatures_load_into_lean_minhash_and_lsh(scheme):
    params = MinHashParams(num_perm=128, bands=16, rows=8, ngram=2, scheme=scheme)
    sigs = signatures(DOCS, params)
    lean = [LeanMinHash(seed=params.seed, hashvalues=s, scheme=scheme) for s in sigs]
    full = [datasketch_minhash(d, params) for d in DOCS]
    for i in range(3):
        for j in range(3):
            assert lean[i].jaccard(lean[j]) == full[i].jaccard(full[j]) == estimate(sigs[i], sigs[j])
    lsh = MinHashLSH(num_perm=128, params=(16, 8))
    for i, m in enumerate(lean[:4]):
        lsh.insert(i, m)
    assert set(lsh.query(full[0])) == {0, 1}


def test_band_keys_are_datasketch_buckets():
    params = MinHashParams(num_perm=64, bands=8, rows=8, ngram=2)
    sigs = signatures(DOCS[:2], params)
    keys = band_keys(sigs, params)
    lsh = MinHashLSH(num_perm=64, params=(8, 8))
    lsh.insert("a", LeanMinHash(seed=1, hashvalues=sigs[0], scheme="affine32"))
    shared = {i for i in range(8) if keys[0][i] == keys[1][i]}
    assert bool(shared) == ("a" in lsh.query(LeanMinHash(seed=1, hashvalues=sigs[1], scheme="affine32")))
    assert band_keys(signatures([""], params), params) == [None]


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.85, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_optimal_bands_equal_datasketch(threshold, num_perm):
    assert optimal_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_optimal_bands_with_weights_and_lsh_default():
    assert optimal_bands(0.8, 128, 0.3, 0.7) == _optimal_param(0.8, 128, 0.3, 0.7)
    lsh = MinHashLSH(threshold=0.75, num_perm=96)
    params = MinHashParams.for_threshold(0.75, 96)
    assert (params.bands, params.rows) == (lsh.b, lsh.r)


def test_shingles():
    assert shingles("a b c", MinHashParams(ngram=5)) == {b"a b c"}
    assert shingles("A, b. C d!", MinHashParams(ngram=3)) == {b"a b c", b"b c d"}
    assert shingles("", MinHashParams()) == set() and shingles(None, MinHashParams()) == set()
    assert shingles("abcdef", MinHashParams(shingle="char", char_ngram=4)) == {b"abcd", b"bcde", b"cdef"}
    auto = shingles(DOCS[5], MinHashParams(shingle="auto", char_ngram=3))
    assert "狐狸跳".encode() in auto


def test_text_key_normalises_case_punctuation_space_and_nfc():
    assert text_key("Hello,   World!") == text_key("hello world") == text_key("HELLO\nWORLD.")
    assert text_key("caf\u00e9") == text_key("cafe\u0301")  # NFC
    assert text_key("hello world") != text_key("hello word")
    assert text_key("...") is None and text_key(None) is None


@pytest.mark.parametrize(("a", "b"), [
    ("HTTP://Example.COM:80/a/b/#top", "http://example.com/a/b"),
    ("https://example.com:443", "https://example.com/"),
    ("<https://allenai.org/>", "https://allenai.org"),
    ("https://user:pw@example.com/x?q=1", "https://example.com/x?q=1"),
])
def test_urls_that_normalise_equal(a, b):
    assert normalize_url(a) == normalize_url(b)


def test_urls_that_stay_distinct():
    assert normalize_url("http://example.com/a") != normalize_url("https://example.com/a")
    assert normalize_url("https://example.com/a?q=1") != normalize_url("https://example.com/a?q=2")
    assert normalize_url("https://example.com:8080/") == "https://example.com:8080/"
    assert normalize_url("") is None and normalize_url("http://[::1") is None


def test_survivor_order():
    order = parse_order(DedupConfig().survivor_order, {"id", "text"})
    assert order == [("text_length", True), ("id", False)]
    order = parse_order(DedupConfig().survivor_order, {"id", "text", "quality_score"})
    docs = [{"id": "b", "text": "xx", "quality_score": 0.5}, {"id": "a", "text": "x", "quality_score": 0.9},
            {"id": "c", "text": "xxxx", "quality_score": None}, {"id": "0", "text": "x", "quality_score": 0.9}]
    assert [d["id"] for d in sorted(docs, key=lambda d: survivor_key(d, order))] == ["0", "a", "b", "c"]
    with pytest.raises(ValueError):
        parse_order(["quality_score down"])


def test_dedup_keys_batch_keeps_columns_and_drops_text():
    batch = pa.RecordBatch.from_pylist([{"id": "1", "text": "Hello world", "url": "http://A.com/", "x": 3},
                                        {"id": "2", "text": "", "url": None, "x": 4}])
    out = DedupKeys(DedupConfig(num_perm=16, bands=4, rows=4)).batch(batch).to_pylist()
    assert [r["x"] for r in out] == [3, 4] and "text" not in out[0] and "url" not in out[0]
    assert out[0]["_url_key"] == "http://a.com/" and out[0]["_length"] == 11 and len(out[0]["_bands"]) == 4
    assert out[1]["_text_key"] is None and out[1]["_bands"] is None and out[1]["_url_key"] is None


def test_ascii_fast_path_of_normalize_text_equals_the_unicode_rule():
    """ASCII text skips NFC and the big translate table; the result must be the rule written out here."""
    import random
    import unicodedata

    from stages.minhash import normalize_text

    def rule(text):
        cleaned = "".join(" " if unicodedata.category(c).startswith("P") else c
                          for c in unicodedata.normalize("NFC", text).casefold())
        return " ".join(cleaned.split())

    rng = random.Random(0)
    texts = ["".join(chr(rng.randrange(128)) for _ in range(60)) for _ in range(3000)]
    texts += [f"{chr(c)}Ab{chr(c)}" for c in range(128)]
    assert all(normalize_text(t) == rule(t) for t in texts)
