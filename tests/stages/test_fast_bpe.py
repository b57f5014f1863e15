"""The fast encoder gives exactly tiktoken's ids: every code point in many contexts, real text, random mixes,
generated text (hypothesis); it stays near tiktoken's time on hostile input (long pieces); and its class
table cache is used only when valid (stale or corrupt ones are rebuilt) and written atomically."""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import shutil
import string
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.tokenize import fast_bpe
from stages.tokenize.fast_bpe import LETTER, NUMBER, PROBES, SPACE, FastEncoder, fast_encoder, unicode_classes
from stages.tokenize.packing import DocEncoder, TokenizeConfig
from stages.tokenize.tokenizer import QwenTokenizer

CONTEXTS = [*PROBES, "{c}1{c}", "\t{c}\n\n", "{c}!", "'{c}{c}"]


@pytest.fixture(scope="module")
def tok():
    return QwenTokenizer()


@pytest.fixture(scope="module")
def fast(tok):
    encoder = fast_encoder(tok.path)
    assert encoder.native is not None, "stages.tokenize._qwen_bpe is not built: run `make setup`"
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
    with pytest.raises(ValueError, match="encoder must be 'fast' or 'tiktoken', got 'sentencepiece'"):
        TokenizeConfig(encoder="sentencepiece")


def test_class_table_agrees_with_the_unicode_categories():
    import unicodedata

    table, _ = unicode_classes()
    for c in (0x41, 0xE9, 0x4E2D, 0x1F642, 0x30, 0x663, 0x2167, 0x20, 0x3000, 0x1C, 0x2E):
        category = unicodedata.category(chr(c))
        assert bool(table[c] & LETTER) == category.startswith("L"), hex(c)
        assert bool(table[c] & NUMBER) == category.startswith("N"), hex(c)
    assert table[0x1C] & SPACE == 0 and table[0x85] & SPACE and table[0x3000] & SPACE


def cpu_seconds(fn, *args):
    """(result, CPU seconds) of one call: CPU time, not wall time, so a busy machine does not fail the test."""
    started = time.process_time()
    result = fn(*args)
    return result, time.process_time() - started


def letters(n: int) -> str:
    return "".join(random.Random(n).choices(string.ascii_letters, k=n))


HOSTILE = {"a*100k": lambda: "a" * 100_000, "1MB-letters": lambda: letters(1_000_000),
           "ab*500k": lambda: "ab" * 500_000,
           # long runs through the pre-tokenizer's other branches: one-digit pieces, punctuation and
           # line-break runs, space runs cut before their last character, a mixture
           "1MB-digits": lambda: "7" * 1_000_000, "1MB-punctuation": lambda: "!" * 1_000_000,
           "1MB-newlines": lambda: "\n" * 1_000_000, "newline+50-spaces": lambda: ("\n" + " " * 50) * 20_000,
           "1MB-mixed": lambda: "".join(random.Random(0).choices(" \n\ta1!'中", k=1_000_000))}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_input_costs_about_what_it_costs_tiktoken(fast, tok, name):
    """A pre-token of 100 KB - 1 MB (base64 letters, a repeated pattern) is merged in n log n: the merge used
    to rescan every pair per merge (a*100k: 4 s against tiktoken's 0.03 s; 1 MB of letters: 5 minutes).
    Long runs of every other kind are scanned in linear time."""
    text = HOSTILE[name]()
    expected, reference_s = cpu_seconds(tok.encoding.encode_ordinary, text)
    ids, fast_s = cpu_seconds(fast.encode, text)
    assert ids.tolist() == expected
    assert fast_s <= 5 * reference_s + 0.5, (fast_s, reference_s)


def test_ten_megabytes_of_spaces(fast, tok):
    """tiktoken panics on it (its regex overflows); the fast encoder takes it in time linear-ish in its size:
    bounded by 5x tiktoken's time on 100 KB of spaces scaled to 10 MB."""
    _, reference_s = cpu_seconds(tok.encoding.encode_ordinary, " " * 100_000)
    ids, fast_s = cpu_seconds(fast.encode, " " * 10_000_000)
    assert fast_s <= 5 * 100 * reference_s + 0.5, (fast_s, reference_s)
    assert tok.encoding.decode_bytes(ids.tolist()) == b" " * 10_000_000


