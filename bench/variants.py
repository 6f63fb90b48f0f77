"""Prototypes of the core changes proposed in bench/RESULTS.md, for before/after figures.

Never used by syndicator itself. `python -m bench.variants NAMES -- ARGS` applies the named
patches to this process, then runs the `syndicator` command with ARGS (a worker), so a variant
worker runs the shipped code except for the patched functions:

write_lock  `Store.write` takes a process-wide lock before `BEGIN IMMEDIATE` on SQLite, so the
            worker's threads queue in Python and are woken at once, instead of retrying in SQLite's
            busy handler, which sleeps 1, 2, 5, 10 … 100 ms between tries.
lean        `pipeline.run` for a due publish: one read (gate, snapshot), render, then claim and
            store the rendition in one write transaction, settle and look for a successor in one —
            SQLAlchemy Core statements built once with bind parameters, no ORM unit of work:
            3 transactions and 9 statements per delivery instead of 6 and 20. Every other case
            (update, retract, retries after errors, submitted jobs, conflicts) goes through the
            shipped code.

The config-only variant `no_defer` (`worker.channel_concurrency` = `worker.concurrency`, so a
healthy channel's messages are never sent back for a second) needs no patch; bench/variant_runs.py
sets it in the config.
"""
from __future__ import annotations

import json
import sys
import threading
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import bindparam, exists, insert, or_, select, update

from channels.base import Attempt, Rendition, RenderContext
from channels.errors import DeliveryError, OutcomeUnknown
from syndicator import faults, pipeline, store
from syndicator.channel_status import record_success
from syndicator.models import ChannelStatus, Delivery, Event
from syndicator.snapshot import StoreMedia, build_snapshot
from syndicator.states import CLAIMABLE, PENDING, DeliveryState as S

_CLAIMABLE = [s.value for s in CLAIMABLE]
_PENDING = [s.value for s in PENDING]
D, E = Delivery.__table__, Event.__table__


def write_lock():
    """Patch; returns the undo."""
    shipped = store.Store.write
    lock = threading.RLock()

    @contextmanager
    def write(self):
        if self.dialect != "sqlite":
            with shipped(self) as session:
                yield session
            return
        with lock, shipped(self) as session:
            yield session

    store.Store.write = write
    return lambda: setattr(store.Store, "write", shipped)


_GATE = select(D.c.channel, D.c.state, D.c.operation, D.c.revision_id, D.c.rendition, D.c.next_attempt_at,
               ChannelStatus.suspended, ChannelStatus.open_until, ChannelStatus.failures).outerjoin(
    ChannelStatus, ChannelStatus.channel == D.c.channel).where(D.c.id == bindparam("b_id"))


def lean():
    """Patch; returns the undo."""
    shipped_run = pipeline.run

    def run(rt, delivery_id: int) -> str:
        now = rt.clock()
        snapshot = None
        with rt.store.read() as session:
            row = session.execute(_GATE, {"b_id": delivery_id}).one_or_none()
            shipped = row is None or row.operation != "publish" or row.state not in _CLAIMABLE \
                or (row.next_attempt_at is not None and row.next_attempt_at > now)
            held = not shipped and (row.suspended or (row.open_until is not None and row.open_until > now))
            if not shipped and not held and row.rendition is None:
                snapshot = build_snapshot(session, row.revision_id, row.operation)
        if shipped:
            return shipped_run(rt, delivery_id)
        if held:
            return "suspended" if row.suspended else "breaker_open"
        channel = rt.channel(row.channel)
        text = row.rendition
        slot = rt.slot(row.channel)
        if not slot.acquire(blocking=False):
            rt.enqueuer.forget(rt.enqueuer.enqueue([(delivery_id, row.channel)], countdown=1))
            return "deferred"
        try:
            outcome = None
            try:
                text = text or channel.render(snapshot, RenderContext(now=now, ports=rt.ports)).to_json()
            except Exception:  # noqa: BLE001 — the shipped path records the render failure
                text = None
            if text is not None:
                outcome = _attempt(rt, delivery_id, channel, text, row.failures or 0)
        finally:
            slot.release()
        # Not claimable after all, or the render failed: the shipped path says why and records it.
        return outcome if outcome is not None else shipped_run(rt, delivery_id)

    pipeline.run = run
    return lambda: setattr(pipeline, "run", shipped_run)


def _attempt(rt, delivery_id: int, channel, text: str, failures: int) -> str | None:
    now = rt.clock()
    lease = now + timedelta(seconds=rt.config.delivery.lease_seconds)
    claim = rt.store.run_write(lambda s: _claim(s, delivery_id, now, lease, text))
    if claim is None:
        return None
    pipeline.log.info("delivery claimed", extra={"delivery_id": delivery_id, "channel": claim.channel,
                                                 "article_id": claim.article_id, "attempt": claim.attempts})
    job = Attempt(delivery_id=delivery_id, number=claim.attempts, reconcile=claim.reconcile,
                  remote_id=claim.remote_id, media=StoreMedia(rt.store))
    faults.checkpoint("before_deliver")
    try:
        receipt = channel.deliver(Rendition.from_json(claim.rendition), job)
    except DeliveryError as exc:
        return pipeline._failed_attempt(rt, claim, exc, channel.reconcilable)
    except Exception as exc:  # noqa: BLE001 — as the shipped attempt does
        return pipeline._failed_attempt(rt, claim, OutcomeUnknown(f"unexpected {type(exc).__name__}: {exc}"),
                                        channel.reconcilable)
    faults.checkpoint("after_deliver")
    if failures:
        record_success(rt.store, claim.channel, rt.clock())
    if receipt.pending:
        return pipeline._settle(rt, claim, S.SUBMITTED, None, remote_id=receipt.remote_id,
                                remote_url=receipt.remote_url, enqueued_at=None, last_error=None,
                                next_attempt_at=rt.clock() + timedelta(
                                    seconds=rt.config.delivery.poll_interval))
    successor = rt.store.run_write(lambda s: _delivered(s, claim, receipt, rt.clock()))
    if successor is False:
        return "lost"
    pipeline.log.info("delivery settled", extra={"delivery_id": claim.id, "channel": claim.channel,
                                                 "article_id": claim.article_id, "state": "delivered", "error": None})
    if successor is not None:
        rt.enqueuer.forget(rt.enqueuer.enqueue([(successor, claim.channel)]))
    return S.DELIVERED.value


