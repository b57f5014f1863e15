"""Instruction data: readers for six formats, ChatML rendering, token ids with an assistant-only loss mask.

Formats, recognised per record from its keys:
    alpaca         {"instruction", "input", "output"}            -> user / assistant
    self-instruct  {"instruction", "instances": [{"input", "output"}]}   -> one conversation per instance
    sharegpt       {"conversations": [{"from": "human"|"gpt"|"system", "value"}]}
    openai         {"messages": [{"role", "content"}]}; with `functions`/`tools` and function calls -> ReAct steps
    hh-rlhf        {"chosen", "rejected"}: "\\n\\nHuman: ...\\n\\nAssistant: ..." -> preference pair
    qa             {"question", "answer"} (GSM8K's format: a worked solution ending "#### N") -> user / assistant

ChatML (Qwen 2023, sec. 3.1): each message is `<|im_start|>{role}\\n{content}<|im_end|>\\n`; a
conversation without a system message gets the recipe's (Qwen's default "You are a helpful
assistant."). Ids are those of the whole rendered string encoded with the special tokens allowed, so
they equal what Qwen's own tokenizer gives for it; message text itself is encoded literally (a
"<|im_start|>" typed by a user never becomes the special token). `loss_mask[i] = 1` where token i is
an assistant token to be predicted: the assistant's content and its `<|im_end|>`, not the
`<|im_start|>assistant\\n` header nor the newline after `<|im_end|>`.

    conv = parse_record({"instruction": "Add 2 and 3.", "input": "", "output": "5"})[0]
    ids, mask = encode_chat(with_system(conv["messages"], "You are a helpful assistant."), QwenTokenizer())
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from stages.base import Doc, Mapper, Stage, drop, keep
from stages.tokenize.tokenizer import IM_END, IM_END_ID, IM_START, IM_START_ID, QwenTokenizer
from stages.tooluse import from_openai

Message = dict[str, str]
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
         "bing": "assistant", "bard": "assistant", "system": "system"}
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
MESSAGES = pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))


@dataclass(frozen=True)
class MixConfig:
    system_prompt: str = "You are a helpful assistant."  # Qwen's default system message
    pretrain_ratio: float = 0.05  # share of instruction tokens in the pretraining stream (Qwen2 sec. 3.1 mixes them in)
    pretrain_source: str = "instruct"  # `source` of the instruction documents in the pretraining stream
    seq_len: int = 2048  # SFT rows hold at most seq_len + 1 tokens; longer conversations are dropped
    valid_fraction: float = 0.01  # conversations sent to valid/ (hash of id and seed)
    seed: int = 0
    tokenizer: str = ""  # ranks file; empty: $QWEN_TIKTOKEN or assets/qwen.tiktoken
    decontam: bool = True  # apply the [decontam] benchmarks to instruction data (drop mode)


# ---------------------------------------------------------------- readers


def detect_format(record: dict) -> str:
    keys = record.keys()
    for name, needed in (("openai", {"messages"}), ("sharegpt", {"conversations"}), ("hh-rlhf", {"chosen", "rejected"}),
                         ("self-instruct", {"instruction", "instances"}), ("alpaca", {"instruction", "output"}),
                         ("qa", {"question", "answer"})):
        if needed <= keys:
            return name
    raise ValueError(f"unknown instruction format with keys {sorted(keys)}")


def user_turn(instruction: str, extra: str | None) -> str:
    """Alpaca's prompt body: the instruction, then the input after a blank line when there is one."""
    return f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction


def read_alpaca(rec: dict) -> list[list[Message]]:
    return [[{"role": "user", "content": user_turn(rec["instruction"], rec.get("input"))},
             {"role": "assistant", "content": rec["output"]}]]


def read_self_instruct(rec: dict) -> list[list[Message]]:
    return [read_alpaca({"instruction": rec["instruction"], **inst})[0] for inst in rec["instances"]]


def read_qa(rec: dict) -> list[list[Message]]:
    return [[{"role": "user", "content": rec["question"]}, {"role": "assistant", "content": rec["answer"]}]]


def read_sharegpt(rec: dict) -> list[list[Message]]:
    return [[{"role": ROLES[turn["from"].lower()], "content": turn["value"]} for turn in rec["conversations"]]]


def read_openai(rec: dict) -> list[list[Message]]:
    """`messages` as they are; function-calling records (`functions` / `tools`, assistant `function_call`
    / `tool_calls`, `function` / `tool` results) become ReAct steps (`stages.tooluse.from_openai`)."""
    if is_function_calling(rec):
        system = next((m["content"] for m in rec["messages"] if m["role"] == "system" and m.get("content")), "")
        return [from_openai(rec, system)]
    return [[{"role": m["role"], "content": m.get("content") or ""} for m in rec["messages"]]]


