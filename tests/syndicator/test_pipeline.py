"""One attempt and the sweeper, in process, with a scripted channel: how each kind of outcome is
classified, scheduled and recorded. (The same code runs under real workers in test_guarantees.)"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from channels import registry
from channels.base import Channel, ChannelSettings, Receipt, Rendition
from channels.errors import ContentRejected, OutcomeUnknown, RateLimited, Unavailable
from syndicator import operations, pipeline, states
from syndicator.config import load_config
from syndicator.models import Delivery, Event
from syndicator.runtime import Runtime
from tests.conftest import write_article
from tests.support.services import write_config

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)


class ScriptedSettings(ChannelSettings):
    title: str = "scripted"


class ScriptedChannel(Channel):
    """A channel whose outcomes are a script: each attempt pops the next exception or receipt."""

    name = "scripted"
    display_name = "Scripted"
    reconcilable = False
    Settings = ScriptedSettings

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.script: list[Exception | None] = []
        self.renders = 0
        self.seen: list[tuple[str, bool, int]] = []

    def render(self, article, ctx) -> Rendition:
        self.renders += 1
        return Rendition(payload={"title": article.title, "rendered_at": ctx.now.isoformat()})

    def deliver(self, rendition, attempt) -> Receipt:
        self.seen.append((rendition.to_json(), attempt.reconcile, attempt.number))
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return Receipt(remote_id=f"r-{attempt.delivery_id}", remote_url="https://example.invalid/x")


class ReconcilingChannel(ScriptedChannel):
    name = "reconciling"
    reconcilable = True


class AsyncChannel(ScriptedChannel):
    """Accepts a job and finishes it later; `poll_script` scripts what each poll reports."""

    name = "async"
    settles_async = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.poll_script: list = []

    def deliver(self, rendition, attempt) -> Receipt:
        super().deliver(rendition, attempt)
        return Receipt(remote_id=f"job-{attempt.delivery_id}", pending=True)

    def poll(self, rendition, attempt) -> Receipt:
        outcome = self.poll_script.pop(0) if self.poll_script else "pending"
        if isinstance(outcome, Exception):
            raise outcome
        if outcome == "pending":
            return Receipt(remote_id=attempt.remote_id, pending=True)
        return Receipt(remote_id=f"article-of-{attempt.remote_id}", remote_url="https://mp.example/s/1")


class FakeEnqueuer:
    """In-memory stand-in for the broker port: records what would have been sent."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[int, str, float | None]] = []
        self.fail = fail
        self.forgotten: list[int] = []

    def enqueue(self, items, countdown=None):
        items = list(items)
        if self.fail:
            return [d for d, _ in items]
        self.sent += [(d, c, countdown) for d, c in items]
        return []

    def forget(self, ids):
        ids = list(ids)
        self.forgotten += ids
        if ids:
            self.rt.store.run_write(lambda s: s.execute(update(Delivery).where(Delivery.id.in_(ids))
                                                        .values(enqueued_at=None)))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.CHANNEL_TYPES, "scripted", f"{__name__}:ScriptedChannel")
    monkeypatch.setitem(registry.CHANNEL_TYPES, "reconciling", f"{__name__}:ReconcilingChannel")
    monkeypatch.setitem(registry.CHANNEL_TYPES, "async", f"{__name__}:AsyncChannel")
    registry.load_type.cache_clear()
    config = load_config(write_config(
        tmp_path / "config.yaml", database_url=f"sqlite:///{tmp_path / 's.db'}",
        broker_url="redis://127.0.0.1:1/0", public=tmp_path / "public",
        channels={"alpha": {"type": "scripted"}, "beta": {"type": "reconciling"},
                  "gamma": {"type": "async", "enabled": False}},
        delivery={"poll_interval": 30, "submitted_timeout": 300}))
    clock = Clock()
    rt = Runtime(config, clock=clock)
    rt.store.migrate()
    enqueuer = FakeEnqueuer()
    enqueuer.rt = rt
    rt._enqueuer = enqueuer
    yield rt, clock, enqueuer, tmp_path
    rt.store.dispose()
    registry.load_type.cache_clear()


