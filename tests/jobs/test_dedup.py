"""The dedup job on local Spark against a single-machine reference (datasketch MinHashLSH + union-find),
across partition counts, and on the real duplicate pages of ../shared/data/dolma-samples."""

from __future__ import annotations

import glob
import json
import random
from urllib.parse import urlsplit

import pytest
from datasketch import LeanMinHash, MinHashLSH

from jobs import dedup
from pipeline import components, io
from stages.dedup import DedupConfig, normalize_url, parse_order, survivor_key, text_key
from stages.extract import Extractor
from stages.minhash import signatures
from stages.warc import WarcReader

pytestmark = [pytest.mark.spark, pytest.mark.slow]
SET = ["--set", "dedup.num_perm=64", "--set", "dedup.bands=16", "--set", "dedup.rows=4"]
CONFIG = DedupConfig(num_perm=64, bands=16, rows=4)


def corpus(shared_data) -> list[dict]:
    """Real paragraphs, plus planted near duplicates, exact copies (case/punctuation) and URL copies."""
    paras = []
    for path in sorted(glob.glob(str(shared_data / "english-pd-nltk" / "state_union" / "*.txt")))[:12]:
        text = open(path, encoding="utf-8", errors="replace").read()
        paras += [" ".join(p.split()) for p in text.splitlines() if len(p.split()) >= 40]
    rng, rows = random.Random(7), []
    for i, text in enumerate(paras[:150]):
        rows.append({"id": f"p{i:04d}", "text": text, "url": f"https://example.org/{i}", "quality_score": rng.random()})
    for i in range(0, 150, 3):  # near duplicates: a few words replaced, a sentence of boilerplate added
        words = paras[i].split()
        for _ in range(rng.randint(1, 3)):
            words[rng.randrange(len(words))] = "edited"
        rows.append({"id": f"n{i:04d}", "text": " ".join(words) + " Subscribe to our newsletter.",
                     "url": f"https://mirror.example.net/{i}", "quality_score": rng.random()})
    for i in range(1, 150, 10):  # exact copies after normalisation, and same-URL copies
        rows.append({"id": f"e{i:04d}", "text": paras[i].upper() + "!!", "url": None, "quality_score": None})
        rows.append({"id": f"u{i:04d}", "text": paras[i + 1][:200], "url": f"HTTPS://EXAMPLE.ORG/{i + 1}/#x",
                     "quality_score": 0.99})
    boiler = " ".join(paras[-1].split()[:60])
    for i in range(40):  # one oversized bucket: the same boilerplate on many pages
        rows.append({"id": f"b{i:04d}", "text": f"{boiler} page {i}", "url": None, "quality_score": None})
    return rows


def reference(rows: list[dict], config: DedupConfig) -> dict[str, tuple[str, str]]:
    """id -> (reason, dup_of) with plain Python: dict groups, then datasketch LSH + union-find."""
    order = parse_order(config.survivor_order, set(rows[0]))
    rank = {r["id"]: survivor_key(r, order) for r in rows}
    parent: dict[str, tuple[str, str]] = {}
    rest = rows
    for reason, key in (("exact_dup", lambda r: text_key(r["text"])), ("url_dup", lambda r: normalize_url(r["url"]))):
        groups: dict = {}
        for r in rest:
            if key(r) is not None:
                groups.setdefault(key(r), []).append(r["id"])
        for ids in groups.values():
            best = min(ids, key=rank.get)
            parent.update({i: (reason, best) for i in ids if i != best})
        rest = [r for r in rest if r["id"] not in parent]
    params = config.minhash()
    lsh = MinHashLSH(num_perm=params.num_perm, params=(params.bands, params.rows))
    sigs = {r["id"]: LeanMinHash(seed=params.seed, hashvalues=s, scheme=params.scheme)
            for r, s in zip(rest, signatures([r["text"] for r in rest], params))}
    union = {i: i for i in sigs}

    def find(i):
        while union[i] != i:
            union[i] = union[union[i]]
            i = union[i]
        return i

    for i, sig in sigs.items():
        for j in lsh.query(sig):
            union[find(i)] = find(j)
        lsh.insert(i, sig)
    components_: dict = {}
    for i in sigs:
        components_.setdefault(find(i), []).append(i)
    for ids in components_.values():
        best = min(ids, key=rank.get)
        parent.update({i: ("near_dup", best) for i in ids if i != best})

    def final(i):
        while i in parent:
            i = parent[i][1]
        return i

    return {i: (reason, final(i)) for i, (reason, _) in parent.items()}


