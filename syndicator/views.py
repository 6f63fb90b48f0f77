"""Read-only queries that present articles and deliveries (the CLI and API JSON shapes)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from syndicator.models import Article, Delivery, Event, Revision


class NotFoundError(LookupError):
    """No article matches the id or slug given."""


def find_article(session: Session, id_or_slug: str) -> Article:
    article = None
    if id_or_slug.isdigit():
        article = session.get(Article, int(id_or_slug))
    if article is None:
        article = session.scalar(select(Article).where(Article.slug == id_or_slug))
    if article is None:
        raise NotFoundError(f"no article with id or slug {id_or_slug!r}")
    return article


def delivery_json(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id, "channel": d.channel, "type": d.channel_type, "operation": d.operation,
        "revision": d.revision, "state": d.state, "attempts": d.attempts, "remote_id": d.remote_id,
        "remote_url": d.remote_url, "error": d.last_error,
        "updated_at": d.updated_at.isoformat() if d.updated_at else None,
        "next_attempt_at": d.next_attempt_at.isoformat() if d.next_attempt_at else None,
    }


def article_status(session: Session, article: Article) -> dict[str, Any]:
    """`{"article": {...}, "deliveries": [...]}` — the contract of `status --json`."""
    title = session.scalar(select(Revision.title).where(Revision.article_id == article.id,
                                                        Revision.number == article.current_revision))
    deliveries = session.scalars(select(Delivery).where(Delivery.article_id == article.id)
                                 .order_by(Delivery.id)).all()
    return {
        "article": {"id": article.id, "slug": article.slug, "title": title,
                    "revision": article.current_revision, "status": article.status,
                    "expires_at": article.expires_at.isoformat() if article.expires_at else None,
                    "retraction_reason": article.retraction_reason},
        "deliveries": [delivery_json(d) for d in deliveries],
    }


def articles_query():
    """Articles with their current revision's title and unit (the base of every article list)."""
    return select(Article.id, Article.slug, Article.status, Article.current_revision, Article.created_at,
                  Article.created_by, Revision.title, Revision.unit).join(
        Revision, (Revision.article_id == Article.id) & (Revision.number == Article.current_revision))


def list_articles(session: Session, *, limit: int = 50, before_id: int | None = None,
                  status: str | None = None) -> list[dict[str, Any]]:
    """Newest first (keyset by id) with each article's delivery states counted."""
    from sqlalchemy import func

    q = articles_query()
    if status:
        q = q.where(Article.status == status)
    if before_id:
        q = q.where(Article.id < before_id)
    rows = session.execute(q.order_by(Article.id.desc()).limit(limit)).all()
    counts: dict[int, dict[str, int]] = {}
    if rows:
        for article_id, state, n in session.execute(
                select(Delivery.article_id, Delivery.state, func.count()).where(
                    Delivery.article_id.in_([r.id for r in rows])).group_by(Delivery.article_id, Delivery.state)):
            counts.setdefault(article_id, {})[state] = n
    return [{"id": r.id, "slug": r.slug, "title": r.title, "unit": r.unit, "status": r.status,
             "revision": r.current_revision, "created_at": r.created_at.isoformat(), "created_by": r.created_by,
             "deliveries": counts.get(r.id, {})} for r in rows]


def list_deliveries(session: Session, *, state: str | None = None, channel: str | None = None,
                    limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated by id so it stays fast on millions of rows."""
    q = select(Delivery, Article.slug).join(Article, Article.id == Delivery.article_id)
    if state:
        q = q.where(Delivery.state == state)
    if channel:
        q = q.where(Delivery.channel == channel)
    if before_id:
        q = q.where(Delivery.id < before_id)
    rows = session.execute(q.order_by(Delivery.id.desc()).limit(limit)).all()
    return [{**delivery_json(d), "article_id": d.article_id, "slug": slug} for d, slug in rows]


def timeline(session: Session, delivery_id: int) -> list[dict[str, Any]]:
    events = session.scalars(select(Event).where(Event.delivery_id == delivery_id).order_by(Event.id)).all()
    return [{"at": e.at.isoformat(), "actor": e.actor, "from": e.from_state, "to": e.to_state,
             "attempt": e.attempt, "detail": e.detail} for e in events]


def channel_matrix(rt) -> list[dict[str, Any]]:
    """Each configured channel instance with its capabilities and operational status."""
    from channels.base import capabilities
    from channels.registry import ChannelUnavailable, load_type
    from syndicator.channel_status import suspended

    from syndicator.models import ChannelStatus

    paused = suspended(rt.store)
    with rt.store.read() as session:
        status = {r.channel: r for r in session.scalars(select(ChannelStatus))}
    now = rt.clock()
    rows = []
    for name, entry in rt.config.channels.items():
        st = status.get(name)
        open_until = st.open_until if st and st.open_until and st.open_until > now else None
        row: dict[str, Any] = {"name": name, "type": entry.type, "enabled": entry.enabled,
                               "suspended": name in paused, "suspended_reason": paused.get(name),
                               "breaker": "open" if open_until else "closed",
                               "breaker_open_until": open_until.isoformat() if open_until else None,
                               "consecutive_failures": st.failures if st else 0}
        try:
            cls = load_type(entry.type)
            row.update(capabilities(cls))
            settings = cls.Settings.model_validate(entry.model_extra or {})
            row["correction"] = rt.channel(name).correction_strategy()
            expires = getattr(settings, "token_expires_at", None)
            row["credential_expires_at"] = expires.isoformat() if expires else None
        except ChannelUnavailable as exc:
            row.update(available=False, error=str(exc))
        rows.append(row)
    return rows
