"""Every state a delivery can be in, how it may move, and the one function that moves it.

    queued ──claim──▶ sending ──▶ delivered
      ▲  │              │ ├────▶ retry_wait ──claim (when due)──▶ sending
      │  │              │ ├────▶ failed      (permanent error, with the reason)
      │  │              │ ├────▶ unknown     (outcome unknown: an operator decides)
      │  ▼              │ └────▶ submitted ──callback or poll──▶ delivered | failed | unknown
    cancelled           (never from sending: an attempt in flight finishes first)

`manual` is for work the channel's API cannot do (deleting a Weibo post where the app may not):
the delivery names what a person must do and waits until ops confirm it.

`submitted` is for channels that accept a job and finish it later (WeChat's free-publish): the
delivery waits there until the channel's callback or a poll settles it.

Operators move failed / unknown / retry_wait back to queued (retry) and unknown to delivered
("mark resolved") or cancelled. `transition` checks the move against `TRANSITIONS`, writes it with
a compare-and-set on the current state (which doubles as the claim that stops two workers from
sending the same delivery), stamps times and attempts and appends an event, all in the caller's
transaction. Nothing else writes `deliveries.state`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from syndicator.models import Delivery, Event, utcnow


class DeliveryState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    RETRY_WAIT = "retry_wait"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    SUBMITTED = "submitted"
    MANUAL = "manual"


S = DeliveryState

#: Allowed moves, each with the reason it exists.
TRANSITIONS: dict[tuple[DeliveryState, DeliveryState], str] = {
    (S.QUEUED, S.SENDING): "a worker claimed the delivery",
    (S.QUEUED, S.CANCELLED): "withdrawn before it was sent",
    (S.RETRY_WAIT, S.SENDING): "a worker claimed the delivery for another attempt",
    (S.RETRY_WAIT, S.QUEUED): "an operator asked to retry now",
    (S.RETRY_WAIT, S.CANCELLED): "withdrawn while waiting to retry",
    (S.SENDING, S.DELIVERED): "the channel confirmed it",
    (S.SENDING, S.RETRY_WAIT): "a transient error, or the worker was lost; retry later",
    (S.SENDING, S.FAILED): "a permanent error, or attempts exhausted",
    (S.SENDING, S.UNKNOWN): "the outcome cannot be known or reconciled automatically",
    (S.SENDING, S.SUBMITTED): "the channel accepted the job and will finish it asynchronously",
    (S.SUBMITTED, S.DELIVERED): "the channel reported the job done (callback or poll)",
    (S.SUBMITTED, S.FAILED): "the channel reported the job failed",
    (S.SUBMITTED, S.UNKNOWN): "no completion was reported in time",
    (S.SENDING, S.MANUAL): "the channel cannot do it through its API; a person must",
    (S.MANUAL, S.DELIVERED): "an operator confirmed the manual action is done",
    (S.MANUAL, S.CANCELLED): "an operator decided it is not needed",
    (S.FAILED, S.QUEUED): "an operator asked to retry",
    (S.FAILED, S.CANCELLED): "an operator gave up on it",
    (S.UNKNOWN, S.QUEUED): "an operator asked to retry (the attempt reconciles first)",
    (S.UNKNOWN, S.DELIVERED): "an operator confirmed it arrived",
    (S.UNKNOWN, S.FAILED): "an operator confirmed it did not arrive",
    (S.UNKNOWN, S.CANCELLED): "an operator gave up on it",
}

#: States in which nothing more happens without an operator.
TERMINAL = frozenset({S.DELIVERED, S.FAILED, S.UNKNOWN, S.CANCELLED, S.MANUAL})
#: States that still hold a place in the per-(article, channel) order.
PENDING = frozenset(set(S) - TERMINAL)
#: States in which a worker may claim the delivery.
CLAIMABLE = frozenset({S.QUEUED, S.RETRY_WAIT})
#: States an operator's "retry" applies to.
RETRYABLE = frozenset({S.FAILED, S.UNKNOWN, S.RETRY_WAIT})

#: Columns a transition may set besides the state itself.
_FIELDS = {"remote_id", "remote_url", "last_error", "next_attempt_at", "lease_expires_at", "reconcile",
           "enqueued_at"}


class IllegalTransition(Exception):
    """The move is not in TRANSITIONS."""


class Conflict(Exception):
    """The delivery was not in an expected state (someone else moved it first)."""


class Blocked(Conflict):
    """An earlier operation for the same article and channel has not finished yet."""


# Statements are built once, with bind parameters: building a statement per call costs SQLAlchemy
# several times more than running it (coercion, cache keys), and these run twice per delivery.
_D, _E = Delivery.__table__, Event.__table__
_EARLIER = _D.alias("earlier")
_CURRENT = select(_D.c.state, _D.c.attempts, _D.c.article_id).where(_D.c.id == bindparam("b_id"))
_EVENT = insert(_E)
_CLAIM_ROW = select(_D.c.state, _D.c.attempts, _D.c.article_id, _D.c.channel, _D.c.channel_type, _D.c.operation,
                    _D.c.revision_id, _D.c.rendition, _D.c.remote_id, _D.c.reconcile,
                    _D.c.next_attempt_at).where(_D.c.id == bindparam("b_id"))
_AHEAD = select(func.count()).select_from(_EARLIER).where(
    _EARLIER.c.article_id == bindparam("b_article"), _EARLIER.c.channel == bindparam("b_channel"),
    _EARLIER.c.id < bindparam("b_id"), _EARLIER.c.state.in_([s.value for s in PENDING]))


@cache
def _update(columns: tuple[str, ...], due: bool, same_attempt: bool):
    """UPDATE … SET columns WHERE id and state match (and it is due; and it is the same attempt)."""
    where = [_D.c.id == bindparam("b_id"), _D.c.state == bindparam("b_from")]
    if due:
        where.append(or_(_D.c.next_attempt_at.is_(None), _D.c.next_attempt_at <= bindparam("b_due")))
    if same_attempt:
        where.append(_D.c.attempts == bindparam("b_attempts"))
    return update(_D).where(and_(*where)).values({c: bindparam(f"v_{c}") for c in columns})


@dataclass(frozen=True)
class Seen:
    """Where a delivery stood when its holder claimed it: lets a settle skip the read, and makes
    its compare-and-set fail if the delivery was taken over in between (a lease expired)."""

    state: DeliveryState
    attempts: int
    article_id: int


def _values(current: DeliveryState, to: DeliveryState, attempts: int, now: datetime,
            fields: dict[str, Any]) -> dict[str, Any]:
    """The columns a move to `to` sets besides the caller's fields (times, attempts, lease, retry)."""
    values: dict[str, Any] = {"state": to.value, "updated_at": now}
    if to is S.SENDING:
        values["attempts"] = attempts
    else:
        values["lease_expires_at"] = None
    if to is S.DELIVERED:
        values["delivered_at"] = now
        values["last_error"] = None
        values["reconcile"] = False
    if to in (S.DELIVERED, S.FAILED, S.UNKNOWN, S.CANCELLED, S.SENDING, S.MANUAL):
        values["next_attempt_at"] = None
    if to is S.SUBMITTED:
        values["reconcile"] = False
    values.update(fields)
    return values


