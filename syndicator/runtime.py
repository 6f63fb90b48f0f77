"""The per-process runtime: config, store, ports and channel instances, built once."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


class ChannelSlots:
    """This process's cap on threads busy with one channel, so a hanging channel cannot take them all.

    A thread that finds every slot taken waits while the holders are healthy (a burst), and gives
    up at once when the oldest holder has been busy longer than `hang_after` (the channel hangs):
    its caller then sends the message back to the broker instead of holding a thread.
    """

    def __init__(self, cap: int, hang_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap
        self.hang_after = hang_after
        self._clock = clock
        self._busy: dict[int, float] = {}
        self._next = 0
        self._cond = threading.Condition()

    def acquire(self, blocking: bool = True) -> int | None:
        """A slot's token, or None when the channel hangs (or it is taken and `blocking` is False)."""
        with self._cond:
            while len(self._busy) >= self.cap:
                wait = min(self._busy.values()) + self.hang_after - self._clock()
                if not blocking or wait <= 0:
                    return None
                self._cond.wait(wait)
            self._next += 1
            self._busy[self._next] = self._clock()
            return self._next

    def release(self, token: int) -> None:
        with self._cond:
            del self._busy[token]
            self._cond.notify()

    @contextmanager
    def held(self) -> Iterator[bool]:
        """`with slots.held() as ok:` — ok is False when the caller should send the message back."""
        token = self.acquire()
        try:
            yield token is not None
        finally:
            if token is not None:
                self.release(token)


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
        self._slots: dict[str, ChannelSlots] = {}
        self._lock = threading.Lock()
        self._enqueuer: Enqueuer | None = None
        self._celery_app = celery_app

    def slot(self, channel: str) -> ChannelSlots:
        """This process's cap on threads busy with one channel."""
        with self._lock:
            if channel not in self._slots:
                worker = self.config.worker
                cap = worker.channel_concurrency or max(1, worker.concurrency // 2)
                self._slots[channel] = ChannelSlots(cap, worker.hang_after)
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
