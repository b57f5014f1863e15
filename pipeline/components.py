"""Spark graph steps of deduplication: survivor ranks, group survivors, LSH star edges, connected components.

Used by `jobs/dedup.py`. Nothing here collects pairs or documents to the driver; the driver only
sees counts for the convergence check of connected components.

- `rank_nodes`: one global sort by the survivor order gives every document a long `rank` that grows
  with it (smaller = preferred survivor). The order is total (it ends on the unique `id`), so ranks
  compare the same way however the input is partitioned: survivors are deterministic.
- `group_losers`: within each group of equal key, every member but the minimum rank loses to it.
- `band_edges`: within a bucket (band index, band bytes) every member links to the bucket's minimum
  rank: star edges, O(bucket) instead of O(bucket^2), so boilerplate shared by thousands of pages
  costs one edge per page.
- `connected_components`: alternating large-star / small-star (Kiveris et al., "Connected Components
  in MapReduce and Beyond", SoCC 2014) until every edge points from a node to its component minimum.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline import schemas
from stages.dedup import DedupConfig, DedupKeys, parse_order

log = logging.getLogger(__name__)
REASONS = {"exact": "exact_dup", "url": "url_dup", "near": "near_dup"}


def find_duplicates(docs: DataFrame, config: DedupConfig, min_partitions: int = 0,
                    prior: DataFrame | None = None) -> tuple[DataFrame, DataFrame]:
    """(verdicts, nodes): verdicts are (id, drop_reason, dup_of) for every duplicate in `docs`, `dup_of`
    the id of the kept document; nodes are the documents' keys (for the index).

    Exact duplicates first, then URL duplicates among the rest, then near duplicates among what is
    left; a loser's `dup_of` follows the chain to the document that is finally kept. `prior` (an
    earlier run's index: id, _text_key, _url_key, _bands) joins every step with ranks below all new
    documents, so earlier documents always win and are never judged again.
    """
    order = parse_order(config.survivor_order, set(docs.columns))
    nodes = rank_nodes(doc_keys(docs, config, [c for c, _ in order], min_partitions), order)
    _check_unique_ids(nodes)
    every = nodes if prior is None else nodes.unionByName(prior_nodes(prior), allowMissingColumns=True)
    losers, rest = {}, every
    if config.exact:
        losers["exact"] = group_losers(rest, "_text_key")
        rest = rest.join(losers["exact"], "rank", "left_anti")
    if config.url:
        losers["url"] = group_losers(rest, "_url_key")
        rest = rest.join(losers["url"], "rank", "left_anti")
    if config.near:
        near = connected_components(band_edges(rest), config.max_iterations)
        losers["near"] = near.select(F.col("src").alias("rank"), F.col("dst").alias("rep"))
    return _verdicts(nodes, every, losers), nodes


INDEX_COLUMNS = ("id", "_text_key", "_url_key", "_bands")


def prior_nodes(index: DataFrame) -> DataFrame:
    """An earlier run's index as nodes ranked before every new document (negative ranks, by id)."""
    ordered = index.select(*INDEX_COLUMNS).orderBy("id")
    return ordered.withColumn("rank", -1 - F.monotonically_increasing_id()).localCheckpoint()


def survivor_index(nodes: DataFrame, verdicts: DataFrame, prior: DataFrame | None) -> DataFrame:
    """The index a later run checks against: keys of this run's survivors plus the prior index."""
    kept = nodes.join(verdicts.select("id"), "id", "left_anti").select(*INDEX_COLUMNS)
    return kept if prior is None else kept.unionByName(prior.select(*INDEX_COLUMNS))


def doc_keys(docs: DataFrame, config: DedupConfig, order_cols: list[str], min_partitions: int = 0) -> DataFrame:
    """id, order columns and the `stages.dedup.KEY_FIELDS`, computed per Arrow batch by `DedupKeys`."""
    wanted = ["id", "text", *(["url"] if "url" in docs.columns else []),
              *(c for c in order_cols if c in docs.columns and c not in ("id", "text", "url"))]
    narrow = docs.select(*wanted)
    parts = min_partitions or 2 * docs.sparkSession.sparkContext.defaultParallelism
    if narrow.rdd.getNumPartitions() < parts:
        narrow = narrow.repartition(parts)
    stage = DedupKeys(config)
    out = stage.output_schema(schemas.arrow(narrow.schema))

    def run(batches):
        for batch in batches:
            yield stage.batch(batch)

    return narrow.mapInArrow(run, schemas.spark(out))


def _check_unique_ids(nodes: DataFrame) -> None:
    clash = nodes.groupBy("id").count().where("count > 1").limit(1).collect()
    if clash:
        raise ValueError(f"dedup needs unique ids; id {clash[0]['id']!r} occurs {clash[0]['count']} times")


