"""End to end against datatrove: WARC -> extract -> LID (English) -> Gopher, C4, FineWeb rules -> MinHash dedup.

    python -m bench.bench_e2e --out runs/bench                    # 4,000 and 20,000 records (`make bench`)
    python -m bench.bench_e2e --out runs/bench --records 400      # a quick trial
    python -m bench.bench_e2e --records 4000 --only ours datatrove

Corpus (built once per size and settings into `<out>/e2e-work/corpus-<records>/`: two WARC.gz files and
`manifest.json`, which says which record is a planted copy of which): real pages from ../shared/data, the
181 article-extraction-benchmark pages (English), the 324 trafilatura-eval pages (mostly German, also
en/fr/es/pl: LID drops most) and the HTML responses of the dolma-samples, resiliparse and cc-whirlwind WARCs.
- distinct records: page `i mod P` (pages shuffled), variant `i div P`; variant 0 is the page as fetched,
  later ones have each word of the text nodes (not scripts, styles, comments, tags, entities) replaced with
  probability `--distinct-rate` (0.3) by a word of the same page: the language stays, shared 5-grams go;
- planted records (`--dup-share`, 20%): a near-copy of a distinct record (each source used once), its
  words replaced with probability `--copy-rate` (1%).
Every record gets its own navigation bar and footer (random site, year, promo line), so copies differ
there too. URLs are the page's URL with `e2e=<record>` in the query (unique; no URL duplicates). Records
are shuffled; the first half is file 0, the rest file 1 (one file per task on both sides). The word-5-gram
Jaccard of planted pairs and of distinct variants of one page is measured on our extracted text and
reported with the share that 14 x 8 LSH detects at that Jaccard, 1 - (1 - J^8)^14.

Contenders, each in a fresh child process, measured by `Meter` (TreeMeter from bench_line_dedup: CPU
seconds of the whole process tree, Spark's JVM and Python workers or datatrove's forkserver, pool and
extraction sandboxes included; peak RSS of the tree and of the largest single process, sampled every
50 ms; wall from the first step to the last output, Spark and pool start-up included):
- `ours`: jobs.ingest, extract, langid, quality, dedup, each through its `main`, in one Spark session on
  local[2] (the five make targets without five JVM starts), recipe aligned by OURS_SETS;
- `ours-fused`: jobs.pipeline --stages "ingest extract langid quality dedup" (one pass for the per-record
  stages), same settings; skipped with a note where jobs/pipeline.py does not exist;
- `datatrove`: FineWeb's pipeline (datatrove's examples/fineweb.py), LocalPipelineExecutor tasks=2 workers=2:
  WarcReader -> Trafilatura(favour_precision) -> LanguageFilter(en, 0.65, its model pointed at
  assets/lid.176.ftz) -> GopherRepetition -> GopherQuality -> C4Quality(filter_no_terminal_punct=False) ->
  FineWebQuality -> JsonlWriter, each filter with an exclusion writer (as FineWeb), then
  MinhashDedupSignature / Buckets (14 tasks) / Cluster / Filter, 14 buckets x 8 hashes over word 5-grams.

Aligned so that kept sets compare (otherwise both sides run their defaults): trafilatura's cross-document
`deduplicate` off on both (ours never uses it: its cache makes output depend on order); C4 keeps lines
without terminal punctuation and the text goes on as the lines it keeps (FineWeb); the dedup survivor is the
first document in (WARC file, offset) order, datatrove's rule (first by file and document index; its union
by size can differ in clusters of three or more). Datatrove's extraction has a per-page timeout
(`--dt-timeout`, 5 s here, datatrove's default 1 s; under load a page that times out is dropped): the
count of timeouts is reported.

Reported per contender: wall s, CPU s, peak RSS of the tree and of one process (MB), documents kept after
ingest, extract, LID, each quality rule and dedup; per step the disagreement of the kept URL sets with
datatrove's, |A xor B| / |A u B|; planted recall (planted pairs whose two records both reach dedup, of
which exactly one survives) and documents dedup removed that were not planted copies or their sources.
The issue's goal: CPU s <= 0.8 x datatrove's, wall <= datatrove's, one process <= 1.5 GB, disagreement
<= 0.5% per step. Datatrove needs, beyond its wheel: spacy, python-magic, faust-cchardet, fasteners, orjson,
xxhash<4 and fasttext-numpy2-wheel (the dev extras).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from warcio.statusandheaders import StatusAndHeaders

from bench.bench_line_dedup import TreeMeter
from bench.data import ROOT, article_pages, save_result, shared_data
from stages.crawl.warc_writer import WarcSink

SIZES = (4000, 20000)
CONTENDERS = ("ours", "ours-fused", "datatrove")
STEPS = ("ingest", "extract", "langid", "gopher_rep", "gopher_quality", "c4", "fineweb", "quality", "dedup")
RULE_STEPS = ("gopher_rep", "gopher_quality", "c4", "fineweb")  # FineWeb's order, ours and datatrove's
LID_MODEL = ROOT / "assets" / "lid.176.ftz"
LSH_BANDS, LSH_ROWS, NGRAM = 14, 8, 5
OURS_SETS = ('langid.languages=["en"]', "c4_quality.terminal_punct_lines=false", "c4_quality.remove_lines=true",
             'dedup.survivor_order=["warc_file asc", "warc_offset asc"]')
OUR_STAGES = ("ingest", "extract", "langid", "quality", "dedup")

# ---------------------------------------------------------------- the corpus

TAGS = re.compile(r"(<script\b.*?</script\s*>|<style\b.*?</style\s*>|<!--.*?-->|<[^>]*>)", re.S | re.I)
WORD = re.compile(r"(?<![&#\w])[^\W\d_]{2,}(?![\w;])")
META_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([\w-]+)""", re.I)
SITES = ("Daily Ledger", "Metro Wire", "The Courier", "Valley Post", "Northern Star", "Harbor Times")
PROMOS = ("Subscribe to our newsletter for the best stories every morning.", "Download our app for breaking news.",
          "Support independent journalism: become a member today.", "Follow us for live updates.")


