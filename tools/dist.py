"""Builds what Spark executors need on a cluster: the project's code and a packed Python environment.

    python -m tools.dist                        # run by `make dist`: the four files below (~20 s)
    python -m tools.dist --no-env               # all but env.tar.gz (under a second; every cluster submit)
    python -m tools.dist --python /usr/bin/python3.11   # the interpreter path on the nodes, if not the same
    python -m tools.dist --torch                # env.tar.gz with torch too: for the synth.* jobs (make dist DIST_ARGS=--torch)

| file                | spark-submit flag                      | what it is                                        |
|---------------------|----------------------------------------|---------------------------------------------------|
| dist/submit.py      | the application file                   | runs `jobs.<stage>` (or a dotted module such as `synth.rejection`) from the zip: `spark-submit ... dist/submit.py extract --input ...` |
| dist/qwenforge.zip  | `--py-files`                           | `common/`, `pipeline/`, `stages/`, `jobs/`, `training/`, `synth/` (+ recipes), reproducible bytes |
| dist/env.tar.gz     | `--archives dist/env.tar.gz#env`       | a relocatable copy of the virtual environment with the executors' runtime packages only (no pyspark: the node's Spark supplies its own; torch only with `--torch`, for the synthesis jobs that run a model on executors), run as `./env/bin/python` |
| dist/assets.tar.gz  | `--archives dist/assets.tar.gz#assets` | fastText LID model and Qwen BPE ranks (tools/assets.py) and the fast encoder's class table (`qwen.tiktoken.classes`, rebuilt first if stale), unpacked as `./assets/` in each executor's working folder |

`make <stage>` with a cluster `MASTER` sets `QWEN_LID_MODEL=assets/lid.176.ftz` and
`QWEN_TIKTOKEN=assets/qwen.tiktoken`: relative paths that name the repository's `assets/` for the
driver (run from the repository root) and the unpacked archive for executors, since stages resolve
these paths on the driver and ship them.

The packed environment is a venv, like `venv-pack` makes: `bin/python` is a link to a base CPython
3.11 that must exist at the same path on every node (or the path given with `--python`); compiled
packages (fasttext, kenlm, pyarrow) need the same platform and a glibc at least as new. Packages are
chosen from the installed metadata: the closure of pyproject's dependencies minus `SKIP`.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import io
import os
import re
import sys
import sysconfig
import tarfile
import time
import tomllib
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from stages.tokenize.fast_bpe import ensure_cache

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
PACKAGES = ("common", "pipeline", "stages", "jobs", "training", "synth")  # training/ and synth/: the synth.* jobs
ASSETS = ("lid.176.ftz", "qwen.tiktoken")
SKIP = {"torch", "pyspark", "matplotlib", "qwenforge"}  # training-only, or supplied by the node's Spark
ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed member times: the same code gives the same zip bytes


def code_files(root: Path = ROOT) -> list[Path]:
    """The Python sources and recipes of the executor-side packages, sorted."""
    found = [p for pkg in PACKAGES for p in (root / pkg).rglob("*")
             if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts]
    return sorted(found)


def build_zip(out: Path, root: Path = ROOT) -> Path:
    """Writes the `--py-files` zip with deterministic bytes; returns its path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in code_files(root):
            info = zipfile.ZipInfo(str(path.relative_to(root)), ZIP_TIME)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, path.read_bytes())
    partial.replace(out)
    return out


def build_assets(out: Path, assets: Path = ROOT / "assets") -> Path:
    """Writes the model files as an archive whose members sit at its top level (unpacked as `./assets/`),
    with the fast encoder's class table cache, made valid for this checkout first (executors only read it)."""
    missing = [n for n in ASSETS if not (assets / n).exists()]
    if missing:
        raise FileNotFoundError(f"{missing} not in {assets}: run `make setup` (python -m tools.assets)")
    cache = ensure_cache(str(assets / "qwen.tiktoken"))   # None without the C module: nothing to ship
    partial = out.with_suffix(".partial")
    with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
        for name in [*ASSETS, *([cache.name] if cache else [])]:
            tar.add(assets / name, arcname=name)
    partial.replace(out)
    return out


