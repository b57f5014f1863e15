"""The sandbox really runs code: output comes back, failures and timeouts count as failures, no writes
outside the scratch directory, no network (checked against a real TCP server on 127.0.0.1). Hostile code:
exits and fakes never count as a run to the end, no signals or processes leave the sandbox, in every
isolation level (the `isolation` fixture also forces the audit layer alone)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from common import sandbox
from common.sandbox import run_code


@pytest.fixture(params=["kernel", "audit"])
def isolation(request, monkeypatch):
    """Runs a test with the strongest layers of this machine, then with the audit layer alone (no namespaces)."""
    if request.param == "audit":
        monkeypatch.setattr(sandbox, "kernel_layers", lambda: ())
    return request.param


def test_stdout_and_stdin_come_back():
    res = run_code("import sys\nprint(sum(range(10)))\nprint(sys.stdin.read().upper())", stdin="abc", timeout=20)
    assert res.ok and res.returncode == 0 and not res.timed_out
    assert res.stdout == f"{sum(range(10))}\n{'abc'.upper()}\n"


def test_raised_exception_is_a_failure():
    res = run_code("def f():\n    raise ValueError('boom')\nf()", timeout=20)
    assert not res.ok and not res.timed_out and res.returncode == 1
    assert "ValueError: boom" in res.stderr


def test_nonzero_exit_is_a_failure():
    res = run_code("import sys; sys.exit(3)", timeout=20)
    assert (res.ok, res.returncode) == (False, 3)


def test_timeout_is_a_failure_and_kills_the_child():
    start = time.monotonic()
    res = run_code("print('started', flush=True)\nwhile True:\n    pass", timeout=1.5)
    assert res.timed_out and not res.ok and res.returncode < 0
    assert res.stdout == "started\n"  # output produced before the kill is kept
    assert time.monotonic() - start < 10


def test_output_is_capped():
    res = run_code("print('x' * 100_000)", timeout=20, max_output=1000)
    assert res.ok and res.stdout == "x" * 1000


def test_writes_inside_scratch_work(tmp_path):
    code = "import os\nos.makedirs('a/b')\nopen('a/b/f.txt', 'w').write('hi')\nprint(open('a/b/f.txt').read())"
    res = run_code(code, timeout=20, files={"helper.py": "VALUE = 7\n"})
    assert res.ok, res.stderr
    assert res.stdout == "hi\n"
    assert run_code("from helper import VALUE; print(VALUE * 6)", files={"helper.py": "VALUE = 7\n"}).stdout == "42\n"


@pytest.mark.parametrize("how", [
    "open({p!r}, 'w').write('x')",
    "import pathlib; pathlib.Path({p!r}).write_text('x')",
    "import os; os.close(os.open({p!r}, os.O_CREAT | os.O_WRONLY))",
    "import os; os.symlink({d!r}, 'link'); open('link/escape.txt', 'w').write('x')",
    "import shutil; shutil.copy('main.py', {p!r})",
])
def test_cannot_write_outside_scratch(tmp_path, how, isolation):
    target = tmp_path / "escape.txt"
    res = run_code(how.format(p=str(target), d=str(tmp_path)), timeout=20)
    assert not res.ok
    assert not target.exists()


def test_cannot_delete_or_mkdir_outside_scratch(tmp_path, isolation):
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    res = run_code(f"import os\nos.remove({str(keep)!r})", timeout=20)
    assert not res.ok and keep.read_text() == "precious"
    res = run_code(f"import os\nos.mkdir({str(tmp_path / 'newdir')!r})", timeout=20)
    assert not res.ok and not (tmp_path / "newdir").exists()


def test_scratch_is_removed_afterwards():
    res = run_code("import os; print(os.getcwd())", timeout=20)
    scratch = res.stdout.strip()
    assert res.ok and scratch.startswith("/") and "qf-sandbox-" in scratch
    assert not __import__("os").path.exists(scratch)


def test_no_subprocesses(isolation):
    res = run_code("import subprocess\nsubprocess.run(['true'])", timeout=20)
    assert not res.ok and "PermissionError" in res.stderr


# ---------------------------------------------------------------- hostile code

def test_a_program_that_runs_to_its_end_is_completed(isolation):
    code = "import threading\nt = threading.Thread(target=print, args=('hi',))\nt.start()\nt.join()"
    res = run_code(code, timeout=20)
    assert res.ok and res.completed and res.passed and res.stdout == "hi\n"
    res = run_code("x = 1", timeout=20)
    assert res.completed and res.passed


@pytest.mark.parametrize("leave", [
    "import os; os._exit(0)",
    "import sys; sys.exit(0)",
    "raise SystemExit(0)",
    "exit()",
    "quit()",
    "import os, signal\nsignal.signal(signal.SIGTERM, lambda *a: os._exit(0))\nos.kill(os.getpid(), signal.SIGTERM)",
    "import atexit, os\natexit.register(lambda: os._exit(0))\nassert False",
    "import os, threading\nthreading.Thread(target=os._exit, args=(0,)).start()\nimport time; time.sleep(5)",
])
def test_leaving_early_with_status_0_is_not_completed(leave, isolation):
    """Exit status 0 alone never counts: the program has to reach its last line."""
    res = run_code(leave + "\nprint('last line')", timeout=20)
    assert res.ok and res.returncode == 0  # the status would have fooled a judge...
    assert not res.completed and not res.passed  # ...the sentinel does not
    assert "last line" not in res.stdout


SNOOP = """
import os, sys, re, __main__
found = set()
def look(value):
    if isinstance(value, (bytes, str)):
        text = value.decode('latin-1') if isinstance(value, bytes) else value
        found.update(re.findall(r'(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])', text))  # the token's format
