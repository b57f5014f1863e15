"""ReAct tool-use conversations: format, parsing, OpenAI conversion, and the SFT loss mask from
stages.chatml.encode_chat covering the model's steps but never the observations."""

from __future__ import annotations

import json

import pytest

from stages.chatml import encode_chat, render
from stages.tokenize.tokenizer import IM_END, QwenTokenizer
from stages.tooluse import (FINAL_THOUGHT, Step, Tool, from_openai, parse_step, react_instruction, react_messages,
                            step_text)

TOOLS = [Tool("calculator", "Evaluates an arithmetic expression.", {"expression": "string"}),
         Tool("search", "Looks a phrase up in an encyclopedia.", {"query": "string"})]
STEPS = [Step("I should look up the population first.", "search", {"query": "population of Iceland"},
              "Iceland has about 380,000 inhabitants."),
         Step("Now double it.", "calculator", {"expression": "2*380000"}, "760000")]


@pytest.fixture(scope="module")
def tok():
    return QwenTokenizer()


def test_instruction_lists_tools_and_protocol():
    text = react_instruction("How many?", TOOLS)
    for tool in TOOLS:
        assert tool.name in text and tool.description in text and json.dumps(tool.parameters) in text
    for keyword in ("Thought:", "Action:", "Action Input:", "Observation:", "Final Answer:"):
        assert keyword in text
    assert "[calculator, search]" in text and text.endswith("Question: How many?")


def test_messages_alternate_and_render_as_chatml():
    msgs = react_messages("Twice Iceland's population?", TOOLS, STEPS, "About 760,000.", system="Be brief.")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "function", "assistant", "function",
                                         "assistant"]
    assert msgs[2]["content"] == ('Thought: I should look up the population first.\nAction: search\n'
                                  'Action Input: {"query": "population of Iceland"}')
    assert msgs[3]["content"] == "Observation: Iceland has about 380,000 inhabitants."
    assert msgs[-1]["content"] == f"Thought: {FINAL_THOUGHT}\nFinal Answer: About 760,000."
    text = render(msgs)
    assert text.count("<|im_start|>") == 7 and "<|im_start|>function\nObservation: 760000<|im_end|>" in text
    with pytest.raises(ValueError, match="unknown tool"):
        react_messages("q", TOOLS, [Step("t", "weather", {}, "sunny")], "a")


def test_loss_mask_covers_model_steps_not_observations(tok):
    msgs = react_messages("Twice Iceland's population?", TOOLS, STEPS, "About 760,000.", system="Be brief.")
    ids, mask = encode_chat(msgs, tok)
    assert tok.decode(ids) == render(msgs)  # same ids as the whole rendered string
    trained = tok.decode([t for t, m in zip(ids, mask) if m])
    expected = "".join(m["content"] + IM_END for m in msgs if m["role"] == "assistant")
    assert trained == expected
    # and the complement: every observation token is masked out
    untrained = tok.decode([t for t, m in zip(ids, mask) if not m])
    for step in STEPS:
        assert step.observation in untrained and step.observation not in trained


def test_parse_step_round_trip():
    for step in STEPS:
        assert parse_step(step_text(step)) == {"thought": step.thought, "action": step.action,
                                               "action_input": step.action_input}
    assert parse_step(f"Thought: {FINAL_THOUGHT}\nFinal Answer: 42") == {"thought": FINAL_THOUGHT,
                                                                         "final_answer": "42"}
    invented = step_text(STEPS[1]) + "\nObservation: 1234"  # a model must not write the observation itself
    assert parse_step(invented)["action_input"] == {"expression": "2*380000"}
    assert parse_step("Thought: hm\nAction: search\nAction Input: not json")["action_input"] == "not json"
    assert parse_step("Just chatting.") is None


def test_from_openai_function_calling():
    record = {
        "functions": [{"name": "calculator", "description": "Evaluates an arithmetic expression.",
                       "parameters": {"expression": "string"}}],
        "messages": [
            {"role": "user", "content": "What is 6 times 7?"},
            {"role": "assistant", "content": "I will use the calculator.",
             "function_call": {"name": "calculator", "arguments": "{\"expression\": \"6*7\"}"}},
            {"role": "function", "name": "calculator", "content": "42"},
            {"role": "assistant", "content": "It is 42."},
        ]}
    expected = react_messages("What is 6 times 7?", TOOLS[:1],
                              [Step("I will use the calculator.", "calculator", {"expression": "6*7"}, "42")],
                              "It is 42.")
    assert from_openai(record) == expected
    tools_style = {"tools": [{"type": "function", "function": record["functions"][0]}],
                   "messages": [*record["messages"][:1],
                                {"role": "assistant", "content": "I will use the calculator.",
                                 "tool_calls": [{"function": record["messages"][1]["function_call"]}]},
                                {"role": "tool", "content": "42"}, record["messages"][3]]}
    assert from_openai(tools_style) == expected
