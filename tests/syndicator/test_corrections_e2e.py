"""Corrections, retractions and expiry end to end: real worker and beat processes, Redis, the
five channels (the remote ones on their emulators), and the remote side checked in the ledgers."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import feedparser
import pytest
from sqlalchemy import select

from syndicator.models import Delivery, Event
from tests.conftest import write_article
from tests.support.services import REPO, wait_for
from tests.syndicator.test_remote_channels import emulators, remote_channels  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def five_channels(urls, **wechat):
    channels = remote_channels(urls)
    channels["rss_main"] = {"type": "rss", "title": "测试订阅"}
    channels["wechat_main"].update(wechat)
    return channels


def cli(system, *args):
    return subprocess.run([sys.executable, "-m", "syndicator.cli", "--config", str(system.config_path), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "SYNDICATOR_ACTOR": "editor:zhou"})


def rows(system, **where):
    with system.rt.store.read() as s:
        q = select(Delivery).order_by(Delivery.id)
        for key, value in where.items():
            q = q.where(getattr(Delivery, key) == value)
        return s.scalars(q).all()


def settled(system, **where) -> bool:
    found = rows(system, **where)
    return bool(found) and all(d.state in ("delivered", "failed", "unknown", "manual", "cancelled") for d in found)


def effects(emulators, op):  # noqa: F811
    return emulators.ledger.effects(op=op)


@pytest.fixture
def system(make_system, emulators, tmp_path):  # noqa: F811
    def build(**wechat):
        sys_ = make_system(channels=five_channels(emulators.urls, **wechat),
                           site={"base_url": "http://127.0.0.1:8470/"})
        sys_.worker()
        sys_.beat()
        return sys_
    return build


def test_a_correction_scheduled_two_seconds_ahead_goes_out_once_per_channel_after_its_time(
        system, emulators, tmp_path):  # noqa: F811
    # Given an article delivered to all five channels
    system = system(correction="republish")
    system.publish(write_article(tmp_path / "v1", "relief-fund", title="救助资金下达", body="下达资金 1.2 亿元。"))
    system.wait_settled(5)
    first_wechat_url = rows(system, channel="wechat_main")[0].remote_url
    feed_before = feedparser.parse((system.public / "feeds" / "rss_main" / "rss.xml").read_bytes())
    # When a correction is scheduled two seconds ahead
    started = datetime.now(timezone.utc)
    out = cli(system, "correct", "relief-fund", str(write_article(tmp_path / "v2", "relief-fund", title="救助资金下达",
                                                                  body="下达资金 1.5 亿元。")),
              "--at", "+2s", "--note", "资金数额由1.2亿元更正为1.5亿元")
    assert out.returncode == 0, out.stderr
    # Then nothing is sent before its time
    time.sleep(1.0)
    assert not effects(emulators, "posts/update") and len(effects(emulators, "statuses/share")) == 1
    assert {d.state for d in rows(system, revision=2)} == {"queued"}
    # And after it, each channel gets the correction exactly once
    wait_for(lambda: settled(system, revision=2), 60, "the correction to settle")
    updates = rows(system, revision=2)
    assert {d.channel: d.state for d in updates} == {c: "delivered" for c in (
        "microsite", "portal", "wechat_main", "weibo_main", "rss_main")}
    assert all(d.delivered_at >= started + timedelta(seconds=2) for d in updates)
    # Portal: updated in place
    assert len(effects(emulators, "posts/create")) == 1 and len(effects(emulators, "posts/update")) == 1
    assert rows(system, channel="portal")[-1].remote_id == rows(system, channel="portal")[0].remote_id
    # WeChat: the old article deleted (index 1), a new one published with a new URL
    deletes = effects(emulators, "freepublish/delete")
    assert len(deletes) == 1 and deletes[0]["body"].get("index") == 1
    assert len(effects(emulators, "freepublish/submit")) == 2
    assert rows(system, channel="wechat_main")[-1].remote_url != first_wechat_url
    # Weibo: a correction post linking the article
    shares = effects(emulators, "statuses/share")
    assert len(shares) == 2 and "更正" in str(shares[1]["body"])
    # RSS: one item, new content, same pubDate, newer updated, a visible note
    feed = feedparser.parse((system.public / "feeds" / "rss_main" / "rss.xml").read_bytes())
    assert feed.bozo == 0 and len(feed.entries) == 1
    entry, before = feed.entries[0], feed_before.entries[0]
    assert entry.id == before.id and entry.published == before.published
    assert entry.updated_parsed > before.updated_parsed
    assert "1.5 亿元" in entry.content[0].value and "更正" in entry.content[0].value


def test_a_retraction_removes_it_everywhere_it_can_and_asks_for_a_hand_where_it_cannot(
        system, emulators, tmp_path):  # noqa: F811
    # Given a Weibo app that may not delete posts, and an article on all five channels
    emulators.weibo.settings.destroy_available = False
    system = system()
    system.publish(write_article(tmp_path / "in", "withdrawn-notice", title="拟撤回的通知"))
    system.wait_settled(5)
    # When it is retracted
    out = cli(system, "retract", "withdrawn-notice", "--reason", "通知内容需重新核定")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: settled(system, operation="retract"), 60, "the retraction to settle")
    retracts = {d.channel: d for d in rows(system, operation="retract")}
    # Then it is gone wherever the API allows
    assert {c: d.state for c, d in retracts.items()} == {
        "microsite": "delivered", "portal": "delivered", "wechat_main": "delivered", "rss_main": "delivered",
        "weibo_main": "manual"}
    assert len(effects(emulators, "posts/trash")) == 1
    assert [e["body"].get("index") for e in effects(emulators, "freepublish/delete")] == [1]
    feed = feedparser.parse((system.public / "feeds" / "rss_main" / "rss.xml").read_bytes())
    assert feed.bozo == 0 and feed.entries == []
    page = (system.public / "m" / "a" / "withdrawn-notice.html").read_text(encoding="utf-8")
    assert "通知内容需重新核定" in page and (system.public / "m" / "a" / "withdrawn-notice.gone").exists()
    # And Weibo waits for a person, saying what to delete
    assert "manual action needed" in retracts["weibo_main"].last_error
    assert "weibo" in retracts["weibo_main"].last_error
    assert "manual" in cli(system, "status", "withdrawn-notice").stdout


def test_an_expired_public_notice_is_withdrawn_on_time(system, emulators, tmp_path):  # noqa: F811
    # Given a public notice (公示) whose window ends in a few seconds
    system = system()
    ends = datetime.now(timezone.utc) + timedelta(seconds=4)
    system.publish(write_article(tmp_path / "in", "short-notice", title="公示", expires_at=ends.isoformat()))
    system.wait_settled(5)
    # When the window ends
    wait_for(lambda: settled(system, operation="retract"), 60, "the automatic retraction")
    # Then the scheduler withdrew it after the end, with the reason recorded, everywhere
    with system.rt.store.read() as s:
        event = s.scalar(select(Event).where(Event.kind == "retract"))
    assert event.actor == "scheduler" and "公示期满" in event.detail and event.at >= ends
    assert {d.channel for d in rows(system, operation="retract", state="delivered")} == {
        "microsite", "portal", "wechat_main", "weibo_main", "rss_main"}


def correct_then_retract(system, tmp_path, slug):
    """Publish `slug`, correct it with a note, then retract it, each step settled before the next."""
    system.publish(write_article(tmp_path / "v1", slug, title="救助资金下达", body="下达资金 1.2 亿元。"))
    system.wait_settled(1)
    out = cli(system, "correct", slug, str(write_article(tmp_path / "v2", slug, title="救助资金下达",
                                                         body="下达资金 1.5 亿元。")),
              "--note", "资金数额由1.2亿元更正为1.5亿元")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: settled(system, revision=2), 60, "the correction to settle")
    out = cli(system, "retract", slug, "--reason", "资金文件撤回")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: settled(system, operation="retract"), 60, "the retraction to settle")
    return rows(system)


def test_a_retraction_after_a_notice_correction_deletes_the_notice_and_the_original(
        make_system, emulators, tmp_path):  # noqa: F811
    # Given WeChat corrects with a 「更正」 notice and keeps the original
    emulators.wechat.settings.publish_delay = 0.2
    channels = {"wechat_main": {**remote_channels(emulators.urls)["wechat_main"], "correction": "notice"}}
    system = make_system(channels=channels, site={"base_url": "http://127.0.0.1:8470/"})
    system.worker()
    system.beat()
    # When the article is published, corrected, then retracted
    publish_, update, retract = correct_then_retract(system, tmp_path, "notice-then-retract")
    # Then the correction published a notice next to the original …
    assert [d.state for d in (publish_, update, retract)] == ["delivered"] * 3
    finished = [e["body"]["article_id"] for e in effects(emulators, "freepublish/finish")]
    assert finished == [publish_.remote_id, update.remote_id] and update.remote_id != publish_.remote_id
    # … and the retraction deleted both (index 1 each), so WeChat holds nothing of the article
    deletes = effects(emulators, "freepublish/delete")
    assert sorted(e["id"] for e in deletes) == sorted(finished) and {e["body"]["index"] for e in deletes} == {1}
    assert [a for a, job in emulators.wechat.publisher.by_article.items() if job.status == 0] == []


def test_a_retraction_after_a_kept_weibo_correction_deletes_both_posts(
        make_system, emulators, tmp_path):  # noqa: F811
    # Given Weibo posts corrections without deleting the post they correct
    channels = {"weibo_main": {**remote_channels(emulators.urls)["weibo_main"], "delete_on_correction": False}}
    system = make_system(channels=channels, site={"base_url": "http://127.0.0.1:8470/"})
    system.worker()
    system.beat()
    # When the article is published, corrected, then retracted
    publish_, update, retract = correct_then_retract(system, tmp_path, "weibo-then-retract")
    # Then the correction was a second post and the first stayed up until the retraction …
    assert [d.state for d in (publish_, update, retract)] == ["delivered"] * 3
    shares = [e["id"] for e in effects(emulators, "statuses/share")]
    assert shares == [publish_.remote_id, update.remote_id]
    # … which destroyed both, newest first: Weibo holds no post of the article
    assert [e["id"] for e in effects(emulators, "statuses/destroy")] == [update.remote_id, publish_.remote_id]
    assert [st.id for st in emulators.weibo.statuses.values() if not st.deleted] == []
