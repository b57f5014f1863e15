"""Run untrusted Python in a separate process: wall timeout, no network, writes only in a scratch directory.

    from common.sandbox import run_code
    res = run_code("print(sum(range(10)))", timeout=5)
    res.ok, res.stdout          # (True, '45\\n')
    res.passed                  # True: ran to its last line, exit 0, in time -- the verdict for tests

Used by execution feedback (stages/synthesis.py), HumanEval-style evaluation and the code interpreter.
Each call gets a fresh temporary scratch directory (the child's cwd, $HOME and $TMPDIR; removed
afterwards), a minimal environment and `python -I` (isolated: no PYTHONPATH, no user site). The child
runs the code as `main.py` in the scratch directory through a small bootstrap (common/sandbox_bootstrap.py)
that first sets resource limits and installs audit hooks (PEP 578).

A run passes only when the code ran to its end, never on exit status alone (`os._exit(0)`, `sys.exit(0)`,
`exit()`, an atexit or signal handler that exits 0 would all look like success). The parent draws a random
token per run and writes it into a pipe; the bootstrap reads it into a closure and closes that pipe before
the code runs, so the token is in no file, argument, environment variable or open descriptor the code
can read. When `exec` of the code returns, the bootstrap raises an audit event that only its own frame may
raise, and the hook writes the token to a second pipe: `SandboxResult.completed` is "the token came back",
`passed` is completed and exit status 0 and no timeout.

What it guarantees, in layers (`SandboxResult.isolation` says which applied on this machine):
- "audit", always: a wall-clock timeout that SIGKILLs the child's whole process group; stdout/stderr
  capped at `max_output` bytes each (the rest is read and discarded, so the child never blocks);
  rlimits on address space (`memory_mb`), CPU seconds and file size; an audit hook that refuses, at the
  Python level, sockets (connect/bind/sendto/getaddrinfo), process creation (subprocess, os.system,
  exec*, fork, spawn, `_posixsubprocess.fork_exec`, which raises no event, so the module is a stub),
  signals outside the sandbox's own process group (os.kill, os.killpg; pidfd_send_signal is a stub),
  `ctypes` loading of libraries (the process's own symbols, libc included, stay reachable -- one way
  around the hook), reads of /proc/*/mem, every file-system write (open for writing, mkdir, remove,
  rename, link, chmod, ...) whose resolved path -- relative to its `dir_fd`, or where a descriptor points
  -- is outside the scratch directory, and what could reach the sentinel: more audit hooks, trace and
  profile functions, gc.get_objects/get_referrers/get_referents, sys._current_frames.
- "netns" (Linux with a working `unshare`: as root, or with unprivileged user namespaces): the child
  runs in a new, empty network namespace (not even loopback is up), so no connection leaves it,
  whatever the code does -- enforced by the kernel.
- "rofs" (same condition, plus mount and pid namespaces): the child is pid 1 of a new pid namespace
  with its own /proc (other processes are invisible and cannot be signalled); before running the code,
  the bootstrap remounts every mount read-only and nodev except the scratch directory (mount(2) through
  ctypes; /proc/sys and /proc/sysrq-trigger too) and enters a nested user namespace, which locks those
  flags; so writes elsewhere fail in the kernel (EROFS), also from C code, ctypes or child processes,
  and no device file (not even /dev/null) can be opened.

What it does not guarantee: the audit layer is a guard rail against accidents and casual cheating, not a
security boundary: code that sets out to defeat it can (through ctypes and libc, a fresh copy of an
extension module, `os.open.__closure__`, rebinding the functions the hooks call such as os.path.realpath,
or a signal handler or thread that catches a hook mid-call and reads its frame). The same holds for the
sentinel, which lives in the child's memory: it stops exits, printed or written guesses and the plain
introspection above, not code that reads the interpreter's memory. Without "rofs" the child shares the
machine's pid namespace (it sees every process in /proc; only the audit hook keeps its signals in its
own group). Even with all layers it does not limit reads (the child reads what its user can read) or
the machine's CPU and memory beyond the rlimits, and the kernel itself is the attack surface. For
hostile code put a container or VM around it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from common.sandbox_bootstrap import BOOTSTRAP  # the child's side: limits, audit hooks, sentinel

MAIN = "main.py"


@dataclass(frozen=True)
class SandboxResult:
    ok: bool  # exit status 0 and not timed out (says nothing on whether the code ran to its end)
    returncode: int  # negative: killed by that signal (as subprocess reports it)
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float = 0.0  # wall time
    isolation: tuple[str, ...] = ()  # layers that applied: "audit", "netns", "rofs"
    completed: bool = False  # main.py returned (the bootstrap's sentinel came back): no exception, exit or signal

    @property
    def passed(self) -> bool:
        """The verdict for tests: the program ran to its last line, then exited 0, within the timeout."""
        return self.ok and self.completed


def _prefix(layers: tuple[str, ...]) -> list[str]:
    """The argv prefix that puts the child into new namespaces (rofs: the bootstrap does the mounts)."""
    exe = shutil.which("unshare") or "unshare"
    if "rofs" in layers:  # + a pid namespace with its own /proc: other processes are invisible
        return [exe, "-rnmp", "--fork", "--kill-child", "--mount-proc", "--"]
    return [exe, "-rn", "--"] if "netns" in layers else []


PROBE = ("import ctypes, os\n"
         "fd = ctypes.CDLL(None, use_errno=True).open(os.fsencode({bad!r}), os.O_WRONLY | os.O_CREAT, 0o644)\n"
         "open('ok', 'w').write('ok')\nprint(fd)")


def _works(layers: tuple[str, ...]) -> bool:
    """Probes one isolation level: the child runs, and (rofs) even libc's open() cannot create a file
    outside the scratch directory, bypassing the audit hook."""
    outside = tempfile.mkdtemp(prefix="qf-probe-")
    try:
        res = _run(PROBE.format(bad=os.path.join(outside, "bad")), layers, 30.0, "", None, 1 << 16, 1024, 0, 1)
        return res.ok and ("rofs" not in layers or (res.stdout.strip() == "-1"
                                                    and not os.path.exists(os.path.join(outside, "bad"))))
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(outside, ignore_errors=True)


@lru_cache(maxsize=None)
def kernel_layers() -> tuple[str, ...]:
    """The strongest namespace isolation that works on this machine (probed once per process)."""
    if not sys.platform.startswith("linux") or not shutil.which("unshare"):
        return ()
    for layers in (("netns", "rofs"), ("netns",)):
        if _works(layers):
            return layers
    return ()


def child_env(scratch: str) -> dict[str, str]:
    """A minimal environment: no inherited secrets, one thread for numeric libraries."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _drain(stream, cap: int, out: list[bytes]) -> None:
    """Reads a pipe to EOF, keeping the first `cap` bytes, so the child never blocks on a full pipe."""
    kept = 0
    while chunk := stream.read(65536):
        if kept < cap:
            out.append(chunk[: cap - kept])
            kept += len(out[-1])
    stream.close()


