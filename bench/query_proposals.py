"""What the query timings propose, so they can be timed as the "after" figures: indexes and a
search table (built on a copy of the 1,000,000-row database), and query shapes for the ops
dashboard that walk those indexes instead of sorting or scanning. Proposals only; syndicator's own
queries are untouched.
"""
from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from sqlalchemy import literal_column, select, table

from syndicator.models import Delivery
from syndicator.runtime import Runtime

#: Indexes proposed for syndicator/models.py (a migration): list pages by state or by channel walk an
#: index in id order instead of sorting every matching row; live counts of the states an operator
#: acts on read a covering index. Timed on a copy of the database as the "after" figures.
PROPOSED_INDEXES = {"ix_deliveries_state_id": "deliveries (state, id)",
                    "ix_deliveries_channel_id": "deliveries (channel, id)",
                    "ix_deliveries_state_channel": "deliveries (state, channel)"}
#: Proposed for the matrix search: a trigram full-text index of titles and slugs (SQLite FTS5;
#: pg_trgm on PostgreSQL), kept by publish and correct, instead of LIKE '%…%' over every article.
SEARCH_TABLE = "CREATE VIRTUAL TABLE article_search USING fts5(title, slug, tokenize='trigram')"


def build_proposed(path: Path, progress: Callable[[str], None]) -> Path:
    """A copy of the database with PROPOSED_INDEXES and the search table (cached next to it)."""
    target = path.with_name(path.stem + "-proposed.sqlite")
    if target.exists():
        return target
    progress("queries: copying the database and adding the proposed indexes")
    tmp = target.with_suffix(".building")
    shutil.copyfile(path, tmp)
    with closing(sqlite3.connect(tmp)) as db:
        for name, columns in PROPOSED_INDEXES.items():
            db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {columns}")
        db.execute(SEARCH_TABLE)
        db.execute("INSERT INTO article_search (rowid, title, slug) SELECT a.id, r.title, a.slug FROM articles a "
                   "JOIN revisions r ON r.article_id = a.id AND r.number = a.current_revision")
        db.commit()
    tmp.rename(target)
    return target


# -- the proposed query shapes (timed on the copy with the proposed indexes only) ---------------

#: Query → the proposed shape that replaces it (the "after" figures use the replacement).
REPLACES = {"ops_attention_list": "proposed_attention_list", "ops_attention_list_deep": "proposed_attention_list_deep",
            "ops_matrix_search": "proposed_matrix_search_ids", "ops_matrix_failed": "proposed_matrix_failed_ids"}


def proposed_attention_list(rt: Runtime, states: tuple[str, ...], limit: int = 50, before_id: int | None = None):
    """ops.delivery_list for several states: one walk of the (state, id) index per state, newest
    first, then the page — instead of sorting every row in those states."""
    from syndicator.models import Article, Revision

    with rt.store.read() as session:
        ids: list[int] = []
        for state in states:
            q = select(Delivery.id).where(Delivery.state == state)
            if before_id:
                q = q.where(Delivery.id < before_id)
            ids += session.scalars(q.order_by(Delivery.id.desc()).limit(limit)).all()
        page = sorted(ids, reverse=True)[:limit]
        return session.execute(select(Delivery, Article.slug, Revision.title)
                               .join(Article, Article.id == Delivery.article_id)
                               .join(Revision, Revision.id == Delivery.revision_id)
                               .where(Delivery.id.in_(page)).order_by(Delivery.id.desc())).all()


def proposed_state_article_ids(rt: Runtime, state: str, per_article: int, limit: int = 25) -> list[int]:
    """The matrix filtered by a rare state: walk the (state, id) index newest first and stop once
    the page has `limit` articles, instead of DISTINCT over every delivery in that state. (Delivery
    ids grow with their article's, so newest deliveries first is newest articles first.)"""
    later = Delivery.__table__.alias("later")
    d = Delivery.__table__
    latest = ~select(later.c.id).where(later.c.article_id == d.c.article_id, later.c.channel == d.c.channel,
                                       later.c.id > d.c.id).exists()
    with rt.store.read() as session:
        found = session.scalars(select(d.c.article_id).where(d.c.state == state, latest)
                                .order_by(d.c.id.desc()).limit(limit * per_article)).all()
    return list(dict.fromkeys(found))[:limit]


def proposed_search_ids(rt: Runtime, text: str, limit: int = 25) -> list[int]:
    """The matrix search's article ids from the trigram index (the page itself then costs what
    ops_matrix costs)."""
    with rt.store.read() as session:
        return list(session.scalars(select(literal_column("rowid")).select_from(table("article_search"))
                                    .where(literal_column("article_search").op("MATCH")('"' + text + '"'))
                                    .order_by(literal_column("rowid").desc()).limit(limit)))
