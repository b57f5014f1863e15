"""KenLM perplexity with cc_net's text normalisation; head / middle / tail buckets.

    scorer = Perplexity(PerplexityConfig(models={"en": ".cache/kenlm/en.bin"}))
    scorer.perplexity("Some text.\nA second paragraph.", "en")       # 312.4...
    bucket(312.4, (250.0, 500.0))                                     # 'middle'

cc_net (Wenzek et al. 2020, "CCNet: Extracting High Quality Monolingual Datasets from Web Crawl Data")
normalises every line before training and scoring: lower case, accents removed, every digit -> 0, Unicode
punctuation -> its ASCII twin, non-printing characters removed. cc_net then splits words with a
SentencePiece model; here words come from `stages.quality.words.fast_word_tokens` (our own rule-based
split, no spaCy: punctuation split off; one word per CJK character for zh / ja), so `jobs/train_kenlm.py`
and this scorer see the same tokens. A document's perplexity is 10 ** (-sum of line log10 probabilities /
(words + one end-of-sentence per line)), as in cc_net. Buckets: perplexity <= the first cutoff is `head`,
<= the second `middle`, else `tail`; cc_net takes the cutoffs at the 30th and 60th percentiles of each
language (`jobs/perplexity.py` computes them on the data with Spark, or the recipe fixes them). The KenLM
model loads lazily, once per process.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from stages.base import Doc, Mapper, drop, keep
from common.fs import shipped
from stages.quality.words import fast_word_tokens

# Unicode punctuation -> ASCII (cc_net's `punct=1` normalisation), written out for the common marks.
PUNCT = str.maketrans({
    "，": ",", "。": ". ", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "＂": '"', "「": '"',
    "」": '"', "『": '"', "』": '"', "《": '"', "》": '"', "‘": "'", "’": "'", "‚": "'", "´": "'", "`": "'",
    "：": ":", "？": "?", "！": "!", "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ",
    "～": "~", "…": "...", "［": "[", "］": "]", "％": "%", "‹": '"', "›": '"', "【": "[", "】": "]",
})
DIGIT = re.compile(r"\d")
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0 and C1 control characters


@dataclass(frozen=True)
class PerplexityConfig:
    models: dict[str, str] = field(default_factory=dict)  # language -> KenLM model (.arpa or binary)
    default_lang: str = "en"  # used for documents without a `lang` column
    percentiles: tuple[float, ...] = (0.30, 0.60)  # cc_net's head / middle / tail split, per language
    cutoffs: dict[str, float] = field(default_factory=dict)  # fixed "<lang>_head" / "<lang>_middle" cutoffs
    exact_percentiles: bool = False  # True: exact percentiles (a sort); False: percentile_approx
    drop_buckets: tuple[str, ...] = ()  # e.g. ["tail"]: reject those documents as `perplexity_<bucket>`
    max_chars: int = 100_000  # characters of a document that are scored


@dataclass(frozen=True)
class TrainKenlmConfig:
    """Per-language n-gram training (`jobs/train_kenlm.py`); cc_net uses 5-grams."""

    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)  # language -> text files / globs / stages
    order: int = 5
    memory: str = "10%"  # lmplz -S: memory for sorting
    discount_fallback: bool = True  # small corpora: fall back when Kneser-Ney discounts cannot be estimated
    kenlm_bin: str = ""  # folder with lmplz and build_binary; empty: $KENLM_BIN or .cache/kenlm/bin


def kenlm_bin(path: str = "") -> Path:
    return Path(path or os.environ.get("KENLM_BIN") or Path(__file__).resolve().parents[2] / ".cache/kenlm/bin")


def train_lm(lines: Iterable[str], output: Path, config: TrainKenlmConfig, workdir: Path) -> dict:
    """Pipes model lines into `lmplz`, then `build_binary`s the ARPA file into `output`."""
    tools, arpa = kenlm_bin(config.kenlm_bin), workdir / f"{output.stem}.arpa"
    if not (tools / "lmplz").exists():
        raise FileNotFoundError(f"lmplz not found in {tools}: run `make kenlm` (tools/build_kenlm.sh)")
    command = [str(tools / "lmplz"), "-o", str(config.order), "-S", config.memory, "-T", str(workdir)]
    if config.discount_fallback:
        command.append("--discount_fallback")
    n_lines = n_tokens = 0
    with arpa.open("wb") as out, subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out,
                                                  stderr=subprocess.PIPE) as proc:
        for line in lines:
            proc.stdin.write(line.encode() + b"\n")
            n_lines, n_tokens = n_lines + 1, n_tokens + line.count(" ") + 1
        proc.stdin.close()
        errors = proc.stderr.read().decode(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"lmplz failed ({proc.returncode}): {errors[-2000:]}")
    subprocess.run([str(tools / "build_binary"), str(arpa), str(output)], check=True, capture_output=True)
    arpa.unlink()
    return {"lines": n_lines, "tokens": n_tokens, "bytes": output.stat().st_size}


def normalise(line: str) -> str:
    """cc_net's normalisation of one line: lower case, no accents, digits -> 0, ASCII punctuation."""
    line = line.strip().lower()
    if not line.isascii():  # ASCII lines have no Unicode punctuation and no accents
        line = line.translate(PUNCT)
        line = "".join(ch for ch in unicodedata.normalize("NFD", line) if unicodedata.category(ch) != "Mn")
    return CONTROL.sub("", DIGIT.sub("0", line))