def source_pages(data: Path) -> list[dict]:
    """Real pages: (url, html bytes, Content-Type) of the benchmark, trafilatura-eval and WARC samples."""
    pages = [{"url": url, "html": html, "type": "text/html"} for _, url, html, _ in article_pages(data)]
    folder = data / "trafilatura-eval"
    urls = {case["file"]: url for url, case in json.loads((folder / "evaldata.subset.json").read_text()).items()}
    for path in sorted([*(folder / "eval").glob("*.html"), *(folder / "cache").glob("*.html")]):
        url = urls.get(path.name, "")
        url = url if url.startswith(("http://", "https://")) else f"https://trafilatura-eval.invalid/{path.name}"
        pages.append({"url": url, "html": path.read_bytes(), "type": "text/html"})
    return pages + warc_pages([data / "dolma-samples" / "sample-0000.warc.gz",
                               data / "dolma-samples" / "sample-0001.warc.gz",
                               data / "resiliparse-test-warcs" / "warcfile.warc.gz",
                               data / "cc-whirlwind" / "whirlwind.warc.gz"])


def warc_pages(paths: list[Path]) -> list[dict]:
    from warcio.archiveiterator import ArchiveIterator

    pages, seen = [], set()
    for path in (p for p in paths if p.exists()):
        with open(path, "rb") as fh:
            for record in ArchiveIterator(fh):
                mime = record.http_headers.get_header("Content-Type", "") if record.http_headers else ""
                if record.rec_type != "response" or "html" not in mime:
                    continue
                url = record.rec_headers.get_header("WARC-Target-URI").strip("<>")
                html = record.content_stream().read()
                if url not in seen and html:
                    seen.add(url)
                    pages.append({"url": url, "html": html, "type": mime})
    return pages


def decode(page: dict) -> tuple[str, str]:
    """(text, codec): the header's charset, else UTF-8, else the meta charset, else Latin-1 (never fails)."""
    declared = re.search(r"charset=([\w-]+)", page["type"])
    meta = META_CHARSET.search(page["html"][:4096])
    for codec in (declared and declared.group(1), "utf-8", meta and meta.group(1).decode()):
        try:
            return page["html"].decode(codec), codec
        except (TypeError, LookupError, UnicodeDecodeError):
            continue
    return page["html"].decode("latin-1"), "latin-1"


def mutate(html: str, rng: random.Random, rate: float) -> str:
    """Each word of the text nodes replaced with probability `rate` by a word of the same page."""
    parts = TAGS.split(html)
    vocab = [w for text in parts[::2] for w in WORD.findall(text)] or ["word"]
    if rate <= 0:
        return html
    swap = lambda m: rng.choice(vocab) if rng.random() < rate else m.group(0)  # noqa: E731
    parts[::2] = [WORD.sub(swap, text) for text in parts[::2]]
    return "".join(parts)


