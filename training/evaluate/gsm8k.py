"""GSM8K (Cobbe et al. 2021): few-shot chain-of-thought generation, exact match on the final number.

    python -m training.evaluate --checkpoint runs/demo/train/final --tasks gsm8k --limit 50

Data: ``<shared>/gsm8k/{train,test}.jsonl`` (``question``, ``answer``; a reference answer ends with
``#### <number>``). The prompt holds ``shots`` solved training problems as ``Question: ...\\nAnswer: ...``
(calculator annotations ``<<...>>`` removed); the model answers greedily until a blank line or the next
``Question:``. The predicted answer is the number after ``####`` when the model wrote one, else the
last number in its text (Qwen (2023) evaluates GSM8K 8-shot this way); numbers are compared after
dropping thousands separators, currency signs and trailing zeros after a decimal point.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

NUMBER = re.compile(r"-?[$]?\d[\d,]*(?:\.\d+)?|-?\.\d+")
CALCULATOR = re.compile(r"<<[^>]*>>")
STOPS = ("\n\n", "Question:")


@dataclass(frozen=True)
class GSM8KConfig:
    shots: int = 8                 # Qwen (2023) table 4: GSM8K 8-shot
    max_new_tokens: int = 256


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def normalize(number: str) -> str:
    """'$1,234.50' -> '1234.5'; '18.00' -> '18'; '-.5' -> '-0.5'."""
    text = number.replace(",", "").replace("$", "").rstrip(".")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text.startswith("-."):
        text = "-0" + text[1:]
    elif text.startswith("."):
        text = "0" + text
    return text or "0"


def parse_answer(text: str) -> str | None:
    """The final number of a solution: after the last '####' if present, else the last number."""
    if "####" in text:
        found = NUMBER.findall(text.rsplit("####", 1)[1])
        if found:
            return normalize(found[0])
    found = NUMBER.findall(text)
    return normalize(found[-1]) if found else None


def reference(example: dict) -> str:
    """The gold number of a GSM8K example (the text after '####')."""
    return normalize(example["answer"].rsplit("####", 1)[1].strip())


def is_correct(completion: str, example: dict) -> bool:
    return parse_answer(completion) == reference(example)


def format_shot(example: dict) -> str:
    return f"Question: {example['question']}\nAnswer: {CALCULATOR.sub('', example['answer'])}\n\n"


def prompt(question: str, shots: list[dict]) -> str:
    return "".join(format_shot(s) for s in shots) + f"Question: {question}\nAnswer:"


def cut(completion: str) -> str:
    """The answer text before the first stop sequence."""
    for stop in STOPS:
        completion = completion.split(stop, 1)[0]
    return completion


def evaluate_gsm8k(model, tokenizer, data: Path, cfg: GSM8KConfig, limit: int = 0, batch_size: int = 8) -> dict:
    from training.evaluate.scoring import greedy

    shots, test = load(Path(data) / "train.jsonl")[: cfg.shots], load(Path(data) / "test.jsonl")
    test = test[:limit] if limit else test
    prompts = [tokenizer.encode(prompt(ex["question"], shots)) for ex in test]
    outputs = [cut(tokenizer.decode(ids)) for ids in greedy(model, prompts, cfg.max_new_tokens, batch_size)]
    right = [is_correct(out, ex) for out, ex in zip(outputs, test)]
    samples = [{"question": ex["question"][:200], "completion": out[:300], "parsed": parse_answer(out),
                "reference": reference(ex)} for ex, out in list(zip(test, outputs))[:5]]
    return {"accuracy": sum(right) / max(len(right), 1), "n": len(right), "shots": cfg.shots, "samples": samples}
