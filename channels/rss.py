"""RSS 2.0 and Atom feeds written as static files under the public directory.

The channel's "remote" is a directory: `rss.xml`, `atom.xml`, `media/` and a small SQLite index
(`.index.sqlite`) holding every published item, so the feeds can be regenerated from the newest
`items` entries after each publish, correction or retraction. Every operation is an idempotent
upsert/delete followed by a deterministic rewrite, which is why the channel is reconcilable.
Each row also holds the item's rendered XML, so a rewrite serialises only the feed header and a
delivery only its own item, however full the feed is (channels/rss_feed.py).
"""
from __future__ import annotations

import html
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timezone, tzinfo
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator

from channels import localfs, rss_feed
from channels.base import (ArticleSnapshot, AssetRef, Attempt, Channel, ChannelSettings, Ports, Receipt,
                           RenderContext, Rendition, rewrite_images)
from channels.errors import Unavailable

#: Characters lxml refuses ("All strings must be XML compatible"), plus DEL.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
#: The newest N items; served by the `items_newest` index, so cost does not grow with the archive.
NEWEST_SQL = "SELECT guid, updated, rss, atom, frag_key FROM items ORDER BY published DESC, guid LIMIT ?"
#: `rss`/`atom` hold the item's rendered fragments (see rss_feed) as UTF-8 bytes, joined into the file
#: without decoding; `frag_key` what they were rendered for. NULL in rows written before fragments were
#: stored: rendered when first needed.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (guid TEXT PRIMARY KEY, published TEXT NOT NULL,
                                  updated TEXT NOT NULL, item TEXT NOT NULL,
                                  rss BLOB, atom BLOB, frag_key TEXT);
CREATE INDEX IF NOT EXISTS items_newest ON items (published DESC, guid);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_FRAGMENT_COLUMNS = {"rss": "BLOB", "atom": "BLOB", "frag_key": "TEXT"}
#: An older revision retried late must not overwrite a newer one (the WHERE of the update).
UPSERT_SQL = ("INSERT INTO items (guid, published, updated, item, rss, atom, frag_key) "
              "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (guid) DO UPDATE SET "
              "published = excluded.published, updated = excluded.updated, item = excluded.item, "
              "rss = excluded.rss, atom = excluded.atom, frag_key = excluded.frag_key "
              "WHERE excluded.updated >= items.updated")


def _clean(text: str) -> str:
    return _XML_INVALID.sub("", text)


def _utc_key(iso: str) -> str:
    """A sortable UTC form of an ISO timestamp, so SQL string order is time order."""
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def prepare_index(db: sqlite3.Connection) -> None:
    """Create the index, or bring an older one up to date: index files written before fragments
    were stored lack their columns, which are added (idempotent); their rows keep NULL fragments."""
    db.executescript(_SCHEMA)
    present = {row[1] for row in db.execute("PRAGMA table_info(items)")}
    for column, kind in _FRAGMENT_COLUMNS.items():
        if column not in present:
            db.execute(f"ALTER TABLE items ADD COLUMN {column} {kind}")


def index_row(item: dict[str, Any], tz: tzinfo) -> tuple[str | bytes, ...]:
    """The `items` row of a rendered payload, fragments included, in UPSERT_SQL's column order."""
    rss, atom = rss_feed.fragments(item, tz)
    return (item["guid"], _utc_key(item["published"]), _utc_key(item["updated"]),
            json.dumps(item, ensure_ascii=False, sort_keys=True), rss, atom, rss_feed.fragment_key(tz))


