"""Language-ID benchmarks: accuracy on held-out text, and throughput per core.

    python -m bench.bench_langid --out runs/bench        # also run by `make bench`

1. langid.py's test corpus (~500-word documents): share labelled right, on two sets of documents:
   `covered`, every document in a language lid.176 has (files of languages langid.py does not know,
   `xx_.name.txt`, included; Bokmal `nb` counted as lid.176's `no`), and `langid_py_languages`, those of
   them in langid.py's own 97 languages. langid.py itself (the corpus's tool, an independent model) is
   scored on the same documents in the same run as the reference.
2. UDHR paragraphs for 20 of the most spoken languages: per-language accuracy.
3. Documents per second of the stage on one core (plain loop over the extracted benchmark pages).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.data import article_pages, save_result, shared_data
from stages.language import LanguageId, load_model, model_path

# ISO 639-3 file names of the UDHR corpus -> lid.176 labels, for 20 of the most spoken languages. The corpus
# has no Telugu file: Tagalog, next by speakers, takes its place.
UDHR_TOP20 = {"eng": "en", "cmn_hans": "zh", "hin": "hi", "spa": "es", "fra": "fr", "arb": "ar", "ben": "bn",
              "por_BR": "pt", "rus": "ru", "urd": "ur", "ind": "id", "deu": "de", "jpn": "ja", "mar": "mr",
              "tgl": "tl", "tur": "tr", "tam": "ta", "vie": "vi", "kor": "ko", "ita": "it"}


ALIASES = {"nb": "no"}  # the corpus's code -> lid.176's label for the same language


def corpus_documents(data: Path, labels: set[str]) -> list[tuple[str, str, bool, str]]:
    """(file name, language, in langid.py's languages, text without the '#' header) for every document
    of the corpus in a language of `labels`."""
    docs = []
    for path in sorted((data / "langid-py-testcorpus").glob("*.txt")):
        code = path.name.split(".")[0]
        lang = ALIASES.get(code.rstrip("_"), code.rstrip("_"))
        if lang in labels and path.name != "SOURCE.txt":
            text = "\n".join(l for l in path.read_text(errors="replace").splitlines() if not l.startswith("#"))
            docs.append((path.name, lang, not code.endswith("_"), text))
    return docs


def langid_py():
    """langid.py's classify (None when the package is missing: the reference is then left out)."""
    try:
        from langid.langid import LanguageIdentifier, model
    except ImportError:
        return None
    identifier = LanguageIdentifier.from_modelstring(model)

    def classify(text: str) -> str:
        lang = identifier.classify(text)[0]
        return ALIASES.get(lang, lang)
    return classify


def scores(docs: list, predict) -> dict:
    misses = [f"{name}->{got}" for name, lang, _, text in docs if (got := predict(text)) != lang]
    return {"docs": len(docs), "accuracy": round(1 - len(misses) / max(1, len(docs)), 4), "misses": misses}


def corpus_accuracy(data: Path, stage: LanguageId) -> dict:
    labels = {label.removeprefix("__label__") for label in load_model(model_path()).get_labels()}
    covered = corpus_documents(data, labels)
    sets = {"covered": covered, "langid_py_languages": [d for d in covered if d[2]]}
    reference = langid_py()
    out = {name: {"lid176": scores(docs, lambda t: stage.predict(t)[0])} for name, docs in sets.items()}
    for name, docs in sets.items():
        if reference:
            out[name]["langid_py"] = scores(docs, reference)
    return out


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
    names = {"covered": "every language lid.176 covers", "langid_py_languages": "langid.py's languages only"}
    lines = ["### Language ID (fastText lid.176.ftz)", "",
             "| langid.py test corpus | documents | lid.176.ftz (ours) | langid.py (reference) |", "|---|---|---|---|"]
    for key, row in c.items():
        ref = f"{row['langid_py']['accuracy']:.3f}" if "langid_py" in row else "not installed"
        lines.append(f"| {names[key]} | {row['lid176']['docs']} | **{row['lid176']['accuracy']:.3f}** | {ref} |")
    lines += ["", f"lid.176 misses: {', '.join(c['covered']['lid176']['misses']) or 'none'}.", "",
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