def model_lines(text: str, lang: str | None = None) -> list[str]:
    """The lines KenLM sees for a document: normalised, split into words, blank lines left out."""
    out = []
    for line in (text or "").split("\n"):
        tokens = fast_word_tokens(normalise(line), lang)
        if tokens:
            out.append(" ".join(tokens))
    return out


def perplexity_of(scores: list[float], lengths: list[int]) -> float | None:
    """10 ** (-sum log10 p / tokens); `lengths` count words + 1 (end of sentence) per line."""
    total = sum(lengths)
    return 10.0 ** (-sum(scores) / total) if total else None


def bucket(value: float | None, cutoffs: tuple[float, float] | None) -> str | None:
    if value is None or cutoffs is None:
        return None
    return "head" if value <= cutoffs[0] else "middle" if value <= cutoffs[1] else "tail"


@functools.cache
def load_lm(path: str):
    import kenlm

    path = shipped(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"KenLM model not found at {path}; run `make train-kenlm`")
    return kenlm.Model(path)


class Perplexity(Mapper):
    """Adds `perplexity` (None for languages without a model) and, with fixed cutoffs, `perplexity_bucket`."""

    name = "perplexity"
    adds = (pa.field("perplexity", pa.float64()), pa.field("perplexity_bucket", pa.string()))

    def __init__(self, config: PerplexityConfig = PerplexityConfig()):
        self.config = config

    def model_files(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.config.models.values())))

    def perplexity(self, text: str, lang: str | None = None) -> float | None:
        path = self.config.models.get(lang or self.config.default_lang)
        if path is None:
            return None
        model = load_lm(path)
        lines = model_lines(text[: self.config.max_chars], lang)
        return perplexity_of([model.score(l, bos=True, eos=True) for l in lines],
                             [l.count(" ") + 2 for l in lines])

    def fixed_cutoffs(self, lang: str) -> tuple[float, float] | None:
        c = self.config.cutoffs
        if f"{lang}_head" in c and f"{lang}_middle" in c:
            return c[f"{lang}_head"], c[f"{lang}_middle"]
        return None

    def map(self, doc: Doc) -> Doc:
        lang = doc.get("lang") or self.config.default_lang
        value = self.perplexity(doc.get("text") or "", lang)
        out = {**doc, "perplexity": value, "perplexity_bucket": bucket(value, self.fixed_cutoffs(lang))}
        if out["perplexity_bucket"] in self.config.drop_buckets:
            return drop(out, f"perplexity_{out['perplexity_bucket']}", f"{value:.1f}")
        return keep(out)
