"""The exported Hugging Face folder works with transformers' own tools: AutoTokenizer gives our ids and decodes
back, apply_chat_template gives our ChatML text, the text-generation pipeline generates what our generator does,
and import ignores the tokenizer files. One tiny real-vocabulary model is exported once for the module."""
from __future__ import annotations

import json
import time
import unicodedata

import pytest
import torch

from qwen_testlib import perturb_
from stages.chatml import encode_chat, render, with_system
from stages.tokenize.tokenizer import ENDOFTEXT_ID, IM_END_ID, QwenTokenizer
from training.generate import generate
from training.model.checkpoint import load_model, save_model
from training.model.flavors import FLAVORS
from training.model.hf import from_pretrained, main as hf_main, save_pretrained
from training.model.hf_tokenizer import DEFAULT_SYSTEM, TOKENIZER_FILES, TOKENIZER_SIZE, save_tokenizer
from training.model.qwen import ModelConfig, Qwen

pytest.importorskip("transformers")

SAMPLES = [
    "English, Français, Deutsch: naïve café résumé. Ελληνικά, русский, "
    "العربية, עברית, हिन्दी, ไทย",
    "中文：你好，世界！日本語：こんにちは。한국어: 안녕하세요",
    "emoji 🚀🔥👍🏽 👨‍👩‍👧 flags 🇫🇷🇯🇵 and ☕",
    "def fib(n: int) -> int:\n\treturn n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\nprint([fib(i) for i in range(10)])",
    "spaces    runs\t\ttabs\n\n\n  newlines \r\n\r\n   trailing   ",
    "digits 0123456789 3.14159e-10 1,000,000 ١٢٣ ½ ²",
    "URLs https://example.com/a?b=c&d=e#f and emails x.y+z@mail.co.uk",
    "<|im_start|>user\nliteral specials <|endoftext|> and <|extra_7|><|im_end|>\n",
    "",
    " ",
    "\u00ff\u0100 ÿĀ bytes that look like byte-level ĠĊ",
]
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}],
    [{"role": "user", "content": "Write code"}, {"role": "assistant", "content": "```py\nprint('x')\n```"},
     {"role": "user", "content": "中文？🚀"}, {"role": "assistant", "content": "好的"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "  spaces  \n\n"}],
]   # transformers refuses an empty conversation


@pytest.fixture(scope="module")
def ours() -> QwenTokenizer:
    return QwenTokenizer()


@pytest.fixture(scope="module")
def model() -> Qwen:
    torch.manual_seed(0)
    model = Qwen(FLAVORS["debug"])
    perturb_(model, scale=0.2)   # well-separated logits: greedy never hinges on a near tie
    return model.eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, model):
    """A chat export of the debug model (vocabulary 151,936): weights, tokenizer, template, generation config."""
    path = tmp_path_factory.mktemp("hf-chat")
    start = time.perf_counter()
    save_pretrained(model, path, chat=True)
    print(f"\nsave_pretrained with tokenizer.json built: {time.perf_counter() - start:.1f} s")
    return path