def _write(session: Session | Connection, delivery_id: int, current: DeliveryState, to: DeliveryState, *,
           values: dict[str, Any], due_by: datetime | None, seen: Seen | None, article_id: int, attempt: int,
           actor: str, now: datetime, detail: str | dict[str, Any] | None) -> bool:
    """The compare-and-set and its event; False if the row was not in `current` (or not due, or re-claimed)."""
    stmt = _update(tuple(sorted(values)), due_by is not None, seen is not None)
    params = {f"v_{k}": v for k, v in values.items()}
    params.update(b_id=delivery_id, b_from=current.value, b_due=due_by, b_attempts=seen and seen.attempts)
    if session.execute(stmt, params).rowcount != 1:
        return False
    session.execute(_EVENT, {"at": now, "actor": actor, "kind": "transition", "article_id": article_id,
                             "delivery_id": delivery_id, "from_state": current.value, "to_state": to.value,
                             "attempt": attempt, "detail": _text(detail)})
    return True


def transition(
    session: Session | Connection,
    delivery_id: int,
    to: DeliveryState,
    *,
    actor: str,
    expect: frozenset[DeliveryState] | set[DeliveryState] | None = None,
    detail: str | dict[str, Any] | None = None,
    due_by: datetime | None = None,
    now: datetime | None = None,
    seen: Seen | None = None,
    **fields: Any,
) -> DeliveryState:
    """Move one delivery to `to` and log it; return the state it came from.

    `expect` limits the states the caller is prepared to move from (default: any allowed one).
    `due_by` additionally requires `next_attempt_at` to be empty or not after it (for claims).
    `seen` is the state and attempt the caller holds the delivery in (no read; the move happens
    only if it still is). Raises Conflict if the delivery is not in such a state, IllegalTransition
    for a move the table forbids.
    """
    unknown = set(fields) - _FIELDS
    if unknown:
        raise TypeError(f"transition cannot set {sorted(unknown)}")
    now = now or utcnow()
    if seen is None:
        row = session.execute(_CURRENT, {"b_id": delivery_id}).one_or_none()
        if row is None:
            raise Conflict(f"delivery {delivery_id} does not exist")
        current, attempts, article_id = DeliveryState(row.state), row.attempts, row.article_id
    else:
        current, attempts, article_id = seen.state, seen.attempts, seen.article_id
    if expect is not None and current not in expect:
        raise Conflict(f"delivery {delivery_id} is {current}, expected one of {sorted(expect)}")
    if (current, to) not in TRANSITIONS:
        raise IllegalTransition(f"delivery {delivery_id}: {current} → {to} is not allowed")
    if to is S.SENDING:
        attempts += 1
    values = _values(current, to, attempts, now, fields)
    if not _write(session, delivery_id, current, to, values=values, due_by=due_by, seen=seen,
                  article_id=article_id, attempt=attempts, actor=actor, now=now, detail=detail):
        raise Conflict(f"delivery {delivery_id} changed under us (was {current}) or is not due")
    return current


