"""The HTML reports open in headless Chromium without errors, every image loads, the pipeline report
shows every stage (nested `mix/*` ones too) with the numbers of its `_stats.json` files, and the
training report shows every training stage with the first and last values of its `metrics.jsonl`.

Needs Debian's `chromium` (`apt-get install -y chromium`): skipped when missing, failed under CI=true.
The page is opened from a copy with a probe script added at both ends: the first records every error
event (script errors and images that fail to load, in the capture phase), the last writes, on load,
each image's natural size and the recorded errors into the DOM, which `--dump-dom` prints. Console
messages come from `--enable-logging=stderr` (lines with `:CONSOLE`).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.data import benchmark_warc
from jobs import dedup, extract, ingest, langid, mix_instructions, quality, tokenize
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
    """A small real run: benchmark pages + real duplicate WARCs -> ingest ... dedup -> mix (real instruction
    data: self-instruct seed tasks, 40 hh-rlhf pairs) -> tokenize, as `make` chains them."""
    chromium()                      # skip (or fail under CI) before minutes of Spark, not after
    root = tmp_path_factory.mktemp("run")
    warcs = [str(benchmark_warc(shared_data, root / "in" / "bench.warc.gz", limit=30))]
    warcs += sorted(str(p) for p in (shared_data / "dolma-samples").glob("*.warc.gz"))
    hh = gzip.open(shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt").read().splitlines()[:40]
    (root / "in" / "hh.jsonl").write_text("\n".join(hh) + "\n")
    ingest.main(["--input", *warcs, "--output", str(root / "ingest")])
    for job, src, dst, sets in ((extract, "ingest", "extract", []), (langid, "extract", "langid", []),
                                (quality, "langid", "quality", []), (dedup, "quality", "dedup", [])):
        job.main(["--input", str(root / src), "--output", str(root / dst), *[a for s in sets for a in ("--set", s)]])
    instructions = [str(shared_data / "self-instruct" / "seed_tasks.jsonl"), str(root / "in" / "hh.jsonl")]
    mix_instructions.main(["--input", *instructions, "--pretrain", str(root / "dedup"), "--output", str(root / "mix"),
                           "--set", "mix.seq_len=512"])
    tokenize.main(["--input", str(root / "mix" / "pretrain"), "--output", str(root / "shards"),
                   "--set", "tokenize.seq_len=256", "--set", "tokenize.valid_fraction=0.2"])
    return root


def docs_out(s: dict) -> int:
    """Documents a stage wrote, as its _stats.json says: kept, SFT conversations or preference pairs."""
    return s["kept"] if "kept" in s else s["conversations"] if "conversations" in s else \
        sum(split["rows"] for split in s["splits"].values())


def counted_tokens(s: dict) -> int | None:
    """Tokens a stage counted itself (None: the report estimates them from the text)."""
    if "tokens_after" in s:
        return sum(s["tokens_after"].values())
    if "train_tokens" in s:
        return s["train_tokens"] + s["valid_tokens"]
    if "splits" in s:
        return sum(v for split in s["splits"].values() for k, v in split.items() if k.endswith("tokens")
                   and k != "loss_tokens")
    return None


@pytest.mark.spark
@pytest.mark.slow
def test_pipeline_report_in_chromium_shows_every_stage_with_its_stats(pipeline_run, tmp_path):
    page = write_report(pipeline_run)
    dom, probe, console = open_in_browser(page, tmp_path)
    parsed = Tables(dom)
    assert_clean(probe, console, images=dom.count("data:image/png;base64,"))
    assert parsed.titles == ["Funnel", "Drop reasons", "Stage counters", "Languages", "Quality score", "Perplexity",
                             "Duplicate clusters", "Mixture (training shards)"]
    stats = {p.parent.relative_to(pipeline_run).as_posix(): json.loads(p.read_text())
             for p in pipeline_run.rglob("_stats.json")}
    assert set(stats) == {"ingest", "extract", "langid", "quality", "dedup", "mix/instructions", "mix/sft",
                          "mix/preference", "mix/pretrain", "shards"}
    funnel = {row[0]: row for row in parsed.tables[0][1:]}
    assert list(funnel) == ["ingest", "extract", "langid", "quality", "dedup", "mix/instructions", "mix/preference",
                            "mix/pretrain", "mix/sft", "shards"]          # every stage, in pipeline order
    assert parsed.tables[0][0][6:] == ["tokens out", "train tokens"]
    for name, s in stats.items():
        docs_in, kept, rejected, bytes_in, bytes_out = map(number, funnel[name][1:6])
        assert (docs_in, kept, rejected) == (s.get("docs_in"), docs_out(s), s.get("rejected")), name
        assert (bytes_in, bytes_out) == (s.get("bytes_in"), s.get("bytes_out")), name
        assert number(funnel[name][7]) == s.get("train_tokens")
        tokens = counted_tokens(s)
        if tokens is not None:
            assert number(funnel[name][6]) == tokens, name
        else:                                                  # estimated; ingest holds no text yet
            assert funnel[name][6] == "" if name == "ingest" else funnel[name][6].startswith("~"), name
    assert stats["mix/sft"]["conversations"] > 0 and docs_out(stats["mix/preference"]) > 0  # real rows, not zeros
    reasons = next(t for t in parsed.tables if t[0] == ["stage", "reason", "documents"])
    assert {(r[0], r[1], int(r[2])) for r in reasons[1:]} == {
        (name, reason, count) for name, s in stats.items() for reason, count in s.get("by_reason", {}).items()}
    counters = next(t for t in parsed.tables if t[0] == ["stage", "counter", "value"])
    assert ["mix/sft", "conversations", f"{stats['mix/sft']['conversations']:,}"] in counters[1:]
    mixture = next(t for t in parsed.tables if t[0] == ["split", "source", "tokens"])
    train = sum(number(r[2]) for r in mixture[1:] if r[0] == "train")
    assert train == stats["shards"]["train_tokens"]


# per training stage: its metrics.jsonl keys besides step/loss/lr/tokens/tokens_per_s, and its validation keys,
# as training/train.py, sft.py, reward.py, ppo.py, dpo.py and online_dpo.py write them
TRAINING_KEYS = {"train": (("grad_norm", "mfu", "epoch"), ("val_loss", "val_ppl")),
                 "sft": (("loss_tokens", "grad_norm", "seconds"), ("val_loss", "val_ppl")),
                 "rm": (("accuracy", "margin", "grad_norm"), ("val_loss", "val_accuracy")),
                 "ppo": (("reward", "kl", "policy_loss", "value_loss", "entropy"), ("val_reward", "val_kl")),
                 "dpo": (("reward_chosen", "reward_rejected", "margin", "accuracy"), ("val_loss", "val_accuracy")),
                 "online_dpo": (("reward_mean", "pairs", "round"), ("val_reward_mean",))}
TRAINING_TITLES = ["Pretraining (train)", "Supervised fine-tuning (sft)", "Reward model (rm)", "PPO (ppo)", "DPO (dpo)",
                   "Online DPO (online_dpo)"]


def training_metrics(stage: str, rng: random.Random) -> list[dict]:
    """A validation line at step 0, `steps` optimizer-step lines (warmup then decay), a final validation line."""
    extra, val = TRAINING_KEYS[stage]
    steps = rng.randint(5, 9)
    lines = [{"step": 0, **{k: rng.uniform(0.5, 12) for k in val}}]
    for s in range(1, steps + 1):
        lines.append({"step": s, "loss": rng.uniform(0.1, 11), "lr": 1e-3 * min(s / 3, 1) / (1 + s / 10),
                      "tokens": rng.randint(100, 3000), "tokens_per_s": rng.uniform(30, 3000),
                      **{k: None if k == "mfu" else rng.uniform(-1, 1) for k in extra}})
    return lines + [{"step": steps, **{k: rng.uniform(0.5, 12) for k in val}}]


def close(cell: str, value: float) -> bool:
    """The page prints 4 significant digits."""
    return abs(float(cell) - value) <= 5e-4 * abs(value)


def test_training_report_in_chromium_shows_every_stage_with_its_metrics(tmp_path):
    from training.train_report import write_report as write_training_report

    rng, metrics = random.Random(7), {}
    for stage in TRAINING_KEYS:
        metrics[stage] = training_metrics(stage, rng)
        (tmp_path / "run" / stage).mkdir(parents=True)
        (tmp_path / "run" / stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics[stage]))
    page, _ = write_training_report(tmp_path / "run")
    dom, probe, console = open_in_browser(page, tmp_path)
    assert_clean(probe, console, images=len(TRAINING_KEYS))   # one curve panel per stage: loss, lr, throughput, ...
    parsed = Tables(dom)
    assert parsed.titles == ["Throughput"] + TRAINING_TITLES
    throughput = {row[0]: row[1:] for row in parsed.tables[0][1:]}
    assert list(throughput) == list(TRAINING_KEYS)
    for (stage, lines), table in zip(metrics.items(), parsed.tables[1:]):
        steps = [r for r in lines if "loss" in r and "lr" in r]
        last_step, tokens, median_tps, mfu = throughput[stage]
        assert (int(last_step), number(tokens), mfu) == (steps[-1]["step"], sum(r["tokens"] for r in steps), "")
        assert close(median_tps, statistics.median(r["tokens_per_s"] for r in steps))
        curves = {row[0]: row[1:] for row in table[1:]}
        for key in ("loss", "lr", "tokens_per_s"):       # first and last point of each curve = the jsonl lines
            first_step, first, last_step, last = curves[key]
            assert (int(first_step), int(last_step)) == (1, steps[-1]["step"])
            assert close(first, steps[0][key]) and close(last, steps[-1][key]), (stage, key)
        for key in TRAINING_KEYS[stage][1]:
            assert close(curves[key][3], lines[-1][key]) and close(curves[key][1], lines[0][key]), (stage, key)
