"""The pipeline report: one self-contained HTML page (tables + PNG plots) about a run's stage folders.

    python -m jobs.report --root runs/demo          # -> runs/demo/report.html (also `make report`)

It reads each stage's `_stats.json` (stage folders and the folders inside them, e.g. `mix/sft`) and,
with polars, the Parquet columns it plots: the funnel of documents and tokens through the stages
(tokens exact where a stage counted Qwen tokens, else estimated from the text's characters and the
tokens per character of a 200-document sample, shown as `~N`), drop reasons per stage, the language distribution, quality-score and perplexity histograms
(taken from the last stage with values in that column; a column of nulls is named as such),
duplicate-cluster sizes (from `dup_of`) and the final mixture by source. Plots are PNG (matplotlib,
Agg) embedded as base64, so the page is one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import polars as pl

ORDER = ("crawl", "ingest", "extract", "langid", "quality", "perplexity", "dedup", "decontam", "upsample",
         "mix", "shards")
FUNNEL_NOTE = ("<p>tokens out: Qwen tokens where the stage counted them; ~N: estimated, text characters x the "
               "tokens per character of a sample of the stage's documents</p>")
SAMPLE_DOCS = 200
NULL_HINTS = {"quality_score": "no quality classifier in this run: quality.classifier, make train-quality",
              "perplexity": "no KenLM model for these languages: perplexity.models, make train-kenlm"}


def finished(folder: Path) -> bool:
    return (folder / "_SUCCESS").exists() and (folder / "_stats.json").exists()


def stage_dirs(root: Path) -> dict[str, Path]:
    """{name: folder} of the finished stages under `root` and one level inside them (`mix/sft`), in
    pipeline order (unknown stages last, by name)."""
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        inner = [folder] if finished(folder) else sorted(p for p in folder.iterdir() if p.is_dir() and finished(p))
        found.update({p.relative_to(root).as_posix(): p for p in inner})
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0].split("/")[0], len(ORDER)), kv[0])))


def load_stats(stages: dict[str, Path]) -> dict[str, dict]:
    return {name: json.loads((p / "_stats.json").read_text()) for name, p in stages.items()}


def parquet_files(stage: Path, part: str = "kept") -> list[Path]:
    return sorted((stage / part).glob("*.parquet"))


def column(stages: dict[str, Path], name: str, part: str = "kept") -> tuple[str, pl.Series] | None:
    """(stage, non-null values) of the last stage whose `part` has values in column `name`.

    A stage whose column is all null (`quality_score` without a classifier, `dup_of` after dedup)
    gives way to an earlier one; it is returned, with no values, only when no stage has any.
    """
    only_nulls = None
    for label, stage in reversed(stages.items()):
        files = parquet_files(stage, part)
        if not files or name not in pl.read_parquet_schema(files[0]):
            continue
        values = pl.scan_parquet(files).select(name).drop_nulls().collect()[name]
        if len(values):
            return label, values
        only_nulls = only_nulls or (label, values)
    return only_nulls


def tokens_cell(stage: Path, s: dict) -> str:
    """Tokens of the stage's output: counted (`tokens_after`, shard splits, an `n_tokens` column), else
    `~` an estimate from the text."""
    if "tokens_after" in s:
        return f"{sum(s['tokens_after'].values()):,}"
    if "train_tokens" in s:
        return f"{s['train_tokens'] + s.get('valid_tokens', 0):,}"
    if "splits" in s:
        keys = ("tokens", "prompt_tokens", "chosen_tokens", "rejected_tokens")
        return f"{sum(split.get(k, 0) for split in s['splits'].values() for k in keys):,}"
    files = parquet_files(stage)
    schema = pl.read_parquet_schema(files[0]) if files else {}
    if "n_tokens" in schema:
        return f"{pl.scan_parquet(files).select(pl.col('n_tokens').sum()).collect().item() or 0:,}"
    if "text" in schema:
        chars = pl.scan_parquet(files).select(pl.col("text").str.len_chars().sum()).collect().item() or 0
        return f"~{round(chars * tokens_per_char(files)):,}" if chars else ""
    return ""


def tokens_per_char(files: list[Path], sample: int = SAMPLE_DOCS) -> float:
    """Qwen tokens per character of the first `sample` texts (the funnel's estimate for text stages)."""
    from stages.tokenizer import QwenTokenizer

    texts = pl.scan_parquet(files).select("text").drop_nulls().head(sample).collect()["text"].to_list()
    encode = QwenTokenizer().encoding.encode_ordinary_batch
    chars = sum(map(len, texts))
    return sum(map(len, encode(texts))) / chars if chars else 0.25


def funnel_rows(stages: dict[str, Path], stats: dict[str, dict]) -> list[list]:
    rows = []
    for name, s in stats.items():
        rows.append([name, s.get("docs_in", ""), s.get("kept", s.get("conversations", "")), s.get("rejected", ""),
                     f"{s.get('bytes_in', 0):,}", f"{s.get('bytes_out', 0):,}", tokens_cell(stages[name], s),
                     f"{s['train_tokens']:,}" if "train_tokens" in s else ""])
    return rows


def reason_rows(stats: dict[str, dict]) -> list[list]:
    return [[name, reason, count] for name, s in stats.items() for reason, count in s.get("by_reason", {}).items()]


def png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def bar_plot(labels: list[str], values: list[float], title: str, xlabel: str = "") -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.35 * len(labels) + 1)))
    ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return png(fig)


