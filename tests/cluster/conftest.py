"""A real Spark standalone cluster on 127.0.0.1 for the cluster tests: one master, two workers.

pip's pyspark has no `start-master.sh`; `spark-class org.apache.spark.deploy.master.Master` and
`...deploy.worker.Worker` start the same daemons. Each daemon runs in its own process group, so a
test can kill one worker with everything it launched (executor JVM, Python workers) and the teardown
leaves nothing behind. Workers are small (1 core, 1 GiB each) to fit a 2-core CI machine.

    pytest -m cluster tests/cluster
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
WORKER_CORES, WORKER_MEMORY = 1, "1g"


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: starts a Spark standalone master and two workers (JVMs)")


def spark_home() -> str:
    import pyspark
    return str(Path(pyspark.__file__).parent)


def spark_class() -> str:
    return str(Path(spark_home()) / "bin" / "spark-class")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def daemon_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", SPARK_LOCAL_DIRS=str(tmp / "local"),
               SPARK_LOG_DIR=str(tmp / "logs"), SPARK_DAEMON_MEMORY="384m", SPARK_HOME=spark_home(),
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


@dataclass
class Worker:
    proc: subprocess.Popen
    port: int
    work_dir: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILLs the worker and everything it started (executor JVM, Python workers)."""
        with_group(self.proc, signal.SIGKILL)
        self.proc.wait()


@dataclass
class Cluster:
    master_url: str
    tmp: Path
    master: subprocess.Popen
    workers: list[Worker] = field(default_factory=list)
    logs: list = field(default_factory=list)
    registered: int = 0

    def start_worker(self) -> Worker:
        port, work = free_port(), self.tmp / f"worker{len(self.workers)}"
        work.mkdir(parents=True, exist_ok=True)
        cmd = [spark_class(), "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", "127.0.0.1",
               "--port", str(port), "--webui-port", "0", "--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY,
               "--work-dir", str(work)]
        log = open(work / "worker.log", "wb")
        self.logs.append(log)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=daemon_env(self.tmp),
                                start_new_session=True)
        wait_for_port(port, proc)
        worker = Worker(proc, port, work)
        self.workers.append(worker)
        return worker

    def wait_registered(self, n: int, timeout: float = 120) -> None:
        """Waits until the master log says `n` workers have registered."""
        deadline, log = time.time() + timeout, self.tmp / "master.log"
        while time.time() < deadline:
            if log.read_text(errors="replace").count("Registering worker") >= n:
                return
            time.sleep(0.3)
        raise TimeoutError(f"{n} workers did not register with {self.master_url}")

    def replace_dead_workers(self) -> None:
        """Starts a new worker for each killed one and waits until it has registered."""
        dead = [w for w in self.workers if not w.alive]
        for w in dead:
            self.workers.remove(w)
            self.start_worker()
        self.registered += len(dead)
        self.wait_registered(self.registered)

    def stop(self) -> None:
        for proc in [w.proc for w in self.workers] + [self.master]:
            if proc.poll() is None:
                with_group(proc, signal.SIGTERM)
        for proc in [w.proc for w in self.workers] + [self.master]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with_group(proc, signal.SIGKILL)
                proc.wait()
        for log in self.logs:
            log.close()


def with_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def start_cluster(tmp: Path, workers: int = 2) -> Cluster:
    port = free_port()
    log = open(tmp / "master.log", "wb")
    cmd = [spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
           "--webui-port", "0"]
    master = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=daemon_env(tmp), start_new_session=True)
    cluster = Cluster(f"spark://127.0.0.1:{port}", tmp, master, logs=[log])
    try:
        wait_for_port(port, master)
        for _ in range(workers):
            cluster.start_worker()
        cluster.registered = workers
        cluster.wait_registered(workers)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A standalone master and two 1-core workers on 127.0.0.1; stopped at the end of the session."""
    c = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Path:
    """What `make dist --no-env` builds (code zip + assets archive), in a temporary folder."""
    from tools.dist import build_assets, build_zip

    out = tmp_path_factory.mktemp("dist")
    build_zip(out / "qwenforge.zip")
    build_assets(out / "assets.tar.gz")
    return out


def submit_command(master: str, dist: Path, script: str, args: list[str], packed_env: Path | None = None) -> list[str]:
    """The spark-submit line of the Makefile's cluster JOB macro (see Makefile), for any driver script."""
    archives = f"{dist}/assets.tar.gz#assets" + (f",{packed_env}#env" if packed_env else "")
    cmd = [str(VENV_BIN / "spark-submit"), "--master", master, "--py-files", f"{dist}/qwenforge.zip",
           "--archives", archives, "--conf", f"spark.pyspark.driver.python={sys.executable}",
           "--conf", "spark.executor.memory=768m", "--conf", "spark.ui.enabled=false"]
    if packed_env:
        cmd += ["--conf", "spark.pyspark.python=./env/bin/python"]
    return cmd + [script, *args]


def submit_env() -> dict[str, str]:
    """The driver's environment under `make`: relative asset paths, valid from the repository root."""
    env = dict(os.environ, QWEN_LID_MODEL="assets/lid.176.ftz", QWEN_TIKTOKEN="assets/qwen.tiktoken",
               PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1", SPARK_HOME=spark_home())
    for name in ("MASTER", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET"):
        env.pop(name, None)
    return env


@contextlib.contextmanager
def submitted(cmd: list[str], log: Path, **env: str) -> Iterator[subprocess.Popen]:
    """Starts spark-submit in its own process group (SIGKILL to the group kills the driver JVM and its
    Python); on leaving the block, a submit still running is killed."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**submit_env(), **env}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with_group(proc, signal.SIGKILL)
            proc.wait()
