"""Alerts: a delivery not settled N minutes after it was due, a channel failing repeatedly, a
credential about to expire (and a suspended channel); the webhook gets each condition once until
it clears, and again when it comes back."""
from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from syndicator import alerts, states
from syndicator.config import ConfigError, load_config
from syndicator.models import Article, ChannelStatus, Delivery, Revision, utcnow
from syndicator.runtime import Runtime
from syndicator.states import DeliveryState as S
from tests.support.services import write_config

HOOK_SECRET = "hook-key-5f2b9"


def weibo(**extra) -> dict:
    return {"type": "weibo", "api_base": "http://127.0.0.1:9/", "access_token": "t", "safe_domain": "127.0.0.1",
            **extra}


def runtime(tmp_path, *, weibo_settings: dict | None = None, **alert_settings) -> Runtime:
    channels = {"rss_main": {"type": "rss", "title": "订阅"}, "microsite": {"type": "microsite", "title": "微站"},
                "weibo_main": weibo(**(weibo_settings or {}))}
    config = load_config(write_config(tmp_path / "config.yaml", database_url=f"sqlite:///{tmp_path / 's.db'}",
                                      broker_url=f"sqla+sqlite:///{tmp_path / 'b.db'}", public=tmp_path / "public",
                                      channels=channels, alerts={"unsettled_minutes": 10, "failures_in_a_row": 3,
                                                                 "credential_days": 7, **alert_settings}))
    now = utcnow()
    rt = Runtime(config, clock=lambda: now)
    rt.store.migrate()
    return rt


@pytest.fixture
def rt(tmp_path):
    runtime_ = runtime(tmp_path)
    yield runtime_
    runtime_.store.dispose()


_n = [0]


def seed(rt: Runtime, channel: str, state: str, *, minutes_ago: float, updated_minutes_ago: float | None = None,
         publish_at_minutes_ago: float | None = None, next_attempt_in: float | None = None, attempts: int = 1,
         error: str | None = None) -> int:
    """One article with one delivery, created `minutes_ago` (timestamps under the test's control)."""
    now = rt.clock()
    _n[0] += 1

    def tx(s):
        created = now - timedelta(minutes=minutes_ago)
        a = Article(slug=f"a{_n[0]}", status="live", current_revision=1, first_published_at=created,
                    created_at=created, created_by="editor")
        s.add(a)
        s.flush()
        publish_at = now - timedelta(minutes=publish_at_minutes_ago) if publish_at_minutes_ago is not None else None
        r = Revision(article_id=a.id, number=1, content_hash=a.slug, title="稿件", body_source="x", body_html="x",
                     publish_at=publish_at, created_at=created, created_by="editor")
        s.add(r)
        s.flush()
        updated = now - timedelta(minutes=updated_minutes_ago if updated_minutes_ago is not None else minutes_ago)
        d = Delivery(article_id=a.id, revision_id=r.id, revision=1, channel=channel,
                     channel_type=rt.config.channels[channel].type, operation="publish", state=state,
                     attempts=attempts, created_at=created, updated_at=updated, last_error=error,
                     delivered_at=updated if state == "delivered" else None,
                     next_attempt_at=now + timedelta(minutes=next_attempt_in) if next_attempt_in is not None else None)
        s.add(d)
        s.flush()
        return d.id

    return rt.store.run_write(tx)


def keys(found: list[alerts.Alert], kind: str) -> set[str]:
    return {a.key for a in found if a.kind == kind}


def test_a_delivery_not_settled_n_minutes_after_it_was_due(rt):
    late_queued = seed(rt, "rss_main", "queued", minutes_ago=11)
    late_sending = seed(rt, "weibo_main", "sending", minutes_ago=30, attempts=1)
    late_retrying = seed(rt, "microsite", "retry_wait", minutes_ago=12, next_attempt_in=5, attempts=2, error="503")
    late_submitted = seed(rt, "microsite", "submitted", minutes_ago=20)
    released = seed(rt, "rss_main", "queued", minutes_ago=120, publish_at_minutes_ago=15, next_attempt_in=-15)
    seed(rt, "rss_main", "queued", minutes_ago=9)                                   # not yet late
    seed(rt, "weibo_main", "queued", minutes_ago=60, next_attempt_in=60)            # scheduled for later
    seed(rt, "rss_main", "sending", minutes_ago=120, publish_at_minutes_ago=5)      # due 5 minutes ago
    seed(rt, "rss_main", "delivered", minutes_ago=60)
    seed(rt, "weibo_main", "failed", minutes_ago=60)                                # settled: failed is an outcome
    seed(rt, "weibo_main", "manual", minutes_ago=60)
    found = alerts.evaluate(rt)
    assert keys(found, "unsettled") == {f"unsettled:{i}" for i in (late_queued, late_sending, late_retrying,
                                                                   late_submitted, released)}
    oldest = [a for a in found if a.kind == "unsettled"][0]
    assert oldest.delivery_id == late_sending and oldest.state == "sending"     # the oldest first
    assert oldest.message(now=rt.clock()) == \
        f"weibo_main: delivery #{late_sending} of “{oldest.slug}” is still sending 30 min after it was due"
    retry = next(a for a in found if a.delivery_id == late_retrying)
    assert retry.error == "503" and retry.since == rt.clock() - timedelta(minutes=12)


