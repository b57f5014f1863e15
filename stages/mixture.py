"""Upsampling math: per-source and quality-bucket weights, or target token shares -> repeat factors.

A document of group g = (source, bucket) with repeat factor r_g appears floor(r_g) times, plus once
more in epoch floor(r_g) when u(id, epoch) < t_g, with u a seeded hash of id and epoch mapped to
[0, 1). With t_g = frac(r_g) every document is an independent fair coin; a small group then misses
its token target by the luck of a few long documents. So t_g is calibrated on a histogram of the
group's tokens over u (`threshold`): the documents under t_g hold frac(r_g) of the group's tokens,
to within one bin of `BINS`. Either way the choice depends only on (seed, id, epoch): reruns and
repartitioning give the same copies.

Weights (`source_weights` x `bucket_weights` x `cluster_repeats`) are repeat factors directly. Target shares
{source: share} give r_s = share_s * T / tokens_s (times the bucket weight in the denominator's
token count), with T the recipe's `total_tokens`, or, when 0, the smallest total that drops no
document (max_s tokens_s / share_s), as Qwen2's sec. 3.1 up-samples the high-quality sources.

Cluster repeats (FineWeb-2's rehydration: documents whose near-duplicate cluster was large are
repeated more, as the dedup removed their copies): `cluster_repeats` lists [lo, hi, factor] rows, a
document whose `dup_cluster_size` (written by the dedup job; missing or null = 1) lies in [lo, hi]
(hi 0 = no upper limit) gets that factor, one outside every range 1. The size range becomes the
third part of the document's group (source, bucket, range), so the factor multiplies the source and
bucket weights, weighs the tokens target shares are computed from as bucket weights do, and each
group is calibrated on its own.

    factors = repeat_factors({("wiki", ""): 1000, ("web", ""): 9000}, MixtureConfig(target_shares={"wiki": 0.3, "web": 0.7}))
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from stages.base import Doc, Mapper, Stage, drop, keep
from common.recipe import require
from stages.tokenize.tokenizer import QwenTokenizer

BINS = 4096  # histogram bins over u for calibration: error <= 1/4096 of a group's tokens
Group = tuple[str, ...]  # (source, bucket[, size range]); bucket "" without bucket weights, range only with cluster_repeats


@dataclass(frozen=True)
class MixtureConfig:
    source_weights: dict[str, float] = field(default_factory=dict)  # repeat factor per source (default 1)
    bucket_weights: dict[str, float] = field(default_factory=dict)  # repeat factor per quality bucket (default 1)
    bucket_column: str = "quality_bucket"
    target_shares: dict[str, float] = field(default_factory=dict)  # token share per source; replaces source_weights
    total_tokens: int = 0  # with target_shares: 0 = the smallest total that drops nothing
    calibrate: bool = True  # calibrate fractional repeats on the token histogram (see module docstring)
    seed: int = 0
    tokenizer: str = ""  # for documents without `n_tokens`; empty: $QWEN_TIKTOKEN or assets/qwen.tiktoken
    cluster_repeats: tuple[tuple[float, ...], ...] = ()  # [[lo, hi, factor], ...]: dup cluster size range -> factor
    cluster_column: str = "dup_cluster_size"

    def __post_init__(self):
        require(self.total_tokens >= 0, "total_tokens", self.total_tokens, ">= 0")
        for table in ("source_weights", "bucket_weights", "target_shares"):
            for key, value in getattr(self, table).items():
                require(value >= 0, f"{table}.{key}", value, ">= 0")
        ranges = cluster_ranges(self)
        for (lo, hi, _), (lo2, _, _) in zip(ranges, ranges[1:]):
            require(hi and hi < lo2, "cluster_repeats", self.cluster_repeats, "size ranges that do not overlap")


def cluster_ranges(config: MixtureConfig) -> list[tuple[int, int, float]]:
    """`cluster_repeats` checked and sorted: (lo, hi, factor), hi 0 = no upper limit."""
    ranges = []
    for row in config.cluster_repeats:
        ok = len(row) == 3 and row[0] >= 1 and row[0] == int(row[0]) and row[1] == int(row[1]) and row[2] >= 0
        require(ok and (row[1] == 0 or row[1] >= row[0]), "cluster_repeats", list(row),
                "[lo, hi, factor] with integers 1 <= lo <= hi (hi 0: no limit) and factor >= 0")
        ranges.append((int(row[0]), int(row[1]), float(row[2])))
    return sorted(ranges)


def range_label(lo: int, hi: int) -> str:
    return f"{lo}+" if hi == 0 else f"{lo}-{hi}"


def cluster_label(size, config: MixtureConfig) -> str:
    """The size range of a cluster size (None = 1) as the group names it; "" outside every range."""
    size = 1 if size is None else int(size)
    return next((range_label(lo, hi) for lo, hi, _ in cluster_ranges(config) if lo <= size and (hi == 0 or size <= hi)), "")


def group_weight(group: Group, config: MixtureConfig) -> float:
    """The bucket weight times the cluster-range factor of a group (the part shared by all sources)."""
    factor = {range_label(lo, hi): f for lo, hi, f in cluster_ranges(config)}.get(group[2], 1.0) if len(group) > 2 else 1.0
    return config.bucket_weights.get(group[1], 1.0) * factor


def uniform(seed: int, doc_id: str, epoch: int) -> float:
    """A number in [0, 1) from a hash of (seed, id, epoch)."""
    digest = hashlib.blake2b(f"{seed}\0{doc_id}\0{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2 ** 64


def repeat_factors(tokens: dict[Group, int], config: MixtureConfig) -> dict[Group, float]:
    """Repeat factor per (source, bucket) from the recipe's weights or target shares."""
    bucket = {g: group_weight(g, config) for g in tokens}
    if not config.target_shares:
        return {g: config.source_weights.get(g[0], 1.0) * bucket[g] for g in tokens}
    weighted: dict[str, float] = {}
    for g, n in tokens.items():
        weighted[g[0]] = weighted.get(g[0], 0.0) + n * bucket[g]
    shares = normalised_shares(config.target_shares, weighted)
    total = config.total_tokens or max(weighted[s] / shares[s] for s in shares if shares[s] > 0)
    per_source = {s: shares.get(s, 0.0) * total / weighted[s] if weighted[s] else 0.0 for s in weighted}
    return {g: per_source[g[0]] * bucket[g] for g in tokens}


