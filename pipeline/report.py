"""The pipeline report: one self-contained HTML page (tables + PNG plots) about a run's stage folders.

    python -m jobs.report --root runs/demo          # -> runs/demo/report.html (also `make report`)
    python -m jobs.report --root s3://bucket/runs/demo   # a URI (s3://, s3a://, gs://, hdfs://): common/fs.py

A stage is any folder under the root, at any depth, holding `_stats.json` and `_SUCCESS`: `langid`,
the mix outputs `mix/sft`, a specialist's `code-qwen/dedup`. Stages are listed in pipeline order
within each sub-run; folders with `_stats.json` but no `_SUCCESS` (a failed rerun) are named as unfinished.

Sections: the funnel of documents and tokens through every stage (tokens counted where the stage
counted Qwen tokens; `~N` where estimated from the text's characters and the tokens per character of a
200-document sample), drop reasons per stage, and, each read from the stage that computes it (`SOURCES`,
top level of the run), the language distribution, quality-score and perplexity histograms (kept and
rejected documents) and duplicate-cluster sizes; a missing stage or a column of nulls is said in words.
Last, the final mixture by source (`shards/manifest.json`). Plots are PNG (common.plot) embedded as
base64, so the page is one file.

The run is read through common/fs.py, so `--root` and `--out` may be local paths or URIs: the stage
folders are found by a pruned walk (one listing per folder, none inside a stage), each Parquet file is
read one column at a time through pyarrow.fs, and the page is written atomically (a local file under a
temporary name, then renamed; on an object store, one upload).
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from pathlib import Path, PurePosixPath

import polars as pl
import pyarrow.parquet as pq

from common import fs
from common.errors import UserError
from common.plot import png_bytes, pyplot

ORDER = ("crawl", "ingest", "ingest_code", "extract", "langid", "quality", "perplexity", "dedup", "decontam",
         "upsample", "mix", "shards", "tokenize")
RANK = {name: i for i, name in enumerate(ORDER)}
SOURCES = {"lang": "langid", "quality_score": "quality", "perplexity": "perplexity", "dup_of": "dedup"}
NULL_HINTS = {"lang": "no language identified",
              "quality_score": "no quality classifier in this run: quality.classifier, make train-quality",
              "perplexity": "no KenLM model for these languages: perplexity.models, make train-kenlm",
              "dup_of": "no near-duplicates found"}
FUNNEL_HEADER = ["stage", "docs in", "kept", "rejected", "bytes in", "bytes out", "tokens out", "train tokens"]
FUNNEL_NOTE = ("<p>kept: documents, conversations (SFT) or pairs (preference) written. tokens out: Qwen tokens "
               "where the stage counted them; ~N: estimated, text characters x the tokens per character of a "
               "sample of the stage's documents; blank: no text yet. bytes: the stage's files on disk.</p>")
SAMPLE_DOCS = 200
PARTS = ("kept", "rejected")


def read_json(path: str | Path):
    return json.loads(fs.read_bytes(path))


def finished(folder: str | Path) -> bool:
    return fs.exists(fs.join(folder, "_SUCCESS")) and fs.exists(fs.join(folder, "_stats.json"))


def stage_dirs(root: str | Path) -> dict[str, str]:
    """{label: folder (path or URI)} of every folder under `root` holding `_stats.json` (its insides are not
    searched), labelled by its path (`mix/sft`), in pipeline order within each sub-run (`code-qwen/...` after
    the main run)."""
    found = {}
    for folder, subdirs, files in fs.walk(root):
        if "_stats.json" in files and PurePosixPath(folder) != PurePosixPath(root):
            found[PurePosixPath(folder).relative_to(root).as_posix()] = folder
            subdirs.clear()
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))  # .name.tmp-*: a job in progress
    return dict(sorted(found.items(), key=lambda kv: order_key(kv[0], kv[1])))


def order_key(label: str, folder: str) -> tuple[str, int, str]:
    """(sub-run, rank, label): the sub-run is the path before the first known stage name; a folder with
    an unknown name is ranked by the `stage` its `_stats.json` names (`code-qwen/code` is `ingest_code`)."""
    parts = label.split("/")
    for i, part in enumerate(parts):
        if part in RANK:
            return "/".join(parts[:i]), RANK[part], label
    stage = read_json(fs.join(folder, "_stats.json")).get("stage")
    return "/".join(parts[:-1]), RANK.get(stage, len(ORDER)), label


def load_stats(stages: dict[str, str]) -> dict[str, dict]:
    return {name: read_json(fs.join(p, "_stats.json")) for name, p in stages.items()}


def parquet_files(stage: str, part: str = "kept") -> list[str]:
    return fs.glob(fs.join(stage, part), "*.parquet")


def columns_of(file: str) -> list[str]:
    """The column names of one Parquet file (its footer only)."""
    where, inner = fs.filesystem(file)
    return pq.read_schema(inner, filesystem=where).names


def column(file: str, name: str) -> pl.Series:
    """Column `name` of one Parquet file (local path or URI), nulls included; only that column is read."""
    return pl.from_arrow(fs.read_table(file, [name]))[name]


def read_column(stage: str, part: str, name: str) -> pl.Series:
    """Non-null values of column `name` in the stage's `part` (empty when the part or column is absent)."""
    files = parquet_files(stage, part)
    if not files or name not in columns_of(files[0]):
        return pl.Series(name, [])
    return pl.concat([column(f, name).drop_nulls() for f in files])


