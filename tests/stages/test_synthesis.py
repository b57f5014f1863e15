"""Synthesis logic against real GSM8K / HumanEval / Self-Instruct data and a test-double "model" whose
completions are known to be right or wrong by construction."""

from __future__ import annotations

import gzip
import itertools
import json
import random

import pytest

from stages import synthesis as syn
from stages.synthesis import SynthConfig


def read_jsonl(path, n):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


@pytest.fixture(scope="module")
def gsm8k(shared_data):
    return read_jsonl(shared_data / "gsm8k" / "train.jsonl", 200)


@pytest.fixture(scope="module")
def humaneval(shared_data):
    return read_jsonl(shared_data / "humaneval" / "HumanEval.jsonl.gz", 3)


# ---------------------------------------------------------------- math answers


def test_gsm8k_reference_answers_extract(gsm8k):
    for row in gsm8k:
        expected = row["answer"].split("####")[-1].strip().replace(",", "")
        assert syn.normalize_answer(syn.extract_answer(row["answer"])) == expected
        assert syn.judge_math([row["answer"]], row["answer"]) == [True]


@pytest.mark.parametrize("text,reference,expected", [
    ("so x = 3/4, thus \\boxed{\\frac{3}{4}}.", "0.75", True),
    ("\\boxed{\\dfrac{1}{2}}", "#### 0.5", True),
    ("\\boxed{{2}+1}", "{2}+1", True),                      # nested braces kept whole
    ("The answer is $1,234.50.", "#### 1234.5", True),
    ("The answer is: 18 eggs.", "18", True),
    ("First 20, then 18.\nThe answer is 18", "#### 20", False),  # the last stated answer counts
    ("I think it's 18", "18", False),                         # no stated final answer: wrong, not guessed
    ("#### 7\nThe answer is 8", "8", False),                  # '####' outranks the phrase
    ("The answer is x + 1.", "x+1", True),
    ("The answer is -3", "#### -3", True),
])
def test_answer_matching(text, reference, expected):
    assert syn.judge_math([text], reference) == [expected]


# ---------------------------------------------------------------- test doubles


class FixedModel:
    """A sampler that returns, for each conversation, the completions listed for its problem text."""

    def __init__(self, completions: dict[str, list[str]]):
        self.completions, self.calls = completions, []

    def __call__(self, convs, k):
        self.calls.append(len(convs))
        out = []
        for conv in convs:
            user = conv[-1]["content"]
            texts = next(v for problem, v in self.completions.items() if user.startswith(problem))
            assert len(texts) == k
            out.append(texts)
        return out


def wrong_by_one(solution: str) -> str:
    head, number = solution.rsplit("####", 1)
    return f"{head}#### {int(number.strip().replace(',', '')) + 1}"


def test_rejection_sampling_keeps_exactly_the_correct(gsm8k):
    rows = [{"id": f"gsm-{i}", **r} for i, r in enumerate(gsm8k[:12])]
    rng = random.Random(0)
    completions, expected = {}, {}
    for row in rows:
        final = row["answer"].split("####")[-1].strip()
        candidates = [(row["answer"], True), (wrong_by_one(row["answer"]), False),
                      (f"Let me think.\nThe answer is {final}.", True), ("I do not know.", False)]
        rng.shuffle(candidates)
        completions[row["question"]] = [c for c, _ in candidates]
        expected[row["id"]] = [c for c, good in candidates if good]
    model = FixedModel(completions)
    results = syn.synthesize(rows, model, "math", SynthConfig(samples=4, batch_size=5))
    assert model.calls == [5, 5, 2]
    for res in results:
        assert res["kept"] == expected[res["id"]]
        assert sum(res["verdicts"]) == 2
        (chosen, rejected), = res["pairs"]
        assert chosen in expected[res["id"]] and rejected not in expected[res["id"]]
        assert syn.sft_rows(res)[0]["messages"][-1] == {"role": "assistant", "content": res["kept"][0]}
        assert "The answer is" in res["messages"][-1]["content"]


