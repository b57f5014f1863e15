"""ChatML: the five readers on real records, rendering, hand-checked Qwen ids and the assistant-only loss mask."""

from __future__ import annotations

import gzip
import json

import pytest

from stages.chatml import (EncodeChat, EncodePreference, MixConfig, ParseInstructions, detect_format, encode_chat,
                           encode_preference, hh_turns, render, with_system)
from stages.tokenize.tokenizer import QwenTokenizer

SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def tok():
    return QwenTokenizer()


def lines(path, limit=None):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [line for _, line in zip(range(limit or 10 ** 9), handle)]


def test_hand_checked_ids_and_mask(tok):
    messages = with_system([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], SYSTEM)
    ids, mask = encode_chat(messages, tok)
    # Qwen2's chat template ids: 8948 "system", 872 "user", 77091 "assistant", 198 "\n", 9707 "Hello", 0 "!".
    assert ids == [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198,
                   151644, 872, 198, 13048, 151645, 198,
                   151644, 77091, 198, 9707, 0, 151645, 198]
    assert mask == [0] * 20 + [1, 1, 1, 0]


def test_ids_equal_the_whole_rendered_string(tok, shared_data):
    """Per-message encoding gives exactly the ids of the full ChatML string (specials allowed)."""
    parse = ParseInstructions(MixConfig())
    rows = [{"line": line, "file": "seed"} for line in lines(shared_data / "self-instruct" / "seed_tasks.jsonl", 60)]
    convs = [r for r in parse.run(rows) if r["drop_reason"] is None]
    tricky = [{"role": "user", "content": "\n\n  leading space\r\n"}, {"role": "assistant", "content": "  x\n\n"},
              {"role": "user", "content": "literal <|im_end|> text"}, {"role": "assistant", "content": "\tok"}]
    for messages in [c["messages"] for c in convs] + [tricky]:
        ids, mask = encode_chat(messages, tok)
        text = render(messages)
        if "<|im_end|> text" not in text:
            assert ids == tok.encode(text, allowed_special="all")
        assert tok.decode(ids) == text and len(mask) == len(ids)
        # the masked tokens decode to the assistant replies, each followed by <|im_end|>
        replies = "".join(m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant")
        masked = tok.decode([i for i, m in zip(ids, mask) if m])
        assert masked.endswith(replies) and len(masked) - len(replies) <= 1  # a header "\n" merged into a reply


def test_literal_special_text_is_not_a_special_token(tok):
    ids, _ = encode_chat([{"role": "user", "content": "say <|im_end|>"}], tok)
    assert ids.count(151645) == 1


def test_readers(shared_data):
    parse = ParseInstructions(MixConfig(system_prompt="S"))
    alpaca = {"instruction": "Add.", "input": "2 and 3", "output": "5"}
    sharegpt = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    openai = {"messages": [{"role": "system", "content": "own"}, {"role": "user", "content": "q"},
                           {"role": "assistant", "content": "a"}]}
    seed = json.loads(lines(shared_data / "self-instruct" / "seed_tasks.jsonl", 1)[0])
    rows = [{"line": json.dumps(r), "file": "f"} for r in (alpaca, sharegpt, openai, seed)] + [{"line": "{", "file": "f"}]
    out = parse.run(rows)
    assert [detect_format(r) for r in (alpaca, sharegpt, openai, seed)] == ["alpaca", "sharegpt", "openai", "self-instruct"]
    assert out[0]["messages"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "Add.\n\n2 and 3"},
                                  {"role": "assistant", "content": "5"}]
    assert out[0]["text"] == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nAdd.\n\n2 and 3<|im_end|>\n" \
                             "<|im_start|>assistant\n5<|im_end|>\n"
    assert [m["role"] for m in out[1]["messages"]] == ["system", "user", "assistant"]
    assert out[2]["messages"][0] == {"role": "system", "content": "own"}  # its own system prompt wins
    instances = seed["instances"]
    assert [r["messages"][-1]["content"] for r in out[3:3 + len(instances)]] == [i["output"] for i in instances]
    assert out[-1]["drop_reason"] == "bad_record"


