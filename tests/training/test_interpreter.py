"""The chat CLI's code-interpreter loop with a scripted model (a test double for the replies) and the
real sandbox: the model's code really runs, its output (or error, or timeout) is what comes back."""
from __future__ import annotations

import json

from stages.tooluse import OBSERVATION_ROLE
from training.interpreter import final_answer, interpret


def scripted(*replies: str):
    seen = []

    def reply(messages):
        seen.append([dict(m) for m in messages])
        return replies[len(seen) - 1]
    return reply, seen


def call(code: str) -> str:
    return f"Thought: run it\nAction: code_interpreter\nAction Input: {json.dumps({'code': code})}"


def test_code_runs_in_the_sandbox_and_its_output_is_the_observation():
    reply, seen = scripted(call("print(sum(i * i for i in range(10)))"),
                           "Thought: I now know the final answer.\nFinal Answer: 285")
    messages = interpret("Sum of squares below 10?", reply)
    assert [m["role"] for m in messages] == ["user", "assistant", OBSERVATION_ROLE, "assistant"]
    assert messages[2]["content"] == "Observation: 285"
    assert seen[1][-1] == messages[2]           # the model saw the observation before answering
    assert final_answer(messages) == "285"


def test_fenced_code_runs_without_its_fences():
    fenced = "```python\nimport math\nprint(math.factorial(10))\n```"
    raw = f"Thought: run it\nAction: code_interpreter\nAction Input: {fenced}"
    reply, _ = scripted(call(fenced), raw, "Thought: done\nFinal Answer: 3628800")
    messages = interpret("10!?", reply)
    observations = [m["content"] for m in messages if m["role"] == OBSERVATION_ROLE]
    assert observations == ["Observation: 3628800", "Observation: 3628800"]  # JSON input, then raw text input


def test_errors_timeouts_and_the_call_limit():
    reply, _ = scripted(call("1/0"), call("while True: pass"), call("print('again')"), "unreachable")
    messages = interpret("Loop?", reply, max_calls=2, timeout=1.0)
    observations = [m["content"] for m in messages if m["role"] == OBSERVATION_ROLE]
    assert observations[0] == "Observation: ZeroDivisionError: division by zero"
    assert observations[1] == "Observation: [timed out]"
    assert len(observations) == 2 and messages[-1]["content"] == call("print('again')")  # third call not run


def test_a_reply_outside_the_format_ends_the_loop():
    reply, _ = scripted("just some text")
    messages = interpret("Hi", reply)
    assert len(messages) == 2 and final_answer(messages) == "just some text"
