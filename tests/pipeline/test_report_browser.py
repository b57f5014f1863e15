"""The HTML reports open in headless Chromium without errors, every image loads, and the pipeline
report shows every stage with the numbers of its `_stats.json` files.

Needs Debian's `chromium` (`apt-get install -y chromium`): skipped when missing, failed under CI=true.
The page is opened from a copy with a probe script added at both ends: the first records every error
event (script errors and images that fail to load, in the capture phase), the last writes, on load,
each image's natural size and the recorded errors into the DOM, which `--dump-dom` prints. Console
messages come from `--enable-logging=stderr` (lines with `:CONSOLE`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.data import benchmark_warc
from jobs import dedup, extract, ingest, langid, quality, tokenize
from pipeline.report import write_report

HEAD_PROBE = ("<script>window.__qf_errors=[];window.addEventListener('error',e=>window.__qf_errors.push("
              "String(e.message||(e.target&&e.target.src)||'error').slice(0,200)),true);</script>")
TAIL_PROBE = ("<script>window.addEventListener('load',()=>{const p=document.createElement('pre');p.id='qf-probe';"
              "p.textContent=JSON.stringify({images:[...document.images].map(i=>({complete:i.complete,"
              "width:i.naturalWidth,height:i.naturalHeight})),errors:window.__qf_errors});"
              "document.body.appendChild(p);});</script>")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        message = "chromium not found (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    return exe


def open_in_browser(page: Path, tmp: Path) -> tuple[str, dict, list[str]]:
    """(rendered DOM, probe result, console lines) of `page` opened in headless Chromium."""
    text = page.read_text(encoding="utf-8")
    probed = tmp / f"probed-{page.name}"
    probed.write_text(text.replace("<!doctype html>", "<!doctype html>" + HEAD_PROBE, 1) + TAIL_PROBE, encoding="utf-8")
    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=10000", f"--user-data-dir={tmp / 'chromium-profile'}",
                           "--dump-dom", probed.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    probe = re.search(r'<pre id="qf-probe">(.*?)</pre>', done.stdout, re.S)
    assert probe, "the page did not finish loading: " + done.stdout[-500:]
    console = [ln for ln in done.stderr.splitlines() if ":CONSOLE" in ln]
    return done.stdout, json.loads(probe.group(1).replace("&quot;", '"').replace("&amp;", "&")), console


def assert_clean(probe: dict, console: list[str], images: int) -> None:
    assert probe["errors"] == [] and console == []
    assert len(probe["images"]) == images
    assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in probe["images"]), probe["images"]


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts, and every <h2> title."""

    def __init__(self, page: str):
        super().__init__()
        self.tables, self.titles, self._cell, self._in_h2 = [], [], None, False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "h2":
            self._in_h2 = True
            self.titles.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None
        elif tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_h2:
            self.titles[-1] += data


def number(cell: str) -> int | None:
    return int(cell.replace(",", "")) if cell.strip() else None


def test_probe_catches_script_errors_and_broken_images(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><h1>x</h1><img src="data:image/png;base64,AAAA"><img src="missing.png">'
                   '<script>console.error("boom"); notDefined();</script>')
    _, probe, console = open_in_browser(bad, tmp_path)
    assert len(probe["errors"]) == 3 and any("notDefined" in e for e in probe["errors"])
    assert [i["width"] for i in probe["images"]] == [0, 0] and len(console) == 2


@pytest.fixture(scope="module")
def pipeline_run(spark, shared_data, tmp_path_factory):
    """A small real run: benchmark pages + real duplicate WARCs -> ingest ... dedup -> tokenize."""
    chromium()                      # skip (or fail under CI) before minutes of Spark, not after
    root = tmp_path_factory.mktemp("run")
    warcs = [str(benchmark_warc(shared_data, root / "in" / "bench.warc.gz", limit=30))]
    warcs += sorted(str(p) for p in (shared_data / "dolma-samples").glob("*.warc.gz"))
    ingest.main(["--input", *warcs, "--output", str(root / "ingest")])
    for job, src, dst, sets in ((extract, "ingest", "extract", []), (langid, "extract", "langid", []),
                                (quality, "langid", "quality", []), (dedup, "quality", "dedup", []),
                                (tokenize, "dedup", "shards", ["tokenize.seq_len=256", "tokenize.valid_fraction=0.2"])):
        job.main(["--input", str(root / src), "--output", str(root / dst), *[a for s in sets for a in ("--set", s)]])
    return root


