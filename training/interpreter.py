"""The code-interpreter loop of the chat CLI: the model writes ReAct steps, its Python runs in the sandbox.

    messages = interpret("What is 2**100?", reply_fn)        # reply_fn(messages) -> the model's next message
    python -m training.chat --checkpoint C --code-interpreter  # the same loop, one question per stdin line

The user turn lists one tool, `code_interpreter` (arguments {"code": "..."}), in the ReAct format of
`stages/tooluse.py` (the Qwen report's tool-use format). Each model step that calls it has its code run
by `common.sandbox.run_code` (separate process, wall timeout, no network, writes only in a scratch
directory); what the code printed (or its error, or "timed out") comes back as an `Observation:` in a
`function` message, and the model is asked again, until it writes `Final Answer:`, writes something
that is not a step, or `max_calls` runs have been made.
"""
from __future__ import annotations

from collections.abc import Callable

from common.sandbox import SandboxResult, run_code
from stages.synthesis import extract_code
from stages.tooluse import OBSERVATION_ROLE, Tool, parse_step, react_instruction

CODE_TOOL = Tool("code_interpreter", "Runs Python 3 code in a sandbox (no network, no files outside a scratch "
                                     "folder) and returns what it prints.", {"code": "string"})
MAX_OBSERVATION = 2000   # characters of output fed back to the model


def code_of(action_input) -> str:
    """The code of a call: {"code": "..."} or the raw input text (models often skip the JSON), with
    markdown fences (```python ... ```) taken off the way the synthesis jobs take them off."""
    code = action_input.get("code", "") if isinstance(action_input, dict) else action_input
    return extract_code(str(code))


def observation(result: SandboxResult) -> str:
    """What the model sees of one run: output, then the error or the timeout."""
    if result.timed_out:
        text = result.stdout + "\n[timed out]"
    elif result.ok:
        text = result.stdout or "[no output]"
    else:   # the exception line of a traceback, or the exit status
        errors = result.stderr.strip().splitlines()
        text = result.stdout + (errors[-1] if errors else f"[exit status {result.returncode}]")
    text = text.strip()
    return "Observation: " + (text if len(text) <= MAX_OBSERVATION else text[:MAX_OBSERVATION] + " ...[cut]")


def interpret(question: str, reply: Callable[[list[dict]], str], system: str = "", max_calls: int = 5,
              timeout: float = 10.0, run: Callable[..., SandboxResult] = run_code) -> list[dict]:
    """The whole exchange as ChatML messages (the last one is the model's final message)."""
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": react_instruction(question, [CODE_TOOL])}]
    for calls in range(max_calls + 1):
        text = reply(messages)
        messages.append({"role": "assistant", "content": text})
        step = parse_step(text)
        if calls == max_calls or not step or step.get("action") != CODE_TOOL.name:
            break
        messages.append({"role": OBSERVATION_ROLE, "content": observation(run(code_of(step["action_input"]),
                                                                              timeout=timeout))})
    return messages


def final_answer(messages: list[dict]) -> str:
    """The text to show: the `Final Answer:` of the last step, or the model's last message as it is."""
    step = parse_step(messages[-1]["content"])
    return step["final_answer"] if step and "final_answer" in step else messages[-1]["content"]
