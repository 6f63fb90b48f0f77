"""Waking workers: Celery settings, queue names and sending delivery messages.

Messages carry only a delivery id. They are a wake-up call, not the record of work: the database
is, and the sweeper re-sends anything due that no worker has claimed.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery
from sqlalchemy import update

from syndicator import embedded_broker
from syndicator.config import Config
from syndicator.models import Delivery
from syndicator.store import Store

log = logging.getLogger(__name__)

embedded_broker.register()

#: Task names (workers.py registers them under these names).
DELIVER_TASK = "syndicator.deliver"
SWEEP_TASK = "syndicator.sweep"
#: Queue for the sweeper and other control work.
CONTROL_QUEUE = "syn.control"
#: How hard a publisher tries to reach the broker before leaving the work to the sweeper.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}


def queue_name(channel: str) -> str:
    """One queue per channel instance, so a slow channel does not hold back the others."""
    return f"syn.{channel}"


def celery_settings(config: Config) -> dict[str, Any]:
    broker = config.broker
    transport_options: dict[str, Any] = {"visibility_timeout": config.worker.visibility_timeout}
    if broker.startswith("sqla+"):
        transport_options["polling_interval"] = 0.1
    if broker.startswith("redis"):
        transport_options.update(socket_timeout=5, socket_connect_timeout=5)
    return {
        "broker_url": broker,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": CONTROL_QUEUE,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": {
            "sweep": {"task": SWEEP_TASK, "schedule": config.delivery.sweep_interval,
                      "options": {"queue": CONTROL_QUEUE, "expires": max(config.delivery.sweep_interval * 2, 1)}},
        },
    }


def make_celery(config: Config, name: str = "syndicator") -> Celery:
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_settings(config))
    return app


class Enqueuer:
    """Sends delivery messages; reports the ones the broker did not take."""

    def __init__(self, config: Config, store: Store, app: Celery | None = None) -> None:
        self.store = store
        self.app = app or make_celery(config)

    def enqueue(self, items: Iterable[tuple[int, str]], countdown: float | None = None) -> list[int]:
        items = list(items)
        failed: list[int] = []
        try:
            with self.app.producer_or_acquire() as producer:
                for delivery_id, channel in items:
                    try:
                        self.app.send_task(DELIVER_TASK, args=[delivery_id], queue=queue_name(channel),
                                           countdown=countdown, producer=producer, retry=True,
                                           retry_policy=PUBLISH_RETRY_POLICY)
                    except Exception as exc:  # broker errors vary by transport
                        log.warning("broker refused a delivery message; the sweeper will resend it",
                                    extra={"delivery_id": delivery_id, "error": repr(exc)})
                        failed.append(delivery_id)
        except Exception as exc:
            log.warning("broker unavailable; the sweeper will send the deliveries", extra={"error": repr(exc)})
            return [d for d, _ in items]
        return failed

    def forget(self, delivery_ids: Iterable[int]) -> None:
        """Mark deliveries as not enqueued, so the sweeper sends them at its next run."""
        ids = list(delivery_ids)
        if ids:
            self.store.run_write(lambda s: s.execute(
                update(Delivery).where(Delivery.id.in_(ids)).values(enqueued_at=None)))