def _feed(stream, data: bytes) -> None:
    try:
        stream.write(data)
    except (BrokenPipeError, OSError):
        pass  # the child exited or closed stdin without reading it all
    finally:
        try:
            stream.close()
        except OSError:
            pass


def _prepare(scratch: str, code: str, files: Mapping[str, str] | None) -> None:
    with open(os.path.join(scratch, MAIN), "w", encoding="utf-8") as f:
        f.write(code)
    for name, text in (files or {}).items():
        path = os.path.realpath(os.path.join(scratch, name))
        if not path.startswith(scratch + os.sep):
            raise ValueError(f"sandbox file {name!r} would land outside the scratch directory")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_code(code: str, *, timeout: float = 10.0, stdin: str = "", files: Mapping[str, str] | None = None,
             max_output: int = 1 << 20, memory_mb: int = 2048, cpu_seconds: int | None = None,
             max_file_mb: int = 64, network: bool = False) -> SandboxResult:
    """Runs `code` as `main.py` in a fresh scratch directory (plus `files`, name -> text) and returns its result.

    `timeout` is wall-clock seconds; `cpu_seconds` defaults to ceil(timeout) + 1. `network=True` skips the
    namespaces and the socket guard (never needed to test solutions; the write guard stays).
    """
    layers = () if network else kernel_layers()  # rofs rides on the netns call, so network=True gets neither
    cpu = cpu_seconds if cpu_seconds is not None else int(timeout) + 2
    return _run(code, layers, timeout, stdin, files, max_output, memory_mb, cpu, max_file_mb, network)


def _run(code: str, layers: tuple[str, ...], timeout: float, stdin: str, files: Mapping[str, str] | None,
         max_output: int, memory_mb: int, cpu: int, max_file_mb: int, network: bool = False) -> SandboxResult:
    scratch = os.path.realpath(tempfile.mkdtemp(prefix="qf-sandbox-"))
    try:
        _prepare(scratch, code, files)
        argv = [*_prefix(layers), sys.executable, "-I", "-c", BOOTSTRAP, str(memory_mb << 20), str(cpu),
                str(max_file_mb << 20), str(int(network)), str(int("rofs" in layers))]
        return _execute(argv, scratch, stdin, timeout, max_output, ("audit", *layers))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _start(argv: list[str], scratch: str, token: bytes) -> tuple[subprocess.Popen, object]:
    """Starts the child with two pipes: one it reads `token` from (before the code runs), one it writes the
    token back on (after the code returned); argv gets their fd numbers. Returns the process and that pipe."""
    token_r, token_w = os.pipe()
    done_r, done_w = os.pipe()
    try:
        os.write(token_w, token)  # fits the pipe buffer: no reader needed yet
        proc = subprocess.Popen([*argv, str(token_r), str(done_w)], cwd=scratch, env=child_env(scratch),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, pass_fds=(token_r, done_w))
    except BaseException:
        os.close(done_r)
        raise
    finally:
        for fd in (token_r, token_w, done_w):  # the child holds its own copies; EOF on done_r once it exits
            os.close(fd)
    return proc, os.fdopen(done_r, "rb")


def _execute(argv: list[str], scratch: str, stdin: str, timeout: float, max_output: int,
             isolation: tuple[str, ...]) -> SandboxResult:
    start = time.monotonic()
    token = secrets.token_hex(16).encode()  # per run: nothing the code can read before it ends holds it
    proc, done = _start(argv, scratch, token)
    out: list[bytes] = []
    err: list[bytes] = []
    said: list[bytes] = []
    threads = [threading.Thread(target=_drain, args=(proc.stdout, max_output, out), daemon=True),
               threading.Thread(target=_drain, args=(proc.stderr, max_output, err), daemon=True),
               threading.Thread(target=_drain, args=(done, 4 * len(token), said), daemon=True),
               threading.Thread(target=_feed, args=(proc.stdin, stdin.encode()), daemon=True)]
    for t in threads:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    _kill_group(proc)  # also reaps anything the child left running in its group
    proc.wait()
    for t in threads:
        t.join(timeout=2.0)  # a grandchild that left the group could hold a pipe open; do not wait on it
    rc = proc.returncode
    return SandboxResult(ok=rc == 0 and not timed_out, returncode=rc, stdout=b"".join(out).decode("utf-8", "replace"),
                         stderr=b"".join(err).decode("utf-8", "replace"), timed_out=timed_out,
                         seconds=time.monotonic() - start, isolation=isolation, completed=b"".join(said) == token)