for path in ('/proc/self/cmdline', '/proc/self/environ', 'main.py'):
    look(open(path, 'rb').read())
for fd in range(3, 256):  # whatever the parent passed, read it
    try:
        look(os.read(fd, 4096))
    except OSError:
        pass
frame = sys._getframe()
while frame is not None:  # the bootstrap's globals and locals
    for space in (frame.f_globals, frame.f_locals):
        for value in list(space.values()):
            look(value)
            for cell in getattr(value, '__closure__', None) or ():
                look(cell.cell_contents)
    frame = frame.f_back
for value in vars(__main__).values():
    look(value)
print('0' * 32, 'done', 'qf.sandbox.done', flush=True)
for guess in found:
    for fd in range(3, 256):
        try:
            os.write(fd, guess.encode())
        except OSError:
            pass
os._exit(0)
"""


def test_the_sentinel_cannot_be_found_or_forged(isolation):
    """A program that hunts for the sentinel (argv, environment, its own file, inherited fds, the bootstrap's
    frames and closures) and writes every candidate everywhere still does not count as completed."""
    res = run_code(SNOOP, timeout=20)
    assert res.ok and not res.completed, res.stderr


# the sandboxed programs' probe: 'refused' when the sandbox says no (PermissionError)
ATTEMPT = """
def attempt(name, fn):
    try:
        fn()
        print(name, 'allowed')
    except PermissionError:
        print(name, 'refused')
    except OSError:
        print(name, 'allowed')  # let through by the sandbox, refused by the kernel
"""

INTROSPECT = "import gc, sys, threading" + ATTEMPT + """seen = []
sys.addaudithook(lambda event, args: seen.append(event))  # CPython drops a refused hook silently
sys.audit('anything')
print('addaudithook', 'allowed' if seen else 'refused')
attempt('settrace', lambda: sys.settrace(lambda *a: None))
attempt('setprofile', lambda: sys.setprofile(lambda *a: None))
attempt('gc.get_objects', gc.get_objects)
attempt('gc.get_referrers', lambda: gc.get_referrers(sys))
attempt('current_frames', sys._current_frames)
attempt('audit done', lambda: sys.audit('qf.sandbox.done'))
"""


def test_introspection_that_could_reach_the_sentinel_is_refused(isolation):
    res = run_code(INTROSPECT, timeout=20)
    assert res.passed, res.stderr
    assert all(line.endswith(" refused") for line in res.stdout.splitlines()), res.stdout
    assert len(res.stdout.splitlines()) == 7


SKIP_ASSERTS = """
import linecache, sys
def tracer(frame, event, arg):
    if event == 'line' and linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip().startswith('assert'):
        frame.f_lineno += 1  # jump over the assertion
    return tracer