def is_function_calling(rec: dict) -> bool:
    return bool(rec.get("functions") or rec.get("tools")) or any(
        m.get("function_call") or m.get("tool_calls") or m["role"] in ("function", "tool") for m in rec["messages"])


def hh_turns(dialogue: str) -> list[Message]:
    """hh-rlhf text ("\\n\\nHuman: ...\\n\\nAssistant: ...") -> messages."""
    parts = HH_TURN.split(dialogue)
    return [{"role": "user" if who == "Human" else "assistant", "content": text.strip()}
            for who, text in zip(parts[1::2], parts[2::2])]


def read_preference(rec: dict) -> tuple[list[Message], str, str] | None:
    """(prompt messages, chosen reply, rejected reply); None when the two dialogues' prompts differ."""
    chosen, rejected = hh_turns(rec["chosen"]), hh_turns(rec["rejected"])
    if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return None
    if chosen[:-1] != rejected[:-1]:
        return None
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


READERS = {"alpaca": read_alpaca, "self-instruct": read_self_instruct, "sharegpt": read_sharegpt,
           "openai": read_openai, "qa": read_qa}


# ---------------------------------------------------------------- rendering and ids


def with_system(messages: list[Message], system: str) -> list[Message]:
    if not system or (messages and messages[0]["role"] == "system"):
        return list(messages)
    return [{"role": "system", "content": system}, *messages]


def render(messages: list[Message], generation_prompt: bool = False) -> str:
    """ChatML text; `generation_prompt` appends `<|im_start|>assistant\\n` for the model's reply."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if generation_prompt else "")


def encode_chat(messages: list[Message], tok: QwenTokenizer) -> tuple[list[int], list[int]]:
    """ChatML ids of `messages` and the loss mask (1 on assistant content and its <|im_end|>)."""
    newline = tok.encoding.encode_ordinary("\n")
    ids, mask = [], []
    for m in messages:
        head = f"{m['role']}\n"
        body = tok.encoding.encode_ordinary(head + m["content"])
        train = m["role"] == "assistant"
        body_mask = content_mask(body, len(head.encode()), tok) if train else [0] * len(body)
        ids += [IM_START_ID, *body, IM_END_ID, *newline]
        mask += [0, *body_mask, int(train), *[0] * len(newline)]
    return ids, mask


def content_mask(body: list[int], head_bytes: int, tok: QwenTokenizer) -> list[int]:
    """1 for tokens holding any byte after the first `head_bytes` bytes (the content), else 0."""
    out, end = [], 0
    for token in body:
        end += len(tok.encoding.decode_single_token_bytes(token))
        out.append(int(end > head_bytes))
    return out


def encode_preference(prompt: list[Message], chosen: str, rejected: str, tok: QwenTokenizer) -> dict:
    """prompt ids (ending in `<|im_start|>assistant\\n`), and each reply's ids ending in <|im_end|>."""
    prompt_ids, _ = encode_chat(prompt, tok)
    prompt_ids += [IM_START_ID, *tok.encoding.encode_ordinary("assistant\n")]
    reply = lambda text: [*tok.encoding.encode_ordinary(text), IM_END_ID]
    return {"prompt_ids": prompt_ids, "chosen_ids": reply(chosen), "rejected_ids": reply(rejected)}


def hash_key(seed: int, *parts: str) -> str:
    return hashlib.sha1("\0".join([str(seed), *parts]).encode()).hexdigest()


def split_of(key: str, valid_fraction: float) -> str:
    return "valid" if int(key[:8], 16) < valid_fraction * 0x1_0000_0000 else "train"


# ---------------------------------------------------------------- stages


