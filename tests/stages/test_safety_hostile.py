"""Hostile input for the safety stages: any Unicode never raises, and no pattern takes super-linear time
(a 1 MB adversarial string per PII pattern, the worst unit of many, runs in well under a second)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.bench_safety import cpu_per_unit
from stages.safety import Safety, SafetyConfig
from stages.safety.lists import trie_pattern
from stages.safety.patterns import KINDS, PATTERNS
from stages.safety.pii import find_pii

MEGABYTE = 1_000_000
PARTS = st.text(st.sampled_from("0123456789 .-+()@:x#aAZé٣\n"), max_size=40) | st.text(max_size=40)


@pytest.mark.parametrize("kind", KINDS)
def test_a_megabyte_of_adversarial_text_runs_in_well_under_a_second(kind):
    """CPU seconds (the process's own, so a loaded machine does not fail it) of the kind's regex and
    validator over 1 MB of each unit; the worst unit is printed and must stay under 1 s."""
    spent = cpu_per_unit(kind)
    worst = max(spent, key=spent.get)
    print(f"\n{kind}: worst unit {worst!r}: {spent[worst]:.3f} CPU s per MB")
    assert spent[worst] < 1.0, spent


def test_time_grows_linearly():
    """Four times the text costs about four times the time (not sixteen), on the slowest units."""
    for unit, kind in (("12 ", "phone"), ("a@b.cd ", "email"), ("1.2.3.4 ", "ipv4")):
        small, large = (cpu_per_unit(kind, n, (unit,))[unit] for n in (MEGABYTE // 4, MEGABYTE))
        assert large < 8 * max(small, 1e-3), (unit, small, large)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PARTS, max_size=30).map("".join))
def test_any_unicode_gives_sorted_disjoint_findings_and_never_raises(text):
    found = find_pii(text, KINDS, private_ips=True)
    assert all(0 <= s < e <= len(text) for s, e, _ in found)
    assert all(a[1] <= b[0] for a, b in zip(found, found[1:]))
    for start, end, kind in found:  # each finding is its kind's regex match, exactly
        assert PATTERNS[kind].fullmatch(text, start, end)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), url=st.one_of(st.none(), st.text(max_size=80)), lang=st.text(max_size=6))
def test_the_safety_stage_turns_any_record_into_a_row(tmp_path_factory, text, url, lang):
    folder = tmp_path_factory.getbasetemp() / "hostile-lists"
    folder.mkdir(exist_ok=True)
    (folder / "words.txt").write_text("bad\n坏\n(\n[a-\n")
    (folder / "domains.txt").write_text("evil.example\n")
    stage = Safety(SafetyConfig(url_blocklist=str(folder / "domains.txt"), url_substrings=str(folder / "words.txt"),
                                badwords={"*": str(folder / "words.txt")}, max_pii=5))
    [row] = stage.run([{"id": "x", "text": text, "url": url, "lang": lang}])
    assert row["drop_reason"] in (None, "url_blocked", "badwords", "pii")


def test_word_lists_with_regex_characters_are_literal():
    import re

    pattern = re.compile(trie_pattern(["a.b", "(x", "a*", "[", "ab", "abc"]))
    assert [m.group() for m in pattern.finditer("a.b axb (x a* [ abc ab")] == ["a.b", "(x", "a*", "[", "abc", "ab"]