def test_a_channel_failing_repeatedly(rt):
    for minutes in (3, 2, 1):                                                        # three in a row
        seed(rt, "weibo_main", "failed", minutes_ago=minutes + 1, updated_minutes_ago=minutes,
             error=f"20021 #{minutes}")
    seed(rt, "weibo_main", "delivered", minutes_ago=30, updated_minutes_ago=29)     # older success
    seed(rt, "rss_main", "failed", minutes_ago=5, updated_minutes_ago=4)
    seed(rt, "rss_main", "unknown", minutes_ago=5, updated_minutes_ago=3)
    seed(rt, "rss_main", "delivered", minutes_ago=5, updated_minutes_ago=2)         # the latest succeeded
    seed(rt, "rss_main", "failed", minutes_ago=5, updated_minutes_ago=1, attempts=0)  # never attempted: no outcome
    seed(rt, "microsite", "failed", minutes_ago=3000, updated_minutes_ago=2000)     # days ago: not counted
    seed(rt, "microsite", "retry_wait", minutes_ago=3, updated_minutes_ago=2, attempts=1, next_attempt_in=1)
    seed(rt, "microsite", "failed", minutes_ago=3, updated_minutes_ago=1)
    found = alerts.evaluate(rt)
    assert keys(found, "channel_failing") == {"channel_failing:weibo_main"}
    alert = next(a for a in found if a.kind == "channel_failing")
    assert alert.count == 3 and alert.error == "20021 #1" and alert.severity == "warning"
    assert alert.message() == "weibo_main: 3 failed attempts in a row"

    # the breaker's count of transient failures (one delivery retried again and again) counts too
    now = rt.clock()
    rt.store.run_write(lambda s: s.add(ChannelStatus(channel="microsite", suspended=False, changed_at=now,
                                                     changed_by="worker", failures=4,
                                                     open_until=now + timedelta(seconds=30))))
    found = alerts.evaluate(rt)
    assert keys(found, "channel_failing") == {"channel_failing:weibo_main", "channel_failing:microsite"}
    assert next(a for a in found if a.key == "channel_failing:microsite").severity == "critical"
    # a success clears it
    seed(rt, "weibo_main", "delivered", minutes_ago=1, updated_minutes_ago=0.5)
    assert keys(alerts.evaluate(rt), "channel_failing") == {"channel_failing:microsite"}


def test_a_credential_expiring_within_n_days_and_a_suspended_channel(tmp_path):
    base = utcnow()
    cases = {"in3d": (base + timedelta(days=3), "warning"), "in12h": (base + timedelta(hours=12), "critical"),
             "expired": (base - timedelta(hours=1), "critical"), "in30d": (base + timedelta(days=30), None)}
    for name, (expires, severity) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        rt_ = runtime(folder, weibo_settings={"token_expires_at": expires.isoformat()})
        found = [a for a in alerts.evaluate(rt_) if a.kind == "credential_expiring"]
        if severity is None:
            assert found == [], name
        else:
            assert [(a.channel, a.severity, a.expires_at) for a in found] == [("weibo_main", severity, expires)], name
            text = found[0].message(now=rt_.clock())
            assert ("expired" in text) == (name == "expired") and expires.strftime("%Y-%m-%d") in text
        rt_.store.dispose()
    rt_ = runtime(tmp_path / "in3d")
    assert [a for a in alerts.evaluate(rt_) if a.kind == "credential_expiring"] == []   # no expiry configured
    from syndicator.channel_status import set_suspended

    set_suspended(rt_.store, "weibo_main", True, reason="AuthInvalid: token revoked", actor="worker")
    suspended = [a for a in alerts.evaluate(rt_) if a.kind == "channel_suspended"]
    assert [(a.key, a.severity, a.error) for a in suspended] == [
        ("channel_suspended:weibo_main", "critical", "AuthInvalid: token revoked")]
    rt_.store.dispose()