def _verdicts(nodes: DataFrame, every: DataFrame, losers: dict[str, DataFrame]) -> DataFrame:
    """Unions the losers with their reasons and follows each rep through the later steps; only the
    documents of `nodes` are judged, reps may be any node of `every` (prior documents included)."""
    verdicts = None
    for step, pairs in losers.items():
        tagged = pairs.withColumn("drop_reason", F.lit(REASONS[step]))
        verdicts = tagged if verdicts is None else verdicts.unionByName(tagged)
    if verdicts is None:
        return nodes.select("id", F.lit(None).cast("string").alias("drop_reason"), F.col("id").alias("dup_of")).limit(0)
    for step in ("url", "near"):
        if step in losers:
            hop = losers[step].select(F.col("rank").alias("rep"), F.col("rep").alias("next"))
            verdicts = verdicts.join(hop, "rep", "left").select(
                "rank", "drop_reason", F.coalesce("next", "rep").alias("rep"))
    ids = nodes.select("rank", "id")
    survivors = every.select(F.col("rank").alias("rep"), F.col("id").alias("dup_of"))
    return verdicts.join(ids, "rank").join(survivors, "rep").select("id", "drop_reason", "dup_of")


def rank_nodes(keys: DataFrame, order: list[tuple[str, bool]]) -> DataFrame:
    """`keys` sorted by `order` [(column, descending)] plus a `rank` long in that order, checkpointed.

    `text_length` in `order` reads the `_length` column. The ranks come from
    `monotonically_increasing_id` after a global sort: increasing along the sort, not contiguous.
    """
    cols = []
    for name, desc in order:
        col = F.col("_length" if name == "text_length" else name)
        cols.append(col.desc_nulls_last() if desc else col.asc_nulls_last())
    return keys.orderBy(*cols).withColumn("rank", F.monotonically_increasing_id()).localCheckpoint()


def group_losers(nodes: DataFrame, key: str) -> DataFrame:
    """(rank, rep) for every node whose `key` (non-null) it shares with a node of smaller rank."""
    keyed = nodes.where(F.col(key).isNotNull()).select(key, "rank")
    best = keyed.groupBy(key).agg(F.min("rank").alias("rep"), F.count("*").alias("n")).where("n > 1")
    return keyed.join(best.drop("n"), key).where("rank != rep").select("rank", "rep")


def band_edges(nodes: DataFrame) -> DataFrame:
    """(src, dst) star edges, dst < src: each member of an LSH bucket to the bucket's minimum rank."""
    banded = nodes.where(F.col("_bands").isNotNull()).select("rank", F.posexplode("_bands").alias("band", "key"))
    buckets = banded.groupBy("band", "key").agg(F.min("rank").alias("dst"), F.count("*").alias("n")).where("n > 1")
    edges = banded.join(buckets.drop("n"), ["band", "key"]).where("rank != dst")
    return edges.select(F.col("rank").alias("src"), "dst").distinct()


def connected_components(edges: DataFrame, max_iterations: int = 40) -> DataFrame:
    """(src, dst): every non-minimum node of each component and the component's minimum node.

    `edges` are (src, dst) longs, undirected; self loops are ignored. Raises RuntimeError when the
    graph has not converged after `max_iterations` rounds of large-star + small-star.
    """
    current = _oriented(edges).localCheckpoint()
    for round_ in range(1, max_iterations + 1):
        current = _small_star(_large_star(current)).localCheckpoint()
        if _is_star_forest(current):
            log.info("connected components converged after %d rounds", round_)
            return current
    raise RuntimeError(f"connected components did not converge in {max_iterations} rounds")


def _oriented(edges: DataFrame) -> DataFrame:
    """Each undirected edge once, as (larger, smaller)."""
    return (edges.where("src != dst")
            .select(F.greatest("src", "dst").alias("src"), F.least("src", "dst").alias("dst")).distinct())


def _large_star(edges: DataFrame) -> DataFrame:
    """For each node u, links every larger neighbour to m(u), the minimum of u and its neighbours."""
    both = edges.union(edges.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
    least = both.groupBy("src").agg(F.least(F.min("dst"), F.col("src")).alias("m"))
    linked = both.join(least, "src").where("dst > src")
    return linked.select(F.col("dst").alias("src"), F.col("m").alias("dst")).distinct()


def _small_star(edges: DataFrame) -> DataFrame:
    """For each node u with smaller neighbours, links u and those neighbours to the smallest of them.

    `edges` are oriented (src > dst), so the smaller neighbours of u are the dst of its edges.
    """
    least = edges.groupBy("src").agg(F.min("dst").alias("m"))
    neighbours = edges.join(least, "src").select(F.col("dst").alias("src"), F.col("m").alias("dst"))
    return neighbours.union(least.select("src", F.col("m").alias("dst"))).where("src != dst").distinct()


def _is_star_forest(edges: DataFrame) -> bool:
    """True when every node has one parent and no parent has a parent: each component is one star
    around its minimum node, which large-star and small-star both leave unchanged."""
    two_parents = edges.groupBy("src").count().where("count > 1")
    parents = edges.select(F.col("dst").alias("src")).distinct()
    chained = edges.select("src").join(parents, "src", "leftsemi")
    return two_parents.isEmpty() and chained.isEmpty()