def boilerplate(html: str, rng: random.Random) -> str:
    site, year = rng.choice(SITES), rng.randint(2005, 2024)
    links = " | ".join(f'<a href="/{w.lower()}">{w}</a>' for w in rng.sample(
        ["Home", "News", "Sport", "Business", "Culture", "Opinion", "Travel", "Contact"], 5))
    nav = f'<nav class="site-nav"><b>{site}</b> {links}</nav>'
    foot = (f'<footer class="site-footer"><p>{rng.choice(PROMOS)}</p>'
            f'<p>&copy; {year} {site}. All rights reserved.</p></footer>')
    html, n = re.subn(r"(<body\b[^>]*>)", lambda m: m.group(1) + nav, html, count=1, flags=re.I)
    html = html if n else nav + html
    html, n = re.subn(r"(</body\s*>)", lambda m: foot + m.group(1), html, count=1, flags=re.I)
    return html if n else html + foot


def with_query(url: str, record: int) -> str:
    parts = urlsplit(url.strip().replace(" ", "%20"))
    query = f"{parts.query}&e2e={record}" if parts.query else f"e2e={record}"
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


def plan(records: int, pages: int, dup_share: float, seed: int) -> list[dict]:
    """The records in file order: distinct (page, variant) ones and planted copies of distinct ones."""
    if not 0 <= dup_share < 0.5:
        raise SystemExit("--dup-share must be in [0, 0.5)")
    rng = random.Random(seed)
    copies = round(records * dup_share)
    distinct = records - copies
    order = rng.sample(range(pages), pages)
    rows = [{"kind": "distinct", "key": i, "page": order[i % pages], "variant": i // pages} for i in range(distinct)]
    sources = rng.sample(range(distinct), copies)
    rows += [{"kind": "planted", "key": j, "page": rows[s]["page"], "variant": rows[s]["variant"], "copy_of": s}
             for j, s in enumerate(sources)]
    rng.shuffle(rows)
    for record, row in enumerate(rows):
        row["record"] = record
    return rows


def record_html(row: dict, page: dict, distinct_rate: float, copy_rate: float, seed: int) -> bytes:
    html, codec = decode(page)
    variant = row["variant"]
    source = row["copy_of"] if row["kind"] == "planted" else row["key"]
    html = mutate(html, random.Random(f"{seed}-distinct-{source}"), distinct_rate if variant else 0.0)
    if row["kind"] == "planted":
        html = mutate(html, random.Random(f"{seed}-planted-{row['key']}"), copy_rate)
    html = boilerplate(html, random.Random(f"{seed}-boiler-{row['record']}"))
    return html.encode(codec, errors="xmlcharrefreplace")


class CorpusSink(WarcSink):
    """WarcSink whose responses also carry `WARC-Identified-Payload-Type`, as Common Crawl's do (without
    it datatrove's WarcReader guesses the type with libmagic and skips pages it calls text/plain)."""

    def page(self, url: str, body: bytes, content_type: str) -> None:
        http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
        headers = {"WARC-Date": "2024-01-01T00:00:00Z", "WARC-Identified-Payload-Type": "text/html"}
        self._writer.write_record(self._writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                                  http_headers=http, warc_headers_dict=headers))
        self.count += 1


def build_corpus(data: Path, folder: Path, records: int, args: argparse.Namespace) -> dict:
    """Writes `folder/e2e-0000{0,1}.warc.gz` and `folder/manifest.json` unless they exist for these settings."""
    settings = {"records": records, "dup_share": args.dup_share, "distinct_rate": args.distinct_rate,
                "copy_rate": args.copy_rate, "seed": args.seed}
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["settings"] == settings:
            return manifest
    pages = source_pages(data)
    rows, started = plan(records, len(pages), args.dup_share, args.seed), time.time()
    half = (records + 1) // 2
    for part, chunk in enumerate((rows[:half], rows[half:])):
        with CorpusSink(folder / f"e2e-{part:05d}.warc.gz", software="qwenforge-bench-e2e") as sink:
            for row in chunk:
                page = pages[row["page"]]
                row["url"] = with_query(page["url"], row["record"])
                body = record_html(row, page, args.distinct_rate, args.copy_rate, args.seed)
                sink.page(row["url"], body, page["type"])
    manifest = {"settings": settings, "pages": len(pages), "seconds": round(time.time() - started, 1),
                "bytes": sum(p.stat().st_size for p in folder.glob("*.warc.gz")), "records": rows}
    manifest_path.write_text(json.dumps(manifest))
    return manifest


# ---------------------------------------------------------------- measuring


class Meter(TreeMeter):
    """TreeMeter that also keeps the largest single-process RSS (the issue's memory goal is per process)."""

    def __init__(self, interval: float = 0.05):
        super().__init__(interval)
        self.peak_one = 0

    def _sample(self):
        while not self._stop.is_set():
            sizes = []
            for p in self.tree():
                try:
                    sizes.append(p.memory_info().rss)
                except Exception:  # noqa: BLE001 - a process that ended between listing and reading
                    pass
            self.peak, self.peak_one = max(self.peak, sum(sizes)), max([self.peak_one, *sizes])
            time.sleep(self.interval)


# ---------------------------------------------------------------- the contenders (each in a child process)


def run_ours(corpus: Path, out: Path) -> None:
    """The five jobs through their `main`, in one Spark session on local[2]."""
    import importlib

    from pipeline.spark import SparkConfig, spark_session

    sets = [a for s in OURS_SETS for a in ("--set", s)]
    with spark_session("bench-e2e", SparkConfig(), "local[2]"):
        inputs = [str(corpus)]
        for stage in OUR_STAGES:
            importlib.import_module(f"jobs.{stage}").main(["--input", *inputs, "--output", str(out / stage), *sets])
            inputs = [str(out / stage)]


def fused_available() -> bool:
    return (ROOT / "jobs" / "pipeline.py").exists()


def run_ours_fused(corpus: Path, out: Path) -> None:
    """FUSED hook: the fused chain, `python -m jobs.pipeline` (ingest, extract, langid and quality in one
    pass, then dedup's job in the same session). Without --keep-intermediate only the chain's last stage
    writes kept/; every stage writes rejected/, which is what `read_ours` counts from."""
    from jobs import pipeline

    sets = [a for s in OURS_SETS for a in ("--set", s)]
    pipeline.main(["--stages", " ".join(OUR_STAGES), "--input", str(corpus), "--root", str(out),
                   "--master", "local[2]", *sets])


def run_datatrove(corpus: Path, out: Path, timeout: float) -> None:
    """FineWeb's pipeline (datatrove examples/fineweb.py) with the settings of the module docstring."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, LanguageFilter)
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    def dropped(step):
        return JsonlWriter(str(out / "removed" / step))

    def run(name, pipeline, tasks):
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=2, logging_dir=str(out / "logs" / name)).run()

    config = MinhashConfig(hash_config=HashConfig(precision=64), num_buckets=LSH_BANDS, hashes_per_bucket=LSH_ROWS,
                           n_grams=NGRAM)
    lid = LanguageFilter(languages=["en"], language_threshold=0.65, exclusion_writer=dropped("langid"))
    lid.model.MODEL_URL = str(LID_MODEL)  # copied into datatrove's cache instead of downloading lid.176.bin
    run("filter", [WarcReader(str(corpus), glob_pattern="*.warc.gz"),
                   Trafilatura(favour_precision=True, timeout=timeout, deduplicate=False), lid,
                   GopherRepetitionFilter(exclusion_writer=dropped("gopher_rep")),
                   GopherQualityFilter(exclusion_writer=dropped("gopher_quality")),
                   C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=dropped("c4")),
                   FineWebQualityFilter(exclusion_writer=dropped("fineweb")),
                   JsonlWriter(str(out / "quality"))], tasks=2)
    run("signature", [JsonlReader(str(out / "quality")), MinhashDedupSignature(str(out / "sigs"), config=config)], 2)
    run("buckets", [MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=config)], LSH_BANDS)
    run("cluster", [MinhashDedupCluster(str(out / "buckets"), str(out / "remove_ids"), config=config)], 1)
    run("dedup", [JsonlReader(str(out / "quality")),
                  MinhashDedupFilter(str(out / "remove_ids"), exclusion_writer=dropped("dedup")),
                  JsonlWriter(str(out / "dedup"))], tasks=2)


def worker(name: str, work: Path, corpus: Path, timeout: float) -> dict:
    out = work / name
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["HF_HOME"] = str(work / "hf-home")  # datatrove's asset cache (the LID model copy)
    with Meter() as meter:
        if name == "datatrove":
            run_datatrove(corpus, out, timeout)
        elif name == "ours":
            run_ours(corpus, out)
        else:
            run_ours_fused(corpus, out)
    return {"wall_s": round(meter.wall, 1), "cpu_s": round(meter.cpu_s, 1),
            "peak_rss_tree_mb": round(meter.peak / 2 ** 20), "peak_rss_one_mb": round(meter.peak_one / 2 ** 20)}


# ---------------------------------------------------------------- what each kept, per step


def parquet_rows(folder: Path, columns: list[str]) -> list[dict]:
    import pyarrow.parquet as pq

    files = sorted(folder.rglob("*.parquet"))
    return [r for f in files for r in pq.read_table(f, columns=columns).to_pylist()]


def read_ours(out: Path, urls: set[str]) -> dict[str, set[str]]:
    """Kept URLs per step: the corpus's URLs less each stage's rejected/ in turn (the fused chain writes
    kept/ only for its last stage); the quality rules' sub-steps from the first rule that rejected a document
    (its drop reason's prefix; gopher_rep_ rows are gone before gopher_ is matched)."""
    prefixes = {"gopher_rep": "gopher_rep_", "gopher_quality": "gopher_", "c4": "c4_", "fineweb": "fineweb_"}
    kept, left = {}, set(urls)
    for stage in OUR_STAGES:
        rejected = parquet_rows(out / stage / "rejected", ["url", "drop_reason"])
        if stage == "quality":
            for step in RULE_STEPS:
                left -= {r["url"] for r in rejected if (r["drop_reason"] or "").startswith(prefixes[step])}
                kept[step] = set(left)
        left -= {r["url"] for r in rejected}
        kept[stage] = set(left)
    final = {r["url"] for r in parquet_rows(out / "dedup" / "kept", ["url"])}
    if final != kept["dedup"]:
        raise RuntimeError(f"{out}: dedup/kept is not the corpus less every rejected/ "
                           f"({len(final ^ kept['dedup'])} URLs differ)")
    return kept


def jsonl_urls(folder: Path) -> set[str]:
    urls = set()
    for path in sorted(folder.rglob("*.jsonl*")):
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as fh:
            urls.update(json.loads(line)["metadata"]["url"] for line in fh)
    return urls


def read_datatrove(out: Path) -> tuple[dict[str, set[str] | None], dict]:
    """Kept URLs per step, rebuilt from the final outputs and each filter's exclusion writer; the
    documents read (its reader's count) and the extraction timeouts from its stats."""
    removed = {step: jsonl_urls(out / "removed" / step) for step in ("langid", *RULE_STEPS, "dedup")}
    kept = {"quality": jsonl_urls(out / "quality"), "dedup": jsonl_urls(out / "dedup")}
    left = set(kept["quality"])
    for step in reversed(RULE_STEPS):
        kept[step] = set(left)
        left |= removed[step]
    kept["langid"] = set(left)
    kept["extract"] = left | removed["langid"]
    stats = json.loads((out / "logs" / "filter" / "stats.json").read_text())
    counts = {"ingest": None, "timeouts": 0}
    for step in stats:
        name, values = step.get("name", ""), step.get("stats", {})
        if "Warc" in name or "WARC" in name:
            counts["ingest"] = _stat(values.get("documents"))
        if "Trafilatura" in name:
            counts["timeouts"] = _stat(values.get("timeout"))
    return kept, counts


def _stat(value) -> int:
    return int(value.get("total", 0) if isinstance(value, dict) else (value or 0))


# ---------------------------------------------------------------- agreement, recall, Jaccard


def disagreement(a: set, b: set) -> float:
    return round(100 * len(a ^ b) / max(1, len(a | b)), 2)


def planted(manifest: dict) -> list[tuple[str, str]]:
    """(source URL, copy URL) of every planted pair."""
    by_key = {r["key"]: r["url"] for r in manifest["records"] if r["kind"] == "distinct"}
    return [(by_key[r["copy_of"]], r["url"]) for r in manifest["records"] if r["kind"] == "planted"]


def dedup_quality(kept: dict[str, set[str]], pairs: list[tuple[str, str]]) -> dict:
    reached = [(a, b) for a, b in pairs if a in kept["quality"] and b in kept["quality"]]
    caught = sum((a in kept["dedup"]) + (b in kept["dedup"]) == 1 for a, b in reached)
    copies = {b for _, b in pairs} | {a for a, _ in pairs}
    removed = kept["quality"] - kept["dedup"]
    return {"planted_pairs_reached": len(reached), "planted_caught": caught,
            "planted_recall_pct": round(100 * caught / max(1, len(reached)), 1),
            "removed_not_planted": len(removed - copies)}


def shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + NGRAM]) for i in range(max(1, len(words) - NGRAM + 1))}