class Receiver:
    """A tiny webhook receiver on a free local port that records what it is sent."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append({"path": self.path, "type": self.headers["content-type"],
                                          "json": json.loads(body)})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?key={HOOK_SECRET}"

    def take(self) -> list[dict]:
        taken, self.received = self.received, []
        return taken


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_the_webhook_gets_each_alert_once_until_it_clears(tmp_path, receiver, monkeypatch, caplog):
    monkeypatch.setenv("OPS_ALERT_HOOK", receiver.url)
    rt_ = runtime(tmp_path, webhook_url="${OPS_ALERT_HOOK}")
    assert HOOK_SECRET not in repr(rt_.config) and HOOK_SECRET not in str(rt_.config.alerts)
    caplog.set_level(logging.INFO)  # (urllib3 itself logs request lines at DEBUG)
    stuck = seed(rt_, "weibo_main", "queued", minutes_ago=25)

    first = alerts.notify(rt_, alerts.evaluate(rt_))
    assert first.sent == (f"unsettled:{stuck}",)
    [posted] = receiver.take()
    assert posted["path"] == f"/hook?key={HOOK_SECRET}" and posted["type"] == "application/json"
    body = posted["json"]
    assert body["source"] == "syndicator" and body["resolved"] == []
    assert [(a["kind"], a["key"], a["delivery_id"], a["state"]) for a in body["alerts"]] == [
        ("unsettled", f"unsettled:{stuck}", stuck, "queued")]
    assert "运维告警" in body["text"] and f"#{stuck}" in body["text"] and "25 分钟" in body["text"]

    # the same condition again: nothing is sent
    for _ in range(3):
        assert alerts.notify(rt_, alerts.evaluate(rt_)).skipped == "nothing new"
    assert receiver.take() == []

    # a second condition: only it is sent
    rt_.store.run_write(lambda s: s.add(ChannelStatus(channel="microsite", suspended=True, reason="AuthInvalid",
                                                      changed_at=rt_.clock(), changed_by="worker")))
    assert alerts.notify(rt_, alerts.evaluate(rt_)).sent == ("channel_suspended:microsite",)
    assert [a["key"] for a in receiver.take()[0]["json"]["alerts"]] == ["channel_suspended:microsite"]

    # the delivery settles: its alert is reported cleared, once
    rt_.store.run_write(lambda s: states.transition(s, stuck, S.CANCELLED, actor="ops"))
    cleared = alerts.notify(rt_, alerts.evaluate(rt_))
    assert cleared.sent == () and cleared.resolved == (f"unsettled:{stuck}",)
    body = receiver.take()[0]["json"]
    assert body["alerts"] == [] and [r["key"] for r in body["resolved"]] == [f"unsettled:{stuck}"]
    assert "已恢复" in body["text"]
    assert alerts.notify(rt_, alerts.evaluate(rt_)).skipped == "nothing new"

    # the receiver fails: nothing is marked sent, the check backs off, then sends it after all
    again = seed(rt_, "rss_main", "sending", minutes_ago=40)
    receiver.status = 500
    failed = alerts.notify(rt_, alerts.evaluate(rt_))
    assert failed.sent == () and "HTTP 500" in failed.skipped and len(receiver.take()) == 1
    assert alerts.notify(rt_, alerts.evaluate(rt_)).skipped == "backing off" and receiver.take() == []
    receiver.status = 200
    rt_.ports.tokens.delete(alerts.BACKOFF_KEY)                                    # the back-off has passed
    assert alerts.notify(rt_, alerts.evaluate(rt_)).sent == (f"unsettled:{again}",)
    assert len(receiver.take()) == 1
    assert HOOK_SECRET not in caplog.text

    # check(): what the sweeper calls — evaluates, notifies, at most every min_interval, never raises
    third = seed(rt_, "rss_main", "queued", minutes_ago=15)
    assert alerts.check(rt_).sent == (f"unsettled:{third}",)
    fourth = seed(rt_, "rss_main", "queued", minutes_ago=15)
    assert alerts.check(rt_).skipped == "checked recently"
    assert alerts.check(rt_, min_interval=0).sent == (f"unsettled:{fourth}",)
    receiver.server.shutdown()
    receiver.server.server_close()
    fifth = seed(rt_, "rss_main", "queued", minutes_ago=15)
    assert "webhook failed" in alerts.check(rt_, min_interval=0).skipped          # unreachable: no exception
    rt_.store.dispose()
    assert fifth


def test_no_webhook_means_the_board_only(rt):
    seed(rt, "rss_main", "queued", minutes_ago=30)
    assert alerts.evaluate(rt) and alerts.notify(rt, alerts.evaluate(rt)).skipped == "no webhook"
    assert alerts.check(rt).skipped == "no webhook"


@pytest.mark.parametrize("settings, problem", [
    ({"webhook_url": f"ftp://example.org/{HOOK_SECRET}"}, "webhook_url must be an http:// or https:// URL"),
    ({"webhook_url": f"hooks.example.org/{HOOK_SECRET}"}, "webhook_url must be an http:// or https:// URL"),
    ({"unsettled_minutes": 0}, "alerts.unsettled_minutes"),
    ({"failures_in_a_row": "many"}, "alerts.failures_in_a_row"),
    ({"credential_days": -1}, "alerts.credential_days"),
    ({"webhook": "http://x/"}, "alerts.webhook: unknown key"),
])
def test_bad_alert_settings_are_refused_without_echoing_the_url(tmp_path, settings, problem):
    with pytest.raises(ConfigError) as refused:
        runtime(tmp_path, **settings)
    assert problem in str(refused.value) and HOOK_SECRET not in str(refused.value)