def publish(rt, tmp_path, slug="p1"):
    from syndicator.articles import read_article
    from syndicator.publishing import publish as do_publish

    draft = read_article(write_article(tmp_path / "in", slug), max_image_bytes=10**6, max_body_chars=10**5)
    result = do_publish(rt.store, rt.config, draft, actor="editor:li", enqueuer=rt.enqueuer, now=rt.clock())
    with rt.store.read() as s:
        return {d.channel: d.id for d in s.scalars(select(Delivery).where(Delivery.article_id == result.article_id))}


def row(rt, delivery_id) -> Delivery:
    with rt.store.read() as s:
        return s.get(Delivery, delivery_id)


def test_transient_error_waits_with_backoff_then_delivers_identical_bytes(env):
    rt, clock, enqueuer, tmp = env
    ids = publish(rt, tmp)
    channel = rt.channel("alpha")
    channel.script = [Unavailable("HTTP 503 from remote")]
    # When the first attempt hits a transient error
    assert pipeline.attempt(rt, ids["alpha"]) == "retry_wait"
    d = row(rt, ids["alpha"])
    # Then it waits (backoff ≤ backoff_max) with the error recorded, and a short countdown is sent
    assert d.last_error == "Unavailable: HTTP 503 from remote; retry in %ds" % (d.next_attempt_at - T0).total_seconds()
    assert T0 <= d.next_attempt_at <= T0 + timedelta(seconds=rt.config.delivery.backoff_max)
    assert enqueuer.sent[-1][0] == ids["alpha"] and enqueuer.sent[-1][2] is not None
    # And it is not claimed before it is due
    if d.next_attempt_at > T0:
        assert pipeline.attempt(rt, ids["alpha"]) == "skipped"
    clock.advance(10)
    assert pipeline.attempt(rt, ids["alpha"]) == "delivered"
    assert channel.renders == 1 and channel.seen[0][0] == channel.seen[1][0]
    assert row(rt, ids["alpha"]).remote_id == f"r-{ids['alpha']}"
    assert row(rt, ids["alpha"]).attempts == 2


def test_rate_limit_waits_as_told_in_the_database_not_the_broker(env):
    rt, clock, enqueuer, tmp = env
    ids = publish(rt, tmp)
    rt.channel("alpha").script = [RateLimited("quota", retry_after=600, code=45009)]
    assert pipeline.attempt(rt, ids["beta"]) == "delivered"
    sent_before = len(enqueuer.sent)
    assert pipeline.attempt(rt, ids["alpha"]) == "retry_wait"
    d = row(rt, ids["alpha"])
    assert d.next_attempt_at == T0 + timedelta(seconds=600)
    assert d.enqueued_at is None and len(enqueuer.sent) == sent_before  # no long countdown in the broker
    assert pipeline.sweep(rt)["enqueued"] == 0  # not due yet
    clock.advance(601)
    assert pipeline.sweep(rt)["enqueued"] == 1
    assert enqueuer.sent[-1][0] == ids["alpha"]
    assert pipeline.attempt(rt, ids["alpha"]) == "delivered"


def test_permanent_error_fails_with_the_reason_and_operator_retry_delivers(env):
    rt, clock, enqueuer, tmp = env
    ids = publish(rt, tmp)
    rt.channel("alpha").script = [ContentRejected("title longer than 32 characters", code=45003)]
    assert pipeline.attempt(rt, ids["alpha"]) == "failed"
    assert row(rt, ids["alpha"]).last_error == "ContentRejected: [45003] title longer than 32 characters"
    # When ops retry it (only failed/stuck ones move; the delivered one on beta stays)
    assert pipeline.attempt(rt, ids["beta"]) == "delivered"
    moved = operations.retry(rt, "p1", channel=None, actor="ops:zhao")
    assert moved == [ids["alpha"]]
    assert pipeline.attempt(rt, ids["alpha"]) == "delivered"
    with rt.store.read() as s:
        actors = s.scalars(select(Event.actor).where(Event.delivery_id == ids["alpha"]).order_by(Event.id)).all()
    assert actors == ["editor:li", "worker", "worker", "ops:zhao", "worker", "worker"]


def test_attempts_are_bounded(env):
    rt, clock, enqueuer, tmp = env
    ids = publish(rt, tmp)
    rt.channel("alpha").script = [Unavailable("down")] * 10
    for _ in range(rt.config.delivery.max_attempts - 1):
        assert pipeline.attempt(rt, ids["alpha"]) == "retry_wait"
        clock.advance(3600)
    assert pipeline.attempt(rt, ids["alpha"]) == "failed"
    assert row(rt, ids["alpha"]).last_error.startswith(f"gave up after {rt.config.delivery.max_attempts} attempts")