class RSSChannel(Channel):
    """Publishes each article as one item of an RSS 2.0 feed and an Atom feed."""

    name = "rss"
    display_name = "RSS/Atom 订阅"
    supports_update = True
    supports_retract = True
    reconcilable = True

    class Settings(ChannelSettings):
        title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
        description: str = ""
        #: Directory under the public dir; default `feeds/<instance>`.
        path: str | None = None
        items: int = Field(50, ge=1, le=500)
        language: str = "zh-CN"
        #: Site link for the channel <link>; default the public URL of the feed directory.
        link: str | None = None

        @field_validator("path")
        @classmethod
        def _relative_path(cls, value: str | None) -> str | None:
            if value is None:
                return None
            parts = PurePosixPath(value).parts
            if not parts or value.startswith(("/", "\\")) or ".." in parts or "\\" in value:
                raise ValueError("must be a relative directory under the public dir, without '..'")
            return str(PurePosixPath(*parts))

        @field_validator("link")
        @classmethod
        def _absolute_url(cls, value: str | None) -> str | None:
            if value is not None and not re.match(r"https?://[^/\s]+", value):
                raise ValueError("must be an absolute http(s) URL")
            return value

    settings: RSSChannel.Settings

    @property
    def relpath(self) -> str:
        return self.settings.path or f"feeds/{self.instance}"

    @property
    def directory(self) -> Path:
        return self.ports.public_dir / self.relpath

    def render(self, article: ArticleSnapshot, ctx: RenderContext) -> Rendition:
        images = rewrite_images(_clean(article.body_html), article.asset,
                                lambda asset: ctx.ports.public_url(f"{self.relpath}/media/{asset.stored_name}"))
        content, media, warnings = images.html, dict(images.used), list(images.warnings)
        summary = _clean(article.summary).strip()
        if not summary:
            text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", content)).split())
            summary = text[:120] or _clean(article.title)
            warnings.append("summary is empty; the feed uses the start of the body")
        if article.correction_note:
            note = html.escape(_clean(article.correction_note), quote=False)
            content = f'<p class="correction"><strong>更正说明：</strong>{note}</p>' + content
        title = _clean(article.title).strip()
        if not title:
            title = article.slug
            warnings.append("title is empty; the feed uses the slug")
        enclosure = None
        if article.cover:
            media[article.cover.sha256] = article.cover
            enclosure = {"url": ctx.ports.public_url(f"{self.relpath}/media/{article.cover.stored_name}"),
                         "length": article.cover.size, "type": article.cover.mime}
        payload = {
            "guid": f"urn:syndicator:article:{article.article_id}",
            "title": title,
            "link": article.canonical_url or self._site_link(ctx.ports),
            "summary": summary,
            "content": content,
            "published": _aware(article.first_published_at).isoformat(),
            "updated": _aware(article.revised_at).isoformat(),
            "categories": list(dict.fromkeys(t for t in map(_clean, article.tags) if t.strip())),
            "author": _clean(article.author).strip(),
            "unit": _clean(article.unit).strip(),
            "enclosure": enclosure,
            "media": [{"sha256": a.sha256, "mime": a.mime, "filename": a.filename, "size": a.size}
                      for a in media.values()],
        }
        return Rendition(payload=payload, warnings=tuple(warnings), assets=tuple(media))

    def deliver(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        item = rendition.payload
        assets = [AssetRef(**m) for m in item.get("media", ())]
        row = index_row(item, self.ports.timezone)  # the only item serialised: before taking the lock
        with self._locked_index() as db:
            localfs.publish_media(self.directory / "media", assets, attempt.media)
            db.execute(UPSERT_SQL, row)
            self._write_feeds(db)
        return self._receipt(item["guid"])

    def update(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Same guid and pubDate, new content and atom:updated: an upsert, exactly like deliver."""
        return self.deliver(rendition, attempt)

    def retract(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Drop the item from the index and the feeds; an absent item is already retracted."""
        guid = attempt.remote_id or rendition.payload["guid"]
        with self._locked_index() as db:
            db.execute("DELETE FROM items WHERE guid = ?", (guid,))
            self._write_feeds(db)
        return self._receipt(guid)

    # -- internals -------------------------------------------------------------------------------

    def _site_link(self, ports: Ports) -> str:
        return self.settings.link or ports.public_url(self.relpath + "/")

    def _receipt(self, guid: str) -> Receipt:
        return Receipt(remote_id=guid, remote_url=self.ports.public_url(f"{self.relpath}/rss.xml"),
                       detail={"atom": self.ports.public_url(f"{self.relpath}/atom.xml")})

    @contextmanager
    def _locked_index(self) -> Iterator[sqlite3.Connection]:
        """Hold the instance lock and one index transaction; file errors become Unavailable."""
        index = self.directory / ".index.sqlite"
        try:
            with localfs.exclusive(self.directory), closing(sqlite3.connect(index, timeout=30)) as db:
                prepare_index(db)
                with db:  # commit, or roll back if writing the files failed
                    yield db
        except (OSError, sqlite3.Error) as exc:
            path = getattr(exc, "filename", None) or index
            raise Unavailable(f"rss {self.instance}: cannot write {path}: {exc}") from exc

    def _feed_info(self) -> rss_feed.FeedInfo:
        s = self.settings
        return rss_feed.FeedInfo(
            id=f"urn:syndicator:feed:{self.instance}", title=_clean(s.title),
            description=_clean(s.description) or _clean(s.title), language=s.language,
            site_link=self._site_link(self.ports),
            self_url={fmt: self.ports.public_url(f"{self.relpath}/{fmt}.xml") for fmt in rss_feed.FORMATS})

    def _write_feeds(self, db: sqlite3.Connection) -> None:
        """Rewrite both feeds from the newest items' stored fragments under a fresh header."""
        tz = self.ports.timezone
        rows = db.execute(NEWEST_SQL, (self.settings.items,)).fetchall()
        items = [self._fragments(db, row, tz) for row in rows]
        if rows:
            updated = max(datetime.fromisoformat(row[1]) for row in rows)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('updated', ?)", (updated.isoformat(),))
        else:
            row = db.execute("SELECT value FROM meta WHERE key = 'updated'").fetchone()
            updated = datetime.fromisoformat(row[0]) if row else rss_feed.EPOCH
        info = self._feed_info()
        for i, fmt in enumerate(rss_feed.FORMATS):
            data = rss_feed.document(info, fmt, updated, tz, (pair[i] for pair in items))
            localfs.atomic_write(self.directory / f"{fmt}.xml", data)

    @staticmethod
    def _fragments(db: sqlite3.Connection, row: tuple, tz: tzinfo) -> tuple[bytes, bytes]:
        """A row's stored fragments; rendered and stored now if missing (a row from before fragments
        were stored) or rendered for another timezone or render version. Stored in the write's
        transaction, so they are kept only if the feeds were written."""
        guid, _, rss, atom, key = row
        if key != rss_feed.fragment_key(tz):
            item = db.execute("SELECT item FROM items WHERE guid = ?", (guid,)).fetchone()[0]
            rss, atom, key = index_row(json.loads(item), tz)[4:]
            db.execute("UPDATE items SET rss = ?, atom = ?, frag_key = ? WHERE guid = ?", (rss, atom, key, guid))
        return rss, atom
