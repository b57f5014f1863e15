"""The Qwen tokenizer, chat template and generation defaults as Hugging Face files, beside exported weights.

    save_tokenizer("runs/hf/qwen2-sft", chat=True, model_max_length=32768)
    AutoTokenizer.from_pretrained("runs/hf/qwen2-sft").apply_chat_template(messages, tokenize=False)

``save_pretrained`` (training/model/hf.py) calls it for every model whose vocabulary holds the tokenizer. It
writes ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json`` and ``generation_config.json``.

``tokenizer.json`` is a byte-level BPE built from the same ranks file as our tiktoken encoding
(stages/tokenize/tokenizer.py): vocab = the GPT-2 byte-to-unicode spelling of each token with its rank as id;
one merge per multi-byte token, the two pieces tiktoken's own BPE reaches when it encodes that token's bytes
with the lower ranks only (151,387 merges, as in Qwen2's published tokenizer.json); an NFC normalizer, Qwen's
split regex, then ByteLevel without prefix space; the special tokens with our ids (<|endoftext|>, <|im_start|>,
<|im_end|>, <|extra_0..204|>: 151,643 to 151,850). Ids equal tiktoken's on NFC text (all our extracted web text
is NFC, stages/extract.py). The NFC step is there because transformers 5 loads every ``qwen2`` / ``qwen2_moe``
folder as ``Qwen2Tokenizer``, which rebuilds the tokenizer from vocab and merges with NFC whatever
tokenizer.json says; writing it into the file makes transformers 4, 5 and tools that read tokenizer.json
directly agree.

The chat template is stages/chatml.py's ``render(with_system(messages, system_prompt), add_generation_prompt)``
in Jinja: a conversation without a system message gets the default one (Qwen's "You are a helpful assistant.").
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from stages.chatml import MixConfig
from stages.tokenize.tokenizer import (ENDOFTEXT, ENDOFTEXT_ID, IM_END, IM_END_ID, IM_START, NUM_EXTRA, PATTERN,
                                       ranks_path, read_ranks)

SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END] + [f"<|extra_{i}|>" for i in range(NUM_EXTRA)]
TOKENIZER_SIZE = ENDOFTEXT_ID + len(SPECIAL_TOKENS)  # 151,851: a model's vocabulary must be at least this
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
DEFAULT_SYSTEM = MixConfig.system_prompt


# ----------------------------------------------------------------------------- tokenizer.json

@functools.cache
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what ByteLevel pre-tokenizers and decoders use)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def byte_level(token: bytes) -> str:
    table = _byte_to_unicode()
    return "".join(table[b] for b in token)


def bpe_pieces(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """tiktoken's BPE on `token` using only merges ranked below `max_rank`: lowest-ranked adjacent pair first."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        pair_ranks = [ranks.get(a + b, max_rank) for a, b in zip(parts, parts[1:])]
        rank = min(pair_ranks)
        if rank >= max_rank:
            break
        i = pair_ranks.index(rank)  # the leftmost, as tiktoken
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge that creates each multi-byte token, in rank order (the HF merges list)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            pieces = bpe_pieces(ranks, token, rank)
            if len(pieces) != 2:
                raise ValueError(f"token {token!r} (rank {rank}) is not one merge of lower-ranked tokens: {pieces}")
            merges.append((pieces[0], pieces[1]))
    return merges


def _added_token(token_id: int, content: str) -> dict:
    return dict(id=token_id, content=content, single_word=False, lstrip=False, rstrip=False, normalized=False,
                special=True)


def tokenizer_json(ranks_file: str | Path | None = None) -> str:
    """The tokenizer.json text for a ranks file ($QWEN_TIKTOKEN or assets/qwen.tiktoken by default)."""
    return _tokenizer_json(str(ranks_path(ranks_file)))


