"""Publishing: one transaction that snapshots the revision and plans one delivery per channel.

The broker is told only after the commit. If that fails (broker down), the deliveries are still
recorded and the sweeper sends them when the broker is back: the SQL store is the source of truth.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from syndicator import faults, states
from syndicator.articles import ArticleDraft, BadInput
from syndicator.config import Config
from syndicator.models import Article, Asset, Delivery, Revision, utcnow
from syndicator.queue import Enqueuer
from syndicator.store import Store

log = logging.getLogger(__name__)

#: Attempts at the publish transaction when a concurrent publish of the same slug or image races us.
_RACE_RETRIES = 3


@dataclass(frozen=True)
class PublishResult:
    article_id: int
    slug: str
    revision: int
    #: False when the same content was already published (nothing new was created).
    created: bool
    delivery_ids: tuple[int, ...]
    #: Deliveries whose broker message could not be sent now (the sweeper will send them).
    not_enqueued: tuple[int, ...] = ()


def publish(store: Store, config: Config, draft: ArticleDraft, *, actor: str,
            enqueuer: Enqueuer | None, now: datetime | None = None) -> PublishResult:
    """Store the article and plan its deliveries atomically, then wake the workers."""
    now = now or utcnow()
    for attempt in range(_RACE_RETRIES):
        try:
            result, due = store.run_write(lambda s: _publish_tx(s, config, draft, actor, now))
            break
        except IntegrityError:
            if attempt == _RACE_RETRIES - 1:
                raise
            log.info("publish raced a concurrent publish; retrying", extra={"slug": draft.slug})
    if not result.created or enqueuer is None or not due:
        return result
    faults.checkpoint("after_commit")
    failed = enqueuer.enqueue(due)
    if failed:
        enqueuer.forget(failed)
    return PublishResult(**{**result.__dict__, "not_enqueued": tuple(failed)})


_A, _R, _AS = Article.__table__, Revision.__table__, Asset.__table__
# Built once (Core, no ORM unit of work): publishing is on the path every article takes.
_BY_SLUG = select(_A.c.id).where(_A.c.slug == bindparam("b_slug"))
_STORED = select(_AS.c.sha256).where(_AS.c.sha256.in_(bindparam("b_shas", expanding=True)))
_NEW_ARTICLE = insert(_A).returning(_A.c.id)
_NEW_REVISION = insert(_R).returning(_R.c.id)


def _publish_tx(session: Session, config: Config, draft: ArticleDraft, actor: str,
                now: datetime) -> tuple[PublishResult, list[tuple[int, str]]]:
    existing = session.scalar(_BY_SLUG, {"b_slug": draft.slug})
    if existing is not None:
        return _existing(session, session.get(Article, existing), draft), []
    channels = config.enabled_channels()
    if not channels:
        raise BadInput([f"{config.source}: channels: no channel is enabled"])

    images = {a.sha256: a for a in (*draft.assets, *([draft.cover] if draft.cover else []))}
    if images:
        stored = set(session.scalars(_STORED, {"b_shas": list(images)}))
        new = [{"sha256": a.sha256, "mime": a.mime, "filename": a.filename, "size": a.size, "width": a.width,
                "height": a.height, "data": a.data, "created_at": now} for a in images.values()
               if a.sha256 not in stored]
        if new:
            session.execute(insert(_AS), new)
    scheduled = draft.publish_at if draft.publish_at and draft.publish_at > now else None
    article_id = session.execute(_NEW_ARTICLE, {
        "slug": draft.slug, "status": "live", "current_revision": 1, "first_published_at": scheduled or now,
        "created_at": now, "created_by": actor, "source": draft.source, "expires_at": draft.expires_at}).scalar_one()
    revision_id = session.execute(_NEW_REVISION, {
        "article_id": article_id, "number": 1, "content_hash": draft.content_hash, "title": draft.title,
        "summary": draft.summary, "body_source": draft.body_source, "body_html": draft.body_html,
        "author": draft.author, "unit": draft.unit, "tags": list(draft.tags),
        "cover_sha": draft.cover.sha256 if draft.cover else None, "asset_shas": [a.sha256 for a in draft.assets],
        "publish_at": draft.publish_at, "expires_at": draft.expires_at, "note": None, "created_at": now,
        "created_by": actor}).scalar_one()
    states.record(session, "publish", actor=actor, article_id=article_id, now=now,
                  detail={"revision": 1, "content_hash": draft.content_hash, "source": draft.source,
                          "scheduled_for": scheduled.isoformat() if scheduled else None})
    names = list(channels)
    ids = states.plan_many(session, [
        {"article_id": article_id, "revision_id": revision_id, "revision": 1, "channel": name,
         "channel_type": channels[name].type, "operation": "publish", "next_attempt_at": scheduled,
         "enqueued_at": None if scheduled else now} for name in names],
        actor=actor, now=now, detail=f"scheduled for {scheduled.isoformat()}" if scheduled else "planned at publish")
    due = [] if scheduled else list(zip(ids, names))
    return PublishResult(article_id, draft.slug, 1, True, tuple(ids)), due


def _existing(session: Session, article: Article, draft: ArticleDraft) -> PublishResult:
    current = session.scalar(select(Revision).where(Revision.article_id == article.id,
                                                    Revision.number == article.current_revision))
    if current is None or current.content_hash != draft.content_hash:
        title = current.title if current else "?"
        raise BadInput([
            f"{draft.source}: front matter: slug: {article.slug!r} is already used by article "
            f"{article.id} «{title}» with different content; use `syndicator correct {article.slug} FILE` "
            "to change that article, or give this one another slug"
        ])
    ids = session.scalars(select(Delivery.id).where(Delivery.article_id == article.id)
                          .order_by(Delivery.id)).all()
    return PublishResult(article.id, article.slug, current.number, False, tuple(ids))