HARD = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x00", "\x85", "\xa0", "\u3000", "\u2028", "'", "s", "S",
        "\u017f", "l", "e", "a", "Z", "é", "\u0301", "1", "٣", "Ⅻ", "!", ".", "#", "«", "中", "🙂", "\ufffd", "-", "/",
        "+", "="]
CONTROL = st.characters(categories=["Cc"])
NO_SURROGATES = st.text(st.characters(exclude_categories=["Cs"]) | CONTROL, max_size=80)
WITH_SURROGATES = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=80)
RUNS = st.builds(lambda unit, n: unit * n, st.text(st.sampled_from(HARD) | CONTROL, min_size=1, max_size=4),
                 st.integers(1, 3000))
TEXTS = st.lists(NO_SURROGATES | WITH_SURROGATES | RUNS, min_size=1, max_size=6).map("".join)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS)
def test_generated_text_gives_tiktoken_ids(fast, tok, text):
    """Arbitrary Unicode, lone surrogates, control characters and long runs of one unit (pieces far over
    the merge's short-piece limit): tiktoken's ids where tiktoken encodes it, and the ids decode to the
    text (lone surrogates as U+FFFD, as in tiktoken's encode_ordinary)."""
    ids = fast.encode(text).tolist()
    try:
        expected = tok.encoding.encode_ordinary(text)
    except BaseException as error:   # tiktoken's regex panics on some long runs: nothing to compare with
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
    else:
        assert ids == expected
    clean = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert tok.encoding.decode_bytes(ids) == clean.encode()


@pytest.fixture(scope="module")
def cached(tmp_path_factory, tok, fast):
    """A copy of the ranks file with a class table cache beside it (built once: about a second)."""
    ranks = tmp_path_factory.mktemp("assets") / "qwen.tiktoken"
    shutil.copy(tok.path, ranks)
    assert fast_bpe.ensure_cache(str(ranks)) == fast_bpe.cache_path(ranks)
    return ranks


def copy_of(ranks, folder):
    """The ranks file and its cache in another folder, free to damage."""
    folder.mkdir()
    for path in (ranks, fast_bpe.cache_path(ranks)):
        shutil.copy(path, folder)
    return folder / ranks.name


def key_of(ranks):
    return fast_bpe.table_key(fast_bpe._native_module(), ranks)


def test_cache_hit_gives_tiktoken_ids(cached, tok, monkeypatch):
    """With a valid cache nothing is built (char_classes is never called) and the ids are tiktoken's: on the
    code points whose class calibration decides, in every context, and on random mixtures of the hard cases."""
    @functools.wraps(fast_bpe.char_classes)   # so the key, which hashes the builder's source, stays the same
    def never(*args):
        pytest.fail("built the table despite the cache")
    monkeypatch.setattr(fast_bpe, "char_classes", never)
    encoder = FastEncoder(str(cached))
    assert encoder.native is not None and "reference" not in vars(encoder)   # tiktoken not even loaded
    _, disputed = unicode_classes()
    assert len(disputed) > 100
    for start in range(0, len(disputed), 256):
        text = "|".join(ctx.format(c=chr(c)) for c in disputed[start:start + 256].tolist() for ctx in CONTEXTS)
        assert same(encoder, tok, text)
    rng, alphabet = random.Random(1), [" ", "\n", "'s", "ab", "123", "中文", "🙂", "!!", "\u3000", "x" * 70]
    for _ in range(300):
        assert same(encoder, tok, "".join(rng.choices(alphabet, k=rng.randint(1, 30))))


def damage(path, how):
    data = path.read_bytes()
    head = data.index(b"\n", len(fast_bpe.CACHE_MAGIC) + 1) + 1   # where the compressed table starts
    path.write_bytes({"truncated": data[:-50], "cut in the header": data[:head - 20], "empty": b"",
                      "flipped byte": data[:head + 5] + bytes([data[head + 5] ^ 1]) + data[head + 6:],
                      "foreign file": b"not a cache\n{}\nat all", "other layout": b"qwenforge char classes v0" +
                      data[len(fast_bpe.CACHE_MAGIC):]}[how])


@pytest.mark.parametrize("how", ["truncated", "cut in the header", "empty", "flipped byte", "foreign file",
                                 "other layout"])