def histogram(values: pl.Series, title: str, log: bool = False) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(values.drop_nulls().to_numpy(), bins=40, color="#55a868", log=log)
    ax.set_title(title)
    return png(fig)


def sections(root: Path) -> list[tuple[str, str]]:
    """(title, html) of every section the run's folders allow."""
    stages = stage_dirs(root)
    stats = load_stats(stages)
    header = ["stage", "docs in", "kept", "rejected", "bytes in", "bytes out", "tokens out", "train tokens"]
    out = [("Funnel", table(header, funnel_rows(stages, stats)) + FUNNEL_NOTE +
            image(bar_plot(list(stats), [s.get("kept", s.get("conversations", 0)) for s in stats.values()],
                           "documents kept after each stage")))]
    if reason_rows(stats):
        out.append(("Drop reasons", table(["stage", "reason", "documents"], reason_rows(stats))))
    out += [s for s in (_languages(stages), _scores(stages, "quality_score", "Quality score"),
                        _scores(stages, "perplexity", "Perplexity", log=True), _clusters(stages), _mixture(root)) if s]
    return out


def _languages(stages: dict[str, Path]):
    found = column(stages, "lang")
    if found is None or found[1].is_empty():
        return None
    counts = found[1].value_counts(sort=True).head(20)
    labels, values = counts[:, 0].cast(pl.String).to_list(), counts[:, 1].to_list()
    return "Languages", f"<p>kept documents of <code>{found[0]}</code></p>" + image(bar_plot(labels, values, "top languages"))


def _scores(stages: dict[str, Path], name: str, title: str, log: bool = False):
    found = column(stages, name)
    if found is None:
        return None
    if found[1].is_empty():
        return title, f"<p>no values: <code>{name}</code> is null for every kept document of <code>{found[0]}</code>" \
                      f" ({NULL_HINTS.get(name, '')})</p>"
    return title, image(histogram(found[1], f"{name} of kept documents ({found[0]})", log))


def _clusters(stages: dict[str, Path]):
    found = column(stages, "dup_of", "rejected")
    if found is None or found[1].drop_nulls().is_empty():
        return None
    sizes = cluster_sizes(found[1])
    labels = [str(size) for size in sizes]
    return "Duplicate clusters", image(bar_plot(labels, list(sizes.values()), "clusters by size (documents)", "clusters"))


def cluster_sizes(dup_of: pl.Series) -> dict[int, int]:
    """{cluster size: number of clusters}; a cluster is a survivor plus the rows whose dup_of it is."""
    sizes = (dup_of.drop_nulls().value_counts()[:, 1] + 1).alias("size")
    counts = sizes.value_counts().sort("size")
    return dict(zip(counts[:, 0].to_list(), counts[:, 1].to_list()))


def _mixture(root: Path):
    manifest = root / "shards" / "manifest.json"
    if not manifest.exists():
        return None
    splits = json.loads(manifest.read_text())["splits"]
    rows = [[split, source, f"{tokens:,}"] for split, info in splits.items()
            for source, tokens in info["tokens_per_source"].items()]
    efficiency = ", ".join(f"{k}: {v['packing_efficiency']}" for k, v in splits.items())
    return "Mixture (training shards)", table(["split", "source", "tokens"], rows) + f"<p>packing efficiency {efficiency}</p>"


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(data: str) -> str:
    return f'<img src="data:image/png;base64,{data}">'


def write_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Writes the report of the run folder `root`; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    root = Path(root)
    target = Path(out) if out else root / "report.html"
    parts = "".join(f"<h2>{html.escape(t)}</h2>{body}" for t, body in sections(root))
    style = "body{font-family:sans-serif;max-width:960px;margin:2em auto}td,th{padding:2px 10px;text-align:right}"
    page = f"<!doctype html><meta charset=utf-8><title>Pipeline report: {root.name}</title><style>{style}</style>" \
           f"<h1>Pipeline report: {html.escape(str(root))}</h1>{parts}"
    target.write_text(page, encoding="utf-8")
    return target
