"""The pipeline report: one self-contained HTML page (tables + PNG plots) about a run's stage folders.

    python -m jobs.report --root runs/demo          # -> runs/demo/report.html (also `make report`)

It reads each stage's `_stats.json` and, with polars, the Parquet columns it plots: the funnel of
documents (and tokens, from the shards manifest) through the stages, drop reasons per stage, the
language distribution, quality-score and perplexity histograms (when a stage wrote those columns),
duplicate-cluster sizes (from dedup's `dup_of`) and the final mixture by source. Plots are PNG
(matplotlib, Agg) embedded as base64, so the page is one file.
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


def stage_dirs(root: Path) -> list[Path]:
    """Finished stage folders under `root`, in pipeline order (unknown stages last, by name)."""
    found = [p for p in root.iterdir() if (p / "_SUCCESS").exists() and (p / "_stats.json").exists()]
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(found, key=lambda p: (rank.get(p.name, len(ORDER)), p.name))


def load_stats(stages: list[Path]) -> dict[str, dict]:
    return {p.name: json.loads((p / "_stats.json").read_text()) for p in stages}


def column(stages: list[Path], name: str, part: str = "kept") -> tuple[str, pl.Series] | None:
    """The last stage whose `part` has column `name`, and that column."""
    for stage in reversed(stages):
        files = sorted((stage / part).glob("*.parquet"))
        if files and name in pl.read_parquet_schema(files[0]):
            return stage.name, pl.scan_parquet(files).select(name).collect()[name]
    return None


def funnel_rows(stats: dict[str, dict]) -> list[list]:
    rows = []
    for name, s in stats.items():
        rows.append([name, s.get("docs_in", ""), s.get("kept", ""), s.get("rejected", ""),
                     f"{s.get('bytes_in', 0):,}", f"{s.get('bytes_out', 0):,}", s.get("train_tokens", "")])
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
    out = [("Funnel", table(["stage", "docs in", "kept", "rejected", "bytes in", "bytes out", "train tokens"],
                            funnel_rows(stats)) + image(bar_plot(list(stats), [s.get("kept", 0) for s in stats.values()],
                                                                "documents kept after each stage")))]
    if reason_rows(stats):
        out.append(("Drop reasons", table(["stage", "reason", "documents"], reason_rows(stats))))
    out += [s for s in (_languages(stages), _scores(stages, "quality_score", "Quality score"),
                        _scores(stages, "perplexity", "Perplexity", log=True), _clusters(stages), _mixture(root)) if s]
    return out


def _languages(stages: list[Path]):
    found = column(stages, "lang")
    if found is None:
        return None
    counts = found[1].value_counts(sort=True).head(20)
    labels, values = counts[:, 0].cast(pl.String).to_list(), counts[:, 1].to_list()
    return "Languages", f"<p>kept documents of <code>{found[0]}</code></p>" + image(bar_plot(labels, values, "top languages"))


def _scores(stages: list[Path], name: str, title: str, log: bool = False):
    found = column(stages, name)
    if found is None:
        return None
    return title, image(histogram(found[1], f"{name} of kept documents ({found[0]})", log))


def _clusters(stages: list[Path]):
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
