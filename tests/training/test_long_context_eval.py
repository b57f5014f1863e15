"""Long-context passkey evaluation: prompt construction, variant configs, and the table + heat map
for the debug flavor at 4x its training length (toy-scale values, no threshold)."""
from __future__ import annotations

import dataclasses
import random
import re

import pytest
import torch
import torch.nn.functional as F

from training.evaluate import long_context as lc
from training.model.flavors import FLAVORS
from training.model.qwen import Qwen


class WordTokenizer:
    """One token per word with its leading white space (ids given on first sight): short prompts, so the
    quadratic attention of a 4x-length test stays cheap, and decode(encode(t)) == t."""

    def __init__(self):
        self.ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        return [self.ids.setdefault(w, len(self.ids)) for w in re.findall(r"\s*\S+|\s+$", text)]

    def decode(self, ids: list[int]) -> str:
        words = {i: w for w, i in self.ids.items()}
        return "".join(words[i] for i in ids)


TOK, TRAIN_LEN, VOCAB = WordTokenizer(), 64, 512


@pytest.fixture
def one_thread():
    """Tiny matmuls: one intra-op thread is several times faster than two on a shared, loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_prompt_has_the_exact_length_and_the_key_at_its_depth(depth):
    ids, answer, at = lc.build_prompt(TOK, 300, depth, "48213")
    text = TOK.decode(ids)
    assert len(ids) == 300 and TOK.decode(answer) == " 48213"
    assert text.startswith(lc.INTRO) and text.endswith(lc.QUESTION) and text.count("48213") == 2
    intro, needle, question, unit = (TOK.encode(t) for t in (lc.INTRO, lc.NEEDLE.format(key="48213"), lc.QUESTION,
                                                              lc.FILLER))
    assert ids[at:at + len(needle)] == needle
    filler_len = 300 - len(intro) - len(needle) - len(question)
    # the needle sits within half a filler sentence group of depth * filler
    assert abs((at - len(intro)) - depth * filler_len) <= len(unit) / 2


def test_prompt_shorter_than_its_fixed_parts_is_an_error():
    with pytest.raises(ValueError):
        lc.build_prompt(TOK, 20, 0.5, "12345")


def test_variant_configs_switch_on_one_method():
    base = FLAVORS["debug"]
    plain = lc.variant_config(base, "plain", 256, 1024, 0)
    assert (plain.rope_type, plain.use_dynamic_ntk, plain.use_logn_attn, plain.dca_chunk_size) == \
        ("default", False, False, None)
    ntk = lc.variant_config(base, "ntk_logn", 256, 1024, 0)
    assert ntk.use_dynamic_ntk and ntk.use_logn_attn and ntk.train_seq_len == 256
    yarn = lc.variant_config(base, "yarn", 256, 1024, 0)
    assert (yarn.rope_type, yarn.rope_factor, yarn.rope_original_max_position) == ("yarn", 4.0, 256)
    dca = lc.variant_config(base, "dca_yarn", 256, 1024, 0)
    assert (dca.dca_chunk_size, dca.dca_local_size, dca.rope_type) == (256, 256 // 32, "yarn")
    with pytest.raises(ValueError):
        lc.variant_config(base, "alibi", 256, 1024, 0)


def test_table_and_heatmap_for_the_debug_flavor_at_4x_its_training_length(tmp_path, one_thread):
    torch.manual_seed(0)
    cfg = dataclasses.replace(FLAVORS["debug"], vocab_size=VOCAB, train_seq_len=TRAIN_LEN)
    model = Qwen(cfg).eval()
    assert lc.lengths_of(lc.PasskeyConfig(), TRAIN_LEN) == (64, 128, 256)   # default: 1x, 2x, 4x
    pk = lc.PasskeyConfig(train_len=TRAIN_LEN, lengths=(TRAIN_LEN, 4 * TRAIN_LEN), depths=(0.0, 0.5, 1.0), trials=1)
    rows = lc.passkey_table(model, TOK, pk)
    assert len(rows) == len(lc.VARIANTS) * 2 * 3
    assert {(r["variant"], r["length"], r["depth"]) for r in rows} == {
        (v, n, d) for v in lc.VARIANTS for n in (64, 256) for d in (0.0, 0.5, 1.0)}
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["logprob"] < 0 for r in rows)

    # independent reference for one cell: the plain model's log-softmax over prompt + key, by hand
    key = str(random.Random(pk.seed).randint(10000, 99999))
    ids, answer, _ = lc.build_prompt(TOK, TRAIN_LEN, 0.0, key)
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ids + answer])).logits[0].float(), -1)
    ref = [float(logp[len(ids) - 1 + i, t]) for i, t in enumerate(answer)]
    first = next(r for r in rows if (r["variant"], r["length"], r["depth"]) == ("plain", TRAIN_LEN, 0.0))
    assert first["logprob"] == pytest.approx(sum(ref) / len(ref), abs=1e-4)
    # methods change the numbers past the training length
    at_4x = {r["variant"]: r["logprob"] for r in rows if r["length"] == 4 * TRAIN_LEN and r["depth"] == 0.5}
    assert len({round(v, 5) for v in at_4x.values()}) > 1

    table = lc.markdown_table(rows)
    lines = table.splitlines()
    assert lines[0] == "| variant | 64 | 256 |" and len(lines) == 2 + len(lc.VARIANTS)
    mean = sum(r["accuracy"] for r in rows if r["variant"] == "dca" and r["length"] == 256) / 3
    assert f"{mean:.2f} (" in next(ln for ln in lines if ln.startswith("| dca |")).split("|")[3]

    png = lc.heatmap(rows, tmp_path / "passkey.png", metric="logprob")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    height, width, _ = matplotlib.image.imread(png).shape
    assert width > 3 * height / 2          # one panel per variant, side by side
