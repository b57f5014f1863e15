"""Plotting: line charts of metric rows, and the one place that puts matplotlib on its file backend (Agg).

    from common.plot import Panel, plot_panels, with_val
    plot_panels(rows, [Panel("loss", [("loss", "-"), ("val_loss", "o-")]),
                       Panel("reward", with_val("reward", val="o--"))], png, title="ppo", xlabel="step")

`rows` are dicts such as the lines of a `metrics.jsonl`: a `step` (the x axis) and numbers. A panel draws one
line per (key, matplotlib format) from the rows that hold a finite number under that key; a panel with no point
at all is left out, so a run that logged no reward gets no empty reward panel. `line_figure` returns the
matplotlib Figure (to inspect or to save as bytes with `png_bytes`); `pyplot()` gives the Agg pyplot for
other charts (bars, histograms, heat maps), saved with `save` or `png_bytes`.

matplotlib is imported on first use, never at import time: executors that import this module (through
pipeline/) do not ship matplotlib.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

Line = tuple[str, str]           # (row key, matplotlib format such as "-", "o-", "o--")


@dataclass(frozen=True)
class Panel:
    title: str
    lines: Sequence[Line]
    ylabel: str = ""


def pyplot():
    """matplotlib.pyplot on the Agg backend (PNG files, no display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def series(rows: Sequence[dict], key: str, x: str = "step") -> tuple[list, list]:
    """(xs, ys) of the rows holding a finite number under `key` and an `x`, in row order."""
    pairs = [(r[x], r[key]) for r in rows if is_number(r.get(key)) and x in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def with_val(*keys: str, train: str = "-", val: str = "o-") -> list[Line]:
    """Each key and its validation twin: with_val("loss") == [("loss", "-"), ("val_loss", "o-")]."""
    return [line for key in keys for line in ((key, train), (f"val_{key}", val))]


def line_figure(rows: Sequence[dict], panels: Sequence[Panel], title: str = "", xlabel: str = "step",
                cols: int = 3):
    """A Figure with one axes per panel that has data, `cols` to a row; with no data at all, one axes
    saying so (a report still gets its picture)."""
    plt = pyplot()
    drawn = []                   # (panel, [(key, format, (xs, ys))]) of the panels and lines with points
    for panel in panels:
        lines = [(key, fmt, series(rows, key)) for key, fmt in panel.lines]
        lines = [line for line in lines if line[2][0]]
        if lines:
            drawn.append((panel, lines))
    ncols = max(1, min(cols, len(drawn)))
    nrows = max(1, -(-len(drawn) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 + 4 * ncols, 3.5 * nrows), squeeze=False)
    for ax, (panel, lines) in zip(axes.flat, drawn):
        for key, fmt, (xs, ys) in lines:
            ax.plot(xs, ys, fmt, label=key, linewidth=1)
        ax.set(title=panel.title, xlabel=xlabel, ylabel=panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(drawn):]:
        ax.axis("off")
    if not drawn:
        axes[0][0].text(0.5, 0.5, "no metrics logged", ha="center", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save(fig, target: str | Path | BinaryIO, dpi: int = 110):
    """Writes `fig` as PNG to a path or binary file, closes it, returns `target`."""
    fig.savefig(target, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return target


def png_bytes(fig, dpi: int = 90) -> bytes:
    """The PNG bytes of `fig` (closed), for pages that inline their images."""
    buf = io.BytesIO()
    save(fig, buf, dpi)
    return buf.getvalue()


def plot_panels(rows: Sequence[dict], panels: Sequence[Panel], png: str | Path, title: str = "",
                xlabel: str = "step", cols: int = 3, dpi: int = 110) -> Path:
    """`line_figure` saved as PNG at `png`; returns its path."""
    return Path(save(line_figure(rows, panels, title, xlabel, cols), Path(png), dpi))
