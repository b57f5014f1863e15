"""Run untrusted Python in a separate process: wall timeout, no network, writes only in a scratch directory.

    from stages.sandbox import run_code
    res = run_code("print(sum(range(10)))", timeout=5)
    res.ok, res.stdout          # (True, '45\\n')

Used by execution feedback (stages/synthesis.py), HumanEval-style evaluation and the code interpreter.
Each call gets a fresh temporary scratch directory (the child's cwd, $HOME and $TMPDIR; removed
afterwards), a minimal environment and `python -I` (isolated: no PYTHONPATH, no user site). The child
runs the code as `main.py` in the scratch directory through a small bootstrap that first sets resource
limits and installs an audit hook (PEP 578).

What it guarantees, in layers (`SandboxResult.isolation` says which applied on this machine):
- "audit", always: a wall-clock timeout that SIGKILLs the child's whole process group; stdout/stderr
  capped at `max_output` bytes each (the rest is read and discarded, so the child never blocks);
  rlimits on address space (`memory_mb`), CPU seconds and file size; an audit hook that refuses, at the
  Python level, sockets (connect/bind/sendto/getaddrinfo), process creation (subprocess, os.system,
  exec*, fork, spawn), `ctypes` loading of libraries (the process's own symbols, libc included,
  stay reachable -- one way around the hook), and every file-system write (open for writing, mkdir,
  remove, rename, chmod, ...) whose resolved path is outside the scratch directory.
- "netns" (Linux with a working `unshare`: as root, or with unprivileged user namespaces): the child
  runs in a new, empty network namespace (not even loopback is up), so no connection leaves it,
  whatever the code does -- enforced by the kernel.
- "rofs" (same condition, plus mount and pid namespaces): the child is pid 1 of a new pid namespace
  with its own /proc (other processes are invisible); before running the code, the bootstrap remounts
  every mount read-only and nodev except the scratch directory (mount(2) through ctypes; /proc/sys and
  /proc/sysrq-trigger too) and enters a nested user namespace, which locks those flags; so writes
  elsewhere fail in the kernel (EROFS), also from C code, ctypes or child processes, and no device
  file (not even /dev/null) can be opened.

What it does not guarantee: with the audit layer alone it is a guard rail against accidents, not a
security boundary (code can get around a Python audit hook). Even with all layers it does not limit
reads (the child reads what its user can read), shares the pid namespace and the machine's CPU and
memory beyond the rlimits, and the kernel itself is the attack surface. For hostile code put a
container or VM around it.
"""

from __future__ import annotations

import os
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

MAIN = "main.py"


@dataclass(frozen=True)
class SandboxResult:
    ok: bool  # exit status 0 and not timed out
    returncode: int  # negative: killed by that signal (as subprocess reports it)
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float = 0.0  # wall time
    isolation: tuple[str, ...] = ()  # layers that applied: "audit", "netns", "rofs"


# The bootstrap runs in the child before the user's code: limits, audit hook, exec.
BOOTSTRAP = r'''
import os, sys, resource
scratch = os.path.realpath(os.getcwd())
mem, cpu, fsize, net, rofs = (int(a) for a in sys.argv[1:6])
if rofs:  # already in new user, mount, net and pid namespaces: make every mount but scratch read-only
    import ctypes, re
    libc = ctypes.CDLL(None, use_errno=True)
    def mount(target, flags, source=None):
        if libc.mount(source, target.encode(), None, flags, None) != 0:
            raise OSError(ctypes.get_errno(), "mount %s" % target)
    KEEP = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
    RDONLY, NODEV, REMOUNT, BIND, REC, PRIVATE = 1, 4, 32, 4096, 16384, 1 << 18
    mount("/", REC | PRIVATE, b"none")
    mount(scratch, BIND, scratch.encode())
    for line in open("/proc/self/mounts").read().splitlines():
        fields = line.split()
        target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        if target == scratch or target == "/proc" or target.startswith("/proc/"):
            continue
        flags = sum(v for k, v in KEEP.items() if k in fields[3].split(","))  # locked flags must be kept
        try:
            mount(target, REMOUNT | BIND | RDONLY | NODEV | flags)  # nodev: no raw disks, /dev/kmsg, ...
        except OSError:
            pass  # e.g. a mount hidden under another; the probe checks the result
    for path in ("/proc/sys", "/proc/sysrq-trigger"):  # global knobs that uid 0 could otherwise write
        if os.path.exists(path):
            mount(path, BIND, path.encode())
            mount(path, REMOUNT | BIND | RDONLY | NODEV | 2 | 8)  # + nosuid, noexec
    os.chdir(scratch)  # enter the bind mount
    # a nested user+mount namespace locks the read-only flags: its "root" cannot remount them writable
    if libc.unshare(0x10000000 | 0x00020000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
        raise OSError(ctypes.get_errno(), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
        with open("/proc/self/" + name, "w") as f:
            f.write(text)
    del libc
for lim, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, fsize)):
    if val > 0:
        resource.setrlimit(lim, (val, val))
code = open("main.py", encoding="utf-8").read()
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {"os.mkdir": (0,), "os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.symlink": (1,),
               "os.link": (1,), "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
               "os.mkfifo": (0,), "os.mknod": (0,), "os.setxattr": (0,), "os.removexattr": (0,),
               "shutil.rmtree": (0,), "os.chflags": (0,), "os.lchflags": (0,)}
SOCKET = () if net else ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo")
BLOCKED = SOCKET + ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
           "pty.spawn", "os.startfile")
realpath, join, fspath, isabs = os.path.realpath, os.path.join, os.fspath, os.path.isabs
def inside(path, dir_fd=None):
    if isinstance(path, int):
        return True
    path = fspath(path)
    path = path.decode() if isinstance(path, bytes) else path
    if dir_fd is not None and dir_fd >= 0 and not isabs(path):  # CPython reports "no dir_fd" as -1
        path = join("/proc/self/fd/%d" % dir_fd, path)
    full = realpath(path)
    return full == scratch or full.startswith(scratch + os.sep) or full == "/dev/null"
def hook(event, args):
    if event in BLOCKED or (event == "ctypes.dlopen" and args and args[0] is not None):
        raise PermissionError("sandbox: %s is not allowed" % event)
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & WRITE_FLAGS)
        if writing and not inside(path):
            raise PermissionError("sandbox: writing outside the scratch directory: %r" % (path,))
    elif event in PATH_EVENTS:
        dir_fd = args[-1] if event in ("os.mkdir", "os.remove", "os.rmdir", "os.chmod", "shutil.rmtree") else None
        for i in PATH_EVENTS[event]:
            if not inside(args[i], dir_fd if isinstance(dir_fd, int) else None):
                raise PermissionError("sandbox: %s outside the scratch directory: %r" % (event, args[i]))
sys.addaudithook(hook)
del hook
sys.argv = ["main.py"]
sys.path.insert(0, scratch)
g = {"__name__": "__main__", "__file__": join(scratch, "main.py"), "__builtins__": __builtins__}
exec(compile(code, "main.py", "exec"), g)
'''


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


def _execute(argv: list[str], scratch: str, stdin: str, timeout: float, max_output: int,
             isolation: tuple[str, ...]) -> SandboxResult:
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=scratch, env=child_env(scratch), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    out: list[bytes] = []
    err: list[bytes] = []
    threads = [threading.Thread(target=_drain, args=(proc.stdout, max_output, out), daemon=True),
               threading.Thread(target=_drain, args=(proc.stderr, max_output, err), daemon=True),
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
                         seconds=time.monotonic() - start, isolation=isolation)