def test_corrupt_cache_is_detected(cached, tmp_path, caplog, how):
    ranks = copy_of(cached, tmp_path / "a")
    damage(fast_bpe.cache_path(ranks), how)
    with caplog.at_level(logging.WARNING, "stages.tokenize.fast_bpe"):
        assert fast_bpe.read_cache(fast_bpe.cache_path(ranks), key_of(ranks)) is None
    assert "class table cache" in caplog.text and ("corrupt" in caplog.text or "not a class table" in caplog.text)


@pytest.mark.parametrize("field", ["ranks", "builder", "module", "regex", "unicodedata", "tiktoken"])
def test_stale_cache_is_detected(cached, caplog, field):
    """A cache built for another ranks file, another version of the table builder, another build of the C
    module or other Unicode data is stale, however whole it is."""
    key = {**key_of(cached), field: "something else"}
    with caplog.at_level(logging.WARNING, "stages.tokenize.fast_bpe"):
        assert fast_bpe.read_cache(fast_bpe.cache_path(cached), key) is None
    assert "stale" in caplog.text


def test_key_follows_the_ranks_file_and_the_builder_code(cached, tmp_path, monkeypatch):
    before = key_of(cached)
    other = copy_of(cached, tmp_path / "a")
    other.write_bytes(b"\n".join(other.read_bytes().splitlines()[:-3]))   # another ranks file, the same name
    assert key_of(other)["ranks"] != before["ranks"]
    assert fast_bpe.read_cache(fast_bpe.cache_path(other), key_of(other)) is None   # the copied cache is stale
    monkeypatch.setattr(fast_bpe, "PROBES", [*PROBES, "{c}?"])   # the builder changed
    assert key_of(cached)["builder"] != before["builder"]


def test_damaged_cache_is_rebuilt_and_rewritten(cached, tmp_path, tok, caplog):
    ranks = copy_of(cached, tmp_path / "a")
    damage(fast_bpe.cache_path(ranks), "truncated")
    with caplog.at_level(logging.WARNING, "stages.tokenize.fast_bpe"):
        encoder = FastEncoder(str(ranks))
    assert "corrupt" in caplog.text and same(encoder, tok, "rebuilt: x\u0295y 12 \U0001e030 «»")
    assert fast_bpe.cache_path(ranks).read_bytes() == fast_bpe.cache_path(cached).read_bytes()


def test_missing_unwritable_cache_builds_in_process(cached, tmp_path, tok, caplog, monkeypatch):
    """No cache and a folder it cannot be written to (a read-only assets archive): the table is built in the
    process, with a warning, as before there was a cache."""
    ranks = tmp_path / cached.name
    shutil.copy(cached, ranks)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")
    monkeypatch.setattr(fast_bpe.tempfile, "mkstemp", refuse)
    with caplog.at_level(logging.WARNING, "stages.tokenize.fast_bpe"):
        encoder = FastEncoder(str(ranks))
    assert encoder.native is not None and same(encoder, tok, "built here: don't 12 中文")
    assert "cannot write the class table cache" in caplog.text and not fast_bpe.cache_path(ranks).exists()
    with pytest.raises(PermissionError):   # set-up (tools/assets.py, tools/dist.py) must not go on without it
        fast_bpe.ensure_cache(str(ranks))


def test_cache_write_is_atomic(cached, tmp_path, monkeypatch):
    """The table is written whole to a temporary file in the same folder, then renamed over the cache; a
    failure before the rename leaves the old cache as it was and no temporary file."""
    ranks = copy_of(cached, tmp_path / "a")
    path, key = fast_bpe.cache_path(ranks), key_of(ranks)
    old, table = path.read_bytes(), fast_bpe.read_cache(path, key)
    renames, real_replace = [], os.replace

    def checked_replace(src, dst):   # what is renamed: a whole cache, readable by others, in the same folder
        renames.append((os.path.dirname(src), fast_bpe.read_cache(Path(src), key), os.stat(src).st_mode & 0o777))
        real_replace(src, dst)
    monkeypatch.setattr(fast_bpe.os, "replace", checked_replace)
    fast_bpe.write_cache(path, key, table)
    assert renames == [(str(path.parent), table, 0o644)]
    assert path.read_bytes() == old and sorted(os.listdir(path.parent)) == sorted([ranks.name, path.name])

    def crash(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(fast_bpe.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        fast_bpe.write_cache(path, {**key, "ranks": "new"}, table)
    assert path.read_bytes() == old and sorted(os.listdir(path.parent)) == sorted([ranks.name, path.name])
