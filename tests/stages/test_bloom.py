"""The Bloom filter: sizing formula, measured false-positive rate against the configured one, save and
reload, corrupt files, merging by OR."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.errors import UserError
from stages.bloom import BloomFilter, BloomFileError, digests, measured_fpr, optimal_size

N = 100_000


@pytest.fixture(scope="module")
def filled():
    """p = 0.01 sized for n = 100,000, filled with 100,000 distinct items."""
    bloom = BloomFilter.sized(N, 0.01, seed=7, settings={"unit": "line"})
    assert bloom.add(digests((f"item {i}" for i in range(N)), seed=7)) == N
    return bloom


def test_sizing_follows_the_formula():
    m, k = optimal_size(1_000_000, 0.001)
    assert m == math.ceil(-1_000_000 * math.log(0.001) / math.log(2) ** 2 / 64) * 64 and m % 64 == 0
    assert k == round(m / 1_000_000 * math.log(2)) == 10
    with pytest.raises(ValueError):
        optimal_size(10, 1.5)


def test_measured_false_positive_rate_within_twice_the_configured(filled):
    """Insert n distinct items, probe n other distinct items, count the hits."""
    assert filled.contains(digests((f"item {i}" for i in range(N)), seed=7)).all()  # no false negatives
    hits = filled.contains(digests((f"other {i}" for i in range(N)), seed=7)).mean()
    assert 0.005 <= hits <= 0.02, hits
    assert 0.005 <= measured_fpr(filled, N) <= 0.02
    assert filled.expected_fpr() == pytest.approx(0.01, rel=0.05)


def test_save_and_reload_give_identical_answers(filled, tmp_path):
    path = str(tmp_path / "sub" / "f.qfb")
    filled.save(path)
    again = BloomFilter.load(path)
    assert (again.m, again.k, again.seed, again.n_added, again.settings) == (
        filled.m, filled.k, 7, N, filled.settings)
    probe = digests((f"{w} {i}" for w in ("item", "other") for i in range(0, N, 7)), seed=7)
    assert np.array_equal(again.contains(probe), filled.contains(probe))
    assert np.array_equal(again.words, filled.words)
    assert not list((tmp_path / "sub").glob(".*partial"))  # the atomic write left no temporary file


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_corrupt_file_is_a_one_line_error_naming_the_path(filled, tmp_path, damage):
    path = tmp_path / "f.qfb"
    filled.save(str(path))
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncate":
        data = data[: len(data) - 1000]
    else:
        data = bytearray(b"not a filter at all")
    path.write_bytes(bytes(data))
    with pytest.raises(BloomFileError) as err:
        BloomFilter.load(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value) and isinstance(err.value, UserError)
    with pytest.raises(BloomFileError, match="does not exist"):
        BloomFilter.load(str(tmp_path / "missing.qfb"))


def test_union_equals_one_filter_with_both_sets():
    one, a, b = (BloomFilter.sized(5000, 0.01) for _ in range(3))
    left, right = digests(f"a{i}" for i in range(3000)), digests(f"b{i}" for i in range(3000))
    one.add(left), one.add(right), a.add(left), b.add(right)
    assert np.array_equal(a.union(b).words, one.words)
    with pytest.raises(ValueError, match="cannot merge"):
        a.union(BloomFilter.sized(50, 0.01))
    assert digests(["x"], seed=1).tolist() != digests(["x"], seed=2).tolist()
