"""Automated alignment-data synthesis, the pure parts (Qwen2 report, sec. 4.1.2): judge sampled answers,
keep the good ones, pair good with bad, evolve instructions and select a diverse subset.

    extract_answer("... so she has 18 left.\\n#### 18")             # '18'
    judge_math(["The answer is 18.", "The answer is 20."], "18")   # [True, False]
    judge_code(["```python\\ndef add(a, b):\\n    return a + b\\n```"], "assert add(2, 3) == 5")   # [True]
    preference_pair(samples, verdicts, key="problem-7")            # (chosen, rejected) or None

- Rejection sampling (Qwen2 sec. 4.1.2 "Rejection Sampling"; Yuan et al. 2023, RFT): k samples per math
  problem, keep those whose final answer equals the reference (GSM8K `#### N`, "The answer is N",
  `\\boxed{N}`; numbers compared exactly as fractions, so 0.5 == 1/2 == \\frac{1}{2}).
- Execution feedback (Qwen2 sec. 4.1.2 "Execution Feedback"): k code solutions per problem, each run with
  the problem's tests in `common.sandbox`; keep the passing ones: those whose program ran to its end (the
  sandbox's sentinel), never judged on exit status alone, so `sys.exit(0)` before the tests is a failure.
- Preference pairs from the same samples (Qwen2 sec. 4.1: offline DPO pairs from correct vs incorrect
  samples): one good and one bad sample, chosen deterministically by a hash of (key, sample).
- Instruction evolution (Evol-Instruct, Xu et al. 2023, "WizardLM", sec. 3): in-depth prompts (add
  constraints, deepen, concretise, add reasoning steps) and in-breadth; outputs that fail the paper's
  elimination checks (no change, an apology, template words leaking, too short) are dropped.
- Diverse selection (Qwen2 sec. 4.1.1 "collaborative data annotation": dedup and tag diversity; Self-Instruct
  (Wang et al. 2023) keeps instructions by their leading verb): near-duplicates removed with
  `stages.minhash` (LSH candidates verified by exact Jaccard of shingles), then at most `max_per_tag`
  instructions per tag (a given tag, else the instruction's first word).

Everything here is plain Python over lists: the Spark jobs in `synth/` call it per partition.
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from stages import minhash
from common.sandbox import SandboxResult, run_code

Message = dict[str, str]
# conversations (each ending with the user turn) and k -> k completions per conversation
Sampler = Callable[[list[list[Message]], int], list[list[str]]]


@dataclass(frozen=True)
class SynthConfig:
    samples: int = 4  # k samples per prompt (Qwen2 sec. 4.1.2 samples several responses per query)
    temperature: float = 0.8  # sampling temperature for diverse candidates
    top_p: float = 0.95
    max_new_tokens: int = 256
    batch_size: int = 8  # prompts per generate() call on an executor
    seed: int = 0
    system_prompt: str = "You are a helpful assistant."  # Qwen's default system message
    timeout: float = 10.0  # sandbox seconds per code sample (HumanEval's harness uses a few seconds)
    sandbox_workers: int = 2  # sandboxes run at once per task
    pairs_per_prompt: int = 1  # preference pairs per prompt
    unique: bool = True  # drop repeated identical kept samples (RFT keeps distinct reasoning paths)
    evolve_methods: tuple[str, ...] = ("constraints", "deepen", "concretize", "reasoning", "breadth")
    min_evolved_words: int = 3
    dedup_threshold: float = 0.7  # Jaccard of word 3-gram shingles above which two instructions are near-duplicates
    shingle_ngram: int = 3  # instructions are short: 3-grams, not the 5-grams used for web documents
    max_per_tag: int = 0  # 0 = no cap
    valid_fraction: float = 0.0  # share of kept data sent to valid/ shards
    seq_len: int = 2048  # SFT rows hold at most seq_len + 1 tokens
    tokenizer: str = ""  # ranks file; empty: $QWEN_TIKTOKEN or assets/qwen.tiktoken


# ---------------------------------------------------------------- math answers

BOXED = re.compile(r"\\boxed\s*\{")
HASHES = re.compile(r"####\s*([^\n]+)")
ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*([^\n]+)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")
FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced; None when there is none (or it is unclosed)."""
    starts = [m.end() for m in BOXED.finditer(text)]
    if not starts:
        return None
    depth, i = 1, starts[-1]
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[starts[-1]:i].strip()
        i += 1
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: last \\boxed{}, else after the last `####`, else after the last
    "the answer is"; None when the text states none (no guess from stray numbers)."""
    if (boxed := last_boxed(text)) is not None:
        return boxed
    for pattern in (HASHES, ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return found[-1].strip()
    return None


def normalize_answer(answer: str) -> str:
    """Strips LaTeX wrappers, units signs and punctuation around an answer; keeps a bare number when the
    text starts with one ("18 eggs." -> "18"), so "The answer is $1,000." and "#### 1000" agree."""
    s = FRAC.sub(r"(\1)/(\2)", answer)
    s = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\!", "").replace("\\%", "").replace("%", "").strip()
    s = s.strip(" .;:*").replace("(", "").replace(")", "")
    number = NUMBER.match(s)
    return number.group(0).replace(",", "").replace(" ", "") if number else s.lower()


def as_number(s: str) -> Fraction | None:
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str | None, reference: str) -> bool:
    """Exact match after normalisation; numbers compare as exact fractions (3 == 3.0 == 6/2)."""
    if predicted is None:
        return False
    ref = extract_answer(reference)
    a, b = normalize_answer(predicted), normalize_answer(ref if ref is not None else reference)
    x, y = as_number(a), as_number(b)
    if x is not None and y is not None:
        return x == y
    a, b = "".join(a.split()), "".join(b.split())
    return a == b and a != ""


def judge_math(samples: Sequence[str], reference: str) -> list[bool]:
    """Per sample: does its final answer match the reference (a bare answer or a full GSM8K solution)?"""
    return [answers_match(extract_answer(s), reference) for s in samples]


# ---------------------------------------------------------------- code execution

CODE_BLOCK = re.compile(r"```(?:python|py|python3)?[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(completion: str) -> str:
    """The Python code of a completion: its fenced blocks joined (an unclosed last fence counts), else the
    whole text."""
    blocks = CODE_BLOCK.findall(completion)
    if completion.count("```") % 2 == 1:  # the last fence opens a block the generation never closed
        opened = completion.rsplit("```", 1)[1].split("\n", 1)
        blocks.append(opened[1] if len(opened) == 2 else "")
    return "\n\n".join(b.strip("\n") for b in blocks) if blocks else completion


def program_with_tests(code: str, tests: str, entry_point: str = "") -> str:
    """Solution, then tests (asserts, or HumanEval's `def check(candidate)` called on `entry_point`)."""
    call = f"\n\ncheck({entry_point})\n" if entry_point and re.search(r"^def check\(", tests, re.M) else "\n"
    return f"{code}\n\n{tests}{call}"


def run_tests(completion: str, tests: str, entry_point: str = "", timeout: float = 10.0,
              prompt: str = "") -> SandboxResult:
    """Runs one completion against its tests in the sandbox; `prompt` (HumanEval's signature + docstring)
    is prepended when the completion is a function body rather than a whole program."""
    code = extract_code(completion)
    if prompt and entry_point and not re.search(rf"^def {re.escape(entry_point)}\(", code, re.M):
        code = prompt + code
    return run_code(program_with_tests(code, tests, entry_point), timeout=timeout)


def judge_code(samples: Sequence[str], tests: str, entry_point: str = "", timeout: float = 10.0,
               prompt: str = "", runner: Callable[..., SandboxResult] = run_tests, workers: int = 1) -> list[bool]:
    """Per sample: do the tests pass (`SandboxResult.passed`: the program ran to its end, then exited 0 within
    the timeout)? Exceptions, exits before the end (whatever their status) and timeouts all fail.
    `workers` > 1 runs that many sandboxes at once (threads: each waits on its own process)."""
    def one(sample: str) -> bool:
        return runner(sample, tests, entry_point, timeout, prompt).passed
    if workers <= 1 or len(samples) <= 1:
        return [one(s) for s in samples]
    with ThreadPoolExecutor(min(workers, len(samples))) as pool:
        return list(pool.map(one, samples))


# ---------------------------------------------------------------- selection and pairs


def sample_key(key: str, sample: str) -> str:
    return hashlib.sha1(f"{key}\0{sample}".encode()).hexdigest()


def keep_passing(samples: Sequence[str], verdicts: Sequence[bool], unique: bool = True) -> list[str]:
    """The samples judged good, in their original order (each text once when `unique`)."""
    kept, seen = [], set()
    for sample, good in zip(samples, verdicts, strict=True):
        if good and not (unique and sample in seen):
            kept.append(sample)
            seen.add(sample)
    return kept


def preference_pairs(samples: Sequence[str], verdicts: Sequence[bool], key: str,
                     limit: int = 1) -> list[tuple[str, str]]:
    """Up to `limit` (chosen, rejected) pairs: good and bad samples each ordered by a hash of (key, text),
    then zipped, so the choice is deterministic but not biased to the first sample."""
    good = sorted(set(keep_passing(samples, verdicts)), key=lambda s: sample_key(key, s))
    bad = sorted({s for s, v in zip(samples, verdicts, strict=True) if not v}, key=lambda s: sample_key(key, s))
    return list(zip(good, bad))[:limit]


def preference_pair(samples: Sequence[str], verdicts: Sequence[bool], key: str) -> tuple[str, str] | None:
    pairs = preference_pairs(samples, verdicts, key, 1)
    return pairs[0] if pairs else None


# ---------------------------------------------------------------- instruction evolution

EVOLVE_HEAD = ("You rewrite instructions to make them harder for an AI assistant while keeping them "
               "reasonable, self-contained and answerable by a person. {how} Add at most {words} words. "
               "Reply with the rewritten instruction only, after the line \"Rewritten instruction:\".\n\n"
               "Instruction:\n{instruction}\n\nRewritten instruction:\n")
EVOLVE_HOW = {
    "constraints": "Add one more constraint or requirement to it.",
    "deepen": "If it asks about a topic, make the question go deeper or wider into that topic.",
    "concretize": "Replace general concepts in it with more specific ones.",
    "reasoning": "If it can be solved in a few simple steps, rewrite it so that it needs several explicit "
                 "steps of reasoning.",
    "breadth": "Instead of rewriting it, write a brand-new instruction in the same domain, about as long, "
               "but rarer.",
}
LEAKS = ("rewritten instruction", "given instruction", "#rewritten prompt#", "#given prompt#", "instruction:")
APOLOGY = re.compile(r"\b(sorry|as an ai|i cannot|i can't|i am unable)\b", re.IGNORECASE)


def evolve_prompt(instruction: str, method: str, extra_words: int = 20) -> str:
    """The prompt asking a model to evolve `instruction` one step with `method` (a key of EVOLVE_HOW)."""
    return EVOLVE_HEAD.format(how=EVOLVE_HOW[method], words=extra_words, instruction=instruction.strip())


def method_for(key: str, methods: Sequence[str]) -> str:
    """A deterministic method per instruction, spread evenly by hash."""
    return methods[int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % len(methods)]


def parse_evolved(output: str, original: str, min_words: int = 3) -> tuple[str | None, str | None]:
    """(evolved instruction, None) or (None, reason): WizardLM's elimination rules (sec. 3.3) plus format."""
    text = output.split("Rewritten instruction:", 1)[-1].strip().strip('"').strip()
    if len(text.split()) < min_words:
        return None, "too_short"
    if APOLOGY.search(text):
        return None, "apology"
    if any(leak in text.lower() for leak in LEAKS):
        return None, "template_leak"
    if minhash.normalize_text(text) == minhash.normalize_text(original):
        return None, "unchanged"
    return text, None


# ---------------------------------------------------------------- diverse selection


def tag_of(instruction: str, tag: str | None = None) -> str:
    """The given tag, else the instruction's first word, lower-cased (Self-Instruct's leading verb)."""
    if tag:
        return tag
    words = minhash.normalize_text(instruction).split()
    return words[0] if words else ""


def near_duplicate_groups(texts: Sequence[str], threshold: float, ngram: int = 3) -> list[int]:
    """Per text, the index of the first text of its near-duplicate group (union-find over LSH candidate
    pairs whose exact shingle Jaccard is >= threshold)."""
    params = minhash.MinHashParams.for_threshold(threshold, num_perm=128, ngram=ngram)
    sets = [minhash.shingles(t, params) for t in texts]
    keys = minhash.band_keys(minhash.signatures_of_shingles(sets, params), params)
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    buckets: dict[tuple[int, bytes], list[int]] = {}
    for i, bands in enumerate(keys):
        for b, band in enumerate(bands or ()):
            members = buckets.setdefault((b, band), [])
            for j in members:
                if root(i) != root(j) and minhash.jaccard(sets[i], sets[j]) >= threshold:
                    a, c = sorted((root(i), root(j)))
                    parent[c] = a  # the earliest text stays the group's root
            members.append(i)
    return [root(i) for i in range(len(texts))]


def select_diverse(texts: Sequence[str], threshold: float = 0.7, max_per_tag: int = 0,
                   tags: Sequence[str | None] | None = None, ngram: int = 3) -> list[str | None]:
    """Per text, None when selected, else why not: "near_duplicate" (of an earlier text) or "tag_cap"."""
    groups = near_duplicate_groups(texts, threshold, ngram)
    counts: dict[str, int] = {}
    out: list[str | None] = []
    for i, text in enumerate(texts):
        if groups[i] != i:
            out.append("near_duplicate")
            continue
        tag = tag_of(text, tags[i] if tags else None)
        counts[tag] = counts.get(tag, 0) + 1
        out.append("tag_cap" if max_per_tag and counts[tag] > max_per_tag else None)
    return out


# ---------------------------------------------------------------- whole problems

MATH_ASK = "\n\nSolve it step by step, then give the final number on its own last line as \"The answer is N\"."
CODE_ASK = "\n\nWrite a complete Python solution in one ```python code block."


def problem_text(row: dict) -> str:
    """The problem statement: `prompt`, `question` (GSM8K) or `instruction`, whichever is there."""
    for key in ("prompt", "question", "instruction", "text"):
        if row.get(key):
            return row[key]
    raise KeyError(f"no prompt/question/instruction in a row with keys {sorted(row)}")


def problem_messages(row: dict, kind: str, system: str) -> list[Message]:
    """The conversation a model answers: system, then the problem with the task's answer-format request."""
    ask = {"math": MATH_ASK, "code": CODE_ASK}.get(kind, "")
    messages = [{"role": "user", "content": problem_text(row).rstrip() + ask}]
    return ([{"role": "system", "content": system}] if system else []) + messages


def code_tests(row: dict) -> str:
    """Tests of a code problem: `tests`/`test` (a program) or `test_list` (MBPP's list of asserts)."""
    if row.get("test_list"):
        return "\n".join(row["test_list"])
    return row.get("tests") or row.get("test") or ""


def judge(kind: str, row: dict, samples: Sequence[str], config: SynthConfig,
          runner: Callable[..., SandboxResult] = run_tests) -> list[bool]:
    """Math: final answers against `answer`; code: the sandbox runs each sample with the row's tests."""
    if kind == "math":
        return judge_math(samples, row["answer"])
    prompt = row.get("prompt", "") if row.get("entry_point") else ""
    return judge_code(samples, code_tests(row), row.get("entry_point") or "", config.timeout, prompt, runner,
                      config.sandbox_workers)


def synthesize(rows: Sequence[dict], sampler: Sampler, kind: str, config: SynthConfig,
               runner: Callable[..., SandboxResult] = run_tests) -> list[dict]:
    """k samples per problem from `sampler`, judged; per problem `id`, `messages`, `samples`, `verdicts`,
    `kept` (good samples) and `pairs` ((chosen, rejected) samples for DPO)."""
    out = []
    for start in range(0, len(rows), max(1, config.batch_size)):
        batch = rows[start:start + max(1, config.batch_size)]
        convs = [problem_messages(r, kind, config.system_prompt) for r in batch]
        for row, messages, samples in zip(batch, convs, sampler(convs, config.samples), strict=True):
            verdicts = judge(kind, row, samples, config, runner)
            key = str(row.get("id") or row.get("task_id") or problem_text(row))
            out.append({"id": key, "messages": messages, "samples": list(samples), "verdicts": verdicts,
                        "kept": keep_passing(samples, verdicts, config.unique),
                        "pairs": preference_pairs(samples, verdicts, key, config.pairs_per_prompt)})
    return out


def sft_rows(result: dict) -> list[dict]:
    """One conversation per kept sample: the problem, then the sample as the assistant's reply."""
    return [{"id": f"{result['id']}-{sample_key(result['id'], s)[:12]}",
             "messages": [*result["messages"], {"role": "assistant", "content": s}]} for s in result["kept"]]


def pair_rows(result: dict) -> list[dict]:
    return [{"id": f"{result['id']}-{sample_key(result['id'], c + chr(0) + r)[:12]}", "messages": result["messages"],
             "chosen": c, "rejected": r} for c, r in result["pairs"]]