def test_preference_pair_is_deterministic_and_order_free():
    samples = ["a good", "b bad", "c good", "d bad"]
    verdicts = [True, False, True, False]
    pair = syn.preference_pair(samples, verdicts, "p1")
    order = [3, 1, 0, 2]
    assert syn.preference_pair([samples[i] for i in order], [verdicts[i] for i in order], "p1") == pair
    by_hash = lambda texts: min(texts, key=lambda s: syn.sample_key("p1", s))  # noqa: E731
    assert pair == (by_hash(["a good", "c good"]), by_hash(["b bad", "d bad"]))
    assert syn.preference_pair(["x", "y"], [True, True], "p1") is None  # no failing sample: no pair
    assert len(syn.preference_pairs(samples, verdicts, "p1", limit=5)) == 2


def test_keep_passing_unique():
    assert syn.keep_passing(["a", "a", "b", "c"], [True, True, False, True]) == ["a", "c"]
    assert syn.keep_passing(["a", "a"], [True, True], unique=False) == ["a", "a"]


# ---------------------------------------------------------------- execution feedback


def test_execution_feedback_keeps_exactly_the_passing(humaneval):
    rows = humaneval[:2]
    completions, expected = {}, {}
    for row in rows:
        fn = row["entry_point"]
        whole = f"```python\n{row['prompt']}{row['canonical_solution']}```"
        body_only = row["canonical_solution"]  # a completion of the prompt, HumanEval style
        raises = f"```python\n{row['prompt']}    raise RuntimeError('no')\n```"
        wrong = f"```python\n{row['prompt']}    return None\n```"
        completions[row["prompt"]] = [wrong, whole, raises, body_only]
        expected[row["task_id"]] = [whole, body_only]
        assert fn in whole
    loops = f"```python\n{rows[0]['prompt']}    while True:\n        pass\n```"
    completions[rows[0]["prompt"]][2] = loops  # a timeout is a failure too
    results = syn.synthesize(rows, FixedModel(completions), "code", SynthConfig(samples=4, timeout=3.0))
    for res in results:
        assert res["kept"] == expected[res["id"]]
        assert res["verdicts"] == [False, True, False, True]
        assert res["pairs"][0][0] in expected[res["id"]]


