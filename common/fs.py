"""Files by URI: local paths, `file:`, `hdfs://`, `s3://` / `s3a://`, `gs://`, for tasks and the trainer.

    filesystem("s3a://bucket/shards")         # -> (pyarrow S3FileSystem, "bucket/shards")
    glob("s3://bucket/shards/train", "*.parquet"), read_bytes(uri), read_table(uri, columns)
    for folder, subfolders, files in walk("s3://bucket/run"): ...    # os.walk, for a URI too
    put_file("/tmp/x.parquet", "s3://bucket/out/x.parquet")   # atomic where the store allows
    write_bytes("s3://bucket/run/report.html", page)          # the same, from bytes in memory
    with staged("s3://bucket/ckpt/step-000010", last=["trainer_state.json"]) as folder: ...   # write, then upload
    with local_copy("s3://bucket/ckpt/step-000010", names=["model.safetensors"]) as folder: ...

Remote schemes go through `pyarrow.fs` (HDFS needs libhdfs on the node). S3 (`s3`, `s3a`, `s3n`) reads
the usual AWS environment: credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_PROFILE), AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for an S3-compatible server (MinIO, Ceph, moto),
AWS_REGION or AWS_DEFAULT_REGION. A local path is tested, listed and deleted with the os module, as
before; Parquet and `put_file` reach it through pyarrow's LocalFileSystem.

Writes: a local or HDFS file is written under a temporary name and renamed; an object store has no
rename, but an object appears only when its upload completes (a failed copy deletes it), so a folder
there commits by writing a marker file last, which readers check for (`staged(..., last=[...])`).
Spark's driver lists and globs through Hadoop instead (pipeline/hadoop.py). `shipped(path)` finds a
model file sent with the job (`spark-submit --files`, `FILES=` in the Makefile) on an executor that
lacks the driver's path.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

REMOTE_SCHEMES = {"hdfs", "viewfs", "s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss"}
ARROW_SCHEME = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}          # Hadoop's names -> pyarrow's
OBJECT_STORES = {"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss"}  # no atomic rename
COPY_BLOCK = 8 << 20


def is_remote(path: str | os.PathLike) -> bool:
    return urlparse(str(path)).scheme.lower() in REMOTE_SCHEMES


def as_path(path: str | os.PathLike) -> Path | str:
    """A local path as a Path (`file:` stripped), a remote URI as the string it is."""
    return str(path) if is_remote(path) else Path(local_path(str(path)))


def join(base: str | os.PathLike, *names: str) -> str:
    """`base/name/...` for a local folder or a URI (a URI's `//` is kept, which pathlib would fold)."""
    return posixpath.join(str(base), *names) if is_remote(base) else os.path.join(str(base), *names)


def filesystem(path: str | os.PathLike):
    """(pyarrow FileSystem, path inside it) for a local path or a URI of REMOTE_SCHEMES."""
    from pyarrow import fs

    path = str(path)
    scheme = urlparse(path).scheme.lower()
    if scheme not in REMOTE_SCHEMES:
        return fs.LocalFileSystem(), os.path.abspath(local_path(path))
    uri = ARROW_SCHEME.get(scheme, scheme) + path[len(scheme):]
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    if uri.startswith("s3:") and (endpoint or region):   # else from_uri asks AWS for the bucket's region
        parsed = urlparse(uri)
        return _s3(endpoint, region, os.getpid()), (parsed.netloc + parsed.path).rstrip("/")
    return fs.FileSystem.from_uri(uri)


@functools.lru_cache(maxsize=8)
def _s3(endpoint: str, region: str, pid: int):
    """One S3 client per endpoint, region and process (a forked worker builds its own); credentials
    come from the AWS SDK's usual chain (environment, profile, instance role)."""
    from pyarrow import fs

    if not endpoint:
        return fs.S3FileSystem(region=region)
    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    return fs.S3FileSystem(endpoint_override=parsed.netloc, scheme=parsed.scheme, region=region or "us-east-1")


def open_binary(path: str) -> IO[bytes]:
    """Opens `path` for sequential binary reading, whatever its scheme."""
    if is_remote(path):
        remote, inner = filesystem(path)
        return remote.open_input_stream(inner)
    return open(local_path(path), "rb")


def read_bytes(path: str | os.PathLike) -> bytes:
    with open_binary(str(path)) as f:
        return f.read()


def read_table(path: str | os.PathLike, columns: list[str] | None = None):
    """One Parquet file as a pyarrow Table."""
    import pyarrow.parquet as pq

    where, inner = filesystem(path)
    return pq.read_table(inner, columns=columns, filesystem=where)


def _info(path: str | os.PathLike):
    where, inner = filesystem(path)
    return where.get_file_info(inner)


def exists(path: str | os.PathLike) -> bool:
    return _info(path).type.name != "NotFound" if is_remote(path) else os.path.exists(local_path(str(path)))


def is_file(path: str | os.PathLike) -> bool:
    return _info(path).type.name == "File" if is_remote(path) else os.path.isfile(local_path(str(path)))


def is_dir(path: str | os.PathLike) -> bool:
    """A folder; on an object store, a prefix that holds objects."""
    return _info(path).type.name == "Directory" if is_remote(path) else os.path.isdir(local_path(str(path)))


def glob(folder: str | os.PathLike, pattern: str) -> list[str]:
    """The entries of `folder` (not its subfolders' contents) whose names match `pattern`, sorted, as
    paths or URIs under `folder`; none when `folder` does not exist."""
    if is_remote(folder):
        from pyarrow import fs

        where, inner = filesystem(folder)
        names = [f.base_name for f in where.get_file_info(fs.FileSelector(inner, allow_not_found=True))]
    else:
        local = local_path(str(folder))
        names = os.listdir(local) if os.path.isdir(local) else []
    return sorted(join(folder, name) for name in names if fnmatch.fnmatchcase(name, pattern))


def walk(top: str | os.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk` for a local folder or a URI: top-down (folder, subfolder names, file names), folders as
    paths or URIs under `top`; prune the subfolder names in place to skip them (each folder visited is
    one listing request on an object store). Nothing when `top` is not a folder."""
    if not is_remote(top):
        yield from os.walk(local_path(str(top)))
        return
    from pyarrow import fs

    where, inner = filesystem(top)
    if where.get_file_info(inner).type != fs.FileType.Directory:
        return
    pending = [(str(top), inner)]
    while pending:
        folder, path = pending.pop()
        entries = where.get_file_info(fs.FileSelector(path, allow_not_found=True))
        subfolders = sorted(e.base_name for e in entries if e.type == fs.FileType.Directory)
        files = sorted(e.base_name for e in entries if e.type == fs.FileType.File)
        yield folder, subfolders, files
        pending += [(join(folder, name), posixpath.join(path, name)) for name in reversed(subfolders)]


def remove(path: str | os.PathLike) -> None:
    """Deletes a file or a folder with everything in it; nothing when it is missing."""
    if not is_remote(path):
        local = local_path(str(path))
        shutil.rmtree(local) if os.path.isdir(local) else Path(local).unlink(missing_ok=True)
        return
    where, inner = filesystem(path)
    kind = where.get_file_info(inner).type.name
    if kind == "Directory":
        where.delete_dir(inner)
    elif kind == "File":
        where.delete_file(inner)


def put_file(local: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copies the local file `local` to `path`, atomically where the store allows: a local or HDFS
    file is written under a temporary name and renamed; on an object store the object appears when its
    upload completes, and one whose copy failed is deleted."""
    where, inner = filesystem(path)
    store = urlparse(str(path)).scheme.lower() in OBJECT_STORES
    target = inner if store else posixpath.join(posixpath.dirname(inner), f".{posixpath.basename(inner)}.partial")
    if not store:
        where.create_dir(posixpath.dirname(inner), recursive=True)
    try:
        with open(local, "rb") as src, where.open_output_stream(target) as dst:
            shutil.copyfileobj(src, dst, COPY_BLOCK)
    except BaseException:   # closing the stream has completed the upload: take the partial object back
        with contextlib.suppress(OSError):
            where.delete_file(target)
        raise
    if target != inner:
        where.move(target, inner)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to the file `path`, atomically as `put_file` does (one upload to an object store)."""
    with tempfile.TemporaryDirectory(prefix="write-") as tmp:
        local = Path(tmp, "data")
        local.write_bytes(data)
        put_file(local, path)


def upload_folder(local: str | os.PathLike, path: str | os.PathLike, last: Iterable[str] = ()) -> None:
    """Copies every file under the local folder to the same names under `path`; the files named in
    `last` go last, in that order (commit markers)."""
    files = sorted(p.relative_to(local).as_posix() for p in Path(local).rglob("*") if p.is_file())
    last = [name for name in last if name in files]
    for name in [f for f in files if f not in last] + last:
        put_file(Path(local) / name, join(path, *name.split("/")))


@contextlib.contextmanager
def staged(path: str | os.PathLike, last: Iterable[str] = ()) -> Iterator[Path]:
    """A local folder to write `path`'s files in: `path` itself when local; for a URI, a temporary
    folder uploaded when the block ends without an error (`last` last, see `upload_folder`)."""
    if not is_remote(path):
        folder = Path(local_path(str(path)))
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="staged-") as tmp:
        yield Path(tmp)
        upload_folder(tmp, path, last)


@contextlib.contextmanager
def local_copy(path: str | os.PathLike, names: Iterable[str] | None = None) -> Iterator[Path]:
    """`path` itself when local; for a URI, a temporary folder holding a copy of the files `names`
    under it (those that exist), or of every file under it when `names` is None."""
    if not is_remote(path):
        yield Path(local_path(str(path)))
        return
    from pyarrow import fs

    where, inner = filesystem(path)
    if names is None:
        found = where.get_file_info(fs.FileSelector(inner, recursive=True, allow_not_found=True))
        names = [posixpath.relpath(f.path, inner) for f in found if f.type == fs.FileType.File]
    with tempfile.TemporaryDirectory(prefix="copy-") as tmp:
        for name in names:
            source = posixpath.join(inner, name)
            if where.get_file_info(source).type != fs.FileType.File:
                continue
            target = Path(tmp, *name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            with where.open_input_stream(source) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, COPY_BLOCK)
        yield Path(tmp)


def local_path(path: str) -> str:
    """`file:///a/b` -> `/a/b`; plain paths unchanged."""
    if path.startswith("file:"):
        parsed = urlparse(path)
        return parsed.path
    return path


def shipped(path: str) -> str:
    """`path` where it exists, else the copy `--files` / `SparkContext.addFile` put on this node.

    Cluster executors get those copies in their working folder, which is where Python workers run;
    the copy is found by the file's name. Otherwise `path` itself, so the caller's "not found" error
    names what the recipe said.
    """
    path = local_path(path)
    if not path or os.path.exists(path):
        return path
    copy = os.path.join(os.getcwd(), os.path.basename(path.rstrip("/")))
    return copy if os.path.isfile(copy) else path