def column_source(stages: dict[str, str], name: str, parts: tuple[str, ...] = PARTS
                  ) -> tuple[str, dict[str, pl.Series]] | str:
    """(stage, {part: values}) of column `name` in the stage that computes it (`SOURCES`), or the
    sentence that says why there is nothing to plot."""
    label = SOURCES[name]
    if label not in stages:
        return f"no <code>{label}</code> stage in this run"
    values = {part: read_column(stages[label], part, name) for part in parts}
    if not any(len(v) for v in values.values()):
        return f"no values: <code>{name}</code> is null for every document of <code>{label}</code> ({NULL_HINTS[name]})"
    return label, values


def docs_out(s: dict) -> int | None:
    """Documents written: `kept`, SFT `conversations` or preference pairs (rows of the splits)."""
    if "kept" in s or "conversations" in s:
        return s.get("kept", s.get("conversations"))
    return sum(split.get("rows", 0) for split in s["splits"].values()) if "splits" in s else None


def tokens_out(stage: str, s: dict) -> tuple[int, bool] | None:
    """(tokens, estimated) of the stage's output: counted (`tokens_after`, shard splits, an `n_tokens`
    column), else estimated from the text; None where there is no text (crawl, ingest)."""
    if "tokens_after" in s:
        return sum(s["tokens_after"].values()), False
    if "train_tokens" in s:
        return s["train_tokens"] + s.get("valid_tokens", 0), False
    if "splits" in s:
        keys = ("tokens", "prompt_tokens", "chosen_tokens", "rejected_tokens")
        return sum(split.get(k, 0) for split in s["splits"].values() for k in keys), False
    files = parquet_files(stage)
    names = columns_of(files[0]) if files else []
    if "n_tokens" in names:
        return sum(column(f, "n_tokens").sum() or 0 for f in files), False
    if "text" in names:   # one file's texts in memory at a time
        chars = sum(column(f, "text").str.len_chars().sum() or 0 for f in files)
        return (round(chars * tokens_per_char(files)), True) if chars else None
    return None


def tokens_per_char(files: list[str], sample: int = SAMPLE_DOCS) -> float:
    """Qwen tokens per character of the first `sample` texts (the funnel's estimate for text stages)."""
    from stages.tokenize.tokenizer import QwenTokenizer

    texts: list[str] = []
    for file in files:
        texts += column(file, "text").drop_nulls().head(sample - len(texts)).to_list()
        if len(texts) == sample:
            break
    encode = QwenTokenizer().encoding.encode_ordinary_batch
    chars = sum(map(len, texts))
    return sum(map(len, encode(texts))) / chars if chars else 0.25


def number(value) -> str:
    return "" if value is None else f"{value:,}"


def funnel_rows(stats: dict[str, dict], tokens: dict[str, tuple[int, bool] | None]) -> list[list]:
    rows = []
    for name, s in stats.items():
        t = tokens[name]
        rows.append([name, number(s.get("docs_in")), number(docs_out(s)), number(s.get("rejected")),
                     number(s.get("bytes_in")), number(s.get("bytes_out")),
                     "" if t is None else ("~" if t[1] else "") + number(t[0]), number(s.get("train_tokens"))])
    return rows


def reason_rows(stats: dict[str, dict]) -> list[list]:
    return [[name, reason, count] for name, s in stats.items() for reason, count in s.get("by_reason", {}).items()]


