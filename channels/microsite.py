"""移动微站: a mobile-first static site under `ports.public_dir/<path>/`.

Layout (relative to the site directory)::

    index.html                  newest `page_size` articles
    page/<n>.html               stable archive pages, numbered from the oldest
    a/<slug>.html               article pages (a/<slug>.gone marks a retracted one, for HTTP 410)
    tag/<key>/index.html        newest articles with one tag; tag/<key>/page/<n>.html as above
    media/<sha><ext>            images; static/site.css
    .index.sqlite               the site's own listing store (see channels.microsite_index)

Article number s sits on archive page (s-1)//page_size+1, so publishing never changes older pages
and each delivery rewrites a fixed handful of files however large the site grows.
"""
from __future__ import annotations

import hashlib
import html
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import nh3
from markupsafe import Markup
from pydantic import Field, field_validator

from channels import localfs
from channels.base import (ArticleSnapshot, AssetRef, Attempt, Channel, ChannelSettings, Receipt, RenderContext,
                           Rendition, rewrite_images)
from channels.errors import ContentRejected, Unavailable
from channels.microsite_index import Listed, Placement, SiteIndex

#: Slugs become file names; anything else is refused rather than escaped.
SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
#: Tags an article body may keep; everything else is stripped (script/style with their content).
BODY_TAGS = {"p", "h2", "h3", "h4", "strong", "em", "ul", "ol", "li", "blockquote", "table", "caption",
             "thead", "tbody", "tfoot", "tr", "th", "td", "a", "img", "br", "hr", "figure", "figcaption"}
#: Attributes per tag; nh3 drops on* handlers and URLs outside BODY_URL_SCHEMES.
BODY_ATTRIBUTES = {"a": {"href"}, "img": {"src", "alt", "width", "height"},
                   "th": {"colspan", "rowspan"}, "td": {"colspan", "rowspan"}}
BODY_URL_SCHEMES = {"http", "https", "mailto", "tel"}
#: Where article pages find copied images (article pages live in a/).
MEDIA_FROM_ARTICLE = "../media/"


def tag_key(tag: str) -> str:
    """A short, filesystem- and URL-safe directory name for a tag."""
    return "t" + hashlib.sha256(tag.encode("utf-8")).hexdigest()[:12]


