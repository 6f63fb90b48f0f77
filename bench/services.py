"""The real parts the benchmark runs on: a redis-server on a free loopback port, Celery worker
processes, the emulator process; and what /proc says about their CPU time and peak memory.

Every process runs in its own session so it can be stopped as a group, and every wait is bounded.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The repository root (workers are started from here, like `syndicator run` does).
REPO = Path(__file__).resolve().parent.parent
#: Clock ticks per second, for /proc/<pid>/stat CPU times.
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def memory_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss" if key == "VmRSS" else "peak_rss"] = int(value.split()[0]) / 1024
    return out


class Process:
    """A child process in its own session, its output in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path = REPO) -> None:
        self.name, self.argv, self.log, self.cwd = name, argv, log, cwd
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: str | None = None, timeout: float = 90) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        if ready is not None:
            self.wait_ready(ready, timeout)
        return self

    def wait_ready(self, marker: str, timeout: float = 90) -> None:
        wait_for(lambda: marker in self.output() or not self.alive(), timeout, f"{self.name} to start")
        if not self.alive():
            raise RuntimeError(f"{self.name} exited early:\n{self.output()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def memory(self) -> dict[str, float]:
        return memory_mb(self.pid)

    def stop(self, grace: float = 10) -> None:
        """SIGTERM, then SIGKILL the process group if it has not exited within `grace` seconds."""
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class RedisServer(Process):
    """redis-server on a free loopback port, keeping nothing on disk (the production default)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is not installed (`make system-deps` installs it)")
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__("redis-server", [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(workdir)], workdir / "redis.log")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, ready: str | None = None, timeout: float = 20) -> RedisServer:
        super().start()
        wait_for(self._ping, timeout, f"redis-server on port {self.port}")
        return self

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def _ping(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def commandstats(self) -> dict[str, int]:
        """Calls per command since start (INFO commandstats)."""
        stats = self.client().info("commandstats")
        return {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in stats.items()}

    def version(self) -> str:
        return str(self.client().info("server")["redis_version"])


def python_process(name: str, module_args: list[str], log: Path, env: dict[str, str] | None = None,
                   source: Path = REPO) -> Process:
    """A Python child running in this interpreter (the project's virtualenv), on the code in `source`."""
    return Process(name, [sys.executable, *module_args], log, {**(env or {}), "PYTHONPATH": str(source)}, source)


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