def pending_ahead(session: Session, article_id: int, channel: str, delivery_id: int) -> int:
    """How many earlier operations on the same (article, channel) are still pending."""
    return session.scalar(_AHEAD, {"b_article": article_id, "b_channel": channel, "b_id": delivery_id})


@dataclass(frozen=True)
class Claimed:
    """What a worker needs of the delivery it just claimed."""

    id: int
    article_id: int
    channel: str
    channel_type: str
    operation: str
    revision_id: int
    rendition: str | None
    remote_id: str | None
    reconcile: bool
    attempts: int


_CLAIM = (update(_D).where(
    _D.c.id == bindparam("b_id"), _D.c.state == bindparam("b_from"),
    or_(_D.c.next_attempt_at.is_(None), _D.c.next_attempt_at <= bindparam("b_now")),
    ~exists().where(_EARLIER.c.article_id == _D.c.article_id, _EARLIER.c.channel == _D.c.channel,
                    _EARLIER.c.id < _D.c.id, _EARLIER.c.state.in_([s.value for s in PENDING])))
    .values(state=S.SENDING.value, attempts=_D.c.attempts + 1, updated_at=bindparam("b_now"),
            lease_expires_at=bindparam("b_lease"), next_attempt_at=None,
            rendition=func.coalesce(_D.c.rendition, bindparam("b_rendition", type_=_D.c.rendition.type)))
    .returning(_D.c.article_id, _D.c.channel, _D.c.channel_type, _D.c.operation, _D.c.revision_id,
               _D.c.rendition, _D.c.remote_id, _D.c.reconcile, _D.c.attempts))


