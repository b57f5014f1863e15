"""Run untrusted Python in a separate process: wall timeout, no network, writes only in a scratch directory.

    from common.sandbox import run_code
    res = run_code("print(sum(range(10)))", timeout=5)
    res.ok, res.stdout          # (True, '45\\n')
    res.passed                  # True: ran to its last line, exit 0, in time -- the verdict for tests

Used by execution feedback (stages/synthesis.py), HumanEval-style evaluation and the code interpreter.
Each call gets a fresh temporary scratch directory (the child's cwd, $HOME and $TMPDIR; removed
afterwards), a minimal environment and `python -I` (isolated: no PYTHONPATH, no user site). The child
runs the code as `main.py` in the scratch directory through a small bootstrap that first sets resource
limits and installs audit hooks (PEP 578).

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


# The bootstrap runs in the child before the user's code: limits, audit hooks, exec, then the sentinel.
BOOTSTRAP = r"""
import os, sys, resource
scratch = os.path.realpath(os.getcwd())
mem, cpu, fsize, net, rofs, token_fd, done_fd = (int(a) for a in sys.argv[1:8])
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
DONE = "qf.sandbox.done"

# Every name the hooks use is bound here, as a parameter: the program can rebind module globals and builtins,
# and anything it rebinds would run inside a hook, where it could walk up the stack to the sentinel's frame.
def make_guard(scratch, net, boot, me, group, real_open, getframe=sys._getframe, getpgid=os.getpgid,
               fspath=os.fspath, realpath=os.path.realpath, join=os.path.join, isabs=os.path.isabs,
               islink=os.path.islink, isinstance=isinstance, bytes=bytes, int=int, str=str,
               PermissionError=PermissionError, OSError=OSError):
    WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    FRAMED = frozenset(("sys.addaudithook", DONE))  # only this bootstrap may add hooks or say "done"
    REFUSED = frozenset((() if net else ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
                                         "socket.getaddrinfo")) + (
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "pty.spawn", "os.startfile",
        # ways to reach another frame's locals or to run code between the program's lines
        "sys.settrace", "sys.setprofile", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
        "sys._current_frames", "sys._current_exceptions"))
    # event -> (path index, dir_fd index or None) of each path it changes
    PATHS = {"os.mkdir": ((0, 2),), "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.rename": ((0, 2), (1, 3)),
             "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),), "os.chmod": ((0, 2),), "os.chown": ((0, 3),),
             "os.utime": ((0, 3),), "os.truncate": ((0, None),), "os.mkfifo": ((0, 2),), "os.mknod": ((0, 3),),
             "os.setxattr": ((0, None),), "os.removexattr": ((0, None),), "os.chflags": ((0, None),),
             "os.lchflags": ((0, None),), "shutil.rmtree": ((0, 1),)}

    def refuse(what, path=None):
        raise PermissionError("sandbox: %s is not allowed" % what + ("" if path is None else ": %r" % (path,)))

    def name(path, dir_fd=None):
        # an int is an open descriptor (where it points); a relative path with a dir_fd starts there
        if isinstance(path, int):
            return "/proc/self/fd/%d" % path
        path = fspath(path)
        path = path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path
        if isinstance(dir_fd, int) and dir_fd >= 0 and not isabs(path):  # "no dir_fd" is -1 or AT_FDCWD (-100)
            path = join("/proc/self/fd/%d" % dir_fd, path)
        return path

    def inside(full):
        return full == scratch or full.startswith(scratch + "/") or full == "/dev/null"

    def check_open(path, mode, flags, dir_fd=None):
        if isinstance(path, int):
            return  # wraps a descriptor already open: its mode was checked when it was opened
        text = name(path, dir_fd)
        writing = (isinstance(mode, str) and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)) or (
            isinstance(flags, int) and flags & WRITES)
        if writing or "mem" in text or islink(text):  # a read can only reach /proc/*/mem by that name or a link
            full = realpath(text)
            if full.startswith("/proc/") and full.endswith("/mem"):
                refuse("reading process memory", path)
            if writing and not inside(full):
                refuse("writing outside the scratch directory", path)

    def may_signal(pid):  # kill(2)'s pid: > 0 one process, 0 own group, -1 everyone, < -1 the group -pid
        if pid == 0 or pid == me:
            return True
        if pid < 0:
            return pid != -1 and -pid == group
        try:
            return getpgid(pid) == group
        except OSError:
            return False

    def hook(event, args):
        # `event` is always an exact str made by CPython, so these comparisons run no code of the program's
        if event in FRAMED:
            if getframe(1) is not boot:
                refuse(event)
        elif event in REFUSED or (event == "ctypes.dlopen" and args and args[0] is not None):
            refuse(event)
        elif event == "open":
            check_open(*args)
        elif event in PATHS:
            for i, fd_at in PATHS[event]:
                if not inside(realpath(name(args[i], None if fd_at is None else args[fd_at]))):
                    refuse(event + " outside the scratch directory", args[i])
        elif event == "import" and args[0] == "_posixsubprocess":
            refuse("importing _posixsubprocess (fork_exec raises no audit event)")
        elif (event == "os.kill" and not may_signal(args[0])) or (event == "os.killpg" and args[0] not in (0, group)):
            refuse(event + " outside the sandbox's process group", args[0])

    def guarded_open(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is not None:  # the "open" audit event does not carry dir_fd: check here where it is known
            check_open(path, None, flags, dir_fd)
        return real_open(path, flags, mode, dir_fd=dir_fd)
    return hook, guarded_open

def make_sentinel(boot, token_fd, done_fd, getframe=sys._getframe, write=os.write):
    # The token exists only here: read from the parent's pipe, which is closed before the program runs.
    token = os.read(token_fd, 64)
    os.close(token_fd)
    def sentinel(event, args):
        if event == DONE and getframe(1) is boot:
            write(done_fd, token)
    return sentinel

def disarm(guarded_open):
    # Process starters without an audit event: a stub module (subprocess still imports, its Popen is refused
    # by its own event), and pidfd_send_signal (signals any pid, even through a /proc/<pid> directory fd).
    import _posixsubprocess, _signal, signal, posix
    def refused(*args, **kwargs):
        raise PermissionError("sandbox: starting or signalling processes this way is not allowed")
    stub = type(sys)("_posixsubprocess")
    stub.fork_exec = refused
    sys.modules["_posixsubprocess"] = stub
    for module in (_signal, signal):
        if hasattr(module, "pidfd_send_signal"):
            module.pidfd_send_signal = refused
    os.supports_dir_fd.add(guarded_open)
    os.open = posix.open = guarded_open

boot = sys._getframe()
guard, guarded_open = make_guard(scratch, net, boot, os.getpid(), os.getpgrp(), os.open)
disarm(guarded_open)
sys.addaudithook(guard)
sys.addaudithook(make_sentinel(boot, token_fd, done_fd))  # after the guard: it sees only DONE from `boot`
del guard, guarded_open, make_guard, make_sentinel, disarm
sys.argv = ["main.py"]
sys.path.insert(0, scratch)
g = {"__name__": "__main__", "__file__": os.path.join(scratch, "main.py"), "__builtins__": __builtins__}
exec(compile(code, "main.py", "exec"), g)
sys.audit(DONE)  # reached only when the program returned: no exception, no exit, no signal
"""


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
