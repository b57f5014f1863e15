"""Demo input without the internet: serves the Python documentation with `pydoc` on 127.0.0.1 and
saves its pages, fetched over real HTTP, as a WARC file that the ingest job reads.

    python -m jobs.demo_input --out runs/demo/input --pages 300

Only pages of standard-library modules are fetched (pydoc imports a module to document it), minus a
few modules with side effects on import. Nothing third-party ends up in the repository: the text is
made on the user's machine from the Python installation.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tqdm import tqdm

from stages.warcwrite import WarcSink

SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "__phello__", "__hello__",
        "pydoc", "lib2to3", "ensurepip", "venv", "webbrowser"}
LINK = re.compile(r'href="([A-Za-z_][\w.]*)\.html"')


def start_pydoc() -> tuple[subprocess.Popen, str]:
    """Starts `python -m pydoc -n 127.0.0.1 -p 0` and returns the process and its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "pydoc", "-n", "127.0.0.1", "-p", "0"],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"pydoc did not start: {line!r}")
    return proc, match.group(1)


def stdlib_pages(index_html: str, limit: int) -> list[str]:
    names = sorted(set(LINK.findall(index_html)))
    top = lambda n: n.split(".")[0]
    keep = [n for n in names if top(n) in sys.stdlib_module_names and top(n) not in SKIP and not n.startswith("_")]
    return keep[:limit]


def fetch(url: str) -> tuple[int, list[tuple[str, str]], bytes]:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return resp.status, list(resp.headers.items()), resp.read()


def build(out: Path, pages: int) -> Path:
    target = out / "pydoc.warc.gz"
    proc, base = start_pydoc()
    try:
        _, _, index = fetch(base)
        names = stdlib_pages(index.decode("utf-8"), pages)
        with WarcSink(target) as sink:
            for name in tqdm(names, desc="demo input (pydoc pages)", unit="page"):
                url = f"{base}{name}.html"
                status, headers, body = fetch(url)
                sink.response(url, status, headers, body,
                              fetch_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    finally:
        proc.kill()
        proc.wait()
    return target


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="jobs.demo_input", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--pages", type=int, default=300)
    args = parser.parse_args(argv)
    path = build(Path(args.out), args.pages)
    print(f"[demo_input] {path}")
    return path


if __name__ == "__main__":
    main()