# what every stage's _stats.json holds (pipeline/io.py); anything else is a stage's own counter
COMMON_STATS = {"stage", "docs_in", "kept", "rejected", "by_reason", "bytes_in", "bytes_out", "bytes_rejected",
                "seconds", "train_tokens"}


def counter_rows(stats: dict[str, dict]) -> list[list]:
    """A stage's own numbers (PII found by kind under `totals`, characters removed by line dedup, the Bloom
    filter's measured false-positive rate, ...), one row each; a table of numbers is flattened one level."""
    rows = []
    for name, s in stats.items():
        for key, value in s.items():
            if key in COMMON_STATS:
                continue
            for label, v in (value.items() if isinstance(value, dict) else [("", value)]):
                if isinstance(v, int | float) and not isinstance(v, bool):
                    rows.append([name, f"{key}.{label}" if label else key, number(v) if isinstance(v, int) else v])
    return rows


def png(fig) -> str:
    return base64.b64encode(png_bytes(fig)).decode()


def bar_plot(labels: list[str], bars: dict[str, list[float]], title: str, xlabel: str = "") -> str:
    """Horizontal bars, top to bottom in `labels` order; several series are stacked, with a legend."""
    fig, ax = pyplot().subplots(figsize=(7, max(2.0, 0.35 * len(labels) + 1)))
    left = [0.0] * len(labels)
    for (name, values), color in zip(bars.items(), ("#4c72b0", "#dd8452", "#8c8c8c")):
        ax.barh(labels[::-1], values[::-1], left=left[::-1], color=color, label=name)
        left = [a + b for a, b in zip(left, values)]
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if len(bars) > 1:
        ax.legend()
    return png(fig)


def histogram(values: dict[str, pl.Series], title: str, log: bool = False) -> str:
    """Kept and rejected values on shared bins (logarithmic bins for `log`)."""
    import numpy as np

    data = {part: v.cast(pl.Float64).to_numpy() for part, v in values.items() if len(v)}
    everything = np.concatenate(list(data.values()))
    low, high = everything.min(), everything.max()
    log = log and low > 0
    if log:
        bins = np.logspace(np.log10(low), np.log10(high) + 1e-9, 41)
    else:
        bins = np.linspace(low, high + (1e-9 if high == low else 0), 41)
    fig, ax = pyplot().subplots(figsize=(7, 3))
    for (part, v), color in zip(data.items(), ("#55a868", "#c44e52")):
        ax.hist(v, bins=bins, color=color, alpha=0.7, label=part)
    if log:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_ylabel("documents")
    ax.legend()
    return png(fig)


def counts_caption(label: str, values: dict[str, pl.Series], median: bool = False) -> str:
    """'<part>: n documents[, median m]' for each part of `label` (the numbers the plot is made of)."""
    def one(part: str, v: pl.Series) -> str:
        middle = f", median {statistics.median(v.to_list()):.4g}" if median and len(v) else ""
        return f"{part}: {len(v):,} documents{middle}"
    return f"<p>documents of <code>{label}</code> with a value: {'; '.join(one(p, v) for p, v in values.items())}</p>"


def languages_section(stages: dict[str, str]) -> tuple[str, str]:
    found = column_source(stages, "lang")
    if isinstance(found, str):
        return "Languages", f"<p>{found}</p>"
    label, values = found
    counts = {part: dict(v.cast(pl.String).value_counts().iter_rows()) for part, v in values.items()}
    top = sorted(set(counts["kept"]) | set(counts["rejected"]),
                 key=lambda lang: (-sum(c.get(lang, 0) for c in counts.values()), lang))[:20]
    bars = {part: [c.get(lang, 0) for lang in top] for part, c in counts.items()}
    return "Languages", counts_caption(label, values) + image(bar_plot(top, bars, "top languages", "documents"))


def scores_section(stages: dict[str, str], name: str, title: str, log: bool = False) -> tuple[str, str]:
    found = column_source(stages, name)
    if isinstance(found, str):
        return title, f"<p>{found}</p>"
    label, values = found
    plot = histogram(values, f"{name} of the documents of {label}", log)
    return title, counts_caption(label, values, median=True) + image(plot)


