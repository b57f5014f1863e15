"""Exact substring dedup throughput against datatrove's exact-substrings pipeline, same documents, same run.

    python -m bench.bench_substring_dedup --out runs/bench   # writes runs/bench/substring_dedup.json and .md

Documents: the extraction benchmark's 181 gold article bodies (../shared/data), repeated `--copies`
times, ids `<copy>-<name>` (so every copy 0 comes first in id order, and the input file is in id
order: "first occurrence" means the same document for every contender). Repeats are planted and
recorded: in every copy after the first, each chunk of consecutive lines (>= 400 characters) is kept
verbatim with probability 0.3, otherwise 60% of its words are replaced by words of the corpus (no
50-token window survives that); and about every other document gets a passage of 300-600 characters
copied from an earlier document's gold text (quoted from another article) as a line of its own.
Every planted span is a later occurrence of text seen earlier, so all of it is due for removal; the
corpus's own natural repeats come on top.

Contenders, each in a fresh child process, warmed up once on 100 documents, then timed on all:
- `ours-job`: `jobs.substring_dedup` on Spark `local[1]` (k = 50 Qwen tokens), a Parquet folder in;
- `ours-pure`: `mark_substrings` + `SubstringDedup` on a list in one process (Parquet in/out with pyarrow);
- `datatrove`: `ESDatasetToSequence` -> `ESMergeSequences` -> suffix-array step -> `ESRangeRemover`
  (`ParquetReader` in, `ParquetWriter` out, `LocalPipelineExecutor` with 1 task, 1 worker). datatrove
  hands the suffix-array step to Google's Rust tool deduplicate-text-datasets (`make_suffix_array.py`,
  `self-similar --length-threshold`, `collect`), which cannot be installed here (no crates.io). A
  STAND-IN replaces only that step: it reads datatrove's merged sequence file, builds the suffix array
  of its uint16 tokens (= the byte suffix array restricted to even offsets; pydivsufsort) and the LCP,
  marks every occurrence but the first of each window of 2k bytes (k tokens), merges the ranges and
  writes them in the `.bytearange` text format `ESRangeRemover` reads ("out", then sorted "a b" lines).
  The stand-in keeps the first occurrence, as ours does, so both remove comparable spans. It is timed
  separately; datatrove is reported with and without it, and per step.
  datatrove stores tokens as uint16, so it needs a tokenizer below 65,536 tokens; its default ("gpt2"
  on the Hugging Face hub) is unreachable here, so a GPT-2-sized byte-level BPE (vocab 50,257, GPT-2's
  pre-tokenizer) is trained once with `tokenizers` and cached in the work folder: on the gold bodies
  plus the public-domain English of ../shared/data (english-pd-nltk, tinyshakespeare) - the gold
  bodies alone give only ~40k merges and words of one token each. Its path goes to
  `tokenizer_name_or_path` (datatrove's `load_tokenizer` accepts a local tokenizer.json).
  `ESRangeRemover` keeps documents with `min_doc_words=10` words left (its default 50; ours keeps 50
  characters: `min_remaining_chars`).

Measured: wall seconds of the timed run; CPU seconds of the child's whole process tree (Spark's JVM
and Python workers included; `bench.bench_line_dedup.TreeMeter`); peak resident memory of the tree;
documents/s per core = documents / wall (one core each). Bytes removed = UTF-8 bytes in - UTF-8
bytes of the kept documents (a dropped document counts whole). Planted recall: each planted span is
cut into 24-character pieces; a piece counts as removed when the document's kept text no longer
contains it (or the document was dropped); recall = removed piece bytes / piece bytes. The two sides
tokenize differently (50 Qwen tokens vs 50 tokens of the trained BPE), so the table gives both
tokenizers' bytes per token: k tokens is a slightly different number of bytes on each side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.bench_line_dedup import TreeMeter
from bench.data import article_pages, save_result, shared_data

K = 50  # window, in tokens, on both sides
KEEP = 0.3  # chance that a chunk of a later copy stays verbatim
MUTATE = 0.6  # share of words replaced in the other chunks
QUOTE = 0.5  # chance that a document gets a passage of an earlier one
CHUNK = 400  # characters: verbatim chunks are at least this long (~90 tokens)
PIECE = 24  # characters: the unit of the planted-recall check
VOCAB = 50_257  # GPT-2's
CONTENDERS = ("datatrove", "ours-job", "ours-pure")
WORD = re.compile(r"\S+")


# ---------------------------------------------------------------- the corpus, with planted repeats


def corpus(data: Path, copies: int, seed: int = 0) -> tuple[list[dict], list[tuple[str, str]]]:
    """(documents in id order, planted spans as (document id, text)): module docstring."""
    rng = random.Random(seed)
    golds = [(name, gold) for name, _, _, gold in article_pages(data)]
    vocab = [w for _, gold in golds for w in gold.split()][::7]
    docs, planted = [], []
    for copy in range(copies):
        for j, (name, gold) in enumerate(golds):
            doc_id = f"{copy:03d}-{name}"
            pieces = []  # (text, planted?)
            for chunk in chunks(gold):
                if copy == 0:
                    pieces.append((chunk, False))
                elif rng.random() < KEEP:
                    pieces.append((chunk, True))
                else:
                    pieces.append((mutate(chunk, rng, vocab), False))
            sources = range(j) if copy == 0 else [s for s in range(len(golds)) if s != j]
            if sources and rng.random() < QUOTE:
                passage = excerpt(golds[rng.choice(sources)][1], rng)
                if passage:
                    pieces.insert(rng.randint(0, len(pieces)), (passage, True))
            docs.append({"id": doc_id, "text": "\n".join(text for text, _ in pieces)})
            planted += [(doc_id, text) for text, is_planted in pieces if is_planted]
    return docs, planted


def chunks(text: str) -> list[str]:
    """Consecutive lines grouped into chunks of >= CHUNK characters (a short tail joins the last one)."""
    out, current = [], []
    for line in text.split("\n"):
        current.append(line)
        if sum(len(x) + 1 for x in current) > CHUNK:
            out.append("\n".join(current))
            current = []
    if current:
        if out:
            out[-1] = "\n".join([out[-1], *current])
        else:
            out.append("\n".join(current))
    return out


def mutate(text: str, rng: random.Random, vocab: list[str]) -> str:
    """MUTATE of the words replaced, line breaks kept."""
    return "\n".join(" ".join(rng.choice(vocab) if w and rng.random() < MUTATE else w for w in line.split(" "))
                     for line in text.split("\n"))


def excerpt(text: str, rng: random.Random) -> str:
    """300-600 characters of `text`, from a word's start to a word's end."""
    words = [m.span() for m in WORD.finditer(text)]
    if not words:
        return ""
    length = rng.randint(300, 600)
    i = rng.randrange(len(words))
    start = words[i][0]
    while i + 1 < len(words) and words[i][1] - start < length:
        i += 1
    return text[start:words[i][1]].strip()


def planted_recall(planted: list[tuple[str, str]], kept: dict[str, str]) -> float:
    """Share of the planted spans' bytes gone from the kept text (module docstring)."""
    removed = total = 0
    for doc_id, span in planted:
        text = kept.get(doc_id)
        for at in range(0, len(span) - PIECE + 1, PIECE):
            piece = span[at:at + PIECE]
            size = len(piece.encode("utf-8"))
            total += size
            removed += size if text is None or piece not in text else 0
    return removed / total if total else 0.0


