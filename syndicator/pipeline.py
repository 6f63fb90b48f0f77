"""One delivery attempt, and the sweeper that makes sure nothing is ever left behind.

A delivery message costs three transactions on the way every article takes (a publish): one read
(where the delivery stands, its channel's status and what to render), then — after rendering —
one write that claims it (queued/retry_wait → sending, a compare-and-set with a lease that also
stores the rendition, kept for every retry), the adapter's call, and one write that settles the
outcome and finds the next operation waiting on the same (article, channel). State moves only
through `states`. The sweeper (run by beat) turns expired leases — a worker that died
mid-attempt — into a reconciling retry or an operator stop, and re-sends broker messages for
every due delivery whose last message is stale (lost by a crash or a broker restart).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, func, or_, select, update

from channels.base import ArticleSnapshot, Attempt, Receipt, Rendition, RenderContext
from channels.errors import (
    AuthInvalid,
    DeliveryError,
    ManualActionRequired,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
)
from channels.registry import ChannelUnavailable, load_type
from syndicator import alerts, editorial, faults, states
from syndicator.embedded_broker import prune_consumed
from syndicator.models import Delivery, Event
from syndicator.runtime import Runtime
from syndicator.channel_status import held_back, record_failure, record_success, set_suspended
from syndicator.models import ChannelStatus
from syndicator.snapshot import StoreMedia, build_snapshot
from syndicator.states import CLAIMABLE, TERMINAL, Conflict, DeliveryState as S

log = logging.getLogger(__name__)

#: Most deliveries the sweeper re-sends per run (the rest wait for the next run).
SWEEP_BATCH = 1000
_CLAIMABLE = frozenset(s.value for s in CLAIMABLE)


Claim = states.Claimed


@dataclass(frozen=True)
class Look:
    """What one read tells a worker about a delivery message: where it stands, whether its channel
    may be sent to now, and — for a claimable publish with nothing rendered yet — what to render."""

    article_id: int
    channel: str
    state: str
    operation: str
    due: bool
    suspended: bool
    open_until: datetime | None
    failures: int
    rendition: str | None
    snapshot: ArticleSnapshot | None


_D = Delivery.__table__
_LOOK = (select(_D.c.article_id, _D.c.channel, _D.c.state, _D.c.operation, _D.c.revision_id, _D.c.rendition,
                _D.c.next_attempt_at, ChannelStatus.suspended, ChannelStatus.open_until, ChannelStatus.failures)
         .outerjoin(ChannelStatus, ChannelStatus.channel == _D.c.channel).where(_D.c.id == bindparam("b_id")))
_SUCCESSOR = select(_D.c.id).where(
    _D.c.article_id == bindparam("b_article"), _D.c.channel == bindparam("b_channel"), _D.c.id > bindparam("b_id"),
    _D.c.state.in_([s.value for s in CLAIMABLE]),
    or_(_D.c.next_attempt_at.is_(None), _D.c.next_attempt_at <= bindparam("b_now"))).order_by(_D.c.id).limit(1)


def run(rt: Runtime, delivery_id: int) -> str:
    """What a delivery message means: attempt it, or poll it if it waits on a submitted job.

    One channel may hold only `worker.channel_concurrency` threads of this worker. A message beyond
    that waits for a thread of its channel while they are busy with healthy attempts, and goes back
    to the broker for a second when they hang, so a hanging channel cannot starve the others.
    """
    look = _look(rt, delivery_id, rt.clock())
    if look is None:
        return "skipped"
    if look.state == S.SUBMITTED.value:
        return poll(rt, delivery_id)
    if look.state not in _CLAIMABLE or not look.due:
        return "skipped"
    with rt.slot(look.channel).held() as ok:
        if not ok:
            rt.enqueuer.forget(rt.enqueuer.enqueue([(delivery_id, look.channel)], countdown=1))
            return "deferred"
        return attempt(rt, delivery_id, look=look)


def _look(rt: Runtime, delivery_id: int, now: datetime) -> Look | None:
    """One read: the delivery, its channel's status and, when it is to be rendered now, its snapshot."""
    with rt.store.connect() as conn:
        row = conn.execute(_LOOK, {"b_id": delivery_id}).one_or_none()
        if row is None:
            return None
        due = row.next_attempt_at is None or row.next_attempt_at <= now
        render = row.rendition is None and row.operation == "publish" and row.state in _CLAIMABLE and due
        snapshot = build_snapshot(conn, row.revision_id, row.operation) if render else None
    return Look(row.article_id, row.channel, row.state, row.operation, due, bool(row.suspended), row.open_until,
                row.failures or 0, row.rendition, snapshot)