def test_outcome_unknown_stops_for_an_operator_unless_the_channel_reconciles(env):
    rt, clock, enqueuer, tmp = env
    ids = publish(rt, tmp)
    rt.channel("alpha").script = [OutcomeUnknown("timeout after POST")]
    rt.channel("beta").script = [OutcomeUnknown("timeout after POST")]
    assert pipeline.attempt(rt, ids["alpha"]) == "unknown"
    assert pipeline.attempt(rt, ids["beta"]) == "retry_wait"
    assert row(rt, ids["beta"]).reconcile is True
    clock.advance(60)
    assert pipeline.attempt(rt, ids["beta"]) == "delivered"
    assert rt.channel("beta").seen[-1][1] is True  # the adapter was told to reconcile
    # When ops retry the unknown one, the adapter is told to reconcile first
    operations.retry(rt, "p1", channel="alpha", actor="ops:zhao")
    assert pipeline.attempt(rt, ids["alpha"]) == "delivered"
    assert rt.channel("alpha").seen[-1][1] is True


def test_an_unclassified_adapter_exception_is_treated_as_unknown(env):
    rt, clock, enqueuer, tmp = env
    ids = publish(rt, tmp)
    rt.channel("alpha").script = [KeyError("bug")]
    assert pipeline.attempt(rt, ids["alpha"]) == "unknown"
    assert "unexpected KeyError" in row(rt, ids["alpha"]).last_error


def test_sweeper_recovers_expired_leases_by_channel_capability(env):
    rt, clock, enqueuer, tmp = env
    ids = publish(rt, tmp)
    # Given both deliveries claimed by a worker that then vanished
    for delivery_id in ids.values():
        rt.store.run_write(lambda s, d=delivery_id: states.claim(s, d, actor="worker", now=T0, lease_expires_at=T0 + timedelta(seconds=5)))
    assert pipeline.sweep(rt)["recovered"] == 0  # lease still valid
    clock.advance(6)
    # When the sweeper runs after the leases expired
    assert pipeline.sweep(rt)["recovered"] == 2
    # Then the reconcilable channel retries with reconcile, the other waits for an operator
    assert row(rt, ids["beta"]).state == "retry_wait" and row(rt, ids["beta"]).reconcile
    assert row(rt, ids["alpha"]).state == "unknown"
    assert "lease expired" in row(rt, ids["alpha"]).last_error


def test_sweeper_resends_stale_messages_once_even_when_run_twice(env):
    rt, clock, enqueuer, tmp = env
    ids = publish(rt, tmp)
    enqueuer.sent.clear()
    assert pipeline.sweep(rt)["enqueued"] == 0  # just sent by publish
    clock.advance(rt.config.delivery.requeue_after + 1)
    first, second = pipeline.sweep(rt), pipeline.sweep(rt)
    assert first["enqueued"] == 2 and second["enqueued"] == 0
    assert sorted(d for d, _, _ in enqueuer.sent) == sorted(ids.values())


def test_broker_down_at_publish_records_the_intent_and_the_sweeper_sends_it(env):
    rt, clock, enqueuer, tmp = env
    enqueuer.fail = True
    from syndicator.articles import read_article
    from syndicator.publishing import publish as do_publish

    draft = read_article(write_article(tmp / "in", "broker-down"), max_image_bytes=10**6, max_body_chars=10**5)
    result = do_publish(rt.store, rt.config, draft, actor="editor:li", enqueuer=enqueuer, now=T0)
    assert result.created and sorted(result.not_enqueued) == sorted(result.delivery_ids)
    assert all(row(rt, d).enqueued_at is None for d in result.delivery_ids)
    enqueuer.fail = False
    assert pipeline.sweep(rt)["enqueued"] == 2


def test_scheduled_publish_is_not_sent_before_its_time(env):
    rt, clock, enqueuer, tmp = env
    from syndicator.articles import read_article
    from syndicator.publishing import publish as do_publish

    path = write_article(tmp / "in", "later", publish_at=(T0 + timedelta(hours=2)).isoformat())
    draft = read_article(path, max_image_bytes=10**6, max_body_chars=10**5)
    enqueuer.sent.clear()
    result = do_publish(rt.store, rt.config, draft, actor="editor:li", enqueuer=enqueuer, now=T0)
    assert enqueuer.sent == []
    assert pipeline.attempt(rt, result.delivery_ids[0]) == "skipped"
    assert pipeline.sweep(rt)["enqueued"] == 0
    clock.advance(2 * 3600 + 1)
    assert pipeline.sweep(rt)["enqueued"] == 2
    assert pipeline.attempt(rt, result.delivery_ids[0]) == "delivered"


