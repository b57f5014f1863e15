"""Benchmark inputs built from ../shared/data (read in place, never copied into the repository)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from stages.crawl.warc_writer import WarcSink

ROOT = Path(__file__).resolve().parent.parent


def shared_data() -> Path:
    path = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        raise SystemExit(f"shared data not found at {path}: set SHARED_DATA")
    return path


def save_result(out: Path, name: str, result: dict, markdown: str) -> dict:
    """Writes `<out>/<name>.json` and `<out>/<name>.md` (the README's section) and prints the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
    return result


def article_pages(data: Path, limit: int | None = None) -> list[tuple[str, str, bytes, str]]:
    """(name, url, html bytes, gold text) of the article-extraction-benchmark pages, sorted by name."""
    folder = data / "article-extraction-benchmark"
    truth = json.loads((folder / "ground-truth.json").read_text())
    rows = []
    for name in sorted(truth)[:limit]:
        html = gzip.decompress((folder / "html" / f"{name}.html.gz").read_bytes())
        rows.append((name, truth[name]["url"], html, truth[name]["articleBody"]))
    return rows


def quality_texts(data: Path) -> list[tuple[str, str]]:
    """(name, text) of the real pages the quality rules are measured on (757 with the current data): the
    article benchmark's gold bodies and our extraction of its pages, our extraction of the trafilatura-eval
    pages (mostly German) and of the HTML responses of the resiliparse (Chinese spam), dolma and
    cc-whirlwind WARCs, and the dolma CCNet-style documents."""
    from stages.extract import Extractor
    from stages.warc import WarcReader

    extractor, texts = Extractor(), []
    for name, url, html, gold in article_pages(data):
        texts.append((f"gold:{name}", gold))
        if text := extractor.extract_text(html, url=url):
            texts.append((f"extracted:{name}", text))
    folder = data / "trafilatura-eval"
    for url, case in json.loads((folder / "evaldata.subset.json").read_text()).items():
        pages = [folder / sub / case["file"] for sub in ("eval", "cache") if (folder / sub / case["file"]).exists()]
        if pages and (text := extractor.extract_text(pages[0].read_bytes(), url=url)):
            texts.append((f"trafilatura-eval:{case['file']}", text))
    warcs = [data / "resiliparse-test-warcs" / "warcfile.warc.gz", *sorted((data / "dolma-samples").glob("*.warc.gz")),
             data / "cc-whirlwind" / "whirlwind.warc.gz"]
    for warc in warcs:
        for row in WarcReader().read_file(str(warc)):
            if row["drop_reason"] is None and (text := extractor.map(row)["text"]):
                texts.append((f"warc:{row['url']}", text))
    for name in ("cc_en_head-0091.jsonl.gz", "cc_en_head-0174.jsonl.gz", "provided-documents-000.json.gz"):
        with gzip.open(data / "dolma-samples" / name, "rt") as lines:
            texts += [(f"dolma:{doc['id']}", doc["text"]) for doc in map(json.loads, lines)]
    return texts


def benchmark_warc(data: Path, path: Path, limit: int | None = None, copies: int = 1) -> Path:
    """The benchmark pages as one WARC with their real URLs (`copies` > 1 repeats them, new URLs)."""
    with WarcSink(path) as sink:
        for copy in range(copies):
            for _, url, html, _ in article_pages(data, limit):
                sink.response(url if copy == 0 else f"{url}#copy{copy}", 200, [("Content-Type", "text/html")],
                              html, fetch_time="2020-01-01T00:00:00Z")
    return path


def timed(fn, device) -> float:
    """Wall seconds of one call of `fn`, CUDA work included (synchronised before and after)."""
    import time

    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
