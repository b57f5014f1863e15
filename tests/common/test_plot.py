"""common/plot.py: the lines drawn carry the rows' values, panels without data are dropped, PNGs are written.

    pytest tests/common/test_plot.py
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from common.plot import Panel, line_figure, plot_panels, png_bytes, pyplot, save, series, with_val

PNG = b"\x89PNG\r\n\x1a\n"
# PPO-like metrics: iteration lines and, every other step, a held-out evaluation
ROWS = [{"step": s, "loss": 1.0 / s, "policy_loss": -0.1 * s, "reward": 0.25 * s, "kl": 0.01 * s}
        for s in (1, 2, 3, 4)] + [{"step": s, "val_reward": 0.5 * s, "val_kl": 0.02 * s} for s in (2, 4)]
PPO = [Panel("loss", [("loss", "-"), ("policy_loss", "-"), ("value_loss", "-")]),
       Panel("mean reward", with_val("reward", val="o--")), Panel("KL to reference", with_val("kl", val="o--"))]


def drawn(ax) -> dict[str, tuple[list, list]]:
    return {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.lines}


def test_lines_carry_the_values_of_the_rows():
    fig = line_figure(ROWS, PPO, title="ppo", xlabel="PPO iteration")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "mean reward", "KL to reference"]
    loss, reward, kl = fig.axes
    assert drawn(loss) == {"loss": ([1, 2, 3, 4], [1.0, 0.5, 1 / 3, 0.25]),
                           "policy_loss": ([1, 2, 3, 4], [-0.1, -0.2, -0.30000000000000004, -0.4])}  # no value_loss
    assert drawn(reward) == {"reward": ([1, 2, 3, 4], [0.25, 0.5, 0.75, 1.0]), "val_reward": ([2, 4], [1.0, 2.0])}
    assert reward.lines[1].get_marker() == "o" and reward.lines[1].get_linestyle() == "--"
    assert drawn(kl)["val_kl"] == ([2, 4], [0.04, 0.08])
    assert {ax.get_xlabel() for ax in fig.axes} == {"PPO iteration"}
    assert fig.get_suptitle() == "ppo"
    # one row of three panels
    assert len({round(ax.get_position().y0, 3) for ax in fig.axes}) == 1
    pyplot().close(fig)


def test_panels_without_data_are_dropped():
    sft = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "val_loss": 1.75}]
    fig = line_figure(sft, PPO + [Panel("loss again", with_val("loss"))])
    assert [ax.get_title() for ax in fig.axes] == ["loss", "loss again"]
    assert drawn(fig.axes[1]) == {"loss": ([1, 2], [2.0, 1.5]), "val_loss": ([2], [1.75])}
    pyplot().close(fig)


def test_alignment_curves_second_panel_only_when_logged():
    extra = ("accuracy", "margin", "reward_chosen", "reward_rejected", "reward_mean")
    panels = [Panel("loss", with_val("loss")), Panel("accuracy / margin / rewards", with_val(*extra, val="o--"))]
    sft = [{"step": 1, "loss": 2.0}, {"step": 1, "val_loss": 2.5}]
    assert len(line_figure(sft, panels).axes) == 1
    dpo = sft + [{"step": 1, "accuracy": 0.5, "margin": 0.1}, {"step": 1, "val_accuracy": 0.75}]
    fig = line_figure(dpo, panels)
    assert [ln.get_label() for ln in fig.axes[1].lines] == ["accuracy", "val_accuracy", "margin"]
    pyplot().close(fig)


def test_series_skips_missing_null_nonfinite_and_boolean_values():
    rows = [{"step": 1, "x": 1.0}, {"step": 2, "x": None}, {"step": 3, "x": math.nan}, {"step": 4, "x": True},
            {"step": 5}, {"x": 9.0}, {"step": 6, "x": 3}]
    assert series(rows, "x") == ([1, 6], [1.0, 3])
    assert with_val("loss", "kl") == [("loss", "-"), ("val_loss", "o-"), ("kl", "-"), ("val_kl", "o-")]


def test_plot_panels_writes_a_png_whose_width_follows_the_panels(tmp_path):
    import matplotlib.image

    three = plot_panels(ROWS, PPO, tmp_path / "ppo.png", title="ppo")
    one = plot_panels(ROWS, PPO[:1], str(tmp_path / "loss.png"))
    assert three == tmp_path / "ppo.png" and one == tmp_path / "loss.png"
    assert three.read_bytes()[:8] == PNG and three.stat().st_size > 10_000
    (h3, w3, _), (h1, w1, _) = (matplotlib.image.imread(p).shape for p in (three, one))
    assert w3 > 2 * w1 and abs(h3 - h1) < h1 / 4


def test_grid_wraps_at_cols():
    keys = ["a", "b", "c", "d", "e"]
    fig = line_figure([{"step": 1, **{k: 1.0 for k in keys}}], [Panel(k, [(k, "-")]) for k in keys], cols=3)
    assert len({round(ax.get_position().y0, 3) for ax in fig.axes if ax.lines}) == 2
    assert sum(1 for ax in fig.axes if ax.axison) == 5      # the sixth cell is hidden
    pyplot().close(fig)


def test_no_data_still_gives_a_picture(tmp_path):
    fig = line_figure([], PPO)
    assert len(fig.axes) == 1 and not fig.axes[0].lines
    assert png_bytes(fig)[:8] == PNG
    assert plot_panels([], PPO, tmp_path / "empty.png").read_bytes()[:8] == PNG


def test_save_writes_other_charts_and_closes_them(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.barh(["a", "b"], [1, 2])
    assert save(fig, tmp_path / "bars.png", dpi=50) == tmp_path / "bars.png"
    assert (tmp_path / "bars.png").read_bytes()[:8] == PNG
    assert not plt.fignum_exists(fig.number)
    assert plt.get_backend().lower() == "agg"


def test_plot_losses_keeps_its_signature(tmp_path, monkeypatch):
    import common.plot
    from training.metrics import plot_losses

    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "loss": 3.0, "lr": 1e-3}, {"step": 2, "loss": 2.0, "lr": 1e-3}, {"step": 2, "val_loss": 2.5}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    png = plot_losses(metrics, tmp_path / "loss.png")
    assert png == tmp_path / "loss.png" and png.read_bytes()[:8] == PNG and png.stat().st_size > 5_000

    figures = []
    monkeypatch.setattr(common.plot, "save", lambda fig, target, dpi: figures.append(fig) or target)
    plot_losses(metrics, tmp_path / "again.png")
    (ax,) = figures[0].axes
    assert drawn(ax) == {"loss": ([1, 2], [3.0, 2.0]), "val_loss": ([2], [2.5])}
    assert ax.get_ylabel() == "cross-entropy (nats/token)"
    pyplot().close(figures[0])


def test_only_common_plot_chooses_the_matplotlib_backend():
    root = Path(__file__).resolve().parents[2]
    users = [str(p.relative_to(root)) for folder in ("common", "stages", "pipeline", "jobs", "training", "synth", "bench")
             for p in (root / folder).rglob("*.py") if "matplotlib.use(" in p.read_text()]
    assert users == ["common/plot.py"]
