"""Language-ID benchmarks: accuracy on held-out text, and throughput per core.

    python -m bench.bench_langid --out runs/bench        # also run by `make bench`

1. langid.py's test corpus (~500-word documents; the languages lid.176 covers): share labelled right.
2. UDHR paragraphs for 20 of the most spoken languages: per-language accuracy.
3. Documents per second of the stage on one core (plain loop over the extracted benchmark pages).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.data import article_pages, save_result, shared_data
from stages.language import LanguageId, load_model, model_path

# ISO 639-3 file names of the UDHR corpus -> lid.176 labels, for 20 of the most spoken languages.
UDHR_TOP20 = {"eng": "en", "cmn_hans": "zh", "hin": "hi", "spa": "es", "fra": "fr", "arb": "ar", "ben": "bn",
              "por_BR": "pt", "rus": "ru", "urd": "ur", "ind": "id", "deu": "de", "jpn": "ja", "mar": "mr",
              "tel": "te", "tur": "tr", "tam": "ta", "vie": "vi", "kor": "ko", "ita": "it"}


def corpus_accuracy(data: Path, stage: LanguageId) -> dict:
    labels = {label.removeprefix("__label__") for label in load_model(model_path()).get_labels()}
    right = total = 0
    misses = []
    for path in sorted((data / "langid-py-testcorpus").glob("*.txt")):
        code = path.name.split(".")[0]
        if code not in labels:
            continue
        text = "\n".join(l for l in path.read_text(errors="replace").splitlines() if not l.startswith("#"))
        predicted = stage.predict(text)[0]
        right, total = right + (predicted == code), total + 1
        if predicted != code:
            misses.append(f"{path.name}->{predicted}")
    return {"docs": total, "accuracy": round(right / total, 4), "misses": misses}


def udhr_accuracy(data: Path, stage: LanguageId, min_chars: int = 40) -> dict:
    table = {}
    for name, code in UDHR_TOP20.items():
        path = data / "udhr-nltk" / "udhr2" / f"{name}.txt"
        if not path.exists():
            continue
        paragraphs = [p.strip() for p in path.read_text(errors="replace").splitlines() if len(p.strip()) >= min_chars]
        right = sum(stage.predict(p)[0] == code for p in paragraphs)
        table[code] = {"paragraphs": len(paragraphs), "accuracy": round(right / max(1, len(paragraphs)), 4)}
    return table


def throughput(data: Path, stage: LanguageId, repeats: int = 5) -> dict:
    texts = [gold for _, _, _, gold in article_pages(data)] * repeats
    stage.predict("warm up")
    started = time.perf_counter()
    for text in texts:
        stage.predict(text)
    seconds = time.perf_counter() - started
    return {"docs": len(texts), "seconds": round(seconds, 3), "docs_per_s": round(len(texts) / seconds, 1)}


def markdown(result: dict) -> str:
    c, t = result["corpus"], result["throughput"]
    lines = ["### Language ID (fastText lid.176.ftz)", "",
             f"langid.py test corpus: **{c['accuracy']:.3f}** of {c['docs']} documents right "
             f"(misses: {', '.join(c['misses']) or 'none'}).", "",
             f"Throughput on one core: **{t['docs_per_s']:.0f} docs/s** (extracted benchmark articles).", "",
             "| UDHR (paragraphs of 40+ chars) | " + " | ".join(result["udhr"]) + " |",
             "|---|" + "---|" * len(result["udhr"]),
             "| accuracy | " + " | ".join(f"{v['accuracy']:.2f}" for v in result["udhr"].values()) + " |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.bench_langid", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args(argv)
    data, out, stage = shared_data(), Path(args.out), LanguageId()
    out.mkdir(parents=True, exist_ok=True)
    result = {"corpus": corpus_accuracy(data, stage), "udhr": udhr_accuracy(data, stage),
              "throughput": throughput(data, stage)}
    return save_result(out, "langid", result, markdown(result))


if __name__ == "__main__":
    main()
