"""Bare Celery, the baseline: syndicator's own Celery settings, pool and concurrency, and a task that
only makes the HTTP call — no SQL, no state tracking, no outbox, messages carry the whole request.

    SYNDICATOR_CONFIG=… python -m bench.bare      # a worker on the bare.<channel> queues

`send` is also what the sequential loop calls, one request after another.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import requests
from celery import Celery, signals

from bench.workload import HTTP_CHANNELS
from syndicator.config import Config, load_config
from syndicator.logs import setup_logging
from syndicator.queue import make_celery
from syndicator.runner import worker_argv

TASK = "bench.bare_deliver"
#: Seconds to wait for an emulator, as the adapters do.
TIMEOUT = 15

_local = threading.local()


def queue(channel: str) -> str:
    return f"bare.{channel}"


def send(request: dict[str, Any]) -> int:
    """Make one delivery's HTTP call on this thread's keep-alive session; raise unless it succeeded."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    data = request["body"].encode() if "body" in request else request["data"]
    auth = tuple(request["auth"]) if request.get("auth") else None
    resp = session.request(request["method"], request["url"], data=data, headers=request.get("headers"),
                           auth=auth, timeout=TIMEOUT, allow_redirects=False)
    if resp.status_code >= 300:
        raise RuntimeError(f"{request['url']} answered HTTP {resp.status_code}: {resp.text[:200]}")
    return resp.status_code


def make_app(config: Config) -> Celery:
    app = make_celery(config, name="bench-bare")

    @app.task(name=TASK, ignore_result=True)
    def deliver(request: dict[str, Any]) -> None:
        send(request)

    return app


def argv(config: Config) -> list[str]:
    """`syndicator worker`'s own arguments, with the bare queues and a hostname of our own."""
    args = worker_argv(config)
    args[args.index("--queues") + 1] = ",".join(queue(c) for c in HTTP_CHANNELS)
    return [f"--hostname=bare-{os.getpid()}@%h" if a.startswith("--hostname=") else a for a in args]


@signals.setup_logging.connect
def _logging(**_: object) -> None:
    setup_logging()


if __name__ == "__main__":
    config = load_config()
    make_app(config).worker_main(argv(config))
