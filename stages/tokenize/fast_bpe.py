"""The fast exact Qwen encoder: the C scanner and merger of stages/tokenize/_qwen_bpe.c, with tiktoken as fallback.

    encoder = fast_encoder(QwenTokenizer().path)   # cached per process
    ids = encoder.encode(text)                     # np.ndarray[int32], == encoding.encode_ordinary(text)

tiktoken spends most of its time in its backtracking regex; the C module matches Qwen's pre-tokenizer
pattern with a hand-written scanner over a table of character classes (letter, number, White_Space)
and merges each piece exactly as tiktoken does, about 2-2.5x faster on one core; a pre-token of a
megabyte (base64, minified code, a run of one character) merges in O(n log n), like tiktoken's own
long-piece path, where rescanning took minutes (bench/bench_encoder_hostile.py). The table comes from
the `regex` package's Unicode data; the code points recent Unicode versions added (where Python's
`unicodedata` disagrees) are calibrated against the installed tiktoken, whose Unicode version may be
older (tests/stages/test_fast_bpe.py checks every code point in several contexts). Lone surrogates become
U+FFFD first, as in tiktoken's `encode_ordinary`. Without the built module (no compiler at set-up, or
a cluster environment without it) the encoder is tiktoken: the same ids, slower; `.native` says which.

Building and calibrating the table takes about a second, so it is cached beside the ranks file
(assets/qwen.tiktoken.classes), written by `make setup` (tools/assets.py) and before each cluster submit
(tools/dist.py ships it in assets.tar.gz); a process then only reads it. The cache is keyed by what the
table depends on (`table_key`: the ranks file, this builder's source, the built C module, the Unicode
versions of regex, unicodedata and tiktoken) and checksummed: a stale, truncated or foreign cache is
never used; the process warns, builds the table itself and rewrites the cache (atomically) for the next.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.fs import shipped

log = logging.getLogger(__name__)

LETTER, NUMBER, SPACE = 1, 2, 4
# Unicode White_Space, what `\s` matches in tiktoken's regex engine (str.isspace() also takes U+001C-001F)
WHITE_SPACE = [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
               0x205F, 0x3000]


# contexts in which letters, numbers and other characters give different tiktoken ids
PROBES = ["x{c}y", " {c}a", "  {c}", "1{c}1", "!{c}b", "{c}{c}", "\n{c} ", "'{c}", " {c}\n", "{c}  x", "a {c} 12",
          "{c}'s", "\r\n{c}\t"]


def unicode_classes() -> tuple[np.ndarray, np.ndarray]:
    """One byte per code point (LETTER for \\p{L}, NUMBER for \\p{N}, SPACE for White_Space) from the
    `regex` package's Unicode data, and the code points whose class Python's older `unicodedata`
    disagrees on (assigned in recent Unicode versions)."""
    import regex
    import unicodedata

    table, older = np.zeros(0x110000, np.uint8), np.zeros(0x110000, np.uint8)
    every = "".join(map(chr, range(0x110000)))
    for pattern, bit in ((r"\p{L}+", LETTER), (r"\p{N}+", NUMBER)):
        for m in regex.finditer(pattern, every):
            table[m.start():m.end()] |= bit
    for c in np.nonzero(table)[0].tolist():
        kind = unicodedata.category(chr(c))[0]
        older[c] = LETTER if kind == "L" else NUMBER if kind == "N" else 0
    table[WHITE_SPACE] |= SPACE
    older[WHITE_SPACE] |= SPACE
    return table, np.nonzero(table != older)[0]


def char_classes(module, tokens: list[bytes], reference) -> bytes:
    """The class table, calibrated against the installed tiktoken: each disputed code point takes the
    class (letter, number or neither) under which the C encoder gives tiktoken's ids in every probe."""
    table, disputed = unicode_classes()
    regex_classes, candidates = table[disputed].copy(), {}
    for cls in (regex_classes, *(np.full(len(disputed), k, np.uint8) for k in (LETTER, NUMBER, 0))):
        trial = table.copy()
        trial[disputed] = cls
        candidates.setdefault(bytes(cls), (cls, module.Encoder(tokens, trial.tobytes())))

    def settle(indices: np.ndarray) -> bool:
        """Gives the disputed code points at `indices` the first candidate's classes that match tiktoken."""
        text = "|".join(p.format(c=chr(c)) for c in disputed[indices].tolist() for p in PROBES)
        expected = reference.encode_ordinary(text)
        for cls, encoder in candidates.values():
            if np.frombuffer(encoder.encode(text), np.int32).tolist() == expected:
                table[disputed[indices]] = cls[indices]
                return True
        return False

    def calibrate(indices: np.ndarray) -> None:   # a whole run at once, halving it where it does not settle
        if not settle(indices):
            if len(indices) == 1:
                table[disputed[indices]] = regex_classes[indices]
            else:
                calibrate(indices[:len(indices) // 2])
                calibrate(indices[len(indices) // 2:])

    for start in range(0, len(disputed), 256):
        calibrate(np.arange(start, min(start + 256, len(disputed))))
    return table.tobytes()


CACHE_MAGIC = b"qwenforge char classes v1"   # the cache file's first line; a new layout gets a new one


def cache_path(ranks: Path) -> Path:
    """Where the calibrated class table of a ranks file is cached: beside it, `<ranks name>.classes`."""
    return ranks.with_name(ranks.name + ".classes")


def table_key(module, ranks: Path) -> dict[str, str]:
    """What the calibrated table depends on: the ranks, the code that builds it (its source, so any edit
    counts), the C encoder it was calibrated with, and the Unicode data of regex, unicodedata and tiktoken.
    OSError when the builder's source cannot be read (then no cache is trusted)."""
    import inspect
    import unicodedata

    import regex
    import tiktoken

    builder = "".join(map(inspect.getsource, (unicode_classes, char_classes))) + repr((LETTER, NUMBER, SPACE,
                                                                                        WHITE_SPACE, PROBES))
    digest = lambda data: hashlib.sha256(data).hexdigest()
    return {"ranks": digest(ranks.read_bytes()), "builder": digest(builder.encode()),
            "module": digest(Path(module.__file__).read_bytes()), "regex": regex.__version__,
            "unicodedata": unicodedata.unidata_version, "tiktoken": tiktoken.__version__}


def read_cache(path: Path, key: dict[str, str]) -> bytes | None:
    """The class table cached at `path`, if it is whole and was built under `key`; else None (with a
    warning when a cache is there but stale or corrupt)."""
    try:
        magic, header, payload = path.read_bytes().split(b"\n", 2)
        meta = json.loads(header)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):   # unreadable, or too few lines or a garbled header: truncated or foreign
        meta = None
    if not isinstance(meta, dict) or magic != CACHE_MAGIC:
        problem = "not a class table cache (corrupt, or another layout)"
    elif meta.get("key") != key:
        problem = "stale (built for another ranks file, builder, C module or Unicode version)"
    elif hashlib.sha256(payload).hexdigest() != meta.get("sha256"):
        problem = "corrupt (truncated or changed: checksum mismatch)"
    else:
        table = zlib.decompress(payload)
        if len(table) == 0x110000:
            return table
        problem = "corrupt (wrong size)"
    log.warning("class table cache %s is %s; building the table in this process", path, problem)
    return None


def write_cache(path: Path, key: dict[str, str], table: bytes) -> Path:
    """Writes the cache atomically: a temporary file in the same folder, flushed, then renamed over `path`,
    so a reader sees the old cache or the whole new one, and a crash leaves no partial file."""
    payload = zlib.compress(table, 9)   # ~3 KB: the table is mostly zeros
    header = json.dumps({"key": key, "sha256": hashlib.sha256(payload).hexdigest()}, sort_keys=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\n".join((CACHE_MAGIC, header.encode(), payload)))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)   # mkstemp's 0600 would hide it from other users of a shared assets/
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def class_table(module, ranks: Path, tokens: list[bytes], reference: Callable[[], object],
                strict: bool = False) -> bytes:
    """The calibrated class table: from the cache beside `ranks` when it is valid, else built here (~1 s)
    and cached for the next process. `reference()` gives the tiktoken encoding to calibrate against (only
    called to build). `strict`: a cache that cannot be keyed or written is an error (set-up), not a
    warning (a worker, whose assets folder may be read-only)."""
    try:
        key = table_key(module, ranks)
    except OSError as error:
        if strict:
            raise
        log.warning("cannot key the class table cache (%s); building the table in this process", error)
        return char_classes(module, tokens, reference())
    path = cache_path(ranks)
    table = read_cache(path, key)
    if table is None:
        table = char_classes(module, tokens, reference())
        try:
            write_cache(path, key, table)
        except OSError as error:
            if strict:
                raise
            log.warning("cannot write the class table cache %s (%s); each process will build it", path, error)
    return table


def ensure_cache(ranks_path: str) -> Path | None:
    """Makes sure the class table cache beside the ranks file is valid, building it if it is missing or
    stale; returns its path, or None when the C module is not built (nothing to cache)."""
    from stages.tokenize.tokenizer import load_encoding

    module, ranks = _native_module(), Path(shipped(ranks_path))
    if module is None:
        return None
    class_table(module, ranks, rank_tokens(ranks_path), lambda: load_encoding(ranks_path), strict=True)
    return cache_path(ranks)


def rank_tokens(ranks_path: str) -> list[bytes]:
    """tokens[rank]: the bytes of each mergeable token of the ranks file."""
    from stages.tokenize.tokenizer import load_encoding, read_ranks

    path = Path(shipped(ranks_path))
    if not path.exists():
        load_encoding(ranks_path)   # raises its "not found: run `make setup`" error
    ranks = read_ranks(path)
    tokens = [b""] * len(ranks)
    for token, rank in ranks.items():
        tokens[rank] = token
    return tokens


def _native_module():
    try:
        from stages.tokenize import _qwen_bpe
    except ImportError:
        try:
            import _qwen_bpe   # the copy tools/dist.py puts in a cluster environment's site-packages
        except ImportError:
            return None
    return _qwen_bpe


class FastEncoder:
    """`encode(text)` -> int32 ids of the text with no special tokens, like tiktoken's `encode_ordinary`;
    with `native=False` (or no built module) tiktoken itself computes them."""

    def __init__(self, ranks_path: str, native: bool = True):
        self.ranks_path = ranks_path
        module = _native_module() if native else None
        self.native = None
        if module is None:
            if native:
                log.warning("stages.tokenize._qwen_bpe is not built (run `make setup`); tokenizing with tiktoken")
            return
        tokens = rank_tokens(ranks_path)
        table = class_table(module, Path(shipped(ranks_path)), tokens, lambda: self.reference)
        self.native = module.Encoder(tokens, table)

    @functools.cached_property
    def reference(self):
        """The tiktoken encoding: the fallback, and what the table is calibrated against (loaded on first use:
        with a valid cache the native encoder never needs it)."""
        from stages.tokenize.tokenizer import load_encoding

        return load_encoding(self.ranks_path)

    def encode(self, text: str) -> np.ndarray:
        try:
            return self._encode(text)
        except UnicodeEncodeError:   # lone surrogates become U+FFFD, as tiktoken's encode_ordinary does
            return self._encode(without_surrogates(text))

    def _encode(self, text: str) -> np.ndarray:
        if self.native is not None:
            return np.frombuffer(self.native.encode(text), np.int32)
        # tiktoken's numpy output skips the Python list (ids < 2**31, so the view is exact)
        return self.reference.encode_to_numpy(text, allowed_special=set(), disallowed_special=()).view(np.int32)


def without_surrogates(text: str) -> str:
    """`text` with each lone surrogate (not encodable as UTF-8) replaced by U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@functools.cache
def fast_encoder(ranks_path: str, native: bool = True) -> FastEncoder:
    return FastEncoder(ranks_path, native)
