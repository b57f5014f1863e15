"""The code version recorded in every `_config.json`: git commit (+dirty) or the package version."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def code_version() -> str:
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        try:
            return metadata.version("qwenforge")
        except metadata.PackageNotFoundError:
            return "unknown"


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True, timeout=10)
    return out.stdout.strip()