def attempt(rt: Runtime, delivery_id: int, *, actor: str = "worker", look: Look | None = None) -> str:
    """Run one attempt of a delivery if it is due and unclaimed; return the state it ended in.

    A publish is rendered before it is claimed, so the claim stores the rendition in the same
    transaction; an update or retract is claimed first (it may turn out to have nothing to act on).
    """
    now = rt.clock()
    lease = now + timedelta(seconds=rt.config.delivery.lease_seconds)
    look = look or _look(rt, delivery_id, now)
    if look is None:
        return "skipped"
    if look.suspended:
        return "suspended"
    if look.open_until is not None and look.open_until > now:
        return "breaker_open"
    try:
        channel = rt.channel(look.channel)
    except (ChannelUnavailable, KeyError) as exc:
        channel, problem = None, f"channel unavailable: {exc}"
    else:
        problem = None
    text = look.rendition
    if text is None and look.snapshot is not None and channel is not None:
        try:
            text = channel.render(look.snapshot, RenderContext(now=now, ports=rt.ports)).to_json()
        except Exception as exc:  # a render bug or a content problem: never retried blindly
            log.exception("render failed", extra={"delivery_id": delivery_id})
            problem = f"render failed: {exc}"
    try:
        claim = rt.store.run_write(lambda c: _claim(c, delivery_id, actor, now, lease, text, look), core=True)
    except states.Blocked:
        return "blocked"
    except Conflict:
        return "skipped"
    if claim is None:
        return S.CANCELLED.value
    log.info("delivery claimed", extra={"delivery_id": delivery_id, "channel": claim.channel,
                                        "article_id": claim.article_id, "attempt": claim.attempts})
    if problem is not None:
        return _settle(rt, claim, S.FAILED, problem)

    if claim.rendition is None:  # an update or retract, rendered once and kept for its retries
        try:
            with rt.store.read() as session:
                snapshot = build_snapshot(session, claim.revision_id, claim.operation)
            text = channel.render(snapshot, RenderContext(now=now, ports=rt.ports)).to_json()
        except Exception as exc:
            log.exception("render failed", extra={"delivery_id": delivery_id})
            return _settle(rt, claim, S.FAILED, f"render failed: {exc}")
        rt.store.run_write(lambda s: s.execute(
            update(Delivery).where(Delivery.id == delivery_id, Delivery.rendition.is_(None)).values(rendition=text)))
        claim = replace(claim, rendition=text)
    rendition = Rendition.from_json(claim.rendition)

    # Update and retract act on what the channel holds now; a publish knows only its own id.
    if claim.operation == "publish":
        held, held_ids = claim.remote_id, ()
    else:
        held_ids = _held_ids(rt, claim)
        held = held_ids[0] if held_ids else None
    job = Attempt(delivery_id=delivery_id, number=claim.attempts, reconcile=claim.reconcile,
                  remote_id=held, media=StoreMedia(rt.store), held_ids=held_ids)
    operation = {"publish": channel.deliver, "update": channel.update, "retract": channel.retract}[claim.operation]
    faults.checkpoint("before_deliver")
    try:
        receipt = operation(rendition, job)
    except DeliveryError as exc:
        return _failed_attempt(rt, claim, exc, channel.reconcilable)
    except Exception as exc:  # an adapter bug: it may have done something, so treat as unknown
        log.exception("adapter raised an unclassified error", extra={"delivery_id": delivery_id})
        return _failed_attempt(rt, claim, OutcomeUnknown(f"unexpected {type(exc).__name__}: {exc}"),
                               channel.reconcilable)
    faults.checkpoint("after_deliver")
    if look.failures:
        record_success(rt.store, claim.channel, rt.clock())
    if receipt.pending:
        due = rt.clock() + timedelta(seconds=rt.config.delivery.poll_interval)
        return _settle(rt, claim, S.SUBMITTED, None, remote_id=receipt.remote_id, remote_url=receipt.remote_url,
                       next_attempt_at=due, enqueued_at=None, last_error=None)
    return _settle(rt, claim, S.DELIVERED, None, note=receipt.detail or None, remote_id=receipt.remote_id,
                   remote_url=receipt.remote_url)