def claim(session: Session | Connection, delivery_id: int, *, actor: str, now: datetime, lease_expires_at: datetime,
          rendition: str | None = None, current: DeliveryState | None = None) -> Claimed:
    """queued/retry_wait → sending, if it is due and no earlier operation on its (article, channel)
    is still pending — one compare-and-set that also stores `rendition` when none is stored yet.

    `current` is the state the caller saw (it saves a read; the compare-and-set checks it).
    Raises Blocked when an earlier operation is pending, Conflict when the delivery is not claimable
    (moved by someone else, not due, gone).
    """
    if current is None:
        row = session.execute(_CURRENT, {"b_id": delivery_id}).one_or_none()
        if row is None:
            raise Conflict(f"delivery {delivery_id} does not exist")
        current = DeliveryState(row.state)
    if current not in CLAIMABLE:
        raise Conflict(f"delivery {delivery_id} is {current}, not claimable")
    got = session.execute(_CLAIM, {"b_id": delivery_id, "b_from": current.value, "b_now": now,
                                   "b_lease": lease_expires_at, "b_rendition": rendition}).one_or_none()
    if got is None:
        raise _why_not_claimed(session, delivery_id, now)
    session.execute(_EVENT, {"at": now, "actor": actor, "kind": "transition", "article_id": got.article_id,
                             "delivery_id": delivery_id, "from_state": current.value, "to_state": S.SENDING.value,
                             "attempt": got.attempts, "detail": None})
    return Claimed(delivery_id, got.article_id, got.channel, got.channel_type, got.operation, got.revision_id,
                   got.rendition, got.remote_id, got.reconcile, got.attempts)


def _why_not_claimed(session: Session | Connection, delivery_id: int, now: datetime) -> Conflict:
    row = session.execute(_CLAIM_ROW, {"b_id": delivery_id}).one_or_none()
    if row is None:
        return Conflict(f"delivery {delivery_id} does not exist")
    if row.state not in {s.value for s in CLAIMABLE}:
        return Conflict(f"delivery {delivery_id} is {row.state}, not claimable")
    if row.next_attempt_at is not None and row.next_attempt_at > now:
        return Conflict(f"delivery {delivery_id} is not due until {row.next_attempt_at.isoformat()}")
    ahead = pending_ahead(session, row.article_id, row.channel, delivery_id)
    if ahead:
        return Blocked(f"delivery {delivery_id} waits for {ahead} earlier operation(s) on {row.channel}")
    return Conflict(f"delivery {delivery_id} changed under us (was {row.state})")


def record(session: Session | Connection, kind: str, *, actor: str, article_id: int | None = None,
           delivery_id: int | None = None, detail: str | dict[str, Any] | None = None,
           now: datetime | None = None) -> None:
    """Append a non-transition event (publish, correct, retract, enqueue …) to the log."""
    session.execute(_EVENT, {"at": now or utcnow(), "actor": actor, "kind": kind, "article_id": article_id,
                             "delivery_id": delivery_id, "from_state": None, "to_state": None, "attempt": None,
                             "detail": _text(detail)})


def _text(detail: str | dict[str, Any] | None) -> str | None:
    if detail is None or isinstance(detail, str):
        return detail
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)


def plan(session: Session, *, actor: str, now: datetime | None = None, detail: str | None = None,
         **columns: Any) -> Delivery:
    """Create a delivery in `queued` (the only way a delivery comes to exist) and log it."""
    now = now or utcnow()
    delivery = Delivery(state=S.QUEUED.value, attempts=0, created_at=now, updated_at=now, **columns)
    session.add(delivery)
    session.flush()
    session.add(Event(at=now, actor=actor, kind="transition", article_id=delivery.article_id,
                      delivery_id=delivery.id, from_state=None, to_state=S.QUEUED.value, attempt=0,
                      detail=detail))
    return delivery


_PLAN = insert(_D).returning(_D.c.id, sort_by_parameter_order=True)


def plan_many(session: Session | Connection, deliveries: list[dict[str, Any]], *, actor: str, now: datetime,
              detail: str | None = None) -> list[int]:
    """Create several deliveries in `queued` and log each (as `plan`, in two statements); their ids."""
    if not deliveries:
        return []
    rows = [{"state": S.QUEUED.value, "attempts": 0, "reconcile": False, "created_at": now, "updated_at": now,
             **columns} for columns in deliveries]
    ids = list(session.execute(_PLAN, rows).scalars())
    session.execute(_EVENT, [{"at": now, "actor": actor, "kind": "transition", "article_id": row["article_id"],
                              "delivery_id": delivery_id, "from_state": None, "to_state": S.QUEUED.value,
                              "attempt": 0, "detail": detail} for row, delivery_id in zip(rows, ids)])
    return ids
