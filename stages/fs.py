"""Opening files by URI inside a task: local paths, `file:`, `hdfs://`, `s3a://` / `s3://`, `gs://`.

Remote schemes go through `pyarrow.fs` (HDFS needs libhdfs on the node, S3 reads the usual AWS
environment variables). Executors call this; the driver lists and globs through Hadoop instead.
"""

from __future__ import annotations

from typing import IO
from urllib.parse import urlparse

REMOTE_SCHEMES = {"hdfs", "viewfs", "s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss"}


def open_binary(path: str) -> IO[bytes]:
    """Opens `path` for sequential binary reading, whatever its scheme."""
    scheme = urlparse(path).scheme.lower()
    if scheme in REMOTE_SCHEMES:
        from pyarrow import fs

        uri = "s3" + path[len(scheme):] if scheme in ("s3a", "s3n") else path
        filesystem, inner = fs.FileSystem.from_uri(uri)
        return filesystem.open_input_stream(inner)
    return open(local_path(path), "rb")


def local_path(path: str) -> str:
    """`file:///a/b` -> `/a/b`; plain paths unchanged."""
    if path.startswith("file:"):
        parsed = urlparse(path)
        return parsed.path
    return path