def _claim(session, delivery_id: int, actor: str, now: datetime, lease: datetime, rendition: str | None,
           look: Look) -> Claim | None:
    """Claim a due delivery — after every earlier one for its (article, channel) has finished.

    An update or retract for a channel that never received the article is cancelled instead.
    """
    if look.operation != "publish":
        ahead = states.pending_ahead(session, look.article_id, look.channel, delivery_id)
        if ahead:
            raise states.Blocked(f"delivery {delivery_id} waits for {ahead} earlier operation(s) on {look.channel}")
        if _held_remote_id(session, look.article_id, look.channel) is None:
            what = "update" if look.operation == "update" else "withdraw"
            states.transition(session, delivery_id, S.CANCELLED, actor=actor, expect=CLAIMABLE, now=now,
                              detail=f"the article never reached {look.channel}; nothing to {what} there")
            return None
    return states.claim(session, delivery_id, actor=actor, now=now, lease_expires_at=lease, rendition=rendition,
                        current=S(look.state))


def _held_remote_id(session, article_id: int, channel: str) -> str | None:
    """The id under which the channel holds the article now (last delivered publish or update)."""
    return session.scalar(
        select(Delivery.remote_id).where(
            Delivery.article_id == article_id, Delivery.channel == channel,
            Delivery.state == S.DELIVERED.value, Delivery.remote_id.is_not(None),
            Delivery.operation != "retract").order_by(Delivery.id.desc()).limit(1))


def _held_ids(rt: Runtime, claim: Claim) -> tuple[str, ...]:
    """For update/retract: every id the channel gave this article (delivered publishes and updates),
    newest first, distinct; the first is `_held_remote_id`'s.

    Ids a later correction replaced stay in: only the channel's receipts tell which it deleted, and
    every adapter treats deleting an id that is already gone as done.
    """
    with rt.store.read() as session:
        ids = session.scalars(select(Delivery.remote_id).where(
            Delivery.article_id == claim.article_id, Delivery.channel == claim.channel,
            Delivery.state == S.DELIVERED.value, Delivery.remote_id.is_not(None),
            Delivery.operation != "retract").order_by(Delivery.id.desc())).all()
    return tuple(dict.fromkeys(ids))


def _failed_attempt(rt: Runtime, claim: Claim, exc: DeliveryError, reconcilable: bool) -> str:
    policy = rt.config.delivery
    now = rt.clock()
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, AuthInvalid):
        set_suspended(rt.store, claim.channel, True, reason=reason, actor="worker")
        return _settle(rt, claim, S.FAILED, f"{reason} — channel {claim.channel} suspended until an operator "
                                            "resumes it (`syndicator channels resume`)")
    if isinstance(exc, ManualActionRequired):
        where = f" at {exc.url}" if exc.url else ""
        return _settle(rt, claim, S.MANUAL, f"manual action needed{where}: {exc.message}")
    if isinstance(exc, PermanentError):
        return _settle(rt, claim, S.FAILED, reason)
    if isinstance(exc, OutcomeUnknown) and not reconcilable:
        return _settle(rt, claim, S.UNKNOWN, f"{reason} — check the channel, then retry or mark resolved")
    if not isinstance(exc, RateLimited):
        record_failure(rt.store, claim.channel, threshold=policy.breaker_threshold, cooldown=policy.breaker_cooldown,
                       max_cooldown=policy.breaker_max_cooldown, now=now, reason=reason)
    if claim.attempts >= policy.max_attempts:
        return _settle(rt, claim, S.FAILED, f"gave up after {claim.attempts} attempts; last error {reason}")
    if isinstance(exc, RateLimited):
        delay = max(exc.retry_after, 0.0)
    else:
        delay = backoff(claim.attempts, policy.backoff_factor, policy.backoff_max, policy.jitter)
    due = now + timedelta(seconds=delay)
    short = delay <= policy.max_countdown
    state = _settle(rt, claim, S.RETRY_WAIT, f"{reason}; retry in {delay:.0f}s", next_attempt_at=due,
                    reconcile=isinstance(exc, OutcomeUnknown), enqueued_at=due if short else None)
    if short and state == S.RETRY_WAIT:
        failed = rt.enqueuer.enqueue([(claim.id, claim.channel)], countdown=delay)
        rt.enqueuer.forget(failed)
    return state