def run_job(spark, rows, tmp_path, name, partitions):
    inp = tmp_path / f"{name}-in"
    spark.createDataFrame(rows).repartition(partitions).write.parquet(str(inp))
    stats = dedup.main(["--input", str(inp), "--output", str(tmp_path / name), *SET])
    rejected = io.read_stage(spark, str(tmp_path / name), "rejected").collect()
    kept = io.read_stage(spark, str(tmp_path / name)).collect()
    return stats, {r["id"]: (r["drop_reason"], r["dup_of"]) for r in rejected}, kept


def test_spark_equals_reference_and_partitioning_does_not_matter(spark, tmp_path, shared_data):
    rows = corpus(shared_data)
    expected = reference(rows, CONFIG)
    stats1, got1, kept1 = run_job(spark, rows, tmp_path, "one", 1)
    stats5, got5, kept5 = run_job(spark, rows, tmp_path, "five", 5)
    assert got1 == got5 == expected
    assert sorted(r["id"] for r in kept1) == sorted(r["id"] for r in kept5)
    assert {"exact_dup", "url_dup", "near_dup"} <= set(stats1["by_reason"])
    counts = ("docs_in", "kept", "rejected", "by_reason")
    assert stats1["docs_in"] == len(rows) and [stats1[k] for k in counts] == [stats5[k] for k in counts]
    assert all(r["dup_of"] is None and r["drop_reason"] is None for r in kept1)
    assert {r["id"] for r in kept1}.isdisjoint(got1) and set(v[1] for v in got1.values()) <= {r["id"] for r in kept1}
    assert sum(i.startswith("b") for i in got1) == 39  # the boilerplate pages collapse to one
    assert set(kept1[0].asDict()) >= {"id", "text", "url", "quality_score", "dup_of", "drop_detail"}
    config = json.loads((tmp_path / "one" / "_config.json").read_text())
    assert config["config"]["dedup"]["num_perm"] == 64 and stats1["bands"] == 16


def test_exact_and_url_dedup_on_real_duplicate_pages(spark, tmp_path, shared_data):
    paths = sorted(str(p) for p in (shared_data / "dolma-samples").glob("*.warc.gz"))
    pages = [p for p in WarcReader().run([{"path": p} for p in paths]) if p["drop_reason"] is None]
    docs = [{k: d[k] for k in ("id", "url", "text")} for d in Extractor().run(pages) if d["drop_reason"] is None]
    first = docs[0]  # plus a copy of one page under a variant of its URL, with one sentence changed
    parts = urlsplit(first["url"].strip("<>"))  # same page: host upper-cased, default port, a fragment
    variant = f"{parts.scheme.upper()}://{parts.hostname.upper()}:443{parts.path}#top"
    docs.append({"id": "zz-variant", "url": variant, "text": first["text"].replace(".", ". Changed.", 1)})
    spark.createDataFrame(docs).write.parquet(str(tmp_path / "in"))
    stats = dedup.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "dedup"),
                        "--set", "dedup.near=false"])
    rejected = {r["id"]: r for r in io.read_stage(spark, str(tmp_path / "dedup"), "rejected").collect()}
    allenai = sorted(d["id"] for d in docs if d["url"].strip("<>") == "https://allenai.org/")
    assert len(allenai) == 3 and stats["by_reason"] == {"exact_dup": 2, "url_dup": 1}
    survivor = allenai[0]  # same text and length: the smallest id stays
    assert {i: (r["drop_reason"], r["dup_of"]) for i, r in rejected.items() if i in allenai} == {
        i: ("exact_dup", survivor) for i in allenai[1:]}
    longer = max((first, docs[-1]), key=lambda d: len(d["text"]))["id"]
    shorter = ({first["id"], "zz-variant"} - {longer}).pop()
    assert rejected[shorter]["drop_reason"] == "url_dup" and rejected[shorter]["dup_of"] == longer


def test_connected_components_match_union_find(spark):
    rng = random.Random(3)
    edges = [(rng.randrange(300), rng.randrange(300)) for _ in range(220)]
    edges += [(i, i + 1) for i in range(400, 440)]  # a long chain: the slow case for label propagation
    df = spark.createDataFrame(edges, "src long, dst long")
    got = {r["src"]: r["dst"] for r in components.connected_components(df).collect()}
    union = {}

    def find(i):
        union.setdefault(i, i)
        while union[i] != i:
            i = union[i]
        return i

    for a, b in edges:
        ra, rb = find(a), find(b)
        union[max(ra, rb)] = min(ra, rb)
    nodes = {n for e in edges for n in e}
    assert got == {n: find(n) for n in nodes if find(n) != n}


