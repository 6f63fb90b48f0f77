"""The delivery matrix: articles (newest first) × channels, each cell the latest delivery."""
from __future__ import annotations

from typing import Any

from sqlalchemy import column, exists, func, literal, literal_column, or_, select, table
from sqlalchemy.orm import aliased

from syndicator.models import Article, Delivery, Revision
from syndicator.runtime import Runtime
from syndicator.states import DeliveryState as S

MATRIX_PAGE = 25
#: Matrix filters that match most cells: scan articles newest first instead of deliveries by state.
_COMMON = frozenset({S.DELIVERED.value, S.CANCELLED.value})
#: Shortest search text the trigram indexes can answer; shorter ones scan articles newest first.
TRIGRAM = 3

#: One row per article: its slug and current title, kept by database triggers (migration 0007).
#: SQLite indexes it by trigrams in the FTS5 table `article_search_fts`; on PostgreSQL it also
#: stores both lower-cased (`*_folded`), with pg_trgm GIN indexes on those (when the extension
#: could be created).
_search = table("article_search", column("id"), column("slug"), column("title"), column("slug_folded"),
                column("title_folded"))
_fts = table("article_search_fts", column("rowid"))


def _text_match(dialect: str, q: str, s):
    """SQL: `q` occurs in s.slug or s.title, ignoring case; `%`, `_` and `\\` match themselves.

    SQLite: its LIKE, which ignores the case of ASCII letters only (as the matrix search always
    did there); `instr` when nothing in q has a case (Chinese, digits …), the same match, cheaper.
    PostgreSQL: LIKE of lower(q) in the stored lower(slug) and lower(title) — what ILIKE does on a
    UTF-8 database (case folded by the locale), answered by the trigram indexes."""
    like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if dialect != "sqlite":
        pattern = func.lower(like)
        return or_(s.c.slug_folded.like(pattern, escape="\\"), s.c.title_folded.like(pattern, escape="\\"))
    if q.lower() == q.upper():
        return or_(func.instr(s.c.slug, q) > 0, func.instr(s.c.title, q) > 0)
    return or_(s.c.slug.like(like, escape="\\"), s.c.title.like(like, escape="\\"))


def _fts_match(q: str):
    """SQLite: the FTS5 trigram index holds `q` (a quoted phrase: no query syntax; a superset of
    `_text_match`, as the index folds case more widely than LIKE)."""
    return literal_column("article_search_fts").op("MATCH")('"' + q.replace('"', '""') + '"')


def _search_ids(dialect: str, q: str, *extra):
    """SELECT of the ids of articles matching `q` (and `extra` conditions on `_search.c.id`),
    newest first; the caller adds the keyset bound and LIMIT on the returned id column.

    Three characters or more on SQLite: the FTS5 trigram index finds candidates in id order (it
    folds case more widely than LIKE, so each candidate is checked by `_text_match` too). On
    PostgreSQL the same query serves long and short texts: the planner takes the trigram indexes
    for rare texts and walks the primary key newest first for common ones. Short texts on SQLite:
    a newest-first scan of article_search that stops at the page's last match."""
    s = _search
    if dialect == "sqlite" and len(q) >= TRIGRAM:
        ids_q = (select(s.c.id.label("id")).select_from(_fts.join(s, s.c.id == _fts.c.rowid))
                 .where(_fts_match(q), _text_match(dialect, q, s), *extra))
        return ids_q, _fts.c.rowid
    return select(s.c.id.label("id")).where(_text_match(dialect, q, s), *extra), s.c.id


def _matches(dialect: str, q: str, article_id) -> list:
    """SQL conditions: the article `article_id` matches `q` (for walks driven by something else)."""
    s = _search
    check = exists().where(s.c.id == article_id, _text_match(dialect, q, s))
    if dialect == "sqlite":
        if len(q) < TRIGRAM:
            return [check]
        # The trigram index's candidates (a list SQLite builds once, then probes the state index
        # with each), each checked exactly.
        return [article_id.in_(select(_fts.c.rowid).where(_fts_match(q))), check]
    # PostgreSQL chooses: the trigram indexes' matches, or a probe by id of each walked row.
    return [article_id.in_(select(s.c.id).where(_text_match(dialect, q, s)))]


def matrix(rt: Runtime, *, state: str | None, channel: str | None, q: str | None, before_id: int | None,
           limit: int = MATRIX_PAGE) -> list[dict[str, Any]]:
    """Articles (newest first) × channels; each cell is the article's latest delivery on that channel.

    With a state filter, only articles whose latest delivery on `channel` (or on any channel) is in
    that state. Rare states are found through the (state, article_id) index, walked in page order;
    common ones (delivered, cancelled) by walking articles newest first and probing each one's few
    deliveries. With a search text `q`, articles whose slug or current title contains it (see
    `_text_match`), through the `article_search` trigram index (`_search_ids`).
    """
    dialect = rt.store.dialect
    later = aliased(Delivery)
    latest = ~exists().where(later.article_id == Delivery.article_id, later.channel == Delivery.channel,
                             later.id > Delivery.id)
    with rt.store.read() as session:
        if state and state not in _COMMON:
            cond = [Delivery.state == state, latest, *([Delivery.channel == channel] if channel else [])]
            if q:
                cond += _matches(dialect, q, Delivery.article_id)
            ids_q = select(Delivery.article_id.label("id")).where(*cond).distinct()
            column_ = Delivery.article_id
        else:
            has_state = []
            if state:
                # Probe each article's few deliveries through ix_deliveries_article. On SQLite `|| ''`
                # keeps the planner (it has no statistics) from using the state or channel index
                # instead, which would scan every delivered row once per article; PostgreSQL's
                # statistics get it right, and the expression would only spoil its estimates.
                plain = (lambda c: c.concat("")) if dialect == "sqlite" else (lambda c: c)
                has_state = [plain(Delivery.state) == state, latest,
                             *([plain(Delivery.channel) == channel] if channel else [])]

            def probe(article_id) -> list:
                return [select(literal(1)).select_from(Delivery).where(Delivery.article_id == article_id,
                                                                       *has_state).exists()] if state else []

            if q:
                ids_q, column_ = _search_ids(dialect, q, *probe(_search.c.id))
            else:
                ids_q, column_ = select(Article.id.label("id")).where(*probe(Article.id)), Article.id
        if before_id:
            ids_q = ids_q.where(column_ < before_id)
        ids = list(session.scalars(ids_q.order_by(column_.desc()).limit(limit)))
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
