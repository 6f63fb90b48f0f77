"""The running world of the throughput runs: one redis-server, the emulator process, and for each
concurrency under test a syndicator system (config, database, a `syndicator worker`) next to a bare
Celery worker with the same pool and concurrency.

Each concurrency level gets its own Redis database number (the queue names are the channel names,
so two syndicator workers on one database would take each other's messages) and its own SQL
database. All workers stay up for the whole benchmark, so the modes and levels can be interleaved.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from celery import Celery

from bench import bare
from bench.services import REPO, Process, RedisServer, python_process, wait_for
from bench.workload import http_channels, write_config
from syndicator.config import Config, load_config
from syndicator.runtime import Runtime

#: Admin connection for creating PostgreSQL databases (--db postgresql).
PG_ADMIN_DSN = os.environ.get("SYNDICATOR_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


class Emulators:
    """The emulator process (bench/emulators.py) and its admin calls."""

    def __init__(self, folder: Path) -> None:
        self.urls_file = folder / "emulators.json"
        self.process = python_process("emulators", ["-m", "bench.emulators", str(self.urls_file)],
                                      folder / "emulators.log")
        self.urls: dict[str, str] = {}
        self.http = requests.Session()

    def start(self) -> Emulators:
        self.urls_file.unlink(missing_ok=True)
        self.process.start()
        wait_for(lambda: self.urls_file.exists() or not self.process.alive(), 60, "the emulators")
        if not self.process.alive():
            raise RuntimeError(f"emulators exited:\n{self.process.output()[-3000:]}")
        self.urls = json.loads(self.urls_file.read_text())
        return self

    def reset(self, latency: float) -> None:
        """Forget all posts and completions; answer every API call after `latency` seconds."""
        for url in self.urls.values():
            self.http.post(f"{url}/_bench/reset", json={"latency": latency}, timeout=10).raise_for_status()

    def completed(self) -> int:
        return sum(self.http.get(f"{u}/_bench/completions", params={"since": 10**9}, timeout=10).json()["count"]
                   for u in self.urls.values())

    def completions(self) -> list[tuple[float, str]]:
        items: list[tuple[float, str]] = []
        for url in self.urls.values():
            items += [tuple(i) for i in self.http.get(f"{url}/_bench/completions", timeout=30).json()["items"]]
        return items

    def stop(self) -> None:
        self.process.stop()


@dataclass
class System:
    """One concurrency level: syndicator (driver-side runtime + worker) and its bare twin."""

    concurrency: int
    config: Config
    rt: Runtime
    syn: Process
    bare: Process | None
    bare_app: Celery
    pg_database: str | None = None


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)


def start_system(home: Path, redis_db: int, redis: RedisServer, emulators: Emulators, concurrency: int,
                 database: str, source: Path = REPO, worker: dict | None = None, with_bare: bool = True) -> System:
    """Configure one system and start its processes (not yet waited for: see `wait_ready`).

    `source` is a checkout whose `syndicator worker` to run (bench/before.py: an earlier commit's;
    its own code creates its schema); `worker` overrides settings of the config's `worker` section.
    """
    pg_name = None
    if database == "postgresql":
        pg_name = f"syn_bench_{os.getpid()}_{redis_db}_{secrets.token_hex(3)}"
        _pg_admin(f'CREATE DATABASE "{pg_name}"')
        db_url = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + pg_name
    else:
        db_url = f"sqlite:///{home / 'syndicator.db'}"
    path = write_config(home / "config.yaml", database_url=db_url, broker_url=redis.url(redis_db),
                        channels=http_channels(emulators.urls), concurrency=concurrency, worker=worker)
    config = load_config(path)
    rt = Runtime(config)
    if source == REPO:
        rt.store.migrate()
    else:
        migrate = "import sys; from syndicator.store import Store; Store(sys.argv[1]).migrate()"
        subprocess.run([sys.executable, "-c", migrate, db_url], cwd=source, check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(source)})
    env = {"SYNDICATOR_CONFIG": str(path)}
    label = "" if source == REPO else f" ({source.name})"
    syn = python_process(f"syndicator worker c={concurrency}{label}", ["-m", "syndicator.cli", "--config", str(path),
                                                                      "worker"],
                         home / "syndicator-worker.log", env, source)
    bare_worker = python_process(f"bare worker c={concurrency}", ["-m", "bench.bare"], home / "bare-worker.log", env)
    system = System(concurrency, config, rt, syn, bare_worker if with_bare else None, bare.make_app(config), pg_name)
    for p in (syn, system.bare):
        if p is not None:
            p.start()
    return system


def wait_ready(systems: list[System]) -> None:
    for s in systems:
        for p in (s.syn, s.bare):
            if p is not None:
                p.wait_ready("ready.", timeout=120)
    time.sleep(0.5)


def start_systems(folder: Path, redis: RedisServer, emulators: Emulators, concurrencies: list[int],
                  database: str) -> list[System]:
    systems = [start_system(folder / f"c{c}", i + 1, redis, emulators, c, database)
               for i, c in enumerate(concurrencies)]
    wait_ready(systems)
    return systems


def stop_systems(systems: list[System]) -> None:
    for s in systems:
        s.syn.stop()
        if s.bare is not None:
            s.bare.stop()
        s.rt.store.dispose()
        if s.pg_database:
            _pg_admin(f'DROP DATABASE IF EXISTS "{s.pg_database}" WITH (FORCE)')
