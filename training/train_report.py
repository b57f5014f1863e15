"""Training report: loss and learning-rate curves, throughput and first/last metrics of every stage.

    python -m training.train_report --root runs/demo      # -> runs/demo/train_report.{html,md}
    python -m training.train_report --root s3://bucket/runs/demo   # a URI (s3://, s3a://, gs://, hdfs://)

Reads the stage folders that exist under the run root -- ``train`` (pretraining), ``sft``, ``rm``,
``ppo``, ``dpo``, ``online_dpo`` -- each with ``metrics.jsonl`` (one JSON object per optimizer step:
``step``, ``loss``, ``lr``, ``tokens_per_s``, stage metrics; validation lines carry ``val_*`` keys)
and ``summary.json``. Writes one self-contained HTML page (PNG plots inlined as base64, no external
resources) and the same content as Markdown, whose PNGs go to ``train_report_files/``.

``--root`` and ``--out`` may be URIs (common/fs.py): the files are read through pyarrow.fs, and a report
for a URI is written to a local temporary folder and uploaded when complete, the HTML page last.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from common import fs
from common.plot import Panel, is_number, line_figure, png_bytes, series, with_val

STAGES = ("train", "sft", "rm", "ppo", "dpo", "online_dpo")
TITLES = {"train": "Pretraining", "sft": "Supervised fine-tuning", "rm": "Reward model", "ppo": "PPO",
          "dpo": "DPO", "online_dpo": "Online DPO"}
CORE = ("loss", "lr", "tokens_per_s")
SKIP = {"step", "epoch", "tokens", "seconds"}      # bookkeeping, not curves
MAX_EXTRA = 6                                       # stage-specific metric panels per stage
PANEL_TITLES = {"tokens_per_s": "throughput (tokens/s)", "lr": "learning rate"}


@dataclass
class Stage:
    name: str
    steps: list[dict] = field(default_factory=list)    # optimizer-step lines
    evals: list[dict] = field(default_factory=list)    # validation lines (any val_* key)
    summary: dict = field(default_factory=dict)


def load_stage(folder: str | Path) -> Stage:
    """One stage folder (a path or URI) of a training run: its metrics.jsonl split into steps and evals,
    and summary.json."""
    stage = Stage(PurePosixPath(str(folder)).name)
    for line in fs.read_bytes(fs.join(folder, "metrics.jsonl")).decode().splitlines():
        if line.strip():
            row = json.loads(line)
            (stage.evals if any(k.startswith("val_") for k in row) else stage.steps).append(row)
    if fs.exists(fs.join(folder, "summary.json")):
        stage.summary = json.loads(fs.read_bytes(fs.join(folder, "summary.json")))
    return stage


def find_stages(root: str | Path) -> list[Stage]:
    """The stages of STAGES that have a metrics.jsonl under root, in pipeline order."""
    return [load_stage(fs.join(root, name)) for name in STAGES if fs.exists(fs.join(root, name, "metrics.jsonl"))]


def metric_keys(rows: list[dict]) -> list[str]:
    """Numeric keys in first-seen order, bookkeeping keys left out."""
    keys = dict.fromkeys(k for r in rows for k, v in r.items() if is_number(v) and k not in SKIP)
    return list(keys)


def first_last(stage: Stage) -> list[list]:
    """[metric, first step, first value, last step, last value] for every numeric metric."""
    rows = []
    for lines in (stage.steps, stage.evals):
        for key in metric_keys(lines):
            steps, values = series(lines, key)
            if values:
                rows.append([key, steps[0], fmt(values[0]), steps[-1], fmt(values[-1])])
    return rows


def throughput(stage: Stage) -> list:
    """[stage, steps, tokens, median tokens/s, median MFU] of one stage."""
    _, tps = series(stage.steps, "tokens_per_s")
    _, mfu = series(stage.steps, "mfu")
    tokens = sum(r.get("tokens", 0) for r in stage.steps if is_number(r.get("tokens")))
    last = max((r.get("step", 0) for r in stage.steps), default=0)
    return [stage.name, last, f"{tokens:,}", fmt(statistics.median(tps)) if tps else "",
            f"{statistics.median(mfu):.1%}" if mfu else ""]


def fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary_rows(summary: dict) -> list[list]:
    """Scalar entries of summary.json, nested tables flattened one level (first_eval.val_loss)."""
    rows = []
    for k, v in summary.items():
        if isinstance(v, dict):
            rows += [[f"{k}.{k2}", fmt(v2)] for k2, v2 in v.items() if not isinstance(v2, (dict, list))]
        elif not isinstance(v, list):
            rows.append([k, fmt(v)])
    return rows


def stage_figure(stage: Stage):
    """Loss (with validation loss), learning rate, throughput and up to MAX_EXTRA stage metrics, each with its
    val_ twin where logged; a metric the stage never logged gets no panel."""
    extra = [k for k in metric_keys(stage.steps) if k not in CORE][:MAX_EXTRA]
    panels = [Panel(PANEL_TITLES.get(key, key), with_val(key)) for key in (*CORE, *extra)]
    return line_figure(stage.steps + stage.evals, panels, TITLES.get(stage.name, stage.name))


FIRST_LAST = ["metric", "first step", "first", "last step", "last"]
THROUGHPUT = ["stage", "steps", "tokens", "median tokens/s", "median MFU"]


def html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def render_html(root: str | Path, stages: list[Stage], pngs: dict[str, bytes]) -> str:
    parts = [f"<h1>Training report: {html.escape(str(root))}</h1>", "<h2>Throughput</h2>",
             html_table(THROUGHPUT, [throughput(s) for s in stages])]
    for s in stages:
        data = base64.b64encode(pngs[s.name]).decode()
        parts += [f'<h2 id="{s.name}">{html.escape(TITLES.get(s.name, s.name))} (<code>{s.name}</code>)</h2>',
                  f'<img alt="{s.name} curves" src="data:image/png;base64,{data}">',
                  "<h3>First and last metrics</h3>", html_table(FIRST_LAST, first_last(s))]
        if s.summary:
            parts += ["<h3>summary.json</h3>", html_table(["key", "value"], summary_rows(s.summary))]
    if not stages:
        parts.append("<p>No stage folder with metrics.jsonl found.</p>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 10px;text-align:right}" \
            "img{max-width:100%}"
    name = PurePosixPath(str(root)).name
    return f"<!doctype html><meta charset=utf-8><title>Training report: {html.escape(name)}</title>" \
           f"<style>{style}</style>" + "".join(parts)


def render_markdown(root: str | Path, stages: list[Stage], files: str) -> str:
    lines = [f"# Training report: `{root}`", "", "## Throughput", "",
             md_table(THROUGHPUT, [throughput(s) for s in stages]), ""]
    for s in stages:
        lines += [f"## {TITLES.get(s.name, s.name)} (`{s.name}`)", "", f"![{s.name} curves]({files}/{s.name}.png)", "",
                  md_table(FIRST_LAST, first_last(s)), ""]
    return "\n".join(lines)


def write_report(root: str | Path, out: str | Path | None = None) -> tuple[Path | str, Path | str]:
    """Writes <out>/train_report.html and .md (out defaults to root; either may be a URI); returns both
    paths (Paths where local, else URIs)."""
    root = fs.as_path(root)
    out = fs.as_path(out or root)
    stages = find_stages(root)
    pngs = {s.name: png_bytes(stage_figure(s)) for s in stages}
    with fs.staged(out, last=["train_report.md", "train_report.html"]) as folder:   # a URI: uploaded at the end
        files = folder / "train_report_files"
        files.mkdir(parents=True, exist_ok=True)
        for name, data in pngs.items():
            (files / f"{name}.png").write_bytes(data)
        (folder / "train_report.html").write_text(render_html(root, stages, pngs), encoding="utf-8")
        (folder / "train_report.md").write_text(render_markdown(root, stages, files.name), encoding="utf-8")
    return fs.as_path(fs.join(out, "train_report.html")), fs.as_path(fs.join(out, "train_report.md"))


def main(argv: list[str] | None = None) -> tuple[Path | str, Path | str]:
    parser = argparse.ArgumentParser(prog="python -m training.train_report", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True,
                        help="the run folder holding train/, sft/, ...: a path or an s3:// s3a:// gs:// hdfs:// URI")
    parser.add_argument("--out", default=None, help="output folder, a path or URI (default: the root)")
    args = parser.parse_args(argv)
    page, md = write_report(args.root, args.out)
    print(f"[train_report] {page}\n[train_report] {md}")
    return page, md


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