sys.settrace(tracer)
sys._getframe().f_trace = tracer
assert 1 == 2
x = 0
"""


def test_a_trace_function_cannot_jump_over_assertions(isolation):
    res = run_code(SKIP_ASSERTS, timeout=20)
    assert not res.passed and "PermissionError" in res.stderr


def test_posixsubprocess_cannot_start_processes(isolation):
    """`_posixsubprocess.fork_exec` raises no audit event; multiprocessing's spawn helper calls it directly."""
    spawn = ("import multiprocessing.util, os, sys\n"
             "exe = os.fsencode(sys.executable)\n"
             "multiprocessing.util.spawnv_passfds(exe, [exe, b'-c', b'print(\"escaped\")'], ())\n"
             "import time; time.sleep(1)")
    res = run_code(spawn, timeout=20)
    assert not res.ok and "escaped" not in res.stdout and "PermissionError" in res.stderr
    fresh = "import sys\nsys.modules.pop('_posixsubprocess', None)\nimport _posixsubprocess"
    res = run_code(fresh, timeout=20)
    assert not res.ok and "PermissionError" in res.stderr
    res = run_code("import subprocess, asyncio\nprint('imported')", timeout=20)  # importing stays possible
    assert res.passed and res.stdout == "imported\n", res.stderr


KILL = "import os" + ATTEMPT + """attempt('caller', lambda: os.kill({pid}, 0))
attempt('caller group', lambda: os.killpg({pgid}, 0))
attempt('caller group as kill', lambda: os.kill(-{pgid}, 0))
attempt('everyone', lambda: os.kill(-1, 0))
if os.getppid() != 0:  # 0: the parent is outside this pid namespace
    attempt('parent', lambda: os.kill(os.getppid(), 0))
attempt('self', lambda: os.kill(os.getpid(), 0))
attempt('own group', lambda: os.kill(0, 0))
attempt('own group by id', lambda: os.killpg(os.getpgrp(), 0))
"""


def test_signals_cannot_leave_the_sandbox(isolation):
    res = run_code(KILL.format(pid=os.getpid(), pgid=os.getpgid(0)), timeout=20)
    assert res.passed, res.stderr
    said = dict(line.rsplit(" ", 1) for line in res.stdout.splitlines())
    for name in ("caller", "caller group", "caller group as kill", "everyone", "parent"):
        assert said.get(name, "refused") == "refused", (name, res.stdout)
    assert said["self"] == said["own group"] == said["own group by id"] == "allowed"


@pytest.mark.parametrize("how", [
    "fd = os.open({d!r}, os.O_RDONLY)\nos.close(os.open('escape.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd))",
    "fd = os.open({d!r}, os.O_RDONLY)\n"
    "open('escape.txt', 'w', opener=lambda p, f: os.open(p, f, dir_fd=fd)).write('x')",
    "os.mkdir('sub')\nfd = os.open('sub', os.O_RDONLY)\nd = os.path.relpath({d!r}, os.path.realpath('sub'))\n"
    "os.close(os.open(os.path.join(d, 'escape.txt'), os.O_WRONLY | os.O_CREAT, dir_fd=fd))",
    "fd = os.open({d!r}, os.O_RDONLY)\nopen('x', 'w').close()\nos.rename('x', 'escape.txt', dst_dir_fd=fd)",
    "fd = os.open({d!r}, os.O_RDONLY)\nos.mkdir('escape.txt', dir_fd=fd)",
])
def test_writes_through_dir_fd_stay_inside(tmp_path, how, isolation):
    target = tmp_path / "escape.txt"
    res = run_code("import os\n" + how.format(d=str(tmp_path)), timeout=20)
    assert not res.ok and not target.exists(), res.stderr


def test_writes_through_dir_fd_inside_scratch_work(isolation):
    code = ("import os\nos.mkdir('sub')\nfd = os.open('sub', os.O_RDONLY)\n"
            "os.close(os.open('a.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd))\n"
            "os.rename('a.txt', 'b.txt', src_dir_fd=fd, dst_dir_fd=fd)\nprint(os.listdir('sub'))")
    res = run_code(code, timeout=20)
    assert res.passed and res.stdout == "['b.txt']\n", res.stderr