def backoff(attempt: int, factor: float, maximum: float, jitter: bool) -> float:
    """Exponential backoff with "equal jitter": between half and all of factor·2^(attempt-1).

    (Celery's own helper takes whole seconds only; sub-second factors matter for fast channels.)
    """
    cap = min(maximum, factor * 2 ** max(attempt - 1, 0))
    return random.uniform(cap / 2, cap) if jitter else cap


def _settle(rt: Runtime, claim: Claim, to: S, error: str | None, *, actor: str = "worker",
            expect: S = S.SENDING, note: dict | None = None, **fields) -> str:
    """Move a claimed delivery to its outcome; `error` (or else the receipt's `note`) goes in the event.

    The same transaction looks for the next operation waiting on this (article, channel), which is
    sent at once instead of at the next sweep.
    """
    if error is not None:
        fields["last_error"] = error
    now = rt.clock()

    seen = states.Seen(expect, claim.attempts, claim.article_id)

    def tx(conn) -> int | None:
        states.transition(conn, claim.id, to, actor=actor, expect={expect}, seen=seen,
                          detail=error if error is not None else note, now=now, **fields)
        if to not in TERMINAL:
            return None
        return conn.scalar(_SUCCESSOR, {"b_article": claim.article_id, "b_channel": claim.channel,
                                        "b_id": claim.id, "b_now": now})

    try:
        successor = rt.store.run_write(tx, core=True)
    except Conflict as exc:
        log.warning("delivery moved while we held it (lease expired?)", extra={"delivery_id": claim.id,
                                                                               "error": str(exc)})
        return "lost"
    log.info("delivery settled", extra={"delivery_id": claim.id, "channel": claim.channel,
                                        "article_id": claim.article_id, "state": to.value, "error": error})
    if successor is not None:
        rt.enqueuer.forget(rt.enqueuer.enqueue([(successor, claim.channel)]))
    return to.value


def sweep(rt: Runtime, *, actor: str = "sweeper") -> dict[str, int]:
    """Recover lost attempts and re-send stale messages. Safe to run concurrently (two beats)."""
    now = rt.clock()
    policy = rt.config.delivery
    expired = editorial.expire_due(rt, now)
    recovered = 0
    with rt.store.read() as session:
        lost = session.execute(select(Delivery.id, Delivery.channel_type, Delivery.attempts).where(
            Delivery.state == S.SENDING.value, Delivery.lease_expires_at < now)).all()
    for row in lost:
        try:
            reconcilable = load_type(row.channel_type).reconcilable
        except ChannelUnavailable:
            reconcilable = False
        why = f"worker lost during attempt {row.attempts} (lease expired)"
        try:
            if reconcilable:
                rt.store.run_write(lambda s: states.transition(
                    s, row.id, S.RETRY_WAIT, actor=actor, expect={S.SENDING}, now=now,
                    detail=why + "; the next attempt reconciles", last_error=why, reconcile=True,
                    next_attempt_at=now, enqueued_at=None))
            else:
                rt.store.run_write(lambda s: states.transition(
                    s, row.id, S.UNKNOWN, actor=actor, expect={S.SENDING}, now=now,
                    detail=why + "; the channel cannot be reconciled automatically", last_error=why))
            recovered += 1
        except Conflict:
            continue

    cutoff = now - timedelta(seconds=policy.requeue_after)
    paused = held_back(rt.store, now)
    stale = and_(Delivery.channel.not_in(paused),Delivery.state.in_([s.value for s in (*CLAIMABLE, S.SUBMITTED)]),
                 or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
                 or_(Delivery.enqueued_at.is_(None), Delivery.enqueued_at < cutoff))

    def mark(session) -> list[tuple[int, str]]:
        ids = session.scalars(select(Delivery.id).where(stale).order_by(Delivery.id).limit(SWEEP_BATCH)).all()
        if not ids:
            return []
        rows = session.execute(update(Delivery).where(Delivery.id.in_(ids), stale).values(enqueued_at=now)
                               .returning(Delivery.id, Delivery.channel)).all()
        return [(r.id, r.channel) for r in rows]

    due = rt.store.run_write(mark)
    if due:
        rt.enqueuer.forget(rt.enqueuer.enqueue(due))
        log.info("sweeper re-sent deliveries", extra={"count": len(due)})
    alerts.check(rt, now=now)
    prune_consumed(rt.config)  # the embedded broker's consumed messages; never raises
    return {"recovered": recovered, "enqueued": len(due), "expired": len(expired)}


