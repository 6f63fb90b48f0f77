"""Real services for integration tests: a redis-server on a free port, a PostgreSQL database
created and dropped per test, and Celery worker/beat processes in their own process groups."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
#: Admin connection used to create and drop per-test databases.
PG_ADMIN_DSN = os.environ.get("SYNDICATOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """A redis-server that keeps nothing on disk (like the production default); killable."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is not installed (the test command installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        wait_for(self.ping, 10, f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        import redis

        try:
            return redis.Redis(port=self.port, socket_timeout=0.5).ping()
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()


class PostgresDatabase:
    def __init__(self) -> None:
        self.name = f"syn_test_{os.getpid()}_{secrets.token_hex(4)}"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.name}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql)

    def create(self) -> PostgresDatabase:
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def write_config(path: Path, *, database_url: str, broker_url: str, public: Path,
                 channels: dict | None = None, site_url: str | None = None, **sections) -> Path:
    """A config.yaml for tests: fast leases and sweeps, so recovery is seen in seconds."""
    data = {
        "database_url": database_url,
        "broker_url": broker_url,
        "paths": {"var": str(path.parent / "var"), "public": str(public)},
        "site": {"name": "测试站", "base_url": site_url},
        "worker": {"pool": "threads", "concurrency": 8, "visibility_timeout": 3600},
        "delivery": {"lease_seconds": 4, "sweep_interval": 0.5, "requeue_after": 2, "max_countdown": 5,
                     "max_attempts": 5, "backoff_factor": 0.5, "backoff_max": 2, "poll_interval": 0.5},
        "channels": channels or {
            "rss_main": {"type": "rss", "title": "测试订阅", "items": 100},
            "microsite": {"type": "microsite", "title": "测试微站", "path": "m"},
        },
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


class CeleryProcess:
    """`syndicator worker` or `syndicator beat` as a real process in its own process group."""

    def __init__(self, config: Path, role: str = "worker", env: dict[str, str] | None = None,
                 extra: list[str] | None = None) -> None:
        self.config, self.role = config, role
        self.env = {**os.environ, **(env or {}), "SYNDICATOR_CONFIG": str(config)}
        self.extra = extra or []
        self.log = config.parent / f"{role}-{secrets.token_hex(3)}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True) -> CeleryProcess:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "syndicator.cli", "--config", str(self.config),
                                      self.role, *self.extra], cwd=REPO, env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        if wait_ready and self.role == "worker":
            wait_for(lambda: "ready." in self.output() or self.proc.poll() is not None, 60, "worker ready")
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.output()[-3000:]}")
        return self

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group, like an OOM kill or a pulled plug."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
