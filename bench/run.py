"""Runs every benchmark and writes `runs/bench/results.md` (the README's benchmark table).

    python -m bench.run --out runs/bench      # `make bench`
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

BENCHMARKS = {"extract": "bench.bench_extract", "langid": "bench.bench_langid", "quality": "bench.bench_quality", "dedup": "bench.bench_dedup",
              "line_dedup": "bench.bench_line_dedup", "e2e": "bench.bench_e2e", "substring_dedup": "bench.bench_substring_dedup",
              "decontam": "bench.bench_decontam", "crawl": "bench.bench_crawl", "tokenize": "bench.bench_tokenize",
              "encoder_hostile": "bench.bench_encoder_hostile",
              "model": "bench.bench_model", "train": "bench.bench_train", "synthesis": "bench.bench_synthesis",
              "align": "bench.bench_align", "safety": "bench.bench_safety"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=sorted(BENCHMARKS))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        importlib.import_module(BENCHMARKS[name]).main(["--out", str(out)])
    parts = [(out / f"{name}.md").read_text() for name in args.only if (out / f"{name}.md").exists()]
    (out / "results.md").write_text("\n".join(parts))
    print(f"benchmarks written to {out / 'results.md'}")


if __name__ == "__main__":
    main()