def test_incremental_batch_against_an_earlier_index(spark, tmp_path, shared_data):
    """Batch 2 checked against batch 1's index equals the reference over batch 1's survivors (always
    preferred) plus batch 2; batch 1's documents are never judged again."""
    rows = corpus(shared_data)
    random.Random(3).shuffle(rows)
    first, second = rows[: len(rows) // 2], rows[len(rows) // 2:]
    _, _, kept1 = run_job(spark, first, tmp_path, "batch1", 2)
    stats1 = tmp_path / "batch1" / "_stats.json"   # as written before `dedup.hash` existed: read as sha1
    stats1.write_text(json.dumps({k: v for k, v in json.loads(stats1.read_text()).items() if k != "hash"}))
    (stats1.parent / "._stats.json.crc").unlink(missing_ok=True)   # Hadoop's checksum of the old bytes
    inp = tmp_path / "batch2-in"
    spark.createDataFrame(second).repartition(3).write.parquet(str(inp))
    stats = dedup.main(["--input", str(inp), "--output", str(tmp_path / "batch2"), *SET,
                        "--set", f'dedup.index_from=["{tmp_path / "batch1"}"]'])
    got = {r["id"]: r["drop_reason"] for r in io.read_stage(spark, str(tmp_path / "batch2"), "rejected").collect()}
    old = [{**r.asDict(), "quality_score": 2.0} for r in kept1]  # earlier survivors win every tie
    expected = reference([{k: r[k] for k in ("id", "text", "url", "quality_score")} for r in old] + second, CONFIG)
    assert got == {i: reason for i, (reason, _) in expected.items() if i not in {r["id"] for r in old}}
    assert any(reason for reason in got.values()) and stats["docs_in"] == len(second)
    dup_of = {r["dup_of"] for r in io.read_stage(spark, str(tmp_path / "batch2"), "rejected").collect()}
    assert dup_of & {r["id"] for r in kept1}  # some new documents lose to old ones
    index = spark.read.parquet(str(tmp_path / "batch2" / "index")).select("id").collect()
    assert len(index) == len(kept1) + stats["kept"]
    with pytest.raises(ValueError, match="other key settings"):
        dedup.main(["--input", str(inp), "--output", str(tmp_path / "bad"),
                    "--set", f'dedup.index_from=["{tmp_path / "batch1"}"]'])
    with pytest.raises(ValueError, match="'hash': \\('sha1', 'xxh64'\\)"):
        dedup.main(["--input", str(inp), "--output", str(tmp_path / "bad-hash"), *SET, "--set", "dedup.hash=xxh64",
                    "--set", f'dedup.index_from=["{tmp_path / "batch1"}"]'])


def test_survivors_carry_their_cluster_size(spark, tmp_path, shared_data):
    """Planted clusters of known sizes (exact copies, URL copies and near copies mixed) through the job:
    each survivor's `dup_cluster_size` is its cluster's size, 1 without duplicates, null when rejected."""
    paras = [r["text"] for r in corpus(shared_data)[:60] if r["id"].startswith("p")]
    sizes = [1, 2, 3, 4, 7, 12] * 4
    rng, rows = random.Random(11), []
    for c, (text, size) in enumerate(zip(paras, sizes)):
        rows.append({"id": f"c{c:02d}-0", "text": text, "url": f"https://a.org/{c}", "quality_score": 0.9})
        for k in range(1, size):
            words = text.split()
            words[rng.randrange(len(words))] = "changed"
            kind = k % 3  # exact copy (case), same URL (other text), near copy (one word changed)
            copy = text.upper() if kind == 0 else " ".join(words) if kind == 2 else f"Short page {c}-{k}."
            url = f"https://a.org/{c}" if kind == 1 else f"https://b.org/{c}/{k}"
            rows.append({"id": f"c{c:02d}-{k}", "text": copy, "url": url, "quality_score": 0.5})
    _, got, kept = run_job(spark, rows, tmp_path, "clusters", 3)
    assert {r["id"]: r["dup_cluster_size"] for r in kept} == {f"c{c:02d}-0": s for c, s in enumerate(sizes)}
    expected = reference(rows, CONFIG)
    assert got == expected and {"exact_dup", "url_dup", "near_dup"} <= {v[0] for v in got.values()}
    rejected = io.read_stage(spark, str(tmp_path / "clusters"), "rejected").collect()
    assert all(r["dup_cluster_size"] is None for r in rejected)