# ---------------------------------------------------------------- datatrove's tokenizer


def gpt2_like_tokenizer(work: Path, data: Path) -> tuple[Path, float]:
    """(tokenizer.json of a byte-level BPE with GPT-2's vocabulary size, seconds spent training; 0 if cached)."""
    path = work / f"bpe-{VOCAB}.json"
    if path.exists():
        return path, 0.0
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    began = time.perf_counter()
    texts = [gold for _, _, _, gold in article_pages(data)]
    extra = [*sorted((data / "english-pd-nltk").glob("inaugural/*.txt")),
             *sorted((data / "english-pd-nltk").glob("state_union/*.txt")),
             *sorted((data / "english-pd-nltk").glob("genesis/english-*.txt")), data / "tinyshakespeare" / "input.txt"]
    texts += [p.read_text(encoding="utf-8", errors="replace") for p in extra if p.is_file()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # decode(encode(x)) == x, which
    tokenizer.decoder = decoders.ByteLevel()  # ESRangeRemover asserts for every document
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path, round(time.perf_counter() - began, 2)


# ---------------------------------------------------------------- timing the parts of one run


class Phases:
    """Wall and CPU seconds (this process) of named functions, by wrapping module attributes for a block."""

    def __init__(self, order: tuple[str, ...] = ()):
        self.order, self.wall, self.cpu = order, defaultdict(float), defaultdict(float)

    @contextlib.contextmanager
    def timing(self, label: str):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[label] += time.perf_counter() - wall
            self.cpu[label] += time.process_time() - cpu

    @contextlib.contextmanager
    def wrapped(self, targets: list[tuple[object, str, str]]):
        """Each (module, attribute, label): calls of module.attribute are timed under label."""
        originals = [(module, attr, getattr(module, attr)) for module, attr, _ in targets]

        def timed(original, label):
            def call(*args, **kwargs):
                with self.timing(label):
                    return original(*args, **kwargs)
            return call

        for (module, attr, original), (_, _, label) in zip(originals, targets):
            setattr(module, attr, timed(original, label))
        try:
            yield self
        finally:
            for module, attr, original in originals:
                setattr(module, attr, original)

    def result(self) -> dict:
        """{label: {wall_s, cpu_s}} in `order` (unlisted labels last)."""
        labels = sorted(self.wall, key=lambda x: self.order.index(x) if x in self.order else len(self.order))
        return {x: {"wall_s": round(self.wall[x], 3), "cpu_s": round(self.cpu[x], 3)} for x in labels}


# ---------------------------------------------------------------- the contenders (run in a child process)


def run_ours_job(inp: str, out: str, phases: Phases) -> dict:
    import stages.substring_dedup as stage
    from jobs import substring_dedup
    from pipeline import io

    targets = [(substring_dedup, "check_unique_ids", "check unique ids"),
               (substring_dedup, "corpus_tokens", "tokenize + sort + collect to driver"),
               (substring_dedup, "corpus_cuts", "cuts on driver (suffix array incl.)"),
               (stage, "suffix_array", SUFFIX_ARRAY),
               (io, "write_split", "join + removal + write kept/rejected + stats")]
    with phases.wrapped(targets), phases.timing("total"):
        substring_dedup.main(["--input", inp, "--output", out, "--set", f"substring_dedup.min_tokens={K}"])
    return {}


def run_ours_pure(inp: str, out: str, phases: Phases) -> dict:
    import stages.substring_dedup as stage
    from stages.substring_dedup import SubstringDedup, SubstringDedupConfig, mark_substrings

    config = SubstringDedupConfig(min_tokens=K)
    targets = [(stage, "encode", "tokenize"), (stage, "corpus_cuts", "cuts (suffix array incl.)"),
               (stage, "suffix_array", SUFFIX_ARRAY)]
    with phases.wrapped(targets), phases.timing("total"):
        with phases.timing("read parquet"):
            docs = pq.read_table(f"{inp}/docs.parquet").to_pylist()
        marked = mark_substrings(docs, config)
        with phases.timing("removal (SubstringDedup)"):
            rows = [r for r in SubstringDedup(config).run(marked) if r["drop_reason"] is None]
        with phases.timing("write parquet"):
            Path(out).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), f"{out}/kept.parquet", compression="zstd")
    return {}