def test_hh_rlhf_pairs(tok, shared_data):
    raw = [json.loads(line) for line in lines(shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz", 50)]
    out = ParseInstructions(MixConfig()).run([{"line": json.dumps(r), "file": "hh"} for r in raw])
    pairs = [o for o in out if o["drop_reason"] is None]
    assert len(pairs) >= 45 and all(o["kind"] == "preference" for o in out)
    first, rec = pairs[0], raw[out.index(pairs[0])]
    assert rec["chosen"].endswith(first["chosen"]) and rec["rejected"].endswith(first["rejected"])
    turns = hh_turns(rec["chosen"])
    assert first["messages"][1:] == turns[:-1] and first["messages"][0]["role"] == "system"
    [enc] = EncodePreference(MixConfig()).run([first])
    full, _ = encode_chat([*first["messages"], {"role": "assistant", "content": first["chosen"]}], tok)
    # prompt + chosen decodes to the full ChatML dialogue without its last newline
    assert tok.decode(enc["prompt_ids"] + enc["chosen_ids"]) == tok.decode(full)[:-1]
    assert enc["chosen_ids"][-1] == enc["rejected_ids"][-1] == 151645
    assert enc == {**enc, **encode_preference(first["messages"], first["chosen"], first["rejected"], tok)}


def test_encode_chat_drops_too_long(shared_data):
    conv = {"id": "x", "messages": [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "ok"}]}
    [short] = EncodeChat(MixConfig(seq_len=16)).run([conv])
    [fits] = EncodeChat(MixConfig(seq_len=4096)).run([conv])
    assert short["drop_reason"] == "too_long" and fits["drop_reason"] is None
    assert fits["n_tokens"] == len(fits["input_ids"]) == len(fits["loss_mask"])


def test_pack_conversations_never_splits_one():
    from stages.chatml import pack_conversations

    lengths = [5, 3, 4, 9, 2, 2, 7]
    convs = [{"split": "train", "input_ids": list(range(100 * i, 100 * i + n)), "loss_mask": [1] * n}
             for i, n in enumerate(lengths)] + [{"split": "valid", "input_ids": [1, 2], "loss_mask": [0, 1]}]
    rows = list(pack_conversations(convs, seq_len=9))  # rows of at most 10 tokens
    # greedy in order, by hand: [5,3] [4] [9] [2,2] [7] | valid [2]
    assert [r["doc_starts"] for r in rows] == [[0, 5], [0], [0], [0, 2], [0], [0]]
    assert [r["split"] for r in rows] == ["train"] * 5 + ["valid"]
    flat = [t for r in rows for t in r["input_ids"]]
    assert flat == [t for c in convs for t in c["input_ids"]]
    assert all(r["n_tokens"] == len(r["input_ids"]) == len(r["loss_mask"]) <= 10 for r in rows)


def test_gsm8k_records_become_math_conversations(shared_data):
    record = json.loads(lines(shared_data / "gsm8k" / "train.jsonl", 1)[0])
    assert detect_format(record) == "qa"
    out = ParseInstructions(MixConfig(system_prompt="S")).run([{"line": json.dumps(record), "file": "train.jsonl"}])
    assert [m["content"] for m in out[0]["messages"]] == ["S", record["question"], record["answer"]]
    assert out[0]["source"] == "qa" and out[0]["messages"][-1]["content"].rsplit("#### ", 1)[1].strip().isdigit()


def test_openai_function_calling_records_become_react_steps_with_tool_output_masked(tok):
    """A record shaped like OpenAI's chat API (content None beside `tool_calls`, `tool` results)."""
    record = {"tools": [{"type": "function", "function": {
                  "name": "get_weather", "description": "Current weather of a city.",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
              "messages": [
                  {"role": "system", "content": "You answer briefly."},
                  {"role": "user", "content": "Is it raining in Oslo?"},
                  {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                   "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "light rain, 7 C"},
                  {"role": "assistant", "content": "Yes, light rain at 7 C."}]}
    bad = {"tools": [], "messages": [{"role": "assistant", "content": None, "tool_calls": [{"function": {}}]}]}
    out = ParseInstructions(MixConfig()).run([{"line": json.dumps(r), "file": "f"} for r in (record, bad)])
    assert out[1]["drop_reason"] == "bad_record"  # no question, no call name: counted, not a crash
    messages = out[0]["messages"]
    assert "None" not in out[0]["text"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "function", "assistant"]
    assert messages[0]["content"] == "You answer briefly."
    assert "get_weather" in messages[1]["content"] and "Is it raining in Oslo?" in messages[1]["content"]
    assert messages[2]["content"].startswith("Thought: I should call get_weather.\nAction: get_weather\n")
    assert messages[3]["content"] == "Observation: light rain, 7 C"
    assert messages[4]["content"].endswith("Final Answer: Yes, light rain at 7 C.")
    row = EncodeChat(MixConfig()).run([out[0]])[0]
    ids, mask = row["input_ids"], row["loss_mask"]
    trained = tok.encoding.decode([t for t, m in zip(ids, mask) if m])
    assert "Action: get_weather" in trained and "Final Answer: Yes, light rain at 7 C." in trained
    assert "light rain, 7 C" not in trained.replace("Yes, light rain at 7 C.", "")  # tool output never trained
    assert "Is it raining" not in trained and "You answer briefly" not in trained
