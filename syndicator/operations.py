"""Operator actions on deliveries (retry now), shared by the CLI and the web API."""
from __future__ import annotations

from sqlalchemy import select

from syndicator import states
from syndicator.models import Delivery, utcnow
from syndicator.runtime import Runtime
from syndicator.states import RETRYABLE, Conflict, DeliveryState as S
from syndicator.views import find_article


def retry(rt: Runtime, id_or_slug: str, *, channel: str | None, actor: str) -> list[int]:
    """Move an article's failed/unknown/waiting deliveries back to queued and send them now."""
    now = utcnow()

    def tx(session) -> list[tuple[int, str]]:
        article = find_article(session, id_or_slug)
        q = select(Delivery.id, Delivery.channel, Delivery.state).where(
            Delivery.article_id == article.id, Delivery.state.in_([s.value for s in RETRYABLE]))
        if channel:
            q = q.where(Delivery.channel == channel)
        moved = []
        for row in session.execute(q).all():
            # After an unknown outcome the next attempt must look at the remote before acting.
            extra = {"reconcile": True} if row.state == S.UNKNOWN.value else {}
            try:
                states.transition(session, row.id, S.QUEUED, actor=actor, expect={S(row.state)}, now=now,
                                  detail="operator retry", next_attempt_at=None, enqueued_at=now, **extra)
            except Conflict:
                continue
            moved.append((row.id, row.channel))
        return moved

    moved = rt.store.run_write(tx)
    rt.enqueuer.forget(rt.enqueuer.enqueue(moved))
    return [d for d, _ in moved]


def resolve(rt: Runtime, delivery_id: int, *, actor: str, note: str = "") -> str:
    """An operator confirms a delivery in `unknown` or `manual` did reach the channel."""
    rt.store.run_write(lambda s: states.transition(
        s, delivery_id, S.DELIVERED, actor=actor, expect={S.UNKNOWN, S.MANUAL},
        detail=f"marked resolved by an operator{': ' + note if note else ''}"))
    return S.DELIVERED.value


def cancel(rt: Runtime, delivery_id: int, *, actor: str, note: str = "") -> str:
    """An operator gives up on a delivery that has not been delivered."""
    rt.store.run_write(lambda s: states.transition(
        s, delivery_id, S.CANCELLED, actor=actor,
        expect={S.QUEUED, S.RETRY_WAIT, S.FAILED, S.UNKNOWN, S.MANUAL},
        detail=f"cancelled by an operator{': ' + note if note else ''}"))
    return S.CANCELLED.value