class MicrositeChannel(Channel):
    """Writes article pages and re-renders only the listing pages an article appears on."""

    name = "microsite"
    display_name = "移动微站"
    supports_update = True
    supports_retract = True
    reconcilable = True
    requires = ("nh3",)

    class Settings(ChannelSettings):
        title: str
        #: Directory under ports.public_dir; defaults to the instance name.
        path: str | None = None
        page_size: int = Field(20, ge=5, le=100)
        footer: str = ""

        @field_validator("path")
        @classmethod
        def _relative(cls, value: str | None) -> str | None:
            if value is not None:
                _check_relative(value)
            return value

    settings: Settings

    @property
    def site_dir(self) -> Path:
        rel = self.settings.path or self.instance
        return self.ports.public_dir / _check_relative(rel)

    def _relpath(self, *parts: str) -> str:
        return "/".join([(self.settings.path or self.instance).strip("/"), *parts])

    # -- render (pure) -----------------------------------------------------------------------

    def render(self, article: ArticleSnapshot, ctx: RenderContext) -> Rendition:
        _check_slug(article.slug)
        tz = ctx.ports.timezone
        # Asset images point at their copies before sanitising; the filter below strips any other src.
        images = rewrite_images(article.body_html, article.asset,
                                lambda asset: MEDIA_FROM_ARTICLE + asset.stored_name)
        used, warnings = dict(images.used), list(images.warnings)

        def keep_own_images(tag: str, attr: str, value: str) -> str | None:
            if tag == "img" and attr == "src" and not value.startswith(MEDIA_FROM_ARTICLE):
                if value:
                    warnings.append(f"external image {value[:60]} removed")
                return None
            return value

        body = nh3.clean(images.html, tags=BODY_TAGS, clean_content_tags={"script", "style"},
                         attributes=BODY_ATTRIBUTES, url_schemes=BODY_URL_SCHEMES, link_rel="noopener noreferrer",
                         attribute_filter=keep_own_images, strip_comments=True,
                         set_tag_attribute_values={"img": {"loading": "lazy"}})
        if article.cover:
            used[article.cover.sha256] = article.cover
        summary = article.summary.strip()
        if not summary:
            warnings.append("summary is empty; the listing shows the start of the body instead")
            summary = _excerpt(body)
        tags = _unique_tags(article.tags)
        published = article.first_published_at.astimezone(tz)
        entry = {"slug": article.slug, "title": article.title, "summary": summary, "unit": article.unit,
                 "author": article.author, "tags": tags, "date": published.strftime("%Y-%m-%d"),
                 "cover": article.cover.stored_name if article.cover else None}
        correction = None
        if article.correction_note:
            revised = article.revised_at.astimezone(tz)
            correction = {"text": article.correction_note, "date": _minute(revised), "iso": revised.isoformat()}
        page = ctx.ports.templates.get_template("microsite/article.html").render(
            site=self.settings, root="../",
            a={"title": article.title, "summary": article.summary.strip(), "unit": article.unit,
               "author": article.author, "datetime": _minute(published), "iso": published.isoformat(),
               "body": Markup(body), "correction": correction, "canonical_url": article.canonical_url,
               "tags": [{"text": t, "key": tag_key(t)} for t in tags]})
        media = [{"sha256": a.sha256, "mime": a.mime, "filename": a.filename, "size": a.size}
                 for a in used.values()]
        payload: dict[str, Any] = {"slug": article.slug, "page": page, "entry": entry, "media": media}
        if article.retraction_reason is not None:  # a retract rendition: the withdrawal page shows why
            payload["reason"] = article.retraction_reason.strip() or None
        return Rendition(payload=payload, warnings=tuple(warnings), assets=tuple(used))

    # -- I/O -----------------------------------------------------------------------------------

    def deliver(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Publish (or, on reconcile, re-apply: every step is idempotent)."""
        payload = rendition.payload
        slug = _check_slug(payload["slug"])
        site = self.site_dir
        assets = [AssetRef(m["sha256"], m["mime"], m["filename"], m["size"]) for m in payload["media"]]
        with self._io(site):
            localfs.publish_media(site / "media", assets, attempt.media)
            localfs.atomic_write(site / "a" / f"{slug}.html", payload["page"])
            (site / "a" / f"{slug}.gone").unlink(missing_ok=True)
            entry = payload["entry"]
            with SiteIndex(site / ".index.sqlite") as idx:
                placed = idx.upsert(slug, entry, {tag_key(t): t for t in entry["tags"]})
                self._refresh(idx, placed)
        return self._receipt(slug, seq=placed.seq)

    def update(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Replace the page in place; the article keeps its number and archive page."""
        return self.deliver(rendition, attempt)

    def retract(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Swap the page for a withdrawal notice (title, date and, if given, `payload["reason"]`,
        the snapshot's retraction reason) and drop the article from every listing."""
        payload = rendition.payload
        slug = _check_slug(attempt.remote_id or payload.get("slug") or payload["entry"]["slug"])
        site = self.site_dir
        page_path = site / "a" / f"{slug}.html"
        with self._io(site):
            with SiteIndex(site / ".index.sqlite") as idx:
                placed = idx.withdraw(slug, self.ports.clock().astimezone(self.ports.timezone).isoformat())
                if placed is None and not page_path.exists():
                    return self._receipt(slug, absent=True)
                when = datetime.fromisoformat(placed.withdrawn_at) if placed else self.ports.clock()
                title = (placed.entry if placed else payload.get("entry", {})).get("title")
                page = self.ports.templates.get_template("microsite/withdrawn.html").render(
                    site=self.settings, root="../", title=title, reason=payload.get("reason"),
                    date=_minute(when.astimezone(self.ports.timezone)), iso=when.isoformat())
                localfs.atomic_write(page_path, page)
                localfs.atomic_write(site / "a" / f"{slug}.gone", f"{when.isoformat()}\n")
                if placed:
                    self._refresh(idx, placed)
        return self._receipt(slug, seq=placed.seq if placed else None)

    @contextmanager
    def _io(self, site: Path) -> Iterator[None]:
        """Hold the site lock and turn storage failures into `Unavailable` naming the path."""
        try:
            with localfs.exclusive(site):
                yield
        except OSError as exc:
            raise Unavailable(f"microsite {self.instance}: cannot write {exc.filename or site}: "
                              f"{exc.strerror or exc}") from exc
        except sqlite3.Error as exc:
            raise Unavailable(f"microsite {self.instance}: index {site / '.index.sqlite'}: {exc}") from exc

    def _receipt(self, slug: str, **detail: Any) -> Receipt:
        return Receipt(remote_id=slug, remote_url=self.ports.public_url(self._relpath("a", f"{slug}.html")),
                       detail=detail)

    # -- listing pages ---------------------------------------------------------------------------

    def _refresh(self, idx: SiteIndex, placed: Placement) -> None:
        """Re-render the pages one article appears on: the front page, its archive page, its tags."""
        css = self.ports.templates.get_template("microsite/site.css").render()
        localfs.atomic_write(self.site_dir / "static" / "site.css", css)
        self._write_front(idx, None)
        self._write_archive(idx, None, self._page_of(placed.seq))
        for key, (text, seq) in placed.tags.items():
            self._write_front(idx, (key, text))
            self._write_archive(idx, (key, text), self._page_of(seq))

    def _page_of(self, seq: int) -> int:
        return (seq - 1) // self.settings.page_size + 1

    def _write_front(self, idx: SiteIndex, tag: tuple[str, str] | None) -> None:
        size = self.settings.page_size
        rows = idx.newest(size + 1, tag and tag[0])
        base = f"tag/{tag[0]}/" if tag else ""
        root = "../../" if tag else ""
        older = None
        if len(rows) > size:
            older = {"href": f"page/{self._page_of(rows[size].seq)}.html", "label": "下一页"}
        self._write_listing(base + "index.html", root, tag, rows[:size], page=None, newer=None, older=older)

    def _write_archive(self, idx: SiteIndex, tag: tuple[str, str] | None, n: int) -> None:
        size = self.settings.page_size
        first, last = (n - 1) * size + 1, n * size
        key = tag and tag[0]
        base = f"tag/{tag[0]}/" if tag else ""
        root = "../../../" if tag else "../"
        # A full page links to the next (newer) one, which is created now if need be, so the link is
        # never dangling and the page never has to change when the next article arrives.
        full = idx.max_seq(key) >= last
        newer = {"href": f"{n + 1}.html" if full else "../index.html", "label": "上一页" if full else "首页"}
        older = {"href": f"{n - 1}.html", "label": "下一页"} if n > 1 else None
        self._write_listing(f"{base}page/{n}.html", root, tag, idx.span(first, last, key),
                            page=n, newer=newer, older=older)
        if full and not (self.site_dir / f"{base}page/{n + 1}.html").exists():
            self._write_archive(idx, tag, n + 1)

    def _write_listing(self, relpath: str, root: str, tag: tuple[str, str] | None, rows: list[Listed],
                       **pager: Any) -> None:
        template = "microsite/tag.html" if tag else "microsite/index.html"
        html = self.ports.templates.get_template(template).render(
            site=self.settings, root=root, tag=tag and tag[1], entries=[r.entry for r in rows], **pager)
        localfs.atomic_write(self.site_dir / relpath, html)


def _check_relative(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or "\\" in path or ".." in parts:
        raise ValueError(f"must be a relative directory without '..', got {path!r}")
    return path


def _check_slug(slug: str) -> str:
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        raise ContentRejected(f"slug {slug!r} is not usable as a file name (letters, digits, '-', '_')")
    return slug


def _unique_tags(tags: tuple[str, ...]) -> list[str]:
    seen: dict[str, None] = {}
    for tag in tags:
        if tag.strip():
            seen.setdefault(tag.strip())
    return list(seen)


def _excerpt(body_html: str, limit: int = 80) -> str:
    text = " ".join(html.unescape(nh3.clean(body_html, tags=set())).split())
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def _minute(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M")
