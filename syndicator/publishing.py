"""Publishing: one transaction that snapshots the revision and plans one delivery per channel.

The broker is told only after the commit. If that fails (broker down), the deliveries are still
recorded and the sweeper sends them when the broker is back: the SQL store is the source of truth.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
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


def _publish_tx(session: Session, config: Config, draft: ArticleDraft, actor: str,
                now: datetime) -> tuple[PublishResult, list[tuple[int, str]]]:
    existing = session.scalar(select(Article).where(Article.slug == draft.slug))
    if existing is not None:
        return _existing(session, existing, draft), []
    channels = config.enabled_channels()
    if not channels:
        raise BadInput([f"{config.source}: channels: no channel is enabled"])

    for asset in (*draft.assets, *([draft.cover] if draft.cover else [])):
        if session.get(Asset, asset.sha256) is None:
            session.add(Asset(sha256=asset.sha256, mime=asset.mime, filename=asset.filename,
                              size=asset.size, width=asset.width, height=asset.height, data=asset.data,
                              created_at=now))
    scheduled = draft.publish_at if draft.publish_at and draft.publish_at > now else None
    article = Article(slug=draft.slug, status="live", current_revision=1,
                      first_published_at=scheduled or now, created_at=now, created_by=actor,
                      source=draft.source, expires_at=draft.expires_at)
    session.add(article)
    session.flush()
    revision = Revision(
        article_id=article.id, number=1, content_hash=draft.content_hash, title=draft.title,
        summary=draft.summary, body_source=draft.body_source, body_html=draft.body_html,
        author=draft.author, unit=draft.unit, tags=list(draft.tags),
        cover_sha=draft.cover.sha256 if draft.cover else None,
        asset_shas=[a.sha256 for a in draft.assets], publish_at=draft.publish_at,
        expires_at=draft.expires_at, created_at=now, created_by=actor,
    )
    session.add(revision)
    session.flush()
    states.record(session, "publish", actor=actor, article_id=article.id, now=now,
                  detail={"revision": 1, "content_hash": draft.content_hash, "source": draft.source,
                          "scheduled_for": scheduled.isoformat() if scheduled else None})
    ids, due = [], []
    for name, entry in channels.items():
        delivery = states.plan(
            session, actor=actor, now=now,
            detail=f"scheduled for {scheduled.isoformat()}" if scheduled else "planned at publish",
            article_id=article.id, revision_id=revision.id, revision=1, channel=name,
            channel_type=entry.type, operation="publish", next_attempt_at=scheduled,
            enqueued_at=None if scheduled else now,
        )
        ids.append(delivery.id)
        if not scheduled:
            due.append((delivery.id, name))
    return PublishResult(article.id, article.slug, 1, True, tuple(ids)), due


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
