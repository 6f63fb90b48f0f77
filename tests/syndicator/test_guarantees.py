"""Delivery guarantees (reliability.md R1–R4, R9, R10) against real Redis, real Celery worker
processes and both databases. A checker joins what was intended (deliveries in SQL), what was
applied (the channel's output) and what was recorded (states and events)."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading

import feedparser
import pytest
from sqlalchemy import func, select

from syndicator.models import Article, Delivery, Event
from tests.conftest import System, write_article
from tests.support.services import REPO, RedisServer, wait_for

pytestmark = pytest.mark.integration


def check_invariants(system: System, articles: int) -> None:
    """Every intended delivery applied exactly once, recorded delivered once, nothing mid-flight."""
    with system.rt.store.read() as s:
        states = dict(s.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all())
        per_delivery = s.execute(select(Event.delivery_id, func.count()).where(Event.to_state == "delivered")
                                 .group_by(Event.delivery_id)).all()
        n_articles = s.scalar(select(func.count()).select_from(Article))
    channels = len(system.config.enabled_channels())
    assert n_articles == articles
    assert states == {"delivered": articles * channels}
    assert len(per_delivery) == articles * channels
    assert all(count == 1 for _, count in per_delivery), "a delivery was recorded delivered twice"

    # Applied: the feed holds each article exactly once, the micro-site indexes each exactly once.
    feed = feedparser.parse((system.public / "feeds" / "rss_main" / "rss.xml").read_bytes())
    assert feed.bozo == 0
    guids = [e.id for e in feed.entries]
    assert len(guids) == len(set(guids)) == articles
    index = sqlite3.connect(system.public / "m" / ".index.sqlite")
    try:
        tables = {r[0] for r in index.execute("select name from sqlite_master where type='table'")}
        table = "articles" if "articles" in tables else sorted(tables)[0]
        rows = index.execute(f"select count(*) from {table}").fetchone()[0]
    finally:
        index.close()
    assert rows == articles
    pages = list((system.public / "m" / "a").glob("*.html"))
    assert len(pages) == articles


def test_publish_reaches_both_channels_with_urls(make_system, tmp_path):
    # Given a worker and beat on Redis
    system = make_system()
    system.worker()
    # When one article is published
    result = system.publish(write_article(tmp_path / "in", "first-item", title="首条信息"))
    # Then both deliveries end delivered with remote ids and file:// URLs that exist
    system.wait_settled(2)
    with system.rt.store.read() as s:
        rows = s.scalars(select(Delivery).where(Delivery.article_id == result.article_id)).all()
    assert {d.channel: d.state for d in rows} == {"rss_main": "delivered", "microsite": "delivered"}
    for d in rows:
        assert d.remote_id and d.remote_url.startswith("file://")
        assert os.path.exists(d.remote_url[len("file://"):])
        assert d.rendition is not None
    check_invariants(system, 1)


def test_sigkill_workers_during_a_burst_of_50_publishes_loses_and_duplicates_nothing(make_system, tmp_path):
    # Given a worker and the sweeper's beat
    system = make_system()
    worker = system.worker()
    system.beat()
    files = [write_article(tmp_path / "in", f"burst-{i:02d}", title=f"批量发布第{i}条") for i in range(50)]
    # When 50 articles are published and the worker is SIGKILLed three times mid-burst
    kills = 0
    for i, path in enumerate(files):
        system.publish(path)
        if i in (10, 25, 40):
            wait_for(lambda: system.states().get("delivered", 0) >= 2 * i - 12, 30, "some progress")
            worker.kill()
            kills += 1
            worker = system.worker()
    # Then, after recovery, every delivery is delivered exactly once
    system.wait_settled(100, timeout=120)
    assert kills == 3
    check_invariants(system, 50)


def test_crash_after_the_remote_applied_but_before_the_state_was_saved(make_system, tmp_path):
    # Given a worker armed to die right after the channel applied a delivery (R2)
    system = make_system()
    trigger = tmp_path / "after_deliver.trigger"
    trigger.write_text("armed")
    worker = system.worker(env={"SYNDICATOR_FAULT_AFTER_DELIVER": str(trigger)})
    system.beat()
    # When an article is published
    system.publish(write_article(tmp_path / "in", "crash-after-apply"))
    wait_for(lambda: worker.proc.poll() is not None, 30, "the armed worker to die")
    assert worker.proc.returncode == 77 and not trigger.exists()
    system.worker()
    # Then the lease expires, the next attempt reconciles, and nothing is applied twice
    system.wait_settled(2)
    check_invariants(system, 1)
    with system.rt.store.read() as s:
        reconciled = s.scalars(select(Event.detail).where(Event.to_state == "retry_wait")).all()
    assert any("lease expired" in (d or "") for d in reconciled)


def test_crash_after_commit_before_enqueue_is_recovered_by_the_sweeper(make_system, tmp_path):
    # Given a publisher process armed to die right after its transaction commits (R3)
    system = make_system()
    system.worker()
    system.beat()
    trigger = tmp_path / "after_commit.trigger"
    trigger.write_text("armed")
    env = {**os.environ, "SYNDICATOR_FAULT_AFTER_COMMIT": str(trigger)}
    path = write_article(tmp_path / "in", "crash-after-commit")
    # When it publishes
    proc = subprocess.run([sys.executable, "-m", "syndicator.cli", "--config", str(system.config_path),
                           "publish", str(path)], cwd=REPO, env=env, capture_output=True, timeout=60)
    assert proc.returncode == 77, proc.stderr.decode()
    # Then the intent is recorded and the sweeper sends it
    system.wait_settled(2)
    check_invariants(system, 1)


def test_redis_killed_with_nothing_persisted_loses_nothing(tmp_path, database_url, make_system):
    # Given our own Redis (R4), with 10 articles queued while no worker runs
    redis = RedisServer(tmp_path / "redis-r4").start()
    try:
        system = make_system(broker_url=redis.url)
        for i in range(10):
            system.publish(write_article(tmp_path / "in", f"r4-{i}", title=f"第{i}条"))
        # When Redis is SIGKILLed (its queue is gone) and restarted empty
        redis.kill()
        redis = RedisServer(tmp_path / "redis-r4", port=redis.port).start()
        system.worker()
        system.beat()
        # Then the sweeper re-sends everything from SQL
        system.wait_settled(20)
        check_invariants(system, 10)
    finally:
        redis.kill()


def test_double_click_and_concurrent_publishes_create_one_delivery_per_channel(make_system, tmp_path):
    # Given one article file (R9)
    system = make_system()
    path = write_article(tmp_path / "in", "double-click")
    # When it is published from 4 threads at once and again afterwards
    results, errors = [], []

    def press():
        try:
            results.append(system.publish(path))
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)
    threads = [threading.Thread(target=press) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again = system.publish(path)
    # Then exactly one article with one delivery per channel exists, and all callers see it
    assert not errors
    assert sum(r.created for r in results) == 1
    assert {r.article_id for r in results} == {again.article_id}
    assert again.created is False and len(again.delivery_ids) == 2
    with system.rt.store.read() as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 2
    system.worker()
    system.wait_settled(2)
    check_invariants(system, 1)


def test_two_beats_fire_the_sweeper_twice_without_duplicating_work(make_system, tmp_path):
    # Given two beat schedulers (R10) and articles whose messages were never sent
    from syndicator.articles import read_article
    from syndicator.publishing import publish

    system = make_system()
    ids = []
    for i in range(5):
        draft = read_article(write_article(tmp_path / "in", f"r10-{i}"), max_image_bytes=10**6,
                             max_body_chars=10**5)
        ids += publish(system.rt.store, system.config, draft, actor="test", enqueuer=None).delivery_ids
    system.rt.enqueuer.forget(ids)
    system.beat()
    system.beat()
    system.worker()
    # Then everything is delivered once
    system.wait_settled(10)
    check_invariants(system, 5)


def test_status_json_has_the_contract_shape(make_system, tmp_path):
    # Given a delivered article
    system = make_system()
    system.worker()
    path = write_article(tmp_path / "in", "json-shape", title="JSON形状")
    system.publish(path)
    system.wait_settled(2)
    # When `syndicator status --json` runs
    out = subprocess.run([sys.executable, "-m", "syndicator.cli", "--config", str(system.config_path),
                          "status", "json-shape", "--json"], cwd=REPO, capture_output=True, timeout=60)
    # Then it prints the documented shape
    assert out.returncode == 0, out.stderr.decode()
    data = json.loads(out.stdout)
    assert set(data["article"]) >= {"id", "slug", "title", "revision"}
    assert data["article"]["slug"] == "json-shape" and data["article"]["title"] == "JSON形状"
    for d in data["deliveries"]:
        assert set(d) >= {"channel", "type", "operation", "revision", "state", "attempts", "remote_id",
                          "remote_url", "error", "updated_at"}
        assert d["state"] == "delivered" and d["attempts"] == 1
