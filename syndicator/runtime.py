"""The per-process runtime: config, store, ports and channel instances, built once."""
from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import jinja2
from celery import Celery

from channels.base import Channel, Ports
from channels.registry import build_channel
from syndicator.config import Config
from syndicator.models import utcnow
from syndicator.queue import Enqueuer
from syndicator.store import Store
from syndicator.tokens import token_cache_for


def template_env(config: Config) -> jinja2.Environment:
    """Jinja2 with autoescaping on for every template."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(config.templates_dir), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


class Runtime:
    def __init__(self, config: Config, *, store: Store | None = None,
                 clock: Callable[[], datetime] = utcnow, celery_app: Celery | None = None) -> None:
        self.config = config
        self.store = store or Store(config.db_url)
        self.clock = clock
        self.ports = Ports(public_dir=config.public_dir, site_url=config.site.base_url,
                           templates=template_env(config), timezone=ZoneInfo(config.site.timezone),
                           clock=clock, tokens=token_cache_for(config.token_cache_url, config.broker,
                                                               config.var_dir),
                           base_dir=config.base_dir)
        self._channels: dict[str, Channel] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()
        self._enqueuer: Enqueuer | None = None
        self._celery_app = celery_app

    def slot(self, channel: str) -> threading.BoundedSemaphore:
        """This process's cap on threads busy with one channel."""
        with self._lock:
            if channel not in self._slots:
                cap = self.config.worker.channel_concurrency or max(1, self.config.worker.concurrency // 2)
                self._slots[channel] = threading.BoundedSemaphore(cap)
            return self._slots[channel]

    def channel(self, name: str) -> Channel:
        with self._lock:
            if name not in self._channels:
                self._channels[name] = build_channel(self.config, name, self.ports)
            return self._channels[name]

    @property
    def enqueuer(self) -> Enqueuer:
        with self._lock:
            if self._enqueuer is None:
                self._enqueuer = Enqueuer(self.config, self.store, self._celery_app)
            return self._enqueuer
