"""Pure parts of deduplication: the config, exact-text and URL keys, survivor order, per-batch keys.

The Spark job (`jobs/dedup.py`, graph logic in `pipeline/components.py`) groups documents by the keys
computed here; this module never sees more than one Arrow batch.

- Exact key: 16-byte BLAKE2b of `normalize_text(text)` (NFC, case folded, punctuation -> space,
  whitespace collapsed), so copies that differ only in case, punctuation or spacing collide. Texts
  that normalise to "" get no key (nothing to deduplicate; the quality stage drops them).
- URL key (`normalize_url`): scheme and host lower-cased, default ports (http 80, https 443) and the
  fragment dropped, userinfo dropped, an empty path becomes "/", one trailing slash is removed from
  other paths (`/a/` == `/a`), query kept as written. http and https stay distinct; "www." is kept.
- Incremental mode (`index_from`): each run writes `index/` (id and keys of its survivors, plus the
  index it was checked against), and a later batch (the next crawl or dump) is deduplicated against
  it: earlier documents always win, so a new copy of an old page is rejected with `dup_of` the old id.
- Survivor order (`survivor_order`): a list of "column [asc|desc]"; "text_length" is the text's length
  in code points; columns absent from the input are skipped; ties end on the smallest `id`. Nulls sort last.
- Cluster size (`CLUSTER_SIZE`, FineWeb-2's rehydration): every survivor carries the number of documents
  of this run its group holds, itself included (exact, URL and near duplicates all count; 1 for a
  document without duplicates); rejected rows carry null. Documents of earlier runs (`index_from`) are
  not counted. `upsample.cluster_repeats` (`stages/mixture.py`) turns it into repeat factors.

    keys = DedupKeys(DedupConfig()).batch(record_batch)   # id, _length, _text_key, _url_key, _bands
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from stages.minhash import HASHES, MinHashParams, band_keys, normalize_text, normalized_utf8, signatures
from common.recipe import require, require_fraction, require_positive

DEFAULT_PORTS = {"http": 80, "https": 443}
KEY_DEFAULTS = {"hash": "sha1"}  # key settings added later: what runs written before them used
CLUSTER_SIZE = "dup_cluster_size"
KEY_FIELDS = (
    pa.field("_length", pa.int64()),
    pa.field("_text_key", pa.binary()),
    pa.field("_url_key", pa.string()),
    pa.field("_bands", pa.list_(pa.binary())),
)


@dataclass(frozen=True)
class DedupConfig:
    exact: bool = True  # normalised-text duplicates -> exact_dup
    url: bool = True  # normalised-URL duplicates -> url_dup
    near: bool = True  # MinHash LSH near duplicates -> near_dup
    num_perm: int = 112  # FineWeb (Penedo et al. 2024): 112 hashes = 14 bands x 8 rows, word 5-grams
    bands: int = 14
    rows: int = 8
    threshold: float = 0.0  # > 0: choose bands x rows for this Jaccard threshold as datasketch does
    ngram: int = 5
    shingle: str = "word"  # "word", "char" (no spaces between words) or "auto" (per document)
    char_ngram: int = 5
    seed: int = 1  # datasketch's default
    scheme: str = "affine32"  # datasketch >= 2.0 default; "legacy" for datasketch < 2.0 signatures
    hash: str = "sha1"  # shingle hash: datasketch's SHA-1; "xxh64" is faster but not datasketch's signatures
    survivor_order: tuple[str, ...] = ("quality_score desc", "text_length desc", "id asc")
    max_iterations: int = 40  # connected components rounds before giving up (O(log^2 n) expected)
    index_from: tuple[str, ...] = ()  # earlier dedup outputs whose index/ this batch is checked against

    def __post_init__(self):
        require_positive(self, "num_perm", "bands", "rows", "ngram", "char_ngram", "max_iterations")
        require_fraction(self, "threshold")
        require(self.shingle in ("word", "char", "auto"), "shingle", self.shingle, "'word', 'char' or 'auto'")
        require(self.hash in HASHES, "hash", self.hash, "'sha1' or 'xxh64'")

    def key_settings(self) -> dict:
        """The settings that must match for keys of two runs to be comparable."""
        p = self.minhash()
        return {"num_perm": p.num_perm, "bands": p.bands, "rows": p.rows, "ngram": p.ngram, "seed": p.seed,
                "scheme": p.scheme, "shingle": p.shingle, "char_ngram": p.char_ngram, "hash": p.hash}

    def minhash(self) -> MinHashParams:
        common = dict(ngram=self.ngram, seed=self.seed, scheme=self.scheme, shingle=self.shingle,
                      char_ngram=self.char_ngram, hash=self.hash)
        if self.threshold > 0:
            return MinHashParams.for_threshold(self.threshold, self.num_perm, **common)
        return MinHashParams(num_perm=self.num_perm, bands=self.bands, rows=self.rows, **common)


def text_key(text: str | None) -> bytes | None:
    norm = normalize_text(text or "")
    return hashlib.blake2b(norm.encode(), digest_size=16).digest() if norm else None


def text_keys(texts: list[str | None]) -> list[bytes | None]:
    """`text_key` of each text, the batch normalised in one call of the C module when it is built."""
    blake2b = hashlib.blake2b
    return [blake2b(norm, digest_size=16).digest() if norm else None for norm in normalized_utf8(texts)]


def normalize_url(url: str | None) -> str | None:
    """The URL key described in the module docstring; None for empty or unparsable URLs."""
    url = (url or "").strip().strip("<>")  # some WARCs wrap target URIs in <...>
    if not url:
        return None
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None
    netloc = host if port in (None, DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    path = parts.path or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def parse_order(order: tuple[str, ...] | list[str], columns: set[str] | None = None) -> list[tuple[str, bool]]:
    """[(column, descending)] for the columns present (all when `columns` is None), ending with id asc."""
    parsed = []
    for item in order:
        name, *direction = item.split()
        if direction not in ([], ["asc"], ["desc"]):
            raise ValueError(f"survivor_order entry {item!r}: expected 'column', 'column asc' or 'column desc'")
        if name != "id" and (columns is None or name in columns or name == "text_length"):
            parsed.append((name, direction == ["desc"]))
    return parsed + [("id", False)]


def survivor_key(doc: dict, order: list[tuple[str, bool]]) -> tuple:
    """A sort key (smaller = preferred survivor) for one document dict; `text_length` computed."""
    key = []
    for name, desc in order:
        value = len(doc.get("text") or "") if name == "text_length" else doc.get(name)
        if value is None:
            key.append((1, 0))
        else:
            key.append((0, -value if desc else value))
    return tuple(key)


class DedupKeys:
    """Per Arrow batch: keeps every column but `text` and `url`, adds `KEY_FIELDS`."""

    def __init__(self, config: DedupConfig = DedupConfig()):
        self.config = config
        self.params = config.minhash()

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        return pa.schema([f for f in schema if f.name not in ("text", "url")] + list(KEY_FIELDS))

    def batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = batch.column("text").to_pylist()
        names = batch.schema.names
        urls = batch.column("url").to_pylist() if "url" in names else [None] * len(texts)
        keep = {n: batch.column(n) for n in names if n not in ("text", "url")}
        near = self.config.near and len(texts)
        keys = {
            "_length": [len(t or "") for t in texts],
            "_text_key": text_keys(texts) if self.config.exact else [None] * len(texts),
            "_url_key": [normalize_url(u) for u in urls] if self.config.url else [None] * len(texts),
            "_bands": band_keys(signatures(texts, self.params), self.params) if near else [None] * len(texts),
        }
        arrays = list(keep.values()) + [pa.array(keys[f.name], f.type) for f in KEY_FIELDS]
        return pa.RecordBatch.from_arrays(arrays, schema=self.output_schema(batch.schema))