def standin_suffix_array(folder: Path, k: int) -> int:
    """STAND-IN for deduplicate-text-datasets' `self-similar` + `collect` (module docstring); the number of ranges.

    Token starts are the even byte offsets: datatrove's 12-byte separators keep every token 2-aligned,
    so the byte suffix array restricted to even offsets is the suffix array of the uint16 sequence, and
    LCP >= 2k bytes there is LCP >= k tokens."""
    from pydivsufsort import divsufsort, kasai

    [sequence] = sorted(folder.glob("*.big_sequence"))
    tokens = np.ascontiguousarray(np.fromfile(sequence, dtype="<u2"), dtype=np.uint32)
    n = len(tokens)
    ranges: list[tuple[int, int]] = []
    if n >= k:
        sa = np.asarray(divsufsort(tokens), dtype=np.int64)
        lcp = np.asarray(kasai(tokens, sa), dtype=np.int64)  # lcp[i]: common prefix of sa[i] and sa[i + 1]
        first = np.concatenate(([True], lcp[:-1] < k))  # runs of suffixes sharing their first k tokens
        run = np.cumsum(first) - 1
        earliest = np.minimum.reduceat(sa, np.flatnonzero(first))[run]
        starts = np.sort(sa[sa != earliest])  # every occurrence but the first
        if len(starts):
            ends = starts + k
            reach = np.maximum.accumulate(ends)
            new = np.concatenate(([True], starts[1:] > reach[:-1]))  # merge overlapping and touching windows
            groups = np.flatnonzero(new)
            ranges = list(zip((2 * starts[groups]).tolist(),
                              (2 * np.maximum.reduceat(ends, groups)).tolist()))
    with open(folder / "dataset.bytearange", "w") as f:  # the format ESRangeRemover.get_bytearange parses
        f.write("out\n" + "".join(f"{a} {b}\n" for a, b in ranges))
    return len(ranges)


