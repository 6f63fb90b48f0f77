"""The micro-site's own listing store: `<site_dir>/.index.sqlite`.

It remembers every article the site has shown, with a permanent sequence number (site-wide and per
tag), so archive pages can be numbered from the oldest and rendered one at a time. This is the
channel's private storage, not syndicator's database; callers hold `localfs.exclusive` around it.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    slug TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,      -- site-wide order of first publication, never reused
    entry TEXT NOT NULL,              -- JSON index entry shown in listings
    withdrawn_at TEXT                 -- ISO time of retraction; NULL while live
);
CREATE TABLE IF NOT EXISTS tags (
    key TEXT NOT NULL,                -- filesystem-safe tag key (directory name)
    slug TEXT NOT NULL REFERENCES articles(slug),
    seq INTEGER NOT NULL,             -- order within the tag, never reused
    tag TEXT NOT NULL,                -- the tag as written
    active INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (key, slug),
    UNIQUE (key, seq)
);
CREATE INDEX IF NOT EXISTS tags_by_slug ON tags (slug);
"""


@dataclass(frozen=True)
class Listed:
    """One row of a listing: its sequence number (site-wide or in the tag) and entry."""

    seq: int
    entry: dict[str, Any]


@dataclass(frozen=True)
class Placement:
    """Where an article sits after a change: its sequence and the tags whose pages it affects."""

    seq: int
    #: tag key → (tag text, sequence of the article within that tag)
    tags: dict[str, tuple[str, int]]
    withdrawn_at: str | None = None
    entry: dict[str, Any] | None = None


class SiteIndex:
    """A short-lived connection to one site's listing store; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def __enter__(self) -> SiteIndex:
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.executescript(SCHEMA)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.db is not None
        self.db.close()

    @property
    def _db(self) -> sqlite3.Connection:
        assert self.db is not None, "SiteIndex used outside `with`"
        return self.db

    def upsert(self, slug: str, entry: dict[str, Any], tags: dict[str, str]) -> Placement:
        """Insert or replace an article (making it live again); return every tag page it touches."""
        db = self._db
        data = json.dumps(entry, ensure_ascii=False, sort_keys=True)
        with db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT seq FROM articles WHERE slug = ?", (slug,)).fetchone()
            if row:
                seq = row[0]
                db.execute("UPDATE articles SET entry = ?, withdrawn_at = NULL WHERE slug = ?", (data, slug))
            else:
                seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM articles").fetchone()[0]
                db.execute("INSERT INTO articles (slug, seq, entry) VALUES (?, ?, ?)", (slug, seq, data))
            old = {k for (k,) in db.execute("SELECT key FROM tags WHERE slug = ? AND active", (slug,))}
            db.execute("UPDATE tags SET active = 0 WHERE slug = ?", (slug,))
            for key, text in tags.items():
                db.execute(
                    "INSERT INTO tags (key, slug, seq, tag) VALUES (?, ?, "
                    " (SELECT COALESCE(MAX(seq), 0) + 1 FROM tags WHERE key = ?), ?) "
                    "ON CONFLICT (key, slug) DO UPDATE SET active = 1, tag = excluded.tag",
                    (key, slug, key, text))
            touched = self._tags_of(slug, old | set(tags))
        return Placement(seq=seq, tags=touched)

    def withdraw(self, slug: str, when: str) -> Placement | None:
        """Mark an article withdrawn (keeping the first withdrawal time); None if never shown."""
        db = self._db
        with db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT seq, entry, withdrawn_at FROM articles WHERE slug = ?", (slug,)).fetchone()
            if row is None:
                return None
            seq, entry, withdrawn_at = row
            if withdrawn_at is None:
                withdrawn_at = when
                db.execute("UPDATE articles SET withdrawn_at = ? WHERE slug = ?", (when, slug))
            active = {k for (k,) in db.execute("SELECT key FROM tags WHERE slug = ? AND active", (slug,))}
            touched = self._tags_of(slug, active)
        return Placement(seq=seq, tags=touched, withdrawn_at=withdrawn_at, entry=json.loads(entry))

    def _tags_of(self, slug: str, keys: set[str]) -> dict[str, tuple[str, int]]:
        rows = self._db.execute("SELECT key, tag, seq FROM tags WHERE slug = ? ORDER BY key", (slug,))
        return {key: (tag, seq) for key, tag, seq in rows if key in keys}

    def max_seq(self, tag_key: str | None = None) -> int:
        """The highest sequence number ever given (site-wide or in one tag); 0 if none."""
        if tag_key is None:
            row = self._db.execute("SELECT MAX(seq) FROM articles").fetchone()
        else:
            row = self._db.execute("SELECT MAX(seq) FROM tags WHERE key = ?", (tag_key,)).fetchone()
        return row[0] or 0

    def newest(self, limit: int, tag_key: str | None = None) -> list[Listed]:
        """The newest live articles, newest first."""
        return self._listing("", "ORDER BY seq DESC LIMIT ?", (limit,), tag_key)

    def span(self, first: int, last: int, tag_key: str | None = None) -> list[Listed]:
        """Live articles with sequence numbers first..last, newest first."""
        return self._listing("AND seq BETWEEN ? AND ?", "ORDER BY seq DESC", (first, last), tag_key)

    def _listing(self, where: str, tail: str, args: tuple[int, ...], tag_key: str | None) -> list[Listed]:
        if tag_key is None:
            sql = f"SELECT seq, entry FROM articles WHERE withdrawn_at IS NULL {where} {tail}"
            params: tuple[Any, ...] = args
        else:
            sql = ("SELECT seq, entry FROM (SELECT t.seq AS seq, a.entry AS entry FROM tags t "
                   "JOIN articles a ON a.slug = t.slug "
                   "WHERE t.key = ? AND t.active AND a.withdrawn_at IS NULL) "
                   f"WHERE 1 {where} {tail}")
            params = (tag_key, *args)
        return [Listed(seq, json.loads(entry)) for seq, entry in self._db.execute(sql, params)]

    def count(self) -> int:
        """How many live articles the site lists."""
        return self._db.execute("SELECT COUNT(*) FROM articles WHERE withdrawn_at IS NULL").fetchone()[0]
