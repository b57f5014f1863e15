"""Training report on metrics.jsonl / summary.json folders written by hand (values chosen so the
expected table cells are known)."""
from __future__ import annotations

import base64
import json
import re

from common import fs
from training import train_report as tr

PNG = b"\x89PNG\r\n\x1a\n"


def write_stage(folder, steps, evals, summary):
    folder.mkdir(parents=True)
    lines = [json.dumps(r) for r in steps + evals]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(json.dumps(summary))


def make_run(root):
    train = [{"step": s, "loss": 8.0 / s, "lr": 1e-3 * s / 4, "grad_norm": 1.5, "tokens": 1024,
              "tokens_per_s": 100.0 * s, "mfu": None, "epoch": 0.1 * s} for s in range(1, 5)]
    write_stage(root / "train", train, [{"step": 0, "val_loss": 9.5, "val_ppl": 13359.7},
                                        {"step": 4, "val_loss": 2.25, "val_ppl": 9.4877}],
                {"step": 4, "start_val_loss": 9.5, "end_val_loss": 2.25, "checkpoint": "x/step-4"})
    dpo = [{"step": s, "loss": 0.75 - 0.125 * s, "lr": 5e-7, "accuracy": 0.25 * s, "margin": 0.5 * s,
            "tokens": 512, "tokens_per_s": 50.0, "seconds": 1.0} for s in (1, 2, 3)]
    write_stage(root / "dpo", dpo, [{"step": 3, "val_loss": 0.5, "val_accuracy": 0.75}],
                {"stage": "dpo", "steps": 3, "last_eval": {"step": 3, "val_accuracy": 0.75}})
    (root / "sft").mkdir()                       # no metrics.jsonl: not a finished stage, left out


def cells(page: str, stage: str) -> str:
    """The HTML of one stage's section."""
    return page.split(f'<h2 id="{stage}">', 1)[1].split("<h2", 1)[0]


def test_report_shows_every_stage_with_its_first_and_last_metrics(tmp_path):
    make_run(tmp_path)
    page_path, md_path = tr.write_report(tmp_path)
    page = page_path.read_text()
    assert re.findall(r'<h2 id="(\w+)">', page) == ["train", "dpo"]
    train, dpo = cells(page, "train"), cells(page, "dpo")
    # first / last values, by hand: loss 8/1 -> 8/4, lr 2.5e-4 -> 1e-3, val_loss 9.5 -> 2.25
    assert "<tr><td>loss</td><td>1</td><td>8</td><td>4</td><td>2</td></tr>" in train
    assert "<tr><td>lr</td><td>1</td><td>0.00025</td><td>4</td><td>0.001</td></tr>" in train
    assert "<tr><td>val_loss</td><td>0</td><td>9.5</td><td>4</td><td>2.25</td></tr>" in train
    assert "<td>epoch</td>" not in train and "<td>mfu</td>" not in train    # bookkeeping / all null
    assert "<tr><td>accuracy</td><td>1</td><td>0.25</td><td>3</td><td>0.75</td></tr>" in dpo
    assert "<tr><td>last_eval.val_accuracy</td><td>0.75</td></tr>" in dpo
    # throughput: steps, summed tokens, median tokens/s (100, 200, 300, 400 -> 250)
    assert "<tr><td>train</td><td>4</td><td>4,096</td><td>250</td><td></td></tr>" in page
    assert "<tr><td>dpo</td><td>3</td><td>1,536</td><td>50</td><td></td></tr>" in page


def test_report_is_self_contained_with_valid_images(tmp_path):
    make_run(tmp_path)
    page = tr.write_report(tmp_path, tmp_path / "out")[0].read_text()
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert all(base64.b64decode(src.split(",", 1)[1])[:8] == PNG for src in images)
    assert "http://" not in page and "https://" not in page
    md = (tmp_path / "out" / "train_report.md").read_text()
    for name in ("train", "dpo"):
        assert f"![{name} curves](train_report_files/{name}.png)" in md
        assert (tmp_path / "out" / "train_report_files" / f"{name}.png").read_bytes()[:8] == PNG
    assert "| loss | 1 | 0.625 | 3 | 0.375 |" in md     # dpo loss 0.75 - 0.125 s at s = 1 and s = 3


def test_load_stage_splits_steps_and_validation(tmp_path):
    make_run(tmp_path)
    stage = tr.load_stage(tmp_path / "train")
    assert [r["step"] for r in stage.steps] == [1, 2, 3, 4] and [r["step"] for r in stage.evals] == [0, 4]
    assert tr.metric_keys(stage.steps) == ["loss", "lr", "grad_norm", "tokens_per_s"]


def test_cli_on_an_empty_root(tmp_path, capsys):
    page, md = tr.main(["--root", str(tmp_path)])
    assert "No stage folder" in page.read_text() and md.exists()


def test_stage_figure_draws_the_logged_values(tmp_path):
    make_run(tmp_path)
    fig = tr.stage_figure(tr.load_stage(tmp_path / "dpo"))
    axes = {ax.get_title(): ax for ax in fig.axes if ax.lines}
    # dpo logs loss, lr, throughput, accuracy and margin; grad_norm and mfu are not logged: no panel
    assert list(axes) == ["loss", "learning rate", "throughput (tokens/s)", "accuracy", "margin"]
    lines = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in axes["loss"].lines}
    assert lines == {"loss": ([1, 2, 3], [0.625, 0.5, 0.375]), "val_loss": ([3], [0.5])}
    assert [ln.get_label() for ln in axes["accuracy"].lines] == ["accuracy", "val_accuracy"]
    assert list(axes["margin"].lines[0].get_ydata()) == [0.5, 1.0, 1.5]
    assert fig.get_suptitle() == "DPO"


def test_report_of_a_run_on_s3_is_the_local_report(tmp_path, s3):
    make_run(tmp_path / "run")
    local_page, local_md = tr.write_report(tmp_path / "run", tmp_path / "local")
    fs.upload_folder(tmp_path / "run", f"{s3}/run")
    page, md = tr.main(["--root", f"{s3}/run"])
    assert (page, md) == (f"{s3}/run/train_report.html", f"{s3}/run/train_report.md")
    root = str(tmp_path / "run")
    assert fs.read_bytes(page).decode() == local_page.read_text().replace(root, f"{s3}/run")
    assert fs.read_bytes(md).decode() == local_md.read_text().replace(root, f"{s3}/run")
    for name in ("train", "dpo"):
        assert fs.read_bytes(f"{s3}/run/train_report_files/{name}.png") == \
            (tmp_path / "local" / "train_report_files" / f"{name}.png").read_bytes()