def run_datatrove(inp: str, out: str, phases: Phases, tokenizer: str) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.exact_substrings import ESDatasetToSequence, ESMergeSequences, ESRangeRemover
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    work = Path(out)
    es = work / "es"  # one folder: sequences, merged sequence, offsets, byte ranges (as datatrove's example)
    steps = [
        ("ESDatasetToSequence", [ParquetReader(inp), ESDatasetToSequence(str(es), tokenizer_name_or_path=tokenizer)]),
        ("ESMergeSequences", [ESMergeSequences(str(es), tasks_stage_1=1)]),
        ("STAND-IN suffix array (pydivsufsort)", None),
        ("ESRangeRemover", [ParquetReader(inp), ESRangeRemover(str(es), tokenizer_name_or_path=tokenizer,
                                                               min_doc_words=10),
                            ParquetWriter(str(work / "kept"))]),
    ]
    extra = {}
    with phases.timing("total"):
        for i, (label, pipeline) in enumerate(steps):
            with phases.timing(label):
                if pipeline is None:
                    extra["ranges"] = standin_suffix_array(es, K)
                else:
                    LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=str(work / f"logs{i}")).run()
    sizes = np.fromfile(next(es.glob("*.es_sequence.size")), dtype=np.uint64)
    extra["datatrove_tokens"] = int((sizes.sum() - 12 * len(sizes)) // 2)
    return extra


SUFFIX_ARRAY = "suffix array + LCP"  # nested in the cuts row
ORDER = ("ESDatasetToSequence", "ESMergeSequences", "STAND-IN suffix array (pydivsufsort)", "ESRangeRemover",
         "check unique ids", "tokenize + sort + collect to driver", "read parquet", "tokenize",
         "cuts on driver (suffix array incl.)", "cuts (suffix array incl.)", SUFFIX_ARRAY,
         "join + removal + write kept/rejected + stats", "removal (SubstringDedup)", "write parquet", "total")


def run_contender(name: str, inp: str, out: str, tokenizer: str) -> tuple[dict, dict]:
    phases = Phases(ORDER)
    if name == "datatrove":
        extra = run_datatrove(inp, out, phases, tokenizer)
    elif name == "ours-pure":
        extra = run_ours_pure(inp, out, phases)
    else:
        extra = run_ours_job(inp, out, phases)
    return phases.result(), extra


def kept_files(name: str, out: Path) -> list[Path]:
    folder = out if name == "ours-pure" else out / "kept"
    return sorted(folder.rglob("*.parquet"))


def worker(name: str, work: Path) -> dict:
    """Warm-up on 100 documents, then the timed run; the result as a dict."""
    from pipeline.spark import SparkConfig, spark_session

    tokenizer = str(work / f"bpe-{VOCAB}.json")
    session = spark_session("bench-substring-dedup", SparkConfig(), "local[1]") if name == "ours-job" \
        else contextlib.nullcontext()
    for folder in (work / f"out-warm-{name}", work / f"out-{name}"):  # datatrove skips tasks its old logs call done
        shutil.rmtree(folder, ignore_errors=True)
    with session:
        run_contender(name, str(work / "warm"), str(work / f"out-warm-{name}"), tokenizer)
        with TreeMeter() as meter:
            phases, extra = run_contender(name, str(work / "input"), str(work / f"out-{name}"), tokenizer)
    return {"wall_s": round(meter.wall, 2), "cpu_s": round(meter.cpu_s, 2), "peak_rss_mb": round(meter.peak / 2 ** 20),
            "phases": phases, **extra}


# ---------------------------------------------------------------- the driver


def measure(work: Path, docs: list[dict], planted: list[tuple[str, str]]) -> dict:
    total_bytes = sum(len(d["text"].encode("utf-8")) for d in docs)
    results = {}
    for name in CONTENDERS:
        began = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.bench_substring_dedup", "--worker", name,
                               "--work", str(work)], capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(line[len("RESULT "):])
        r["child_wall_s"] = round(time.perf_counter() - began, 1)
        kept = {}
        for path in kept_files(name, work / f"out-{name}"):
            table = pq.read_table(path, columns=["id", "text"]).to_pydict()
            kept.update(zip(table["id"], table["text"]))
        kept_bytes = sum(len(t.encode("utf-8")) for t in kept.values())
        r.update({"docs_per_s_core": round(len(docs) / r["wall_s"], 1), "kept_docs": len(kept),
                  "removed_bytes": total_bytes - kept_bytes,
                  "removed_share": round((total_bytes - kept_bytes) / total_bytes, 4),
                  "planted_recall": round(planted_recall(planted, kept), 4)})
        results[name] = r
    dt = results["datatrove"]
    standin = dt["phases"]["STAND-IN suffix array (pydivsufsort)"]
    dt["without_standin"] = {"wall_s": round(dt["wall_s"] - standin["wall_s"], 2),
                             "cpu_s": round(dt["cpu_s"] - standin["cpu_s"], 2)}
    dt["without_standin"]["docs_per_s_core"] = round(len(docs) / dt["without_standin"]["wall_s"], 1)
    for r in results.values():
        r["vs_datatrove"] = round(r["docs_per_s_core"] / dt["docs_per_s_core"], 2)
        r["vs_datatrove_without_standin"] = round(r["docs_per_s_core"] / dt["without_standin"]["docs_per_s_core"], 2)
    return results


