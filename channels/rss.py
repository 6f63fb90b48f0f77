"""RSS 2.0 and Atom feeds written as static files under the public directory.

The channel's "remote" is a directory: `rss.xml`, `atom.xml`, `media/` and a small SQLite index
(`.index.sqlite`) holding every published item, so the feeds can be regenerated from the newest
`items` entries after each publish, correction or retraction. Every operation is an idempotent
upsert/delete followed by a deterministic rewrite, which is why the channel is reconcilable.
"""
from __future__ import annotations

import html
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree
from pydantic import Field, StringConstraints, field_validator

from channels import localfs
from channels.base import (ArticleSnapshot, AssetRef, Attempt, Channel, ChannelSettings, Ports, Receipt,
                           RenderContext, Rendition, rewrite_images)
from channels.errors import Unavailable

#: Characters lxml refuses ("All strings must be XML compatible"), plus DEL.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
ATOM_NS = "http://www.w3.org/2005/Atom"
DC_NS = "http://purl.org/dc/elements/1.1/"
#: The newest N items; served by the `items_newest` index, so cost does not grow with the archive.
NEWEST_SQL = "SELECT item FROM items ORDER BY published DESC, guid LIMIT ?"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (guid TEXT PRIMARY KEY, published TEXT NOT NULL,
                                  updated TEXT NOT NULL, item TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS items_newest ON items (published DESC, guid);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: Feed `updated` when the feed has never held an item.
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _clean(text: str) -> str:
    return _XML_INVALID.sub("", text)


def _utc_key(iso: str) -> str:
    """A sortable UTC form of an ISO timestamp, so SQL string order is time order."""
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class _Namespaces(BaseExtension):
    """Declares the dc prefix on the feed root (feedgen takes namespaces from feed extensions)."""

    def extend_ns(self) -> dict[str, str]:
        return {"dc": DC_NS}


class _ItemExtras(BaseEntryExtension):
    """What feedgen 1.0.0 cannot write correctly: RSS atom:updated, dc fields, the Atom enclosure."""

    def __init__(self) -> None:
        self.updated: datetime | None = None
        self.creator = ""
        self.publisher = ""
        self.enclosure: dict[str, Any] | None = None

    def extend_rss(self, item: etree._Element) -> etree._Element:
        etree.SubElement(item, f"{{{ATOM_NS}}}updated").text = self.updated.isoformat()
        for tag, value in (("creator", self.creator), ("publisher", self.publisher)):
            if value:
                etree.SubElement(item, f"{{{DC_NS}}}{tag}").text = value
        return item

    def extend_atom(self, entry: etree._Element) -> etree._Element:
        # feedgen drops rel/type/length on entry links (bug 1), so the enclosure is written here.
        if self.enclosure:
            etree.SubElement(entry, "link", rel="enclosure", href=self.enclosure["url"],
                             type=self.enclosure["type"], length=str(self.enclosure["length"]))
        if self.publisher:
            etree.SubElement(entry, f"{{{DC_NS}}}publisher").text = self.publisher
        return entry


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
        with self._locked_index() as db:
            localfs.publish_media(self.directory / "media", assets, attempt.media)
            # An older revision retried late must not overwrite a newer one.
            db.execute("INSERT INTO items VALUES (?, ?, ?, ?) ON CONFLICT (guid) DO UPDATE SET "
                       "published = excluded.published, updated = excluded.updated, item = excluded.item "
                       "WHERE excluded.updated >= items.updated",
                       (item["guid"], _utc_key(item["published"]), _utc_key(item["updated"]),
                        json.dumps(item, ensure_ascii=False, sort_keys=True)))
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
                db.executescript(_SCHEMA)
                with db:  # commit, or roll back if writing the files failed
                    yield db
        except (OSError, sqlite3.Error) as exc:
            path = getattr(exc, "filename", None) or index
            raise Unavailable(f"rss {self.instance}: cannot write {path}: {exc}") from exc

    def _write_feeds(self, db: sqlite3.Connection) -> None:
        items = [json.loads(row[0]) for row in db.execute(NEWEST_SQL, (self.settings.items,))]
        if items:
            updated = max(datetime.fromisoformat(i["updated"]) for i in items)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('updated', ?)", (updated.isoformat(),))
        else:
            row = db.execute("SELECT value FROM meta WHERE key = 'updated'").fetchone()
            updated = datetime.fromisoformat(row[0]) if row else _EPOCH
        for fmt in ("rss", "atom"):
            feed = self._feed(items, fmt, updated.astimezone(self.ports.timezone))
            data = feed.rss_str(pretty=True) if fmt == "rss" else feed.atom_str(pretty=True)
            localfs.atomic_write(self.directory / f"{fmt}.xml", data)

    def _feed(self, items: list[dict[str, Any]], fmt: str, updated: datetime) -> FeedGenerator:
        """One FeedGenerator per format: the self link differs and the Atom entries skip enclosure()."""
        s, tz = self.settings, self.ports.timezone
        fg = FeedGenerator()
        fg.register_extension("syn", _Namespaces, _ItemExtras)
        fg.id(f"urn:syndicator:feed:{self.instance}")
        fg.title(_clean(s.title))
        fg.description(_clean(s.description) or _clean(s.title))
        fg.language(s.language)
        fg.author(name=_clean(s.title))
        fg.generator("syndicator")
        kind = "application/rss+xml" if fmt == "rss" else "application/atom+xml"
        fg.link(href=self.ports.public_url(f"{self.relpath}/{fmt}.xml"), rel="self", type=kind)
        fg.link(href=self._site_link(self.ports), rel="alternate", type="text/html")  # last = RSS <link>
        fg.updated(updated)  # never feedgen's default now()
        for item in items:
            fe = fg.add_entry(order="append")
            fe.guid(item["guid"], permalink=False)
            fe.title(item["title"])
            fe.link(href=item["link"])
            fe.summary(item["summary"])
            fe.content(item["content"], type="html")  # never type="CDATA" (bug 2)
            fe.published(datetime.fromisoformat(item["published"]).astimezone(tz))
            fe.updated(datetime.fromisoformat(item["updated"]).astimezone(tz))
            for term in item["categories"]:
                fe.category(term=term)
            if item["author"] or item["unit"]:
                fe.author(name=item["author"] or item["unit"])
            enclosure = item.get("enclosure")
            if enclosure and fmt == "rss":
                fe.enclosure(enclosure["url"], str(enclosure["length"]), enclosure["type"])
            fe.syn.updated = fe.updated()
            fe.syn.creator, fe.syn.publisher = item["author"], item["unit"]
            fe.syn.enclosure = enclosure if fmt == "atom" else None
        return fg