@pytest.fixture(scope="module")
def hf_tok(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def test_export_writes_every_file(folder, hf_tok):
    assert all((folder / name).exists() for name in TOKENIZER_FILES)
    tj = json.loads((folder / "tokenizer.json").read_text())
    assert len(tj["model"]["vocab"]) == ENDOFTEXT_ID and len(tj["model"]["merges"]) == ENDOFTEXT_ID - 256
    assert len(hf_tok) == QwenTokenizer().vocab_size == TOKENIZER_SIZE <= FLAVORS["debug"].vocab_size
    assert hf_tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [151643, 151644, 151645]
    assert (hf_tok.eos_token_id, hf_tok.pad_token_id, hf_tok.bos_token_id) == (IM_END_ID, ENDOFTEXT_ID, None)
    assert hf_tok.model_max_length == FLAVORS["debug"].max_position_embeddings
    assert json.loads((folder / "config.json").read_text())["eos_token_id"] == IM_END_ID


def test_golden_ids(hf_tok, shared_data):
    cases = json.loads((shared_data / "qwen-tokenizer" / "golden_qwen2.5_ids.json").read_text())
    for case in cases:
        assert hf_tok.encode(case["text"]) == case["ids"], case["text"]


@pytest.mark.parametrize("text", SAMPLES)
def test_ids_and_decode_equal_ours(hf_tok, ours, text):
    assert unicodedata.normalize("NFC", text) == text
    ids = hf_tok.encode(text)
    assert ids == ours.encode(text)
    assert hf_tok.decode(ids) == text == ours.decode(ids)


def test_tokenizer_json_alone_equals_ours(folder, ours):
    """Tools that read tokenizer.json with the `tokenizers` library directly (TGI, llama.cpp's converter)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert [e.ids for e in tok.encode_batch(SAMPLES)] == [ours.encode(t) for t in SAMPLES]


def test_nfc_then_ours(hf_tok, ours):
    """Decomposed accents are composed first (transformers 5 forces NFC on qwen2 folders; the file says so too)."""
    text = unicodedata.normalize("NFD", "café naïve Ångström")
    assert text != unicodedata.normalize("NFC", text)
    assert hf_tok.encode(text) == ours.encode(unicodedata.normalize("NFC", text))


def test_real_pages_equal_ours(hf_tok, ours, shared_data):
    gold = json.loads((shared_data / "article-extraction-benchmark" / "ground-truth.json").read_text())
    udhr = sorted((shared_data / "udhr-nltk" / "udhr2").iterdir())[::4]    # ~100 languages and scripts
    texts = [v["articleBody"] for v in gold.values()] + [p.read_text(errors="replace") for p in udhr]
    texts = [unicodedata.normalize("NFC", t) for t in texts]
    assert hf_tok(texts)["input_ids"] == ours.encoding.encode_ordinary_batch(texts)


@pytest.mark.parametrize("generation_prompt", [False, True])
def test_chat_template_equals_our_renderer(hf_tok, ours, generation_prompt):
    for messages in CONVERSATIONS:
        full = with_system(messages, DEFAULT_SYSTEM)
        text = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        assert text == render(full, generation_prompt)
        if not generation_prompt:
            ids = hf_tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            assert ids == encode_chat(full, ours)[0]


@pytest.mark.parametrize("system", ["", "Tu es «utile».\nIt's 'quoted' \\ and {{ not jinja }} 🚀"])
def test_chat_template_custom_system_prompt(tmp_path, system):
    from transformers import AutoTokenizer

    save_tokenizer(tmp_path, chat=True, system_prompt=system)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    for messages in CONVERSATIONS:
        got = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert got == render(with_system(messages, system), generation_prompt=True)


def test_generation_config_base_and_chat(tmp_path):
    from transformers import GenerationConfig

    save_tokenizer(tmp_path / "base")
    save_tokenizer(tmp_path / "chat", chat=True)
    base, chat = (GenerationConfig.from_pretrained(tmp_path / k) for k in ("base", "chat"))
    assert (base.eos_token_id, base.bos_token_id, base.pad_token_id) == (ENDOFTEXT_ID,) * 3
    assert chat.eos_token_id == [IM_END_ID, ENDOFTEXT_ID] and not chat.do_sample
    special = json.loads((tmp_path / "base" / "special_tokens_map.json").read_text())
    assert special["eos_token"] == "<|endoftext|>" and special["pad_token"] == "<|endoftext|>"


def test_pipeline_greedy_equals_our_generator(folder, model, ours):
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(folder), dtype=torch.float32, device="cpu")
    prompt = "The capital of France is"
    got = pipe(prompt, max_new_tokens=12, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
    want = generate(model, [ours.encode(prompt)], max_new_tokens=12)[0]
    assert got == ours.encode(prompt) + want and len(want) == 12     # the pipeline returns prompt + new tokens
    messages = CONVERSATIONS[0]
    reply = pipe(messages, max_new_tokens=12, do_sample=False)[0]["generated_text"][-1]
    ids = generate(model, [ours.encode(render(with_system(messages, DEFAULT_SYSTEM), generation_prompt=True))],
                   max_new_tokens=12)[0]
    assert reply["role"] == "assistant" and reply["content"] == ours.decode([t for t in ids if t != IM_END_ID])


def test_import_and_cli_accept_tokenizer_files(folder, model, tmp_path):
    back = from_pretrained(folder)
    assert back.cfg == model.cfg
    assert all(torch.equal(t, back.state_dict()[k]) for k, t in model.state_dict().items())
    save_model(model, tmp_path / "ckpt")
    hf_main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf"), "--chat"])
    assert all((tmp_path / "hf" / name).exists() for name in TOKENIZER_FILES)
    assert json.loads((tmp_path / "hf" / "generation_config.json").read_text())["eos_token_id"] == [IM_END_ID,
                                                                                                 ENDOFTEXT_ID]
    hf_main(["import", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")])
    assert load_model(tmp_path / "back").cfg == model.cfg


def test_toy_vocabulary_exports_weights_only(tmp_path):
    small = Qwen(ModelConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                             num_kv_heads=1))
    save_pretrained(small, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