def write_inputs(work: Path, docs: list[dict]) -> None:
    for name, rows in (("input", docs), ("warm", docs[:100])):
        (work / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), work / name / "docs.parquet")


LABELS = {"datatrove": "datatrove, 4 steps (suffix array: pydivsufsort STAND-IN for the Rust tool)",
          "ours-job": "ours, Spark job local[1]", "ours-pure": "ours, one process"}


def markdown(r: dict) -> str:
    res = r["results"]
    dt = res["datatrove"]
    qwen, bpe = r["bytes"] / r["qwen_tokens"], r["bytes"] / dt["datatrove_tokens"]
    lines = [f"### Exact substring dedup vs datatrove ({r['docs']:,} documents, {r['bytes'] / 1e6:.1f} MB; k = {K} "
             "tokens; one core each, warm, fresh process per row)", "",
             "| implementation | wall s | CPU s | peak RSS MB | docs/s per core | vs datatrove | "
             "vs datatrove w/o stand-in | kept docs | bytes removed | share removed | planted recall |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in res.items():
        lines.append(f"| {LABELS[name]} | {v['wall_s']} | {v['cpu_s']} | {v['peak_rss_mb']} | "
                     f"{v['docs_per_s_core']} | {v['vs_datatrove']}x | {v['vs_datatrove_without_standin']}x | "
                     f"{v['kept_docs']:,} | {v['removed_bytes']:,} | {v['removed_share']:.1%} | "
                     f"{v['planted_recall']:.1%} |")
        if name == "datatrove":
            w = dt["without_standin"]
            lines.append(f"| datatrove without the stand-in step | {w['wall_s']} | {w['cpu_s']} | - | "
                         f"{w['docs_per_s_core']} | - | - | - | - | - | - |")
    lines += ["", f"Planted repeats: {r['planted_bytes']:,} bytes ({r['planted_bytes'] / r['bytes']:.1%} of the input) "
              f"in {r['planted_spans']:,} spans, all later occurrences of earlier text; planted recall = share of "
              f"those bytes gone from the output (24-character pieces). Tokens: Qwen {r['qwen_tokens']:,} "
              f"({qwen:.2f} bytes/token, k = {K} tokens ~ {K * qwen:.0f} bytes); datatrove's trained byte-level BPE "
              f"(vocab {r['bpe_vocab']:,}) {dt['datatrove_tokens']:,} ({bpe:.2f} bytes/token, k ~ {K * bpe:.0f} "
              "bytes).",
              "", "Where the time goes (wall s of the timed run; a ↳ row is part of the row above):", "",
              "| implementation | step | wall s | CPU s (Python process) |", "|---|---|---|---|"]
    for name, v in res.items():
        for label, p in v["phases"].items():
            if label != "total":
                on_driver = label.startswith(("suffix array", "cuts"))  # the job's other steps run in Spark
                cpu = p["cpu_s"] if name != "ours-job" or on_driver else "-"
                shown = f"↳ {label}" if label == SUFFIX_ARRAY else label
                lines.append(f"| {name} | {shown} | {p['wall_s']:.2f} | {cpu} |")
        rest = v["phases"]["total"]["wall_s"] - sum(p["wall_s"] for label, p in v["phases"].items()
                                                    if label not in ("total", SUFFIX_ARRAY))
        if name != "datatrove":
            what = "session, read, report" if name == "ours-job" else "sort by id, cuts to rows"
            lines.append(f"| {name} | rest ({what}) | {rest:.2f} | - |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_substring_dedup", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--worker", choices=CONTENDERS)
    parser.add_argument("--work")
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, Path(args.work))), flush=True)
        return {}
    out = Path(args.out)
    work = out / "substring-dedup-work"
    data = shared_data()
    tokenizer, trained_s = gpt2_like_tokenizer(work, data)
    docs, planted = corpus(data, args.copies)
    write_inputs(work, docs)
    from tokenizers import Tokenizer

    from stages.substring_dedup import encode

    result = {"docs": len(docs), "bytes": sum(len(d["text"].encode("utf-8")) for d in docs), "copies": args.copies,
              "k": K, "planted_spans": len(planted), "planted_bytes": sum(len(t.encode("utf-8")) for _, t in planted),
              "qwen_tokens": sum(len(encode(d["text"])) for d in docs),
              "bpe_vocab": Tokenizer.from_file(str(tokenizer)).get_vocab_size(), "bpe_training_s": trained_s,
              "results": measure(work, docs, planted)}
    return save_result(out, "substring_dedup", result, markdown(result))


if __name__ == "__main__":
    main()