# -- asynchronous completion (submitted jobs) ---------------------------------------------------

def _load_submitted(session, delivery_id: int) -> Claim | None:
    d = session.get(Delivery, delivery_id)
    if d is None or d.state != S.SUBMITTED.value:
        return None
    return Claim(d.id, d.article_id, d.channel, d.channel_type, d.operation, d.revision_id, d.rendition,
                 d.remote_id, d.reconcile, d.attempts)


def poll(rt: Runtime, delivery_id: int, *, actor: str = "poller") -> str:
    """Ask the channel how a submitted job ended; settle it, or look again later."""
    now = rt.clock()
    with rt.store.read() as session:
        claim = _load_submitted(session, delivery_id)
        due = session.scalar(select(Delivery.next_attempt_at).where(Delivery.id == delivery_id))
        submitted_at = session.scalar(select(func.max(Event.at)).where(
            Event.delivery_id == delivery_id, Event.to_state == S.SUBMITTED.value))
    if claim is None or (due is not None and due > now):
        return "skipped"
    channel = rt.channel(claim.channel)
    job = Attempt(delivery_id=delivery_id, number=claim.attempts, reconcile=False, remote_id=claim.remote_id,
                  media=StoreMedia(rt.store))
    try:
        receipt = channel.poll(Rendition.from_json(claim.rendition), job)
    except PermanentError as exc:
        return settle_submitted(rt, claim, exc, actor=actor)
    except Exception as exc:  # transient or unexpected: the job itself is unaffected; look again
        log.warning("poll failed; will poll again", extra={"delivery_id": delivery_id, "error": repr(exc)})
        receipt = None
    if receipt is not None and not receipt.pending:
        return settle_submitted(rt, claim, receipt, actor=actor)
    deadline = (submitted_at or now) + timedelta(seconds=rt.config.delivery.submitted_timeout)
    if now >= deadline:
        return _settle(rt, claim, S.UNKNOWN, "no completion reported within "
                       f"{rt.config.delivery.submitted_timeout:.0f}s of submitting", actor=actor, expect=S.SUBMITTED)
    later = now + timedelta(seconds=rt.config.delivery.poll_interval)
    rt.store.run_write(lambda s: s.execute(update(Delivery).where(
        Delivery.id == delivery_id, Delivery.state == S.SUBMITTED.value).values(next_attempt_at=later,
                                                                                enqueued_at=None)))
    return S.SUBMITTED.value


def settle_submitted(rt: Runtime, claim: Claim, outcome: Receipt | DeliveryError, *, actor: str) -> str:
    """Record how a submitted job ended (from a poll or the channel's callback)."""
    if isinstance(outcome, Receipt):
        return _settle(rt, claim, S.DELIVERED, None, actor=actor, expect=S.SUBMITTED, note=outcome.detail or None,
                       remote_id=outcome.remote_id, remote_url=outcome.remote_url)
    return _settle(rt, claim, S.FAILED, f"{type(outcome).__name__}: {outcome}", actor=actor, expect=S.SUBMITTED)


def settle_job(rt: Runtime, channel: str, job_id: str, outcome: Receipt | DeliveryError, *, actor: str) -> str:
    """Settle the delivery waiting on `job_id` at `channel`; duplicates and strays are ignored."""
    with rt.store.read() as session:
        delivery_id = session.scalar(select(Delivery.id).where(
            Delivery.channel == channel, Delivery.remote_id == job_id, Delivery.state == S.SUBMITTED.value))
        claim = _load_submitted(session, delivery_id) if delivery_id else None
    if claim is None:
        return "ignored"
    return settle_submitted(rt, claim, outcome, actor=actor)