def jaccard_stats(out: Path, manifest: dict, max_pairs: int = 2000) -> dict:
    """Word-5-gram Jaccard, on our extracted text, of planted pairs and of distinct variants of one page."""
    texts = {r["url"]: r["text"] for r in parquet_rows(out / "extract" / "kept", ["url", "text"])}
    rows = manifest["records"]
    pairs = {"planted": planted(manifest)}
    by_page: dict[int, list[str]] = {}
    for r in rows:
        if r["kind"] == "distinct":
            by_page.setdefault(r["page"], []).append(r["url"])
    rng = random.Random(0)
    pairs["distinct_same_page"] = sorted({tuple(sorted(rng.sample(urls, 2))) for urls in by_page.values()
                                          if len(urls) > 1 for _ in range(3)})  # up to 3 pairs a page
    result = {}
    for name, items in pairs.items():
        items = [(a, b) for a, b in items if texts.get(a) and texts.get(b)][:max_pairs]
        values = sorted(_jaccard(shingles(texts[a]), shingles(texts[b])) for a, b in items)
        result[name] = _summary(values)
    return result


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def _summary(values: list[float]) -> dict:
    if not values:
        return {"pairs": 0}
    pick = lambda q: round(values[min(len(values) - 1, int(q * len(values)))], 3)  # noqa: E731
    detect = [1 - (1 - v ** LSH_ROWS) ** LSH_BANDS for v in values]
    return {"pairs": len(values), "min": round(values[0], 3), "p5": pick(0.05), "median": pick(0.5), "p95": pick(0.95),
            "max": round(values[-1], 3), "lsh_detect_pct": round(100 * sum(detect) / len(detect), 1)}