def test_outside_files_keep_their_mode_and_links(tmp_path, isolation):
    """An fd opened for reading outside cannot be used to chmod the file; no hard link to it can be made."""
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    keep.chmod(0o600)
    res = run_code(f"import os\nfd = os.open({str(keep)!r}, os.O_RDONLY)\nos.chmod(fd, 0o666)", timeout=20)
    assert not res.ok and keep.stat().st_mode & 0o777 == 0o600
    res = run_code(f"import os\nos.link({str(keep)!r}, 'mine.txt')\nopen('mine.txt', 'w').write('gone')", timeout=20)
    assert not res.ok and keep.read_text() == "precious"


@pytest.fixture
def tcp_server():
    """A real TCP server on 127.0.0.1 that counts the connections it accepts."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            accepted.append(1)
            conn.sendall(b"hello")
            conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    t.join(2)
    srv.close()


CONNECT = "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=3)\nprint(s.recv(5))"


def test_cannot_connect_to_local_server(tcp_server):
    port, accepted = tcp_server
    # positive control: the same code outside the sandbox reaches the server
    direct = subprocess.run([sys.executable, "-c", CONNECT.format(port=port)], capture_output=True, text=True,
                            timeout=30)
    assert direct.stdout.strip() == "b'hello'" and len(accepted) == 1
    res = run_code(CONNECT.format(port=port), timeout=20)
    assert not res.ok and "hello" not in res.stdout
    time.sleep(0.3)
    assert len(accepted) == 1  # the sandboxed attempt never arrived


def test_network_namespace_blocks_without_the_audit_hook(tcp_server):
    """The kernel layer alone (plain python, no bootstrap) cannot reach the server either."""
    if "netns" not in sandbox.kernel_layers():
        pytest.skip("no working `unshare` network namespace on this machine")
    port, accepted = tcp_server
    done = subprocess.run([*sandbox._prefix(("netns",)), sys.executable, "-c", CONNECT.format(port=port)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "hello" not in done.stdout
    assert accepted == []


def test_readonly_mounts_block_writes_that_bypass_the_audit_hook(tmp_path):
    """libc's open() and a shell run through libc's system() (neither raises a Python audit event for the
    write) still cannot create files outside the scratch directory: the kernel refuses."""
    if "rofs" not in sandbox.kernel_layers():
        pytest.skip("no working mount namespace on this machine")
    via_open, via_shell = tmp_path / "open.txt", tmp_path / "shell.txt"
    code = ("import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            f"fd = libc.open(os.fsencode({str(via_open)!r}), os.O_WRONLY | os.O_CREAT, 0o644)\n"
            "print(fd, ctypes.get_errno(), flush=True)\n"
            f"print(libc.system(b'touch {via_shell}; touch inside.txt && ls inside.txt'))\n")
    res = run_code(code, timeout=20)
    assert res.ok, res.stderr
    fd, errno_ = res.stdout.split()[:2]
    assert fd == "-1" and int(errno_) == __import__("errno").EROFS
    assert "inside.txt" in res.stdout  # the same shell could write inside its scratch directory
    assert not via_open.exists() and not via_shell.exists()


def test_kernel_layers_hide_processes_and_global_knobs():
    """Pid namespace: the child sees only itself; /proc/sys and device files cannot be opened for writing."""
    if "rofs" not in sandbox.kernel_layers():
        pytest.skip("no working mount/pid namespaces on this machine")
    code = ("import ctypes, os\n"
            "print(os.getpid(), [p for p in os.listdir('/proc') if p.isdigit()])\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "for path in (b'/proc/sys/kernel/hostname', b'/dev/null'):\n"
            "    print(libc.open(path, os.O_WRONLY), ctypes.get_errno())\n")
    res = run_code(code, timeout=20)
    assert res.ok, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "1 ['1']"
    assert lines[1] == f"-1 {__import__('errno').EROFS}"  # read-only /proc/sys (never written here)
    assert lines[2].startswith("-1 ")  # nodev: not even /dev/null
