"""The Celery app and its tasks. Tasks take ids and call one core function; nothing else.

Start workers with `syndicator worker` (it picks the queues from config.yaml) and the sweeper's
clock with `syndicator beat`; `syndicator run` starts both. The config file comes from
$SYNDICATOR_CONFIG (default ./config.yaml).
"""
from __future__ import annotations

from functools import cache

from celery import signals

from syndicator import pipeline
from syndicator.config import load_config
from syndicator.logs import setup_logging
from syndicator.queue import DELIVER_TASK, SWEEP_TASK, make_celery
from syndicator.runtime import Runtime

config = load_config()
app = make_celery(config)


@cache
def runtime() -> Runtime:
    return Runtime(config, celery_app=app)


@signals.setup_logging.connect
def _logging(**_: object) -> None:
    setup_logging()


@app.task(name=DELIVER_TASK, ignore_result=True)
def deliver(delivery_id: int) -> str:
    return pipeline.run(runtime(), delivery_id)


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> dict[str, int]:
    return pipeline.sweep(runtime())
