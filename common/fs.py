"""Opening files by URI inside a task: local paths, `file:`, `hdfs://`, `s3a://` / `s3://`, `gs://`.

Remote schemes go through `pyarrow.fs` (HDFS needs libhdfs on the node, S3 reads the usual AWS
environment variables). Executors call this; the driver lists and globs through Hadoop instead.
`shipped(path)` finds a model file sent with the job (`spark-submit --files`, `FILES=` in the
Makefile) on an executor that lacks the driver's path.
"""

from __future__ import annotations

import os
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
