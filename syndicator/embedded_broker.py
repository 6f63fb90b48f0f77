"""The embedded broker: kombu's SQLAlchemy transport on an SQLite file, for `syndicator run`
with no server to install.

kombu 5.x passes every transport option to `create_engine`, including the virtual transport's own
`polling_interval`, which SQLAlchemy rejects; this subclass keeps those out of the engine call.
Registered under the `sqla` / `sqlalchemy` aliases when `syndicator.queue` is imported.

kombu never deletes a consumed message: fetching one sets `visible = 0` (and, through the model's
`onupdate`, its `timestamp` to the worker's local time; a message never fetched has no timestamp),
and acknowledging it touches no row — acks live in the consumer's memory. A message that goes back
to the queue (a reject with requeue, a worker's graceful shutdown) is inserted again as a new row;
the old invisible row is never handed out again. `prune_consumed`, run by the sweeper, deletes the
invisible rows fetched more than `worker.broker_retention` seconds ago, so the file stops growing.
The retention is what keeps a message a worker still holds (waiting for its countdown, or running
with late acks) in the table.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as _SqlaChannel
from kombu.transport.sqlalchemy import Transport as _SqlaTransport
from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, Table, and_, create_engine, func, inspect, select
from sqlalchemy.engine import Engine, make_url

from syndicator.config import Config

log = logging.getLogger(__name__)

#: Options meant for the transport itself, not for SQLAlchemy's create_engine.
_TRANSPORT_ONLY = ("polling_interval", "visibility_timeout")
#: The broker URL prefix of the embedded broker.
EMBEDDED_PREFIX = "sqla+sqlite:///"
#: Consumed messages deleted per transaction (each holds SQLite's write lock only briefly) …
PRUNE_BATCH = 500
#: … and transactions per prune; what is left waits for the next sweep.
PRUNE_MAX_BATCHES = 20

# kombu's message table, as far as the prune needs it (kombu.transport.sqlalchemy.models.Message).
_messages = Table("kombu_message", MetaData(), Column("id", Integer, primary_key=True),
                  Column("visible", Boolean), Column("timestamp", DateTime))
_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


class Channel(_SqlaChannel):
    def _engine_from_config(self):
        options = self.connection.client.transport_options
        saved = {k: options.pop(k) for k in _TRANSPORT_ONLY if k in options}
        try:
            return super()._engine_from_config()
        finally:
            options.update(saved)


class Transport(_SqlaTransport):
    Channel = Channel


def register() -> None:
    for alias in ("sqla", "sqlalchemy"):
        TRANSPORT_ALIASES[alias] = "syndicator.embedded_broker:Transport"


def is_embedded(broker_url: str) -> bool:
    """True for the embedded SQLite broker (`sqla+sqlite:///…`)."""
    return broker_url.startswith(EMBEDDED_PREFIX)


def prune_consumed(config: Config, *, now: datetime | None = None) -> int:
    """Delete the embedded broker's consumed messages fetched more than `worker.broker_retention`
    seconds ago, in bounded batches; return how many went. Does nothing for any other broker.

    Never raises: a failure is logged and the next sweep tries again. `now` is naive local time,
    like the timestamps kombu writes.
    """
    broker = config.broker
    if not is_embedded(broker):
        return 0
    try:
        return _prune(broker[len("sqla+"):], config.worker.broker_retention, now or datetime.now())
    except Exception as exc:  # the sweep must go on whatever the broker file does
        log.warning("could not prune consumed messages from the embedded broker; the next sweep tries again",
                    extra={"error": repr(exc)})
        return 0


def _engine(url: str) -> Engine | None:
    database = make_url(url).database
    if not database or database == ":memory:" or not Path(database).exists():
        return None  # no broker file yet: nothing to prune (and do not create one)
    with _engines_lock:
        if url not in _engines:
            _engines[url] = create_engine(url)
        return _engines[url]


def _prune(url: str, retention: float, now: datetime) -> int:
    engine = _engine(url)
    if engine is None:
        return 0
    m = _messages
    # Invisible and fetched before the cutoff. `visible` is wrapped so that SQLite walks the
    # (timestamp, id) index from the oldest fetch up to the cutoff instead of every invisible row:
    # with nothing to prune this is one index probe. Never-fetched rows have no timestamp.
    consumed = and_(m.c.timestamp < now - timedelta(seconds=retention),
                    func.coalesce(m.c.visible, True) == False)  # noqa: E712 (SQL, not Python)
    deleted = 0
    with engine.connect() as conn:
        if not inspect(conn).has_table(m.name):
            return 0  # no worker has used this broker yet
        for _ in range(PRUNE_MAX_BATCHES):
            # The read takes no lock; the delete that follows starts its own short write transaction.
            ids = conn.scalars(select(m.c.id).where(consumed).order_by(m.c.timestamp, m.c.id)
                               .limit(PRUNE_BATCH)).all()
            if not ids:
                conn.rollback()
                break
            deleted += conn.execute(m.delete().where(m.c.id.in_(ids), consumed)).rowcount
            conn.commit()
            if len(ids) < PRUNE_BATCH:
                break
    if deleted:
        log.info("pruned consumed messages from the embedded broker", extra={"count": deleted})
    return deleted