# ---------------------------------------------------------------- the driver


def measure(size: int, work: Path, corpus: Path, manifest: dict, contenders: list[str], timeout: float) -> dict:
    results, kept_sets, pairs = {}, {}, planted(manifest)
    for name in contenders:
        if name == "ours-fused" and not fused_available():
            results[name] = {"skipped": "jobs/pipeline.py does not exist yet (FUSED hook in bench/bench_e2e.py)"}
            continue
        proc = subprocess.run([sys.executable, "-m", "bench.bench_e2e", "--worker", name, "--work", str(work),
                               "--corpus", str(corpus), "--dt-timeout", str(timeout)], capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            (work / f"{name}.log").write_text(proc.stdout + proc.stderr)
            if name == "ours-fused":
                results[name] = {"skipped": f"failed (see {work / f'{name}.log'})"}
                continue
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(line[len("RESULT "):])
        if name == "datatrove":
            kept, extra = read_datatrove(work / name)
            r.update(extra)
        else:
            kept = read_ours(work / name, {row["url"] for row in manifest["records"]})
            r["ingest"] = len(kept["ingest"])
        kept_sets[name] = kept
        r["kept"] = {step: len(kept[step]) if kept.get(step) is not None else None for step in STEPS}
        r["kept"]["ingest"] = r.pop("ingest")
        r.update(dedup_quality(kept, pairs))
        results[name] = r
    reference = kept_sets.get("datatrove")
    for name, kept in kept_sets.items():
        if reference is not None and name != "datatrove":
            results[name]["disagreement_pct"] = {s: disagreement(kept[s], reference[s]) for s in STEPS[1:]}
            dt = results["datatrove"]
            results[name]["vs_datatrove"] = {"cpu": round(results[name]["cpu_s"] / dt["cpu_s"], 2),
                                             "wall": round(results[name]["wall_s"] / dt["wall_s"], 2)}
    jaccard = jaccard_stats(work / "ours", manifest) if "ours" in kept_sets else {}
    return {"records": size, "corpus_bytes": manifest["bytes"], "source_pages": manifest["pages"],
            "planted_pairs": len(pairs), "settings": manifest["settings"], "jaccard": jaccard, "results": results}


LABELS = {"ours": "ours: 5 jobs, one Spark session, local[2]",
          "ours-fused": "ours: fused chain (jobs.pipeline), local[2]",
          "datatrove": "datatrove: FineWeb pipeline, LocalPipelineExecutor tasks=2 workers=2"}


def markdown(runs: list[dict]) -> str:
    lines = []
    for r in runs:
        s = r["settings"]
        lines += [f"### End to end vs datatrove ({r['records']:,} WARC records, "
                  f"{r['corpus_bytes'] / 2 ** 20:.0f} MiB gzip, {r['source_pages']} real pages, "
                  f"{r['planted_pairs']} planted near-copies ({s['dup_share']:.0%}))",
                  "", "ingest -> extract -> LID en -> Gopher repetition, Gopher quality, C4, FineWeb -> MinHash 14x8 "
                  "over word 5-grams; one fresh process tree each, 2 cores.", "",
                  "| contender | wall s | wall vs dt | CPU s | CPU vs dt | peak RSS tree MB | max one process MB | "
                  "ingest | extract | LID | gopher rep | gopher | C4 | FineWeb | dedup | planted recall | "
                  "removed, not planted |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, v in r["results"].items():
            if "skipped" in v:
                lines.append(f"| {LABELS[name]} | skipped: {v['skipped']} |" + " |" * 15)
                continue
            k, ratio = v["kept"], v.get("vs_datatrove", {"cpu": 1.0, "wall": 1.0})
            lines.append(f"| {LABELS[name]} | {v['wall_s']} | {ratio['wall']}x | {v['cpu_s']} | {ratio['cpu']}x | "
                         f"{v['peak_rss_tree_mb']} | {v['peak_rss_one_mb']} | "
                         + " | ".join(str(k[s]) for s in STEPS if s != "quality")
                         + f" | {v['planted_recall_pct']}% of {v['planted_pairs_reached']} | "
                           f"{v['removed_not_planted']} |")
        for name, v in r["results"].items():
            if "disagreement_pct" in v:
                d = v["disagreement_pct"]
                lines += ["", f"Kept sets, {name} vs datatrove, |A xor B| / |A u B| by URL: "
                          + ", ".join(f"{s} {d[s]}%" for s in STEPS[1:]) + "."]
        if "timeouts" in r["results"].get("datatrove", {}):
            lines.append(f"Datatrove extraction timeouts ({s.get('dt_timeout', '')} s a page): "
                         f"{r['results']['datatrove']['timeouts']}.")
        j = r["jaccard"]
        if j:
            lines.append("Word-5-gram Jaccard on our extracted text: " + "; ".join(
                f"{name} pairs (n={v['pairs']}) min {v.get('min')}, p5 {v.get('p5')}, median {v.get('median')}, "
                f"p95 {v.get('p95')}, max {v.get('max')}, 14x8 LSH catches {v.get('lsh_detect_pct')}%"
                for name, v in j.items() if v.get("pairs")) + ".")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--records", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--dup-share", type=float, default=0.2)
    parser.add_argument("--distinct-rate", type=float, default=0.3)
    parser.add_argument("--copy-rate", type=float, default=0.01)
    parser.add_argument("--dt-timeout", type=float, default=5.0, help="datatrove's trafilatura timeout per page, s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=CONTENDERS)
    parser.add_argument("--work")
    parser.add_argument("--corpus")
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.worker, Path(args.work), Path(args.corpus), args.dt_timeout)
        print("RESULT " + json.dumps(result), flush=True)
        return {}
    out, data, runs = Path(args.out), shared_data(), []
    for size in args.records:
        work = out / "e2e-work" / f"run-{size}"
        corpus = out / "e2e-work" / f"corpus-{size}"
        manifest = build_corpus(data, corpus, size, args)
        run = measure(size, work.resolve(), corpus.resolve(), manifest, args.only, args.dt_timeout)
        run["settings"]["dt_timeout"] = args.dt_timeout
        runs.append(run)
    result = {"runs": runs, "goal": "ours CPU <= 0.8x datatrove, wall <= datatrove, one process <= 1.5 GB, "
                                    "kept sets within 0.5% per step"}
    return save_result(out, "e2e", result, markdown(runs))


if __name__ == "__main__":
    main()
