"""Errors a person can act on: one line naming the file, key or value, exit status 2, no traceback.

Every command-line entry point runs its `main` through `cli_main`:

    from common.errors import UserError, cli_main
    if __name__ == "__main__":
        cli_main(main)

A `UserError` (a recipe key, a flag, an input path, a shard) prints `prog: error: <message>` and exits
with status 2, as argparse does for a bad flag; a `JobFailed` (the job ran but must not finish, e.g. too
many records raised errors) prints the same way and exits 1. Anything else is a bug and keeps its
traceback. `--debug` on the command line (removed before `main` sees it) or `QWENFORGE_DEBUG=1` prints
the traceback of user errors too.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable


class UserError(Exception):
    """A mistake in what the user gave. The message names the file / key / value."""

    exit_status = 2


class JobFailed(Exception):
    """The job ran but its output must not be committed; the message says why."""

    exit_status = 1


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("QWENFORGE_DEBUG", "") not in ("", "0")


def cli_main(main: Callable, argv: list[str] | None = None, prog: str | None = None):
    """Runs `main(argv)`; user errors become one line on stderr and an exit status (see above)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debug_requested(argv)
    prog = prog or _program()
    try:
        return main([a for a in argv if a != "--debug"])
    except (UserError, JobFailed) as err:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(err.exit_status)


def _program() -> str:
    """`jobs.extract` for `python -m jobs.extract`, else the script's name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec and spec.name != "__main__" else os.path.basename(sys.argv[0]) or "qwenforge"
