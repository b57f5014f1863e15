"""Evaluation results as ``results.json`` plus a Markdown summary (``summary.md``).

    python -m training.evaluate ... --out runs/demo/eval   # writes both, and passkey.png when run

``results`` is ``{task: metrics}`` as the task functions return them; the summary has one line per task
with its headline number and, for the passkey task, the accuracy table and the heat map.
"""
from __future__ import annotations

import json
from pathlib import Path

HEADLINE = {"ppl": ("ppl", "perplexity"), "mmlu": ("accuracy", "accuracy"), "gsm8k": ("accuracy", "exact match"),
            "humaneval": ("pass@1", "pass@1")}


def headline_rows(results: dict) -> list[str]:
    rows = []
    for task, (key, label) in HEADLINE.items():
        if task in results:
            r = results[task]
            n = r.get("n", r.get("tokens", ""))
            rows.append(f"| {task} | {label} | {r[key]:.4g} | {n} | {r.get('seconds', 0):.1f} |")
    return rows


def markdown(results: dict, meta: dict) -> str:
    from training.evaluate.long_context import markdown_table

    lines = [f"# Evaluation: `{meta.get('checkpoint', '')}`", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k not in ("checkpoint", "recipe")] + [""]
    rows = headline_rows(results)
    if rows:
        lines += ["| task | metric | value | n (items or tokens) | seconds |", "|---|---|---|---|---|", *rows, ""]
    if "passkey" in results:
        lines += ["## Passkey retrieval", "",
                  "Accuracy (mean answer log-prob) per long-context method and prompt length, over depths:", "",
                  markdown_table(results["passkey"]["rows"]), "", "![passkey accuracy](passkey.png)", "",
                  "![passkey answer log-probability](passkey_logprob.png)", ""]
    return "\n".join(lines)


def write(out: Path, results: dict, meta: dict) -> tuple[Path, Path]:
    """Writes out/results.json and out/summary.md; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "results.json", out / "summary.md"
    js.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    md.write_text(markdown(results, meta))
    return js, md