LAUNCHER = '''"""spark-submit entry point (written by tools/dist.py): `submit.py STAGE ARGS...` runs jobs.STAGE
(a dotted name, such as synth.rejection, runs that module).

Submitting jobs/STAGE.py itself would put jobs/ first on sys.path, where jobs/tokenize.py hides the
standard library's `tokenize` (imported by logging), so the driver could not start.
"""
import runpy
import sys

stage = sys.argv.pop(1)
module = stage if "." in stage else f"jobs.{stage}"
sys.argv[0] = module.replace(".", "/") + ".py"
runpy.run_module(module, run_name="__main__", alter_sys=True)
'''


def build_launcher(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(LAUNCHER)
    return out


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def runtime_closure(roots: list[str], skip: set[str] = SKIP) -> dict[str, md.Distribution]:
    """Installed distributions reachable from `roots` through their (marker-true) requirements."""
    env, found, todo = default_environment(), {}, [(r, "") for r in roots]
    while todo:
        spec, extra = todo.pop()
        req = Requirement(spec)
        if req.marker and not req.marker.evaluate({**env, "extra": extra}):
            continue
        name = _name(req.name)
        if name in skip or name in found:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue  # optional on this platform
        found[name] = dist
        for extra_name in req.extras or {""}:
            todo += [(r, extra_name) for r in dist.requires or []]
    return found


def project_requirements(root: Path = ROOT) -> list[str]:
    """The runtime requirements in pyproject.toml (the installed metadata may be older)."""
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]


def site_files(dists: dict[str, md.Distribution], site: Path) -> list[Path]:
    """Every installed file of the distributions that lies under site-packages (scripts are skipped)."""
    files = set()
    for dist in dists.values():
        for rel in dist.files or []:
            path = Path(dist.locate_file(rel)).resolve()
            if path.is_file() and site in path.parents and "__editable__" not in path.name:
                files.add(path)
    return sorted(files)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    tar.addfile(info)


def build_env(out: Path, python: str = "", level: int = 1, torch: bool = False) -> tuple[Path, int]:
    """Writes the `--archives` environment; returns its path and the number of files in it.

    `python`: the base interpreter on the nodes (default: this venv's base interpreter); `torch`: add
    torch and what it needs (the synthesis jobs load a model on executors).
    """
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    base = python or os.path.join(sys.base_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    roots, skip = (project_requirements() + ["torch"], SKIP - {"torch"}) if torch else (project_requirements(), SKIP)
    files = site_files(runtime_closure(roots, skip), site)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    with tarfile.open(partial, "w:gz", compresslevel=level) as tar:
        cfg = f"home = {os.path.dirname(base)}\ninclude-system-site-packages = false\nversion = {sys.version.split()[0]}\n"
        _add_bytes(tar, "pyvenv.cfg", cfg.encode())
        for link, target in (("python", base), ("python3", "python"), (version, "python")):
            _add_link(tar, f"bin/{link}", target)
        for path in files:
            tar.add(path, arcname=f"lib/{version}/site-packages/{path.relative_to(site)}", recursive=False)
        native = [*sorted((ROOT / "stages" / "tokenize").glob("_qwen_bpe*.so")),
                  *sorted((ROOT / "stages").glob("_minhash*.so"))]
        for path in native:   # the fast encoder and the MinHash module, top-level modules there
            tar.add(path, arcname=f"lib/{version}/site-packages/{path.name}", recursive=False)
    partial.replace(out)
    return out, len(files)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tools.dist", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DIST), help="output folder (default dist/)")
    parser.add_argument("--no-env", action="store_true", help="build the code zip only")
    parser.add_argument("--python", default="", help="base interpreter path on the nodes (default: this one's)")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    parser.add_argument("--level", type=int, default=1, help="gzip level of env.tar.gz (1: fast, 9: small)")
    parser.add_argument("--torch", action="store_true", help="env.tar.gz with torch (for the synth.* jobs)")
    args = parser.parse_args(argv)
    started, out = time.time(), Path(args.out)
    say = (lambda *_: None) if args.quiet else print
    code, assets = build_zip(out / "qwenforge.zip"), build_assets(out / "assets.tar.gz")
    build_launcher(out / "submit.py")
    say(f"dist: {code} ({code.stat().st_size:,} B, {len(code_files())} files), {assets}, {out / 'submit.py'}")
    if not args.no_env:
        env, n = build_env(out / "env.tar.gz", args.python, args.level, args.torch)
        say(f"dist: {env} ({env.stat().st_size:,} B, {n} files)")
    say(f"dist: done in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