def normalised_shares(targets: dict[str, float], present: dict[str, float]) -> dict[str, float]:
    """Targets of the sources present, summing to 1; a source with tokens but no target is an error."""
    missing = sorted(s for s, n in present.items() if n and s not in targets)
    if missing:
        raise ValueError(f"upsample.target_shares has no share for source(s) {missing}")
    kept = {s: v for s, v in targets.items() if present.get(s)}
    total = sum(kept.values())
    return {s: v / total for s, v in kept.items()}


def histogram_bin(u: float) -> int:
    return min(int(u * BINS), BINS - 1)


def threshold(histogram: dict[int, float], fraction: float) -> float:
    """The u below which the histogram (tokens per bin of u) holds `fraction` of its tokens."""
    total = sum(histogram.values())
    if fraction <= 0 or total <= 0:
        return 0.0
    goal, before = fraction * total, 0.0
    for b in sorted(histogram):
        if before + histogram[b] >= goal:
            return (b + (goal - before) / histogram[b]) / BINS
        before += histogram[b]
    return 1.0


def copies(factor: float, u_next: float, cut: float | None = None) -> int:
    """How many times a document appears: floor(factor), plus one if u of that epoch is under the cut."""
    whole = math.floor(factor)
    return whole + int(u_next < (factor - whole if cut is None else cut))


# ---------------------------------------------------------------- stages


class CountTokens(Mapper):
    """Adds `n_tokens` as the tokenize stage counts them (Qwen tokens + <|endoftext|>) when missing."""

    name = "count_tokens"
    adds = (pa.field("n_tokens", pa.int64()),)

    def __init__(self, config: MixtureConfig = MixtureConfig()):
        self.tokenizer = QwenTokenizer(config.tokenizer or None)

    def model_files(self) -> tuple[str, ...]:
        return (self.tokenizer.path,)

    def map(self, doc: Doc) -> Doc:
        if doc.get("n_tokens") is not None:
            return doc
        return {**doc, "n_tokens": len(self.tokenizer.encoding.encode_ordinary(doc.get("text") or "")) + 1}


def group_of(doc: Doc, config: MixtureConfig) -> Group:
    bucket = doc.get(config.bucket_column) if config.bucket_weights else None
    group = (str(doc.get("source") or "unknown"), "" if bucket is None else str(bucket))
    return (*group, cluster_label(doc.get(config.cluster_column), config)) if config.cluster_repeats else group


class HistogramBin(Mapper):
    """Adds `mix_group` and `u_bin`, the bin of u(id, floor(factor)): input of `threshold` per group."""

    name = "histogram_bin"
    adds = (pa.field("mix_group", pa.string()), pa.field("u_bin", pa.int32()))

    def __init__(self, config: MixtureConfig, factors: dict[Group, float]):
        self.config, self.factors = config, factors

    def map(self, doc: Doc) -> Doc:
        group = group_of(doc, self.config)
        u = uniform(self.config.seed, doc["id"], math.floor(self.factors.get(group, 1.0)))
        return {**doc, "mix_group": "\0".join(group), "u_bin": histogram_bin(u)}


class Repeat(Stage):
    """Each document `copies` times: `epoch` 0.. (ids `id`, `id#1`, ...; `orig_id`); none: `downsampled`."""

    name = "repeat"
    adds = (pa.field("orig_id", pa.string()), pa.field("epoch", pa.int32()))

    def __init__(self, config: MixtureConfig, factors: dict[Group, float], cuts: dict[Group, float] | None = None):
        self.config, self.factors, self.cuts = config, factors, cuts or {}

    def process(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        for doc in docs:
            group = group_of(doc, self.config)
            factor = self.factors.get(group, 1.0)
            n = copies(factor, uniform(self.config.seed, doc["id"], math.floor(factor)), self.cuts.get(group))
            if n == 0:
                yield drop({**doc, "orig_id": doc["id"], "epoch": 0}, "downsampled", f"repeat factor {factor:.4f}")
            for epoch in range(n):
                new_id = doc["id"] if epoch == 0 else f"{doc['id']}#{epoch}"
                yield keep({**doc, "id": new_id, "orig_id": doc["id"], "epoch": epoch})


def calibrated_cuts(histograms: dict[Group, dict[int, float]], factors: dict[Group, float]) -> dict[Group, float]:
    """The cut of each group's fractional epoch (see module docstring)."""
    return {g: threshold(h, factors[g] - math.floor(factors[g])) for g, h in histograms.items() if g in factors}


def token_shares(tokens: dict[str, float]) -> dict[str, float]:
    total = sum(tokens.values())
    return {s: n / total for s, n in sorted(tokens.items())} if total else {}


def instruction_factor(base_tokens: int, instruction_tokens: int, ratio: float) -> float:
    """Repeat factor that makes instruction data `ratio` of the tokens of (base + instructions)."""
    if not 0 <= ratio < 1:
        raise ValueError(f"the instruction ratio must be in [0, 1), got {ratio}")
    if instruction_tokens == 0:
        return 0.0
    return ratio * base_tokens / ((1 - ratio) * instruction_tokens)