@functools.cache
def _tokenizer_json(ranks_file: str) -> str:
    """About 2.5 s to build, so cached per process (a trainer may export several times)."""
    ranks = read_ranks(Path(ranks_file))
    if len(ranks) != ENDOFTEXT_ID:
        raise ValueError(f"expected {ENDOFTEXT_ID} Qwen ranks, got {len(ranks)} in {ranks_file}")
    byte_level_opts = dict(add_prefix_space=False, trim_offsets=False, use_regex=False)
    doc = dict(
        version="1.0", truncation=None, padding=None,
        added_tokens=[_added_token(ENDOFTEXT_ID + i, t) for i, t in enumerate(SPECIAL_TOKENS)],
        normalizer=dict(type="NFC"),
        pre_tokenizer=dict(type="Sequence", pretokenizers=[
            dict(type="Split", pattern=dict(Regex=PATTERN), behavior="Isolated", invert=False),
            dict(type="ByteLevel", **byte_level_opts)]),
        post_processor=dict(type="ByteLevel", **byte_level_opts),
        decoder=dict(type="ByteLevel", **byte_level_opts),
        model=dict(type="BPE", dropout=None, unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                   fuse_unk=False, byte_fallback=False, ignore_merges=False,
                   vocab={byte_level(t): r for t, r in ranks.items()},
                   merges=[f"{byte_level(a)} {byte_level(b)}" for a, b in merges_from_ranks(ranks)]))
    return json.dumps(doc, ensure_ascii=False, indent=1)


# ----------------------------------------------------------------------------- chat template and configs

def _jinja_string(text: str) -> str:
    """`text` as a single-quoted Jinja string literal (Jinja unescapes literals like Python's unicode-escape)."""
    return "'" + text.encode("unicode_escape").decode("ascii").replace("'", "\\'") + "'"


# ChatML in Jinja; SYSTEM_TURN is filled in (or dropped) by chat_template. Literal specials: Qwen's, as chatml.py.
_SYSTEM_BLOCK = "{%- if not messages or messages[0]['role'] != 'system' %}{{- SYSTEM_TURN }}{%- endif %}"
_TURNS = ("{%- for message in messages %}"
          "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
          "{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def chat_template(system_prompt: str = DEFAULT_SYSTEM) -> str:
    """Equal to stages.chatml.render(with_system(messages, system_prompt), add_generation_prompt)."""
    if not system_prompt:
        return _TURNS
    system_turn = _jinja_string(f"{IM_START}system\n{system_prompt}{IM_END}\n")
    return _SYSTEM_BLOCK.replace("SYSTEM_TURN", system_turn) + _TURNS


def tokenizer_config(chat: bool, model_max_length: int, system_prompt: str = DEFAULT_SYSTEM) -> dict:
    eos = IM_END if chat else ENDOFTEXT
    decoder = {str(t["id"]): {k: v for k, v in t.items() if k != "id"}
               for t in (_added_token(ENDOFTEXT_ID + i, s) for i, s in enumerate(SPECIAL_TOKENS))}
    return dict(tokenizer_class="Qwen2Tokenizer", added_tokens_decoder=decoder,
                additional_special_tokens=[IM_START, IM_END], bos_token=None, eos_token=eos, pad_token=ENDOFTEXT,
                unk_token=None, add_prefix_space=False, clean_up_tokenization_spaces=False, errors="replace",
                split_special_tokens=False, model_max_length=model_max_length,
                chat_template=chat_template(system_prompt))


def generation_config(chat: bool) -> dict:
    """Greedy by default (as training/generate.py); a chat model also stops at <|im_end|>."""
    eos = [IM_END_ID, ENDOFTEXT_ID] if chat else ENDOFTEXT_ID
    return dict(bos_token_id=ENDOFTEXT_ID, eos_token_id=eos, pad_token_id=ENDOFTEXT_ID, do_sample=False)


def save_tokenizer(path: str | Path, *, chat: bool = False, model_max_length: int = 32768,
                   system_prompt: str = DEFAULT_SYSTEM, ranks_file: str | Path | None = None) -> None:
    """Write TOKENIZER_FILES into `path` (a base model ends turns with <|endoftext|>, a chat model with <|im_end|>)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = tokenizer_config(chat, model_max_length, system_prompt)
    special_map = {k: config[k] for k in ("additional_special_tokens", "eos_token", "pad_token")}
    (path / "tokenizer.json").write_text(tokenizer_json(ranks_file), encoding="utf-8")
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map),
                          ("generation_config.json", generation_config(chat))):
        (path / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