class ParseInstructions(Stage):
    """JSONL lines (`line`, `file`) -> conversations: `id`, `kind` (sft | preference), `messages`, `text`."""

    name = "parse"
    adds = (pa.field("id", pa.string()), pa.field("kind", pa.string()), pa.field("format", pa.string()),
            pa.field("source", pa.string()), pa.field("messages", MESSAGES), pa.field("chosen", pa.string()),
            pa.field("rejected", pa.string()), pa.field("text", pa.string()))
    drops = ("line",)

    def __init__(self, config: MixConfig = MixConfig()):
        self.config = config

    def process(self, rows: Iterable[Doc]) -> Iterator[Doc]:
        for row in rows:
            yield from self.parse(row)

    def parse(self, row: Doc) -> Iterator[Doc]:
        base = {k: v for k, v in row.items() if k != "line"}
        # the file's name, not its path: ids do not change when the data moves (local, hdfs://, s3a://)
        line_id = hash_key(0, (row.get("file") or "").rsplit("/", 1)[-1], row["line"])[:16]
        empty = {"id": line_id, "kind": None, "format": None, "source": None, "messages": None,
                 "chosen": None, "rejected": None, "text": None}
        try:
            rec = json.loads(row["line"])
            fmt = detect_format(rec)
            conversations = [] if fmt == "hh-rlhf" else READERS[fmt](rec)
        except (ValueError, AttributeError, KeyError, TypeError, StopIteration) as err:  # a malformed record
            yield drop({**base, **empty}, "bad_record", str(err)[:200])
            return
        source = str(rec.get("source") or fmt)
        if fmt == "hh-rlhf":
            yield self.preference(base, empty, rec, source)
            return
        for k, messages in enumerate(conversations):
            messages = with_system(messages, self.config.system_prompt)
            yield keep({**base, **empty, "id": f"{line_id}-{k}", "kind": "sft", "format": fmt, "source": source,
                        "messages": messages, "text": render(messages)})

    def preference(self, base: Doc, empty: Doc, rec: dict, source: str) -> Doc:
        parsed = read_preference(rec)
        out = {**base, **empty, "kind": "preference", "format": "hh-rlhf", "source": source}
        if parsed is None:
            return drop(out, "prompt_mismatch", "chosen and rejected dialogues differ before the last reply")
        prompt, chosen, rejected = parsed
        prompt = with_system(prompt, self.config.system_prompt)
        text = render([*prompt, {"role": "assistant", "content": chosen}])
        return keep({**out, "messages": prompt, "chosen": chosen, "rejected": rejected, "text": text})


class EncodeChat(Mapper):
    """SFT conversations -> `input_ids`, `loss_mask`, `n_tokens`, `split`, `shuffle_key` (too long: dropped)."""

    name = "encode_chat"
    adds = (pa.field("input_ids", pa.list_(pa.int32())), pa.field("loss_mask", pa.list_(pa.int8())),
            pa.field("n_tokens", pa.int32()), pa.field("split", pa.string()), pa.field("shuffle_key", pa.string()))

    def __init__(self, config: MixConfig = MixConfig()):
        self.config = config
        self.tokenizer = QwenTokenizer(config.tokenizer or None)

    def model_files(self) -> tuple[str, ...]:
        return (self.tokenizer.path,)

    def map(self, doc: Doc) -> Doc:
        ids, mask = encode_chat(doc["messages"], self.tokenizer)
        key = hash_key(self.config.seed, doc["id"])
        out = {**doc, "input_ids": ids, "loss_mask": mask, "n_tokens": len(ids),
               "split": split_of(key, self.config.valid_fraction), "shuffle_key": key}
        if len(ids) > self.config.seq_len + 1:
            return drop(out, "too_long", f"{len(ids)} tokens > seq_len + 1")
        return keep(out)


class EncodePreference(Mapper):
    """Preference pairs -> `prompt_ids`, `chosen_ids`, `rejected_ids`, `split`."""

    name = "encode_preference"
    adds = (pa.field("prompt_ids", pa.list_(pa.int32())), pa.field("chosen_ids", pa.list_(pa.int32())),
            pa.field("rejected_ids", pa.list_(pa.int32())), pa.field("split", pa.string()))

    def __init__(self, config: MixConfig = MixConfig()):
        self.config = config
        self.tokenizer = QwenTokenizer(config.tokenizer or None)

    def model_files(self) -> tuple[str, ...]:
        return (self.tokenizer.path,)

    def map(self, doc: Doc) -> Doc:
        ids = encode_preference(doc["messages"], doc["chosen"], doc["rejected"], self.tokenizer)
        split = split_of(hash_key(self.config.seed, doc["id"]), self.config.valid_fraction)
        return keep({**doc, **ids, "split": split})


# ---------------------------------------------------------------- SFT packing

SFT_SCHEMA = pa.schema([
    pa.field("split", pa.string()),
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("loss_mask", pa.list_(pa.int8())),
    pa.field("doc_starts", pa.list_(pa.int32())),
    pa.field("n_tokens", pa.int32()),
])


def pack_conversations(convs: Iterable[Doc], seq_len: int) -> Iterator[Doc]:
    """Whole conversations (sorted by split) packed greedily into rows of at most seq_len + 1 tokens.

    A conversation is never split across rows; `doc_starts` marks where each one begins, so training
    restarts positions and masks attention per conversation. Rows are not padded.
    """
    width, row = seq_len + 1, None
    for conv in convs:
        ids, mask = list(conv["input_ids"]), list(conv["loss_mask"])
        if row is not None and (row["split"] != conv["split"] or row["n_tokens"] + len(ids) > width):
            yield row
            row = None
        if row is None:
            row = {"split": conv["split"], "input_ids": [], "loss_mask": [], "doc_starts": [], "n_tokens": 0}
        row["doc_starts"].append(row["n_tokens"])
        row["input_ids"] += ids
        row["loss_mask"] += mask
        row["n_tokens"] += len(ids)
    if row is not None:
        yield row
