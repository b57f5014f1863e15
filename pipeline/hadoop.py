"""File-system operations on the driver through Hadoop's FileSystem API (local, `hdfs://`, `s3a://`, ...).

The same calls work on every scheme Spark can read, so stage commits and input listing behave the
same on a laptop and on a cluster. Paths are strings; local paths come back without `file:`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass
class HadoopFS:
    spark: object

    def _path(self, path: str):
        jvm = self.spark._jvm
        p = jvm.org.apache.hadoop.fs.Path(path)
        return p.getFileSystem(self.spark._jsc.hadoopConfiguration()), p

    def exists(self, path: str) -> bool:
        fs, p = self._path(path)
        return bool(fs.exists(p))

    def delete(self, path: str) -> None:
        fs, p = self._path(path)
        if fs.exists(p):
            fs.delete(p, True)

    def mkdirs(self, path: str) -> None:
        fs, p = self._path(path)
        fs.mkdirs(p)

    def rename(self, src: str, dst: str) -> None:
        fs, p = self._path(src)
        if not fs.rename(p, self._path(dst)[1]):
            raise OSError(f"could not rename {src} -> {dst}")

    def write_text(self, path: str, text: str) -> None:
        fs, p = self._path(path)
        out = fs.create(p, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8")

    def read_bytes(self, path: str) -> bytes:
        fs, p = self._path(path)
        stream = fs.open(p)
        try:
            jvm = self.spark._jvm
            return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def glob(self, pattern: str) -> list[str]:
        """Paths matching a glob (a plain path matches itself when it exists)."""
        fs, p = self._path(pattern)
        statuses = fs.globStatus(p) or []
        return sorted(plain(str(s.getPath().toString())) for s in statuses)

    def is_dir(self, path: str) -> bool:
        fs, p = self._path(path)
        return bool(fs.exists(p) and fs.getFileStatus(p).isDirectory())

    def files(self, path: str, pattern: str = "*") -> list[tuple[str, int]]:
        """(path, size) of the visible files under `path`, recursively; names starting with _ or . are skipped."""
        fs, p = self._path(path)
        if not fs.exists(p):
            return []
        found, it = [], fs.listFiles(p, True)
        while it.hasNext():
            status = it.next()
            name = plain(str(status.getPath().toString()))
            parts = name[len(plain(path)):].split("/")
            if not any(x.startswith(("_", ".")) for x in parts if x) and fnmatch.fnmatch(parts[-1], pattern):
                found.append((name, int(status.getLen())))
        return sorted(found)

    def size(self, path: str) -> int:
        return sum(n for _, n in self.files(path))

    def siblings(self, path: str, prefix: str) -> list[str]:
        """Entries next to `path` whose names start with `prefix` (stale temporary folders)."""
        fs, p = self._path(path)
        parent = p.getParent()
        if parent is None or not fs.exists(parent):
            return []
        return [plain(str(s.getPath().toString())) for s in fs.listStatus(parent)
                if str(s.getPath().getName()).startswith(prefix)]


def plain(path: str) -> str:
    """`file:/a/b` -> `/a/b`; other schemes unchanged."""
    if path.startswith("file://"):
        return path[len("file://"):]
    if path.startswith("file:"):
        return path[len("file:"):]
    return path
