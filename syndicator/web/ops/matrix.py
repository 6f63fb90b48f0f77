"""The delivery matrix: articles (newest first) × channels, each cell the latest delivery."""
from __future__ import annotations

from typing import Any

from sqlalchemy import exists, literal, or_, select
from sqlalchemy.orm import aliased

from syndicator.models import Article, Delivery, Revision
from syndicator.runtime import Runtime
from syndicator.states import DeliveryState as S

MATRIX_PAGE = 25
#: Matrix filters that match most cells: scan articles newest first instead of deliveries by state.
_COMMON = frozenset({S.DELIVERED.value, S.CANCELLED.value})


def matrix(rt: Runtime, *, state: str | None, channel: str | None, q: str | None, before_id: int | None,
           limit: int = MATRIX_PAGE) -> list[dict[str, Any]]:
    """Articles (newest first) × channels; each cell is the article's latest delivery on that channel.

    With a state filter, only articles whose latest delivery on `channel` (or on any channel) is in
    that state. Rare states are found through the state index; common ones (delivered, cancelled)
    by walking articles newest first and probing each one's few deliveries.
    """
    later = aliased(Delivery)
    matches_q = None
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        title = select(Revision.title).where(Revision.article_id == Article.id,
                                             Revision.number == Article.current_revision).scalar_subquery()
        matches_q = or_(Article.slug.like(like, escape="\\"), title.like(like, escape="\\"))
    with rt.store.read() as session:
        if state:
            latest = ~exists().where(later.article_id == Delivery.article_id, later.channel == Delivery.channel,
                                     later.id > Delivery.id)
            if state in _COMMON:
                # Probe each article's few deliveries through ix_deliveries_article. On SQLite `|| ''`
                # keeps the planner (it has no statistics) from using the state or channel index
                # instead, which would scan every delivered row once per article; PostgreSQL's
                # statistics get it right, and the expression would only spoil its estimates.
                plain = (lambda c: c.concat("")) if rt.store.dialect == "sqlite" else (lambda c: c)
                probe = select(literal(1)).select_from(Delivery).where(
                    Delivery.article_id == Article.id, plain(Delivery.state) == state, latest,
                    *([plain(Delivery.channel) == channel] if channel else []))
                ids_q = select(Article.id.label("id")).where(probe.exists())
                if matches_q is not None:
                    ids_q = ids_q.where(matches_q)
            else:
                cond = [Delivery.state == state, latest, *([Delivery.channel == channel] if channel else [])]
                ids_q = select(Delivery.article_id.label("id")).where(*cond).distinct()
                if matches_q is not None:
                    ids_q = ids_q.join(Article, Article.id == Delivery.article_id).where(matches_q)
        else:
            ids_q = select(Article.id.label("id"))
            if matches_q is not None:
                ids_q = ids_q.where(matches_q)
        column = ids_q.selected_columns[0]
        if before_id:
            ids_q = ids_q.where(column < before_id)
        ids = list(session.scalars(ids_q.order_by(column.desc()).limit(limit)))
        if not ids:
            return []
        articles = {a.id: a for a in session.execute(
            select(Article.id, Article.slug, Article.status, Article.created_at, Article.created_by, Revision.title)
            .join(Revision, (Revision.article_id == Article.id) & (Revision.number == Article.current_revision))
            .where(Article.id.in_(ids)))}
        cells: dict[int, dict[str, Any]] = {}
        for d in session.execute(select(Delivery.id, Delivery.article_id, Delivery.channel, Delivery.state,
                                        Delivery.operation, Delivery.attempts, Delivery.last_error,
                                        Delivery.updated_at).where(Delivery.article_id.in_(ids))
                                 .order_by(Delivery.id)):
            cells.setdefault(d.article_id, {})[d.channel] = d  # ordered by id: the latest wins
    return [{"id": i, "slug": articles[i].slug, "title": articles[i].title, "status": articles[i].status,
             "created_at": articles[i].created_at, "created_by": articles[i].created_by,
             "cells": cells.get(i, {})} for i in ids if i in articles]
