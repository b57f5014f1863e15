"""Tool use in ChatML: ReAct traces (Thought / Action / Action Input / Observation) as SFT conversations.

    tools = [Tool("calculator", "Evaluates an arithmetic expression.", {"expression": "string"})]
    steps = [Step("I should compute it.", "calculator", {"expression": "3*7"}, "21")]
    messages = react_messages("What is 3*7?", tools, steps, final_answer="21", system=SYSTEM)
    ids, mask = encode_chat(messages, QwenTokenizer())      # stages/chatml.py

The Qwen report (Bai et al. 2023, sec. 3.3) teaches tool use with ReAct (Yao et al. 2023): the user turn
lists the tools and the format, the model writes `Thought:`, `Action:` (a tool name), `Action Input:`
(JSON arguments), the tool's result comes back as `Observation:`, and so on until
`Thought: I now know the final answer` / `Final Answer:`.

In these conversations each model step is one assistant message and each observation is a separate
message with role `function` (the OpenAI function-result role), so `encode_chat` trains on the model's
thoughts, calls and answers (and their `<|im_end|>`) and never on tool output. At inference the model
ends a step with `<|im_end|>` after `Action Input:`; the caller runs the tool (e.g. the sandbox for a code
interpreter), appends the `function` message and generates again -- `parse_step` reads a step.
`from_openai` turns OpenAI-style function-calling records (`functions`, assistant `function_call`,
`function` results) into the same messages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]
OBSERVATION_ROLE = "function"
FINAL_THOUGHT = "I now know the final answer."
STEP = re.compile(r"Thought:\s*(?P<thought>.*?)\s*(?:Action:\s*(?P<action>[^\n]*?)\s*\nAction Input:\s*"
                  r"(?P<input>.*?)\s*(?:\nObservation:.*)?|Final Answer:\s*(?P<final>.*?)\s*)$", re.DOTALL)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)  # name -> type, or a JSON schema

    def describe(self) -> str:
        params = json.dumps(self.parameters, ensure_ascii=False)
        return f"{self.name}: {self.description} Arguments (a JSON object): {params}"


@dataclass(frozen=True)
class Step:
    thought: str
    action: str
    action_input: dict[str, Any] | str
    observation: str


def react_instruction(question: str, tools: list[Tool]) -> str:
    """The user turn: tools, the ReAct format (the protocol's keywords), then the question."""
    names = ", ".join(t.name for t in tools)
    listing = "\n".join(t.describe() for t in tools)
    return (f"Answer the question below. You may call these tools:\n\n{listing}\n\n"
            "Reply in this format, one step per message:\n"
            "Thought: what to do next and why\n"
            f"Action: the tool to call, one of [{names}]\n"
            "Action Input: the tool's arguments as a JSON object\n"
            "You then receive \"Observation: <the tool's result>\". Repeat as needed; at the end write\n"
            f"Thought: {FINAL_THOUGHT}\n"
            "Final Answer: the answer to the question\n\n"
            f"Question: {question}")


def format_input(action_input: dict[str, Any] | str) -> str:
    return action_input if isinstance(action_input, str) else json.dumps(action_input, ensure_ascii=False)


def step_text(step: Step) -> str:
    """The assistant's part of one step (what the model is trained to write)."""
    return f"Thought: {step.thought}\nAction: {step.action}\nAction Input: {format_input(step.action_input)}"


def final_text(answer: str, thought: str = FINAL_THOUGHT) -> str:
    return f"Thought: {thought}\nFinal Answer: {answer}"


def react_messages(question: str, tools: list[Tool], steps: list[Step], final_answer: str,
                   system: str = "", final_thought: str = FINAL_THOUGHT) -> list[Message]:
    """A whole ReAct trace as ChatML messages: assistant steps, `function` observations, final answer.
    Raises ValueError when a step calls a tool that is not listed."""
    known = {t.name for t in tools}
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": react_instruction(question, tools)})
    for step in steps:
        if step.action not in known:
            raise ValueError(f"step calls unknown tool {step.action!r} (tools: {sorted(known)})")
        messages.append({"role": "assistant", "content": step_text(step)})
        messages.append({"role": OBSERVATION_ROLE, "content": f"Observation: {step.observation}"})
    messages.append({"role": "assistant", "content": final_text(final_answer, final_thought)})
    return messages


def parse_step(text: str) -> dict[str, Any] | None:
    """A model's step -> {"thought", "action", "action_input"} or {"thought", "final_answer"}; None when
    it is not in the format. JSON arguments are decoded when they parse; text after an `Observation:`
    the model wrote itself is ignored (it must not invent tool output)."""
    m = STEP.match(text.strip())
    if not m:
        return None
    if m.group("final") is not None:
        return {"thought": m.group("thought"), "final_answer": m.group("final")}
    raw = m.group("input")
    try:
        args = json.loads(raw)
    except ValueError:
        args = raw
    return {"thought": m.group("thought"), "action": m.group("action"), "action_input": args}


# ---------------------------------------------------------------- OpenAI-style function calling


def tool_from_openai(fn: dict) -> Tool:
    return Tool(fn["name"], fn.get("description", ""), fn.get("parameters", {}))


def tools_of(record: dict) -> list[Tool]:
    """`functions` (legacy) or `tools` ([{"type": "function", "function": {...}}])."""
    specs = record.get("functions") or [t["function"] for t in record.get("tools") or []]
    return [tool_from_openai(f) for f in specs]


def call_of(message: dict) -> dict | None:
    """The (first) function call of an assistant message: `function_call` or `tool_calls[0].function`."""
    if message.get("function_call"):
        return message["function_call"]
    calls = message.get("tool_calls") or []
    return calls[0]["function"] if calls else None


def from_openai(record: dict, system: str = "") -> list[Message]:
    """{"functions" | "tools": [...], "messages": [user, assistant calling a function, function/tool result,
    ..., assistant]} -> ReAct messages. An assistant turn's text before its call becomes the Thought; one
    call per turn (later parallel calls are not represented)."""
    tools = tools_of(record)
    msgs = list(record["messages"])
    question = next(m["content"] for m in msgs if m["role"] == "user")
    steps, pending, final = [], None, None
    for m in msgs:
        call = call_of(m) if m["role"] == "assistant" else None
        if call:
            args = call.get("arguments", "{}")
            args = json.loads(args) if isinstance(args, str) else args
            pending = (m.get("content") or f"I should call {call['name']}.", call["name"], args)
        elif m["role"] in ("function", "tool") and pending:
            steps.append(Step(*pending, observation=m["content"]))
            pending = None
        elif m["role"] == "assistant":
            final = m["content"]
    if final is None:
        raise ValueError("the record has no final assistant answer")
    return react_messages(question, tools, steps, final, system or record.get("system", ""))