def clusters_section(stages: dict[str, str]) -> tuple[str, str]:
    found = column_source(stages, "dup_of", ("rejected",))
    if isinstance(found, str):
        return "Duplicate clusters", f"<p>{found}</p>"
    label, values = found
    sizes = cluster_sizes(values["rejected"])
    caption = (f"<p>{sum(sizes.values()):,} clusters in <code>{label}</code>, {len(values['rejected']):,} duplicates "
               f"rejected, largest cluster {max(sizes):,} documents</p>")
    return "Duplicate clusters", caption + image(
        bar_plot([str(size) for size in sizes], {"clusters": list(sizes.values())}, "clusters by size (documents)",
                 "clusters"))


def cluster_sizes(dup_of: pl.Series) -> dict[int, int]:
    """{cluster size: number of clusters}; a cluster is a survivor plus the rows whose dup_of it is."""
    sizes = (dup_of.drop_nulls().value_counts()[:, 1] + 1).alias("size")
    counts = sizes.value_counts().sort("size")
    return dict(zip(counts[:, 0].to_list(), counts[:, 1].to_list()))


def mixture_section(root: str | Path) -> tuple[str, str] | None:
    manifest = fs.join(root, "shards", "manifest.json")
    if not fs.exists(manifest):
        return None
    splits = read_json(manifest)["splits"]
    rows = [[split, source, f"{tokens:,}"] for split, info in splits.items()
            for source, tokens in info["tokens_per_source"].items()]
    efficiency = ", ".join(f"{k}: {v['packing_efficiency']}" for k, v in splits.items())
    return "Mixture (training shards)", table(["split", "source", "tokens"], rows) + \
        f"<p>packing efficiency {efficiency}</p>"


def funnel_section(stages: dict[str, str], stats: dict[str, dict]) -> tuple[str, str]:
    tokens = {name: tokens_out(stages[name], s) for name, s in stats.items()}
    plots = image(bar_plot(list(stats), {"documents": [docs_out(s) or 0 for s in stats.values()]},
                           "documents out of each stage"))
    plots += image(bar_plot(list(stats), {"counted": [t[0] if t and not t[1] else 0 for t in tokens.values()],
                                          "estimated": [t[0] if t and t[1] else 0 for t in tokens.values()]},
                            "tokens out of each stage"))
    return "Funnel", table(FUNNEL_HEADER, funnel_rows(stats, tokens)) + FUNNEL_NOTE + plots


def sections(root: str | Path) -> list[tuple[str, str]]:
    """(title, html) of every section."""
    found = stage_dirs(root)
    stages = {name: path for name, path in found.items() if finished(path)}
    stats = load_stats(stages)
    title, funnel = funnel_section(stages, stats)
    unfinished = ", ".join(name for name in found if name not in stages)
    if unfinished:
        funnel += f"<p>unfinished (no _SUCCESS), left out: {html.escape(unfinished)}</p>"
    out = [(title, funnel)]
    if reason_rows(stats):
        out.append(("Drop reasons", table(["stage", "reason", "documents"], reason_rows(stats))))
    if counter_rows(stats):
        out.append(("Stage counters", table(["stage", "counter", "value"], counter_rows(stats))))
    out += [languages_section(stages), scores_section(stages, "quality_score", "Quality score"),
            scores_section(stages, "perplexity", "Perplexity", log=True), clusters_section(stages)]
    return out + [s for s in (mixture_section(root),) if s]


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(data: str) -> str:
    return f'<img src="data:image/png;base64,{data}">'


def write_report(root: str | Path, out: str | Path | None = None) -> Path | str:
    """Writes the report of the run folder `root` (a path or URI) to `out` (default `<root>/report.html`),
    atomically; returns its path (a Path where local, else the URI)."""
    root = fs.as_path(root)
    if not fs.is_dir(root):
        raise UserError(f"--root {root}: no such run folder")
    target = fs.as_path(out or fs.join(root, "report.html"))
    parts = "".join(f"<h2>{html.escape(t)}</h2>{body}" for t, body in sections(root))
    style = "body{font-family:sans-serif;max-width:960px;margin:2em auto}td,th{padding:2px 10px;text-align:right}"
    name = PurePosixPath(str(root)).name
    page = f"<!doctype html><meta charset=utf-8><title>Pipeline report: {html.escape(name)}</title>" \
           f"<style>{style}</style><h1>Pipeline report: {html.escape(str(root))}</h1>{parts}"
    fs.write_bytes(target, page.encode("utf-8"))
    return target