# Statements built once (module constants with bind parameters): building a statement per call
# costs SQLAlchemy far more than running it (coercion, column copies for aliases, cache keys).
_EARLIER = D.alias("earlier")
_CLAIMED_ROW = select(D.c.state, D.c.attempts, D.c.article_id, D.c.channel, D.c.channel_type, D.c.revision_id,
                      D.c.rendition, D.c.remote_id, D.c.reconcile).where(D.c.id == bindparam("b_id"))
_CLAIM = update(D).where(
    D.c.id == bindparam("b_id"), D.c.state == bindparam("b_from"), D.c.state.in_(_CLAIMABLE),
    or_(D.c.next_attempt_at.is_(None), D.c.next_attempt_at <= bindparam("b_now")),
    ~exists().where(_EARLIER.c.article_id == bindparam("b_article"), _EARLIER.c.channel == bindparam("b_channel"),
                    _EARLIER.c.id < bindparam("b_id"), _EARLIER.c.state.in_(_PENDING))
).values(state=S.SENDING.value, attempts=bindparam("b_attempts"), updated_at=bindparam("b_now"),
         lease_expires_at=bindparam("b_lease"), next_attempt_at=None, rendition=bindparam("b_rendition"))
_DELIVERED = update(D).where(D.c.id == bindparam("b_id"), D.c.state == S.SENDING.value).values(
    state=S.DELIVERED.value, updated_at=bindparam("b_now"), delivered_at=bindparam("b_now"), last_error=None,
    reconcile=False, next_attempt_at=None, lease_expires_at=None, remote_id=bindparam("b_remote_id"),
    remote_url=bindparam("b_remote_url"))
_SUCCESSOR = select(D.c.id).where(
    D.c.article_id == bindparam("b_article"), D.c.channel == bindparam("b_channel"), D.c.id > bindparam("b_id"),
    D.c.state.in_(_CLAIMABLE), or_(D.c.next_attempt_at.is_(None), D.c.next_attempt_at <= bindparam("b_now"))
).order_by(D.c.id).limit(1)
_EVENT = insert(E)


def _claim(session, delivery_id: int, now, lease, text: str):
    row = session.execute(_CLAIMED_ROW, {"b_id": delivery_id}).one()
    rendition = row.rendition or text
    done = session.execute(_CLAIM, {"b_id": delivery_id, "b_from": row.state, "b_now": now, "b_lease": lease,
                                    "b_article": row.article_id, "b_channel": row.channel,
                                    "b_attempts": row.attempts + 1, "b_rendition": rendition})
    if done.rowcount != 1:
        return None
    session.execute(_EVENT, {"at": now, "actor": "worker", "kind": "transition", "article_id": row.article_id,
                             "delivery_id": delivery_id, "from_state": row.state, "to_state": S.SENDING.value,
                             "attempt": row.attempts + 1, "detail": None})
    return pipeline.Claim(delivery_id, row.article_id, row.channel, row.channel_type, "publish", row.revision_id,
                          rendition, row.remote_id, row.reconcile, row.attempts + 1)


def _delivered(session, claim, receipt, now):
    """sending → delivered and its event; the next waiting operation's id (None), or False if lost."""
    done = session.execute(_DELIVERED, {"b_id": claim.id, "b_now": now, "b_remote_id": receipt.remote_id,
                                        "b_remote_url": receipt.remote_url})
    if done.rowcount != 1:
        return False
    detail = json.dumps(receipt.detail, ensure_ascii=False, sort_keys=True, default=str) if receipt.detail else None
    session.execute(_EVENT, {"at": now, "actor": "worker", "kind": "transition", "article_id": claim.article_id,
                             "delivery_id": claim.id, "from_state": S.SENDING.value, "to_state": S.DELIVERED.value,
                             "attempt": claim.attempts, "detail": detail})
    return session.scalar(_SUCCESSOR, {"b_article": claim.article_id, "b_channel": claim.channel, "b_id": claim.id,
                                       "b_now": now})


PATCHES = {"write_lock": write_lock, "lean": lean}


def main(argv: list[str]) -> None:
    split = argv.index("--")
    names, args = argv[:split], argv[split + 1:]
    for name in filter(None, ",".join(names).split(",")):
        PATCHES[name]()
    from syndicator.cli import cli

    cli.main(args=args, prog_name="syndicator")


if __name__ == "__main__":
    main(sys.argv[1:])