def test_mbpp_style_tests_and_runner_results():
    row = {"id": "m1", "prompt": "Write add(a, b).", "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}
    good, bad = "def add(a, b):\n    return a + b", "def add(a, b):\n    return a * b"
    assert syn.judge("code", row, [good, bad], SynthConfig(timeout=5.0)) == [True, False]
    res = syn.run_tests(bad, syn.code_tests(row), timeout=5.0)
    assert res.returncode == 1 and "AssertionError" in res.stderr


SKIP_CHECK = """

def check(candidate):
    pass


import linecache, sys
def skip_their_check(frame, event, arg):  # jumps over the tests' `def check`, so ours above stays
    if event == 'line' and frame.f_code.co_name == '<module>':
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        if line.startswith('def check('):
            n = frame.f_lineno + 1
            while linecache.getline(frame.f_code.co_filename, n)[:1] in (' ', '\\n', '#'):
                n += 1
            frame.f_lineno = n
    return skip_their_check
sys.settrace(skip_their_check)
sys._getframe().f_trace = skip_their_check
"""
# appended to a wrong solution: ways to look like a pass without the tests running to their end
EXITS = {
    "os._exit": "\nimport os\nos._exit(0)\n",
    "sys.exit": "\nimport sys\nsys.exit(0)\n",
    "SystemExit": "\nraise SystemExit(0)\n",
    "exit()": "\nexit()\n",
    "quit()": "\nquit()\n",
    "signal handler": "\nimport os, signal\nsignal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
                      "os.kill(os.getpid(), signal.SIGTERM)\n",
    "kills itself": "\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "prints guessed sentinels": "\nprint('0' * 32, 'done', 'OK', 'qf.sandbox.done', flush=True)\n",
    "atexit": "\nimport atexit, os\natexit.register(lambda: os._exit(0))\n",
    "redefines check": "\ndef check(candidate):\n    pass\n",
    "keeps its own check with a trace function": SKIP_CHECK,
}


def test_judge_code_fails_exits_and_fakes(humaneval):
    """Execution feedback keeps a sample only when its tests ran to the end: no exit status 0 or printed text
    fakes it, with HumanEval's check() and with MBPP-style asserts alike."""
    row = humaneval[0]
    right = f"```python\n{row['prompt']}{row['canonical_solution']}```"
    wrong = f"{row['prompt']}    return None\n"
    samples = [right] + [f"```python\n{wrong}{cheat}```" for cheat in EXITS.values()]
    verdicts = syn.judge_code(samples, row["test"], row["entry_point"], timeout=10.0, workers=2)
    assert verdicts[0] is True
    assert [name for name, good in zip(EXITS, verdicts[1:]) if good] == []
    tests = "assert add(1, 2) == 3\nassert add(-1, 1) == 0"
    add = ["def add(a, b):\n    return a + b", "def add(a, b):\n    return 0\nimport sys\nsys.exit(0)",
           "def add(a, b):\n    import os\n    os._exit(0)"]
    assert syn.judge_code(add, tests, timeout=10.0) == [True, False, False]


def test_extract_code():
    assert syn.extract_code("Sure:\n```python\nx = 1\n```\nand\n```\ny = 2\n```") == "x = 1\n\ny = 2"
    assert syn.extract_code("```python\nx = 1\n") == "x = 1"  # unclosed fence (generation cut off)
    assert syn.extract_code("x = 1") == "x = 1"


# ---------------------------------------------------------------- evolution


def test_evolve_prompt_and_parse():
    instruction = "Write a haiku about autumn."
    prompts = {m: syn.evolve_prompt(instruction, m) for m in syn.EVOLVE_HOW}
    assert all(instruction in p and p.endswith("Rewritten instruction:\n") for p in prompts.values())
    assert len(set(prompts.values())) == len(syn.EVOLVE_HOW)
    good = "Write a haiku about autumn that mentions a red maple leaf and ends with a question."
    assert syn.parse_evolved(good, instruction) == (good, None)
    assert syn.parse_evolved(f"Rewritten instruction: {good}", instruction) == (good, None)
    assert syn.parse_evolved("write a HAIKU about autumn!", instruction) == (None, "unchanged")
    assert syn.parse_evolved("Sorry, I cannot do that for you.", instruction) == (None, "apology")
    assert syn.parse_evolved("Given instruction: write more", instruction) == (None, "template_leak")
    assert syn.parse_evolved("ok", instruction) == (None, "too_short")
    methods = ("constraints", "deepen")
    assert {syn.method_for(f"k{i}", methods) for i in range(50)} == set(methods)


# ---------------------------------------------------------------- diverse selection


def shingle_set(text, n=3):
    words = "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def test_select_diverse_finds_planted_near_duplicates(shared_data):
    seeds = [r["instruction"] for r in read_jsonl(shared_data / "self-instruct" / "seed_tasks.jsonl", 60)]
    seeds = [s for s in seeds if len(s.split()) >= 12][:25]
    planted = [s.upper().replace(",", "") + " Thanks." for s in seeds[:8]]  # case, punctuation, a word more
    texts = seeds + planted
    verdicts = syn.select_diverse(texts, threshold=0.7)
    assert verdicts[len(seeds):] == ["near_duplicate"] * len(planted)
    sets = [shingle_set(t) for t in texts]
    for i, verdict in enumerate(verdicts):
        best = max((len(sets[i] & sets[j]) / len(sets[i] | sets[j]) for j in range(i)), default=0.0)
        assert (verdict == "near_duplicate") == (best >= 0.7), texts[i]  # exact pairwise check agrees


def test_tag_cap():
    texts = ["Write a poem about cats", "Write a song about dogs", "Explain gravity to me",
             "write code that sorts numbers", "Explain tides simply"]
    assert syn.select_diverse(texts, max_per_tag=2) == [None, None, None, "tag_cap", None]
    assert syn.select_diverse(texts, max_per_tag=1, tags=["a", "b", "a", "b", "c"]) == [
        None, None, "tag_cap", "tag_cap", None]
