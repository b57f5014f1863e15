"""Extractor: charset decoding, trafilatura parity, rejection reasons."""

from __future__ import annotations

import gzip
import json
import unicodedata

import pytest
import trafilatura
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.extract import (WHATWG_CODECS, ExtractConfig, Extractor, decode_html, normalise_encoding,
                            sniff_meta_charset)

ARTICLE = "<html><head><title>T</title></head><body><article>{}</article></body></html>"
PARAS = "".join(f"<p>Paragraph number {i} says something long enough to be kept by the extractor, "
                f"with words like café and naïve.</p>" for i in range(8))


def test_declared_charset_wins_and_latin1_decodes_as_windows_1252():
    html = "<p>caf\u00e9 \u201cquoted\u201d</p>".encode("cp1252")
    text, encoding = decode_html(html, "iso-8859-1")
    assert text == "<p>caf\u00e9 \u201cquoted\u201d</p>" and encoding == "cp1252"


def test_meta_charset_is_sniffed_when_nothing_is_declared():
    html = '<meta charset="koi8-r"><p>'.encode() + "привет".encode("koi8_r")
    assert sniff_meta_charset(html) == "koi8-r"
    assert decode_html(html, None) == ('<meta charset="koi8-r"><p>привет', "koi8-r")


def test_wrong_declaration_falls_back_to_utf8_then_guess():
    utf8 = "<p>日本語のテキスト</p>".encode()
    assert decode_html(utf8, "ascii")[0] == "<p>日本語のテキスト</p>"
    shift_jis = ("<p>" + "日本語のテキストです。" * 30 + "</p>").encode("shift_jis")
    text, encoding = decode_html(shift_jis, None)
    assert "日本語のテキストです" in text and encoding in ("shift_jis", "cp932")


def test_unknown_labels_are_ignored():
    assert normalise_encoding("x-unknown-charset") is None
    assert normalise_encoding("UTF8") == "utf-8"


def test_extracts_text_title_and_host():
    html = ARTICLE.format(PARAS).encode("cp1252")
    row = Extractor().map({"id": "1", "url": "https://news.example.org/a", "html": html, "charset": "latin-1"})
    assert row["drop_reason"] is None and "html" not in row
    assert "Paragraph number 3" in row["text"] and "café and naïve" in row["text"]
    assert row["host"] == "news.example.org" and row["title"] == "T" and row["charset"] == "cp1252"


def test_pages_without_text_are_rejected():
    row = Extractor().map({"id": "1", "url": "https://a.test/", "html": b"<html><body></body></html>"})
    assert row["drop_reason"] == "no_text" and row["text"] is None


def test_wet_rows_pass_through():
    row = Extractor().map({"id": "1", "url": "https://a.test/", "html": None, "text": "plain text"})
    assert row["drop_reason"] is None and row["text"] == "plain text" and row["host"] == "a.test"


def test_same_text_as_trafilatura_on_benchmark_pages(shared_data):
    """With the same settings, the stage's text equals trafilatura.extract's on real pages."""
    folder = shared_data / "article-extraction-benchmark"
    truth = json.loads((folder / "ground-truth.json").read_text())
    config = ExtractConfig(favor_precision=False, include_comments=True)
    stage = Extractor(config)
    same = 0
    names = sorted(truth)[:15]
    for name in names:
        html = gzip.decompress((folder / "html" / f"{name}.html.gz").read_bytes())
        decoded = html.decode("utf-8", errors="replace")
        ours = stage.extract_text(html, "utf-8", truth[name]["url"])
        theirs = trafilatura.extract(decoded, url=truth[name]["url"], include_comments=True, deduplicate=False)
        same += ours == theirs
    assert same == len(names)


def test_valid_utf8_wins_over_a_wrong_legacy_declaration_and_text_is_nfc():
    html = '<meta charset="windows-1250"><p>größer</p>'.encode()
    assert decode_html(html, None) == ('<meta charset="windows-1250"><p>größer</p>', "utf-8")
    decomposed = "u\u0308ber".encode()
    assert decode_html(decomposed, "utf-8")[0] == "\u00fcber"


def test_utf8_with_a_few_broken_bytes_is_still_utf8():
    body = ("Größe und Gewicht der Schafe, schön und weiß. " * 20).encode()
    html = b'<meta charset="windows-1250"><p>' + body + b"\xff</p>"
    text, encoding = decode_html(html, None)
    assert encoding == "utf-8" and "Größe" in text and text.count("\ufffd") == 1


# ---------------------------------------------------------------- hostile input

NON_TEXT_CODECS = ("rot13", "rot_13", "base64", "hex", "zlib", "bz2", "uu", "quopri", "undefined", "idna",
                   "punycode", "unicode_escape", "raw_unicode_escape", "mbcs", "x-bogus", "", " ", "utf-8\x00",
                   "a" * 10_000)


@pytest.mark.parametrize("label", NON_TEXT_CODECS)
def test_a_declared_non_text_codec_is_ignored_not_raised(label):
    """Before: bytes.decode('rot13') raised LookupError outside the try and failed the whole job."""
    html = ARTICLE.format(PARAS).encode("cp1252")
    for doc in ({"html": html, "charset": label}, {"html": f'<meta charset="{label}">'.encode() + html}):
        row = Extractor().map({**doc, "id": "1", "url": "https://example.org/"})
        assert row["drop_reason"] is None and "Paragraph number 7" in row["text"] and "café" in row["text"]
    assert normalise_encoding(label) is None


def test_only_whatwg_encodings_are_honoured():
    assert normalise_encoding("Shift_JIS") == "shift_jis" and normalise_encoding("l1") == "cp1252"
    assert normalise_encoding("utf-16le") == "utf-16-le" and normalise_encoding("cp037") is None


LABELS = st.one_of(st.sampled_from(NON_TEXT_CODECS + ("utf-8", "utf-16", "shift_jis", "koi8-r", "latin1")),
                   st.text(max_size=40))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=3000), declared=st.none() | LABELS, meta=st.none() | LABELS,
       url=st.none() | st.text(max_size=60))
def test_any_bytes_and_any_charset_end_in_a_row(body, declared, meta, url):
    html = (f'<meta charset="{meta}">'.encode("utf-8", "surrogatepass") if meta is not None else b"") + body
    row = Extractor().map({"id": "x", "url": url, "html": html, "charset": declared})
    assert row["drop_reason"] in (None, "no_text", "extract_error")
    assert (row["drop_reason"] is None) == bool(row["text"])
    assert row["text"] is None or isinstance(row["text"], str) and "\ud800" not in row["text"]


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=2000), charset=st.sampled_from(("utf-8", "utf-16", "cp1252", "gb18030", "koi8-r")))
def test_any_unicode_page_decodes_without_raising(text, charset):
    html = ARTICLE.format(f"<p>{text}</p>").encode(charset, errors="replace")
    decoded, used = decode_html(html, charset)
    assert used in WHATWG_CODECS
    if charset == "utf-8" and not any("\ud800" <= c <= "\udfff" for c in text):   # UTF-8 text comes back whole
        assert unicodedata.normalize("NFC", f"<p>{text}</p>") in decoded
