"""The demo's web site without the internet: the Python documentation served by `pydoc` on 127.0.0.1,
and the crawl scope that keeps the demo's crawl to the standard library's module pages.

    proc, base = start_pydoc()          # http://127.0.0.1:PORT/
    allowed = crawl_scope()             # regexes for crawl.allowed_paths

pydoc imports a module to document it, so only standard-library modules are in scope, minus a few
with side effects on import (`antigravity` opens a browser). Nothing third-party ends up in the
repository: the pages are made on the user's machine from the Python installation.
"""

from __future__ import annotations

import re
import subprocess
import sys

SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "__phello__", "__hello__",
        "pydoc", "lib2to3", "ensurepip", "venv", "webbrowser"}


def start_pydoc() -> tuple[subprocess.Popen, str]:
    """Starts `python -m pydoc -n 127.0.0.1 -p 0` and returns the process and its base URL."""
    # stderr: modules pydoc imports to document them may print there (one parses sys.argv and prints a
    # usage line); that is page content for the crawl, not a failure of the demo
    proc = subprocess.Popen([sys.executable, "-m", "pydoc", "-n", "127.0.0.1", "-p", "0"],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"pydoc did not start: {line!r}")
    return proc, match.group(1)


def crawl_scope() -> list[str]:
    """`crawl.allowed_paths`: the index and the pages of standard-library modules (not SKIP)."""
    names = sorted(n for n in sys.stdlib_module_names if n not in SKIP and not n.startswith("_"))
    return ["^/$", r"^/(" + "|".join(map(re.escape, names)) + r")(\.[A-Za-z_][\w.]*)?\.html$"]