def test_async_channel_waits_submitted_until_a_poll_settles_it(env, monkeypatch):
    rt, clock, enqueuer, tmp = env
    ids = _publish_to_gamma(rt, tmp)
    gamma = rt.channel("gamma")
    # When the channel accepts the job
    assert pipeline.run(rt, ids) == "submitted"
    d = row(rt, ids)
    assert d.remote_id == f"job-{ids}" and d.next_attempt_at == T0 + timedelta(seconds=30)
    # Then it is polled when due, stays submitted while running, and settles when done
    assert pipeline.run(rt, ids) == "skipped"
    clock.advance(31)
    assert pipeline.sweep(rt)["enqueued"] >= 1
    assert pipeline.run(rt, ids) == "submitted"
    gamma.poll_script = ["done"]
    clock.advance(31)
    assert pipeline.run(rt, ids) == "delivered"
    assert row(rt, ids).remote_id == f"article-of-job-{ids}"
    assert row(rt, ids).remote_url == "https://mp.example/s/1"


def test_a_callback_settles_once_and_duplicates_are_ignored(env):
    rt, clock, enqueuer, tmp = env
    ids = _publish_to_gamma(rt, tmp)
    pipeline.run(rt, ids)
    done = Receipt(remote_id="art-1", remote_url="https://mp.example/s/2")
    assert pipeline.settle_job(rt, "gamma", f"job-{ids}", done, actor="wechat-callback") == "delivered"
    assert pipeline.settle_job(rt, "gamma", f"job-{ids}", done, actor="wechat-callback") == "ignored"
    assert pipeline.settle_job(rt, "gamma", "job-unknown", done, actor="wechat-callback") == "ignored"
    with rt.store.read() as s:
        last = s.scalars(select(Event).where(Event.delivery_id == ids).order_by(Event.id.desc())).first()
    assert (last.from_state, last.to_state, last.actor) == ("submitted", "delivered", "wechat-callback")


def test_a_failed_job_fails_with_the_reason_and_a_silent_one_times_out(env):
    rt, clock, enqueuer, tmp = env
    first = _publish_to_gamma(rt, tmp, "async-a")
    second = _publish_to_gamma(rt, tmp, "async-b")
    pipeline.run(rt, first)
    pipeline.run(rt, second)
    rt.channel("gamma").poll_script = [ContentRejected("publish_status 4: platform audit failed", code=4)]
    clock.advance(31)
    assert pipeline.poll(rt, first) == "failed"
    assert "platform audit failed" in row(rt, first).last_error
    clock.advance(301)
    assert pipeline.poll(rt, second) == "unknown"
    assert "no completion reported" in row(rt, second).last_error


def _publish_to_gamma(rt, tmp, slug="async-1") -> int:
    ids = publish(rt, tmp, slug)
    from syndicator import states as st

    # Only alpha/beta are enabled in config; plan the gamma delivery the way publish would.
    with rt.store.read() as s:
        d = s.get(Delivery, ids["alpha"])
        article_id, revision_id = d.article_id, d.revision_id
    return rt.store.run_write(lambda s: st.plan(s, actor="editor:li", now=rt.clock(), article_id=article_id,
                                                revision_id=revision_id, revision=1, channel="gamma",
                                                channel_type="async", operation="publish").id)


