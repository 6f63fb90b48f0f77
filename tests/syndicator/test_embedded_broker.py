"""The embedded (SQLite) broker: kombu never deletes a consumed message, so the sweeper prunes those
consumed longer ago than `worker.broker_retention` — and never one still queued or held by a worker."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from kombu import Connection, Queue
from sqlalchemy import create_engine, func, select, update

from syndicator import embedded_broker, pipeline
from syndicator.config import ConfigError, load_config
from syndicator.embedded_broker import _messages as messages
from syndicator.embedded_broker import prune_consumed
from syndicator.runtime import Runtime
from tests.conftest import System, write_article
from tests.support.services import write_config


def _config(tmp_path: Path, broker_url: str | None = None, **sections):
    return load_config(write_config(tmp_path / "config.yaml", database_url=f"sqlite:///{tmp_path / 's.db'}",
                                    broker_url=broker_url or f"sqla+sqlite:///{tmp_path / 'b.db'}",
                                    public=tmp_path / "public", **sections))


class Broker:
    """The broker file as kombu wrote it, and a kombu connection to it (the embedded transport)."""

    def __init__(self, config) -> None:
        self.url = config.broker
        self.engine = create_engine(self.url[len("sqla+"):])
        self.conn = Connection(self.url, transport_options={"polling_interval": 0.05})

    def publish(self, queue: str, n: int) -> None:
        q = Queue(queue, routing_key=queue)
        producer = self.conn.Producer()
        for i in range(n):
            producer.publish({"n": i}, routing_key=queue, declare=[q])

    def fetch(self, queue: str, n: int) -> list:
        """Take n messages as a late-acking consumer does (not acked yet)."""
        bound = Queue(queue, routing_key=queue)(self.conn.default_channel)
        got = [bound.get(no_ack=False) for _ in range(n)]
        assert all(m is not None for m in got)
        return got

    def rows(self) -> dict[int, tuple[bool, datetime | None]]:
        with self.engine.connect() as c:
            return {r.id: (r.visible, r.timestamp) for r in c.execute(select(messages))}

    def consumed(self) -> set[int]:
        return {i for i, (visible, _) in self.rows().items() if not visible}

    def backdate(self, ids, by: timedelta) -> None:
        """Pretend these messages were fetched `by` earlier (kombu writes local time)."""
        with self.engine.begin() as c:
            c.execute(update(messages).where(messages.c.id.in_(list(ids))).values(timestamp=datetime.now() - by))

    def close(self) -> None:
        self.conn.release()
        self.engine.dispose()


@pytest.fixture
def broker(tmp_path):
    b = Broker(_config(tmp_path))
    yield b
    b.close()


def test_kombu_marks_a_message_on_fetch_and_keeps_it_after_the_ack(broker):
    # What the prune relies on, checked against the installed kombu.
    broker.publish("syn.a", 2)
    assert [v for v, ts in broker.rows().values()] == [True, True]
    assert all(ts is None for _, ts in broker.rows().values())  # never fetched: no timestamp
    [message] = broker.fetch("syn.a", 1)
    fetched = broker.rows()
    assert sorted(v for v, _ in fetched.values()) == [False, True]  # invisible from the fetch on …
    assert all((ts is not None) == (not v) for v, ts in fetched.values())  # … stamped at the fetch
    message.ack()
    assert broker.rows() == fetched  # … and the ack touches no row
    [again] = broker.fetch("syn.a", 1)
    again.requeue()  # a requeued message comes back as a new row; the old one stays invisible
    rows = broker.rows()
    assert len(rows) == 3 and sorted(v for v, _ in rows.values()) == [False, False, True]


def test_prune_deletes_old_consumed_messages_only(tmp_path, broker):
    config = _config(tmp_path)
    broker.publish("syn.done", 5)
    done = broker.fetch("syn.done", 5)
    for m in done:
        m.ack()
    old = broker.consumed()
    broker.backdate(old, timedelta(seconds=config.worker.broker_retention + 60))
    broker.publish("syn.recent", 2)
    for m in broker.fetch("syn.recent", 2):
        m.ack()  # consumed within the retention
    broker.publish("syn.held", 2)
    held = broker.fetch("syn.held", 2)  # in flight: fetched, not acked
    broker.publish("syn.waiting", 3)  # never fetched
    before = broker.rows()

    assert prune_consumed(config) == len(old) == 5
    after = broker.rows()
    assert set(after) == set(before) - old
    assert sum(1 for v, _ in after.values() if v) == 3  # the waiting ones
    assert len(broker.consumed()) == 4  # the recent and the held ones
    assert prune_consumed(config) == 0  # nothing left to do

    # The held messages are still acked normally, and the waiting ones still delivered.
    for m in held:
        m.ack()
    assert len(broker.fetch("syn.waiting", 3)) == 3


def test_a_message_fetched_within_the_retention_is_kept_however_old_it_is(tmp_path, broker):
    config = _config(tmp_path)
    broker.publish("syn.q", 1)
    broker.backdate(set(broker.rows()), timedelta(days=3))  # the timestamp of a waiting row is ignored
    assert prune_consumed(config) == 0
    [held] = broker.fetch("syn.q", 1)
    assert prune_consumed(config) == 0
    assert prune_consumed(config, now=datetime.now() + timedelta(seconds=config.worker.broker_retention - 30)) == 0
    assert prune_consumed(config, now=datetime.now() + timedelta(seconds=config.worker.broker_retention + 30)) == 1
    held.ack()


def test_prune_works_in_bounded_batches(tmp_path, broker, monkeypatch):
    config = _config(tmp_path)
    broker.publish("syn.q", 1)  # kombu creates its tables and the queue row
    with broker.engine.connect() as c:
        queue_id = c.exec_driver_sql("SELECT id FROM kombu_queue").scalar()
    stamp = datetime.now() - timedelta(hours=2)
    with broker.engine.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO kombu_message (visible, timestamp, payload, version, queue_id) VALUES (0, ?, '{}', 2, ?)",
            [(stamp.isoformat(" "), queue_id)] * 250)
    monkeypatch.setattr(embedded_broker, "PRUNE_BATCH", 40)
    monkeypatch.setattr(embedded_broker, "PRUNE_MAX_BATCHES", 3)
    assert prune_consumed(config) == 120
    assert prune_consumed(config) == 120
    assert prune_consumed(config) == 10
    assert prune_consumed(config) == 0
    assert len(broker.rows()) == 1  # the waiting message


def test_prune_does_nothing_for_another_broker_or_a_missing_file(tmp_path):
    redis = _config(tmp_path, broker_url="redis://127.0.0.1:1/0")
    assert prune_consumed(redis) == 0
    embedded = _config(tmp_path)
    assert prune_consumed(embedded) == 0
    assert not (tmp_path / "b.db").exists()  # not created by the prune


def test_a_prune_failure_is_logged_and_the_sweep_goes_on(tmp_path, caplog):
    config = _config(tmp_path)
    (tmp_path / "b.db").write_bytes(b"this is not an SQLite database" * 100)
    rt = Runtime(config)
    rt.store.migrate()
    try:
        with caplog.at_level(logging.WARNING):
            assert prune_consumed(config) == 0
            assert pipeline.sweep(rt) == {"recovered": 0, "enqueued": 0, "expired": 0}
    finally:
        rt.store.dispose()
    failures = [r for r in caplog.records if "could not prune" in r.getMessage()]
    assert len(failures) == 2 and "not a database" in failures[0].error


def test_the_sweeper_prunes_the_embedded_broker(tmp_path, broker):
    config = _config(tmp_path)
    rt = Runtime(config)
    rt.store.migrate()
    broker.publish("syn.q", 3)
    for m in broker.fetch("syn.q", 2):
        m.ack()
    broker.backdate(broker.consumed(), timedelta(hours=2))
    try:
        pipeline.sweep(rt)
    finally:
        rt.store.dispose()
    assert broker.consumed() == set()
    assert len(broker.rows()) == 1


@pytest.mark.parametrize("worker,delivery,expected", [
    ({"broker_retention": 30}, {}, "worker.broker_retention: Input should be greater than or equal to 60"),
    ({"broker_retention": 100}, {"lease_seconds": 90, "max_countdown": 20},
     "worker.broker_retention must be at least delivery.max_countdown + delivery.lease_seconds (100.0 vs 110.0)"),
])
def test_retention_is_validated(tmp_path, worker, delivery, expected):
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, worker=worker, delivery=delivery)
    assert expected in str(err.value)


def test_retention_default_is_an_hour(tmp_path):
    assert _config(tmp_path).worker.broker_retention == 3600


@pytest.mark.integration
def test_with_a_real_worker_consumed_messages_are_pruned_and_the_broker_keeps_working(tmp_path):
    system = System(tmp_path, f"sqlite:///{tmp_path / 's.db'}", f"sqla+sqlite:///{tmp_path / 'b.db'}")
    broker = Broker(system.config)
    try:
        worker = system.worker()
        for i in range(3):
            system.publish(write_article(tmp_path / "articles", f"item-{i}", title=f"稿件 {i}"))
        assert system.wait_settled(6) == {"delivered": 6}
        worker.stop()
        consumed = broker.consumed()
        assert len(consumed) >= 6  # one message per delivery at least, all still in the file
        broker.publish("syn.nobody", 2)  # queued for a channel no worker serves
        assert prune_consumed(system.config) == 0  # consumed just now: within the retention

        broker.backdate(consumed, timedelta(hours=2))
        assert pipeline.sweep(system.rt)["enqueued"] == 0
        assert broker.consumed() == set()
        assert sorted(v for v, _ in broker.rows().values()) == [True, True]

        system.worker()
        system.publish(write_article(tmp_path / "articles", "after-prune", title="清理之后"))
        assert system.wait_settled(8) == {"delivered": 8}
    finally:
        broker.close()
        system.close()
    engine = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    with engine.connect() as c:  # the message for a channel no worker serves is still waiting
        assert c.scalar(select(func.count()).select_from(messages).where(messages.c.visible == True)) == 2  # noqa: E712
    engine.dispose()
