"""The sandbox really runs code: output comes back, failures and timeouts count as failures, no writes
outside the scratch directory, no network (checked against a real TCP server on 127.0.0.1)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from stages import sandbox
from stages.sandbox import run_code


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
def test_cannot_write_outside_scratch(tmp_path, how):
    target = tmp_path / "escape.txt"
    res = run_code(how.format(p=str(target), d=str(tmp_path)), timeout=20)
    assert not res.ok
    assert not target.exists()


def test_cannot_delete_or_mkdir_outside_scratch(tmp_path):
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


def test_no_subprocesses():
    res = run_code("import subprocess\nsubprocess.run(['true'])", timeout=20)
    assert not res.ok and "PermissionError" in res.stderr


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