def test_refused_credentials_suspend_the_channel_until_resumed(env):
    from channels.errors import AuthInvalid
    from syndicator.channel_status import set_suspended

    rt, clock, enqueuer, tmp = env
    first = publish(rt, tmp, "auth-1")
    second = publish(rt, tmp, "auth-2")
    rt.channel("alpha").script = [AuthInvalid("[21327] expired_token", code=21327)]
    # When the channel refuses our credentials
    assert pipeline.attempt(rt, first["alpha"]) == "failed"
    assert "suspended until an operator resumes it" in row(rt, first["alpha"]).last_error
    # Then other deliveries to it wait (not claimed, not re-sent), while other channels go on
    assert pipeline.attempt(rt, second["alpha"]) == "suspended"
    assert row(rt, second["alpha"]).state == "queued"
    assert pipeline.attempt(rt, second["beta"]) == "delivered"
    clock.advance(rt.config.delivery.requeue_after + 1)
    enqueuer.sent.clear()
    pipeline.sweep(rt)
    assert second["alpha"] not in [d for d, _, _ in enqueuer.sent]
    # When ops resume it, the waiting delivery goes out
    set_suspended(rt.store, "alpha", False, reason=None, actor="ops:zhao")
    pipeline.sweep(rt)
    assert second["alpha"] in [d for d, _, _ in enqueuer.sent]
    assert pipeline.attempt(rt, second["alpha"]) == "delivered"


def test_breaker_opens_after_repeated_transient_failures_and_closes_on_success(env):
    rt, clock, enqueuer, tmp = env
    policy = rt.config.delivery
    ids = [publish(rt, tmp, f"brk-{i}")["alpha"] for i in range(policy.breaker_threshold + 1)]
    rt.channel("alpha").script = [Unavailable("HTTP 503")] * policy.breaker_threshold
    # When the channel fails `threshold` times in a row
    for delivery_id in ids[:-1]:
        assert pipeline.attempt(rt, delivery_id) == "retry_wait"
    # Then its breaker is open: nothing more is attempted or re-sent there until the cooldown ends
    assert pipeline.attempt(rt, ids[-1]) == "breaker_open"
    clock.advance(rt.config.delivery.requeue_after + 1)
    enqueuer.sent.clear()
    pipeline.sweep(rt)
    assert not [d for d, c, _ in enqueuer.sent if c == "alpha"] and [d for d, c, _ in enqueuer.sent if c == "beta"]
    # And other channels go on
    with rt.store.read() as s:
        beta = s.scalar(select(Delivery.id).where(Delivery.channel == "beta"))
    assert pipeline.attempt(rt, beta) == "delivered"
    # When the cooldown has passed, the next success closes it
    clock.advance(policy.breaker_cooldown)
    assert pipeline.attempt(rt, ids[-1]) == "delivered"
    with rt.store.read() as s:
        kinds = s.scalars(select(Event.kind).where(Event.kind.like("breaker_%")).order_by(Event.id)).all()
    assert kinds == ["breaker_opened", "breaker_closed"]


def test_a_hanging_channel_cannot_hold_more_than_its_share_of_worker_threads(env):
    rt, clock, enqueuer, tmp = env
    ids = publish(rt, tmp, "slots")
    slot = rt.slot("alpha")
    cap = max(1, rt.config.worker.concurrency // 2)
    # Given every thread alpha may hold is busy with an attempt older than hang_after
    tokens = [slot.acquire(blocking=False) for _ in range(cap)]
    assert None not in tokens
    slot.hang_after = 0.0
    enqueuer.sent.clear()
    # Then the next alpha message goes back to the broker at once, and other channels go on
    assert pipeline.run(rt, ids["alpha"]) == "deferred"
    assert enqueuer.sent == [(ids["alpha"], "alpha", 1)]
    assert pipeline.run(rt, ids["beta"]) == "delivered"
    for token in tokens:
        slot.release(token)
    assert pipeline.run(rt, ids["alpha"]) == "delivered"


def test_a_burst_on_a_healthy_channel_waits_for_a_thread_instead_of_bouncing(env):
    rt, clock, enqueuer, tmp = env
    ids = publish(rt, tmp, "burst")
    slot = rt.slot("alpha")
    cap = max(1, rt.config.worker.concurrency // 2)
    # Given every thread alpha may hold is busy, but not for long (a burst, not a hang)
    slot.hang_after = 60.0
    tokens = [slot.acquire(blocking=False) for _ in range(cap)]
    enqueuer.sent.clear()
    outcome: list[str] = []
    waiter = threading.Thread(target=lambda: outcome.append(pipeline.run(rt, ids["alpha"])))
    waiter.start()
    # Then the message waits for a thread of its channel — it is neither sent back nor run
    waiter.join(timeout=0.5)
    assert waiter.is_alive() and not outcome and not enqueuer.sent
    # When one attempt finishes, it runs
    slot.release(tokens.pop())
    waiter.join(timeout=30)
    assert outcome == ["delivered"] and not enqueuer.sent
    for token in tokens:
        slot.release(token)
