"""Corrections, retractions, ordering per (article, channel), scheduling and expiry — in process,
with a recording channel, so every rule can be seen step by step."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from channels import registry
from channels.base import Channel, ChannelSettings, Receipt, Rendition
from channels.errors import ContentRejected, ManualActionRequired
from syndicator import editorial, pipeline, states
from syndicator.articles import BadInput, read_article
from syndicator.config import load_config
from syndicator.models import Delivery, Event
from syndicator.publishing import publish as do_publish
from syndicator.runtime import Runtime
from tests.conftest import write_article
from tests.support.services import write_config
from tests.syndicator.test_pipeline import Clock, FakeEnqueuer

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)


class RecordingChannel(Channel):
    """Applies every operation to an in-memory 'remote' and records the order of calls."""

    name = "recording"
    display_name = "Recording"
    supports_update = True
    supports_retract = True
    reconcilable = True
    Settings = ChannelSettings
    remote: dict[str, dict] = {}
    calls: list[tuple[str, str, int]] = []
    fail_next: list[Exception] = []
    #: (instance, operation, attempt.remote_id, attempt.held_ids) of every call.
    attempts: list[tuple[str, str, str | None, tuple[str, ...]]] = []
    #: Instances that, like Weibo's new_post, give every publish and update a new id.
    new_ids_for: set[str] = set()

    def render(self, article, ctx) -> Rendition:
        return Rendition(payload={"slug": article.slug, "title": article.title, "revision": article.revision,
                                  "note": article.correction_note, "reason": article.retraction_reason})

    def _apply(self, op: str, rendition: Rendition, attempt) -> Receipt:
        if self.fail_next:
            raise self.fail_next.pop(0)
        key = f"{self.instance}:{rendition.payload['slug']}"
        self.calls.append((self.instance, op, rendition.payload["revision"]))
        self.attempts.append((self.instance, op, attempt.remote_id, attempt.held_ids))
        if op == "retract":
            self.remote.pop(key, None)
        else:
            self.remote[key] = rendition.payload
        if self.instance in self.new_ids_for and op != "retract":
            return Receipt(remote_id=f"{key}-r{rendition.payload['revision']}")
        return Receipt(remote_id=key, remote_url=f"mem://{key}")

    def deliver(self, rendition, attempt):
        return self._apply("publish", rendition, attempt)

    def update(self, rendition, attempt):
        return self._apply("update", rendition, attempt)

    def retract(self, rendition, attempt):
        return self._apply("retract", rendition, attempt)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.CHANNEL_TYPES, "recording", f"{__name__}:RecordingChannel")
    registry.load_type.cache_clear()
    RecordingChannel.remote, RecordingChannel.calls, RecordingChannel.fail_next = {}, [], []
    RecordingChannel.attempts, RecordingChannel.new_ids_for = [], set()
    config = load_config(write_config(
        tmp_path / "config.yaml", database_url=f"sqlite:///{tmp_path / 's.db'}",
        broker_url="redis://127.0.0.1:1/0", public=tmp_path / "public",
        channels={"one": {"type": "recording"}, "two": {"type": "recording"}}))
    clock = Clock()
    rt = Runtime(config, clock=clock)
    rt.store.migrate()
    enqueuer = FakeEnqueuer()
    enqueuer.rt = rt
    rt._enqueuer = enqueuer
    yield rt, clock, tmp_path
    rt.store.dispose()
    registry.load_type.cache_clear()


def draft(tmp_path, slug="notice", **kw):
    return read_article(write_article(tmp_path / "in", slug, **kw), max_image_bytes=10**6, max_body_chars=10**5)


def run_all(rt) -> list[str]:
    """Attempt every delivery that is due, in id order, until nothing moves."""
    outcomes = []
    while True:
        with rt.store.read() as s:
            ids = s.scalars(select(Delivery.id).where(Delivery.state.in_(["queued", "retry_wait"]))
                            .order_by(Delivery.id)).all()
        moved = [o for o in (pipeline.run(rt, i) for i in ids) if o not in ("skipped", "blocked", "suspended")]
        outcomes += moved
        if not moved:
            return outcomes


def deliveries(rt):
    with rt.store.read() as s:
        return [(d.channel, d.operation, d.revision, d.state) for d in s.scalars(
            select(Delivery).where(Delivery.article_id == 1).order_by(Delivery.id))]


def publish(rt, tmp_path, **kw):
    return do_publish(rt.store, rt.config, draft(tmp_path, **kw), actor="editor:li", enqueuer=rt.enqueuer,
                      now=rt.clock())


def test_correction_updates_each_channel_that_holds_the_article_in_order(env):
    rt, clock, tmp = env
    publish(rt, tmp, body="原文。")
    run_all(rt)
    # When a correction is made
    result = editorial.correct(rt, "notice", draft(tmp, body="更正后的正文。"), note="第二段数字有误",
                               at=None, actor="editor:wang")
    run_all(rt)
    # Then each channel got exactly one update with revision 2 and the templated, dated note
    assert result.changed and result.revision == 2
    assert sorted(c for c in RecordingChannel.calls if c[1] == "update") == [("one", "update", 2),
                                                                            ("two", "update", 2)]
    payload = RecordingChannel.remote["one:notice"]
    assert payload["revision"] == 2 and payload["note"].endswith("更正：第二段数字有误")
    assert payload["note"].startswith("2026年11月25日")
    with rt.store.read() as s:
        event = s.scalar(select(Event).where(Event.kind == "correct"))
    assert event.actor == "editor:wang" and '"revision": 2' in event.detail and "content_hash" in event.detail


def test_identical_correction_is_a_no_op(env):
    rt, clock, tmp = env
    publish(rt, tmp)
    run_all(rt)
    result = editorial.correct(rt, "notice", draft(tmp), note=None, at=None, actor="editor:wang")
    assert not result.changed and "identical to the live revision 1" in result.message
    assert len(deliveries(rt)) == 2


def test_correction_before_the_publish_went_out_sends_only_the_latest_revision_once(env):
    rt, clock, tmp = env
    publish(rt, tmp, body="第一稿")
    # When it is corrected before any worker ran
    result = editorial.correct(rt, "notice", draft(tmp, body="第二稿"), note=None, at=None, actor="editor:wang")
    run_all(rt)
    # Then the original publishes were cancelled and revision 2 was published once per channel
    assert len(result.cancelled) == 2
    assert sorted(RecordingChannel.calls) == [("one", "publish", 2), ("two", "publish", 2)]
    assert [d[3] for d in deliveries(rt)] == ["cancelled", "cancelled", "delivered", "delivered"]


def test_an_update_waits_for_the_publish_it_updates(env):
    rt, clock, tmp = env
    publish(rt, tmp)
    with rt.store.read() as s:
        first = s.scalar(select(Delivery.id).where(Delivery.channel == "one"))
    # Given channel one's publish is mid-flight (claimed, not finished)
    rt.store.run_write(lambda s: states.claim(s, first, actor="worker", now=T0, lease_expires_at=T0 + timedelta(seconds=60)))
    editorial.correct(rt, "notice", draft(tmp, body="新版"), note=None, at=None, actor="editor:wang")
    with rt.store.read() as s:
        update_one = s.scalar(select(Delivery.id).where(Delivery.channel == "one", Delivery.operation == "update"))
    # Then the update cannot overtake it
    assert pipeline.attempt(rt, update_one) == "blocked"


def test_corrections_never_go_to_a_channel_that_never_received_the_article(env):
    rt, clock, tmp = env
    publish(rt, tmp)
    RecordingChannel.fail_next = [ContentRejected("refused")]
    with rt.store.read() as s:
        one = s.scalar(select(Delivery.id).where(Delivery.channel == "one"))
    assert pipeline.attempt(rt, one) == "failed"
    run_all(rt)
    result = editorial.correct(rt, "notice", draft(tmp, body="新版"), note=None, at=None, actor="editor:wang")
    assert ("one", "the article never reached this channel") in result.skipped
    assert [p[0] for p in result.planned] == ["two"]


def test_scheduled_correction_goes_out_after_its_time_and_not_before(env):
    rt, clock, tmp = env
    publish(rt, tmp)
    run_all(rt)
    at = editorial.parse_when("+30m", now=clock(), timezone="Asia/Shanghai")
    editorial.correct(rt, "notice", draft(tmp, body="定时更正"), note=None, at=at, actor="editor:wang")
    run_all(rt)
    assert not [c for c in RecordingChannel.calls if c[1] == "update"]
    clock.advance(29 * 60)
    assert pipeline.sweep(rt)["enqueued"] == 0
    run_all(rt)
    assert not [c for c in RecordingChannel.calls if c[1] == "update"]
    clock.advance(61)
    assert pipeline.sweep(rt)["enqueued"] == 2
    run_all(rt)
    run_all(rt)
    assert sorted(c for c in RecordingChannel.calls if c[1] == "update") == [("one", "update", 2),
                                                                            ("two", "update", 2)]


def test_bad_correction_inputs_are_refused_and_disturb_nothing(env):
    rt, clock, tmp = env
    publish(rt, tmp)
    run_all(rt)
    before = deliveries(rt)
    for text in ("-5m", "yesterday", "2020-01-01T00:00:00+08:00"):
        with pytest.raises(BadInput, match="--at"):
            editorial.parse_when(text, now=clock(), timezone="Asia/Shanghai")
    with pytest.raises(BadInput, match="does not match the article being corrected"):
        editorial.correct(rt, "notice", draft(tmp, slug="other-slug"), note=None, at=None, actor="x")
    editorial.retract(rt, "notice", reason="信息有误", actor="editor:wang")
    with pytest.raises(BadInput, match="was retracted on .* it cannot be corrected"):
        editorial.correct(rt, "notice", draft(tmp, body="x"), note=None, at=None, actor="x")
    assert deliveries(rt)[:2] == before


def test_retraction_removes_everywhere_cancels_pending_and_is_recorded_once(env):
    rt, clock, tmp = env
    publish(rt, tmp)
    with rt.store.read() as s:
        one = s.scalar(select(Delivery.id).where(Delivery.channel == "one"))
    pipeline.attempt(rt, one)  # one delivered, two still queued
    result = editorial.retract(rt, "notice", reason="内容需核实", actor="editor:wang")
    run_all(rt)
    # Then one is withdrawn with the reason, two's pending publish is cancelled and never sent
    assert [p[:2] for p in result.planned] == [("one", "retract")]
    assert ("two", "nothing reached this channel") in result.skipped
    assert "one:notice" not in RecordingChannel.remote and "two:notice" not in RecordingChannel.remote
    assert ("two", "publish", 1) not in RecordingChannel.calls
    again = editorial.retract(rt, "notice", reason="再次", actor="editor:wang")
    assert not again.changed and "already retracted" in again.message
    with rt.store.read() as s:
        events = s.scalars(select(Event.detail).where(Event.kind == "retract")).all()
    assert len(events) == 1 and "内容需核实" in events[0]


def test_update_and_retract_get_every_id_the_channel_holds_newest_first(env):
    # Given channel one gives each publish and correction a new id (like a correction post), two keeps one id
    rt, clock, tmp = env
    RecordingChannel.new_ids_for = {"one"}
    publish(rt, tmp, body="原文。")
    run_all(rt)
    for n, body in enumerate(("第一次更正。", "第二次更正。"), start=1):
        editorial.correct(rt, "notice", draft(tmp, body=body), note=f"更正{n}", at=None, actor="editor:wang")
        run_all(rt)
    # When the article is retracted
    editorial.retract(rt, "notice", reason="撤稿", actor="editor:wang")
    run_all(rt)
    # Then each update and the retract got every id delivered so far, newest first, without repeats;
    # remote_id stays the newest, and a publish gets none
    seen = {i: [a[1:] for a in RecordingChannel.attempts if a[0] == i] for i in ("one", "two")}
    r1, r2, r3 = (f"one:notice-r{n}" for n in (1, 2, 3))
    assert seen["one"] == [("publish", None, ()), ("update", r1, (r1,)), ("update", r2, (r2, r1)),
                           ("retract", r3, (r3, r2, r1))]
    assert seen["two"][-1] == ("retract", "two:notice", ("two:notice",))


def test_a_channel_that_cannot_delete_leaves_a_manual_action(env):
    rt, clock, tmp = env
    publish(rt, tmp)
    run_all(rt)
    RecordingChannel.fail_next = [ManualActionRequired("delete the post by hand", url="https://weibo.com/1/2")]
    editorial.retract(rt, "notice", reason="撤稿", actor="editor:wang")
    run_all(rt)
    with rt.store.read() as s:
        manual = s.scalars(select(Delivery).where(Delivery.state == "manual")).all()
    assert len(manual) == 1 and "manual action needed at https://weibo.com/1/2" in manual[0].last_error


def test_an_expired_public_notice_is_withdrawn_on_time_exactly_once(env):
    rt, clock, tmp = env
    expires = (T0 + timedelta(days=7)).isoformat()
    publish(rt, tmp, expires_at=expires)
    run_all(rt)
    clock.advance(7 * 86400 - 1)
    assert pipeline.sweep(rt)["expired"] == 0
    clock.advance(2)
    assert pipeline.sweep(rt)["expired"] == 1
    assert pipeline.sweep(rt)["expired"] == 0  # a second beat finds nothing left to do
    run_all(rt)
    assert RecordingChannel.remote == {}
    with rt.store.read() as s:
        event = s.scalar(select(Event).where(Event.kind == "retract"))
    assert event.actor == "scheduler" and "公示期满" in event.detail
