"""The preview: every enabled channel renders the draft with its own pure `render`, and each
rendition is shown the way that channel will show it (article HTML always through `_display_html`)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import nh3
from markupsafe import Markup

from channels.base import ArticleSnapshot, AssetRef, RenderContext
from syndicator.articles import ArticleDraft, AssetData
from syndicator.web.desk.messages import localise

#: Channel types in the order the preview grid lays them out (phones first, documents last).
TYPE_ORDER = {"wechat": 0, "microsite": 1, "weibo": 2, "rss": 3, "portal": 4}

#: Tags, attributes and URLs any article HTML keeps when the desk shows it.
_DISPLAY_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "strong", "b", "em", "i", "u", "s", "ul", "ol", "li",
                 "blockquote", "pre", "code", "table", "thead", "tbody", "tr", "th", "td", "caption", "a",
                 "img", "br", "hr", "figure", "figcaption", "sup", "sub", "span", "section"}
_DISPLAY_ATTRS = {"a": {"href", "title"}, "img": {"src", "alt", "title"},
                  "th": {"colspan", "rowspan"}, "td": {"colspan", "rowspan"}}
#: An image source naming a stored asset: the `asset:` marker or a channel's …/media/<sha>.<ext> URL.
_IMG_ASSET = re.compile(r"""(<img\b[^>]*?\ssrc=)(["'])(?:asset:|[^"'<>]*/media/)([0-9a-fA-F]{64})(?:\.[a-z]+)?\2""")


@dataclass
class Panel:
    """One channel in the preview: its rendition shown the way the channel will show it."""

    name: str
    type: str
    label: str
    problems: list[tuple[str, str]] = field(default_factory=list)  # (level: error|warn, text)
    view: dict[str, Any] = field(default_factory=dict)
    failed: bool = False


def _asset_ref(asset: AssetData) -> AssetRef:
    return AssetRef(sha256=asset.sha256, mime=asset.mime, filename=asset.filename, size=asset.size,
                    width=asset.width, height=asset.height)


def preview_snapshot(draft: ArticleDraft, now: datetime) -> ArticleSnapshot:
    """The snapshot the channels would render at publish (not stored; the id is not known yet)."""
    first = draft.publish_at if draft.publish_at and draft.publish_at > now else now
    return ArticleSnapshot(
        article_id=0, slug=draft.slug, revision=1, content_hash=draft.content_hash, title=draft.title,
        summary=draft.summary, body_html=draft.body_html, author=draft.author, unit=draft.unit, tags=draft.tags,
        cover=_asset_ref(draft.cover) if draft.cover else None, assets=tuple(map(_asset_ref, draft.assets)),
        first_published_at=first, revised_at=now, publish_at=draft.publish_at, expires_at=draft.expires_at)


def _display_html(html: str) -> Markup:
    """Article HTML made safe to show on a desk page: stored images from /desk/assets/, nothing
    that runs, no inline styles (the CSP would refuse them anyway)."""
    html = _IMG_ASSET.sub(lambda m: f'{m.group(1)}"/desk/assets/{m.group(3).lower()}"', html)

    def only_stored_images(tag: str, attr: str, value: str) -> str | None:
        if tag == "img" and attr == "src" and not value.startswith("/desk/assets/"):
            return None
        return value

    return Markup(nh3.clean(html, tags=_DISPLAY_TAGS, attributes=_DISPLAY_ATTRS, clean_content_tags={"script", "style"},
                            url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer",
                            attribute_filter=only_stored_images, strip_comments=True))


def _microsite_srcdoc(page: str) -> str:
    """The micro-site page for a sandboxed srcdoc frame: its stylesheet and images from the desk,
    links inert (the page's relative links lead nowhere before it is published)."""
    page = re.sub(r"""<script\b.*?</script\s*>""", "", page, flags=re.S | re.I)
    page = re.sub(r"""href=(["'])[^"']*static/site\.css\1""", 'href="/desk/preview/microsite.css"', page)
    page = re.sub(r"""src=(["'])\.\./media/([0-9a-f]{64})\.\w+\1""", r'src="/desk/assets/\2"', page)
    page = re.sub(r"""(<a\b[^>]*?\s)href=(["'])\.\./[^"']*\2""", r'\1href="#"', page)
    return page


def _weibo_length(text: str, fallback: int) -> int:
    try:
        from channels.weibo import weibo_length
    except ImportError:  # pragma: no cover - the helper moved
        return fallback
    return weibo_length(text)


def _view(kind: str, channel, payload: dict[str, Any], draft: ArticleDraft, _: Callable[..., str]) -> dict[str, Any]:
    cover = f"/desk/assets/{draft.cover.sha256}" if draft.cover else None
    if kind == "wechat":
        return {"title": payload.get("title", ""), "author": payload.get("author", ""),
                "digest": payload.get("digest", ""), "content": _display_html(payload.get("content", "")),
                "cover": cover, "default_cover": bool((payload.get("cover") or {}).get("default")),
                "source_url": payload.get("content_source_url", "")}
    if kind == "weibo":
        status = payload.get("status", "")
        limit = type(channel).max_body_chars or 140
        length = _weibo_length(status, payload.get("length", 0))
        link = payload.get("link", "")
        text = status[:-len(link)].rstrip() if link and status.endswith(link) else status
        return {"status": status, "text": text, "link": link, "length": length, "limit": limit,
                "over": length > limit, "ratio": min(100, round(100 * length / limit)) if limit else 0,
                "cover": cover if payload.get("cover") else None}
    if kind == "microsite":
        return {"srcdoc": _microsite_srcdoc(payload.get("page", "")), "slug": payload.get("slug", "")}
    if kind == "rss":
        return {"title": payload.get("title", ""), "link": payload.get("link", ""),
                "summary": payload.get("summary", ""), "content": _display_html(payload.get("content", "")),
                "categories": payload.get("categories", []), "author": payload.get("author", ""),
                "unit": payload.get("unit", ""), "guid": payload.get("guid", ""),
                "enclosure": bool(payload.get("enclosure")), "cover": cover}
    if kind == "portal":
        prefix = getattr(channel.settings, "slug_prefix", None)
        slug = f"{prefix}‹{_('id')}›" if prefix is not None else payload.get("slug", "")
        return {"title": payload.get("title", ""), "content": _display_html(payload.get("content", "")),
                "excerpt": payload.get("excerpt", ""), "slug": slug, "status": payload.get("status", ""),
                "cover": cover}
    return {"payload": json.dumps(payload, ensure_ascii=False, indent=2)[:4000]}


def preview_panels(rt, draft: ArticleDraft, _: Callable[..., str]) -> list[Panel]:
    """Render the draft with every enabled channel's own `render`, warnings included."""
    now = rt.clock()
    snapshot = preview_snapshot(draft, now)
    ctx = RenderContext(now=now, ports=rt.ports)
    panels = []
    for name, entry in rt.config.enabled_channels().items():
        panel = Panel(name=name, type=entry.type, label=name)
        panels.append(panel)
        try:
            channel = rt.channel(name)
            panel.label = _(type(channel).display_name)
            rendition = channel.render(snapshot, ctx)
        except Exception as exc:  # a channel that cannot render this article: say why, show the rest
            panel.failed = True
            message = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
            panel.problems.append(("error", localise(message, _)))
            continue
        rejected = set(rendition.payload.get("rejected") or ())
        panel.problems += [("error" if w in rejected else "warn", localise(w, _)) for w in rendition.warnings]
        panel.view = _view(entry.type, channel, rendition.payload, draft, _)
    panels.sort(key=lambda p: TYPE_ORDER.get(p.type, len(TYPE_ORDER)))
    return panels