@pytest.mark.spark
@pytest.mark.slow
def test_pipeline_report_in_chromium_shows_every_stage_with_its_stats(pipeline_run, tmp_path):
    page = write_report(pipeline_run)
    dom, probe, console = open_in_browser(page, tmp_path)
    parsed = Tables(dom)
    assert_clean(probe, console, images=dom.count("data:image/png;base64,"))
    assert {"Funnel", "Drop reasons", "Languages", "Mixture (training shards)"} <= set(parsed.titles)
    stats = {p.parent.name: json.loads(p.read_text()) for p in pipeline_run.glob("*/_stats.json")}
    assert set(stats) == {"ingest", "extract", "langid", "quality", "dedup", "shards"}
    funnel = {row[0]: row for row in parsed.tables[0][1:]}
    assert set(funnel) == set(stats)                                   # every stage, and only those
    assert parsed.tables[0][0][6:] == ["tokens out", "train tokens"]
    for name, s in stats.items():
        docs_in, kept, rejected, bytes_in, bytes_out = map(number, funnel[name][1:6])
        assert (docs_in, kept, rejected) == (s["docs_in"], s["kept"], s["rejected"])
        assert (bytes_in, bytes_out) == (s.get("bytes_in", 0), s.get("bytes_out", 0))
        assert number(funnel[name][7]) == s.get("train_tokens")
        expected = {"ingest": "", "shards": f"{s.get('train_tokens', 0) + s.get('valid_tokens', 0):,}"}  # HTML; counted
        assert funnel[name][6] == expected[name] if name in expected else funnel[name][6].startswith("~")
    reasons = next(t for t in parsed.tables if t[0] == ["stage", "reason", "documents"])
    assert {(r[0], r[1], int(r[2])) for r in reasons[1:]} == {
        (name, reason, count) for name, s in stats.items() for reason, count in s["by_reason"].items()}
    mixture = next(t for t in parsed.tables if t[0] == ["split", "source", "tokens"])
    train = sum(number(r[2]) for r in mixture[1:] if r[0] == "train")
    assert train == stats["shards"]["train_tokens"]


def test_training_report_in_chromium(tmp_path):
    from training.train_report import write_report as write_training_report

    for stage, extra in (("train", {"grad_norm": 1.0}), ("dpo", {"accuracy": 0.5, "margin": 0.1})):
        (tmp_path / "run" / stage).mkdir(parents=True)
        lines = [{"step": s, "loss": 3.0 / s, "lr": 1e-3, "tokens": 256, "tokens_per_s": 10.0 * s, **extra}
                 for s in (1, 2, 3)] + [{"step": 3, "val_loss": 1.5}]
        (tmp_path / "run" / stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    page, _ = write_training_report(tmp_path / "run")
    dom, probe, console = open_in_browser(page, tmp_path)
    assert_clean(probe, console, images=2)
    parsed = Tables(dom)
    assert parsed.titles == ["Throughput", "Pretraining (train)", "DPO (dpo)"]
    throughput = {row[0]: row for row in parsed.tables[0][1:]}
    assert {k: (int(v[1]), number(v[2]), float(v[3])) for k, v in throughput.items()} == {
        "train": (3, 768, 20.0), "dpo": (3, 768, 20.0)}  # last step, tokens summed, median tokens/s
    for table in parsed.tables[1:]:  # first and last value of each curve: the metrics.jsonl lines
        curves = {row[0]: row[1:] for row in table[1:]}
        assert curves["loss"] == ["1", "3", "3", "1"] and curves["lr"] == ["1", "0.001", "3", "0.001"]
        assert curves["val_loss"] == ["3", "1.5", "3", "1.5"]
