"""``wp/v2/posts``: create, read, find, update, and the trash → 410 → force → 404 delete ladder.

Emulated core behaviour: 201 + ``Location`` on create; slugs sanitised and made unique (``-2``);
drafts keep an empty slug unless one is given; ``publish`` with a date ≥ 1 min ahead becomes
``future`` (and goes live when its time comes); trashing renames the slug to ``<slug>__trashed``;
``status=any`` needs ``edit_posts`` and excludes trash; ``raw`` fields only with ``context=edit``.
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from starlette.responses import JSONResponse, Response

from .wordpress import Ctx, WPError, invalid_params, truthy

if TYPE_CHECKING:
    from .wordpress import WordPressEmulator

#: Statuses a post may be given through the API, and the ones `status` filters accept.
STATUSES = ("publish", "future", "draft", "pending", "private")
FILTER_STATUSES = STATUSES + ("trash", "any")
FORMATS = ("standard", "aside", "chat", "gallery", "link", "image", "quote", "status", "video", "audio")
#: wp_insert_post: a publish date at least this far ahead schedules the post.
FUTURE_THRESHOLD = 60
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?$")
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.I | re.S)
_ON_ATTR = re.compile(r"""\s+on[a-z]+\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+)""", re.I)


@dataclass
class WPPost:
    id: int
    type: str
    status: str
    slug: str
    author: int
    date_gmt: float
    modified_gmt: float
    title: str = ""
    content: str = ""
    excerpt: str = ""
    featured_media: int = 0
    categories: list[int] = field(default_factory=lambda: [1])
    tags: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    comment_status: str = "open"
    ping_status: str = "open"
    format: str = "standard"
    sticky: bool = False
    password: str = ""
    template: str = ""
    desired_slug: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def sanitize_slug(text: str) -> str:
    """``sanitize_title_with_dashes``: lowercase, non-ASCII percent-encoded, dashes for spaces."""
    text = re.sub(r"<[^>]*>", "", html.unescape(text)).strip().lower().replace(".", "-")
    text = "".join(quote(ch).lower() if ord(ch) > 127 else ch for ch in text)
    text = re.sub(r"[^%a-z0-9 _-]", "", text)
    return re.sub(r"-+", "-", re.sub(r"\s+", "-", text)).strip("-")


def wp_date(ts: float, tz: Any) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%dT%H:%M:%S")


def parse_date(value: Any, tz: Any) -> float | None:
    """``rest_parse_date``: RFC 3339 with optional offset; naive values are in ``tz``."""
    if not isinstance(value, str) or not _DATE.match(value):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00").replace("t", "T"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=tz)).timestamp()


def autop(text: str) -> str:
    if not text:
        return ""
    if text.lstrip().startswith("<"):
        return text + "\n"
    return "".join(f"<p>{p.strip()}</p>\n" for p in re.split(r"\n\s*\n", text) if p.strip())


class Posts:
    """The posts collection (and the delete ladder shared with attachments)."""

    def __init__(self, emu: "WordPressEmulator") -> None:
        self.emu = emu

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.emu.settings.timezone)

    def tick(self) -> None:
        """WP-Cron: scheduled posts whose time has come are published."""
        now = self.emu.clock.now()
        for pid in [i for i in self.emu.future if self.emu.items[i].date_gmt <= now]:
            post = self.emu.items[pid]
            post.status = "publish"
            self.emu.future.discard(pid)
            self.emu.record("posts/publish_future", id=pid, body={"slug": post.slug})

    # -- helpers ------------------------------------------------------------------------------
    def find(self, post_id: Any, kind: str = "post") -> Any:
        item = self.emu.items.get(int(post_id))
        if item is None or item.type != kind:
            raise WPError("rest_post_invalid_id", "Invalid post ID.", 404)
        return item

    def unique_slug(self, slug: str, post_id: int, kind: str = "post") -> str:
        taken = {p.slug for p in self.emu.items.values() if p.id != post_id and (kind == "attachment" or p.type == kind)}
        candidate, n = slug, 2
        while candidate in taken:
            candidate = f"{slug}-{n}"
            n += 1
        return candidate

    def can_edit(self, user: Any, post: WPPost) -> bool:
        can = self.emu.can
        if post.author != getattr(user, "id", None):
            return can(user, "edit_others_posts")
        return can(user, "edit_published_posts" if post.status == "publish" else "edit_posts")

    def render(self, post: WPPost, ctx: Ctx, context: str = "view") -> dict[str, Any]:
        tz, home = self.tz, ctx.home
        link = f"{home}/{post.slug}/" if ctx.pretty and post.status == "publish" else f"{home}/?p={post.id}"
        excerpt = post.excerpt or " ".join(re.sub(r"<[^>]+>", " ", post.content).split()[:55])
        out: dict[str, Any] = {
            "id": post.id, "date": wp_date(post.date_gmt, tz), "date_gmt": wp_date(post.date_gmt, timezone.utc),
            "guid": {"rendered": f"{home}/?p={post.id}"}, "modified": wp_date(post.modified_gmt, tz),
            "modified_gmt": wp_date(post.modified_gmt, timezone.utc), "slug": post.slug, "status": post.status,
            "type": post.type, "link": link, "title": {"rendered": post.title},
            "content": {"rendered": autop(post.content), "protected": bool(post.password)},
            "excerpt": {"rendered": autop(excerpt), "protected": bool(post.password)},
            "author": post.author, "featured_media": post.featured_media, "comment_status": post.comment_status,
            "ping_status": post.ping_status, "sticky": post.sticky, "template": post.template,
            "format": post.format, "meta": dict(post.meta), "categories": list(post.categories),
            "tags": list(post.tags),
        }
        if context == "edit":
            out["title"]["raw"] = post.title
            out["content"]["raw"] = post.content
            out["excerpt"]["raw"] = post.excerpt
            out["guid"]["raw"] = out["guid"]["rendered"]
            out.update(password=post.password, permalink_template=f"{home}/%postname%/",
                       generated_slug=sanitize_slug(post.title) or str(post.id))
        return out

    # -- endpoints ----------------------------------------------------------------------------
    def list(self, ctx: Ctx) -> Response:
        p, can = ctx.params, self.emu.can
        context = p.get("context", "view")
        if context == "edit" and not can(ctx.user, "edit_posts"):
            raise WPError("rest_forbidden_context", "Sorry, you are not allowed to edit posts in this post type.",
                          ctx.auth_status())
        statuses = _listify(p.get("status", "publish"))
        bad: dict[str, str] = {}
        for s in statuses:
            if s not in FILTER_STATUSES:
                bad["status"] = f"status[0] is not one of {', '.join(FILTER_STATUSES)}."
            elif s != "publish" and not can(ctx.user, "edit_posts"):
                bad["status"] = "Status is forbidden."
        per_page, page = _int(p.get("per_page", 10)), _int(p.get("page", 1))
        if per_page is None or not 1 <= per_page <= 100:
            bad["per_page"] = "per_page must be between 1 (inclusive) and 100 (inclusive)"
        if page is None or page < 1:
            bad["page"] = "page must be greater than or equal to 1"
        if bad:
            raise invalid_params(bad)
        wanted = set(STATUSES) if "any" in statuses else set(statuses)
        slugs = {sanitize_slug(s) for s in _listify(p.get("slug"))}
        include = {_int(i) for i in _listify(p.get("include"))}
        search = (p.get("search") or "").lower()
        found = [x for x in self.emu.items.values() if x.type == "post" and x.status in wanted
                 and (not slugs or x.slug in slugs) and (not include or x.id in include)
                 and (not search or search in (x.title + x.content).lower())]
        found.sort(key=lambda x: (x.date_gmt, x.id), reverse=True)
        total, pages = len(found), math.ceil(len(found) / per_page)
        if total and page > pages:
            raise WPError("rest_post_invalid_page_number",
                          "The page number requested is larger than the number of pages available.", 400)
        body = [self.render(x, ctx, context) for x in found[(page - 1) * per_page: page * per_page]]
        headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
        if page < pages:
            base = ctx.rest_url("/wp/v2/posts")
            headers["Link"] = f'<{base}{"&" if "?" in base else "?"}page={page + 1}>; rel="next"'
        return JSONResponse(body, headers=headers)

    def get(self, ctx: Ctx, id: str) -> Response:
        post = self.find(id)
        context = ctx.params.get("context", "view")
        if post.status != "publish" and not self.can_edit(ctx.user, post):
            raise WPError("rest_forbidden", "Sorry, you are not allowed to do that.", ctx.auth_status())
        if context == "edit" and not self.can_edit(ctx.user, post):
            raise WPError("rest_forbidden_context", "Sorry, you are not allowed to edit this post.", ctx.auth_status())
        return JSONResponse(self.render(post, ctx, context))

    def create(self, ctx: Ctx) -> Response:
        if "id" in ctx.params:
            raise WPError("rest_post_exists", "Cannot create existing post.", 400)
        if not self.emu.can(ctx.user, "edit_posts"):
            raise WPError("rest_cannot_create", "Sorry, you are not allowed to create posts as this user.",
                          ctx.auth_status())
        now = self.emu.clock.now()
        post = WPPost(self.emu.next_id(), "post", "draft", "", ctx.user.id, now, now)  # type: ignore[union-attr]
        changes = self._prepare(ctx, post, creating=True)
        self.emu.items[post.id] = post
        self._apply(ctx, post, changes, creating=True)
        self.emu.record("posts/create", id=post.id, body={"slug": post.slug, "status": post.status, **changes})
        location = ctx.rest_url(f"/wp/v2/posts/{post.id}")
        return JSONResponse(self.render(post, ctx, "edit"), status_code=201, headers={"Location": location})

    def update(self, ctx: Ctx, id: str) -> Response:
        post = self.find(id)
        if not self.can_edit(ctx.user, post):
            raise WPError("rest_cannot_edit", "Sorry, you are not allowed to edit this post.", ctx.auth_status())
        changes = self._prepare(ctx, post, creating=False)
        self._apply(ctx, post, changes, creating=False)
        self.emu.record("posts/update", id=post.id, body={"slug": post.slug, "status": post.status, **changes})
        return JSONResponse(self.render(post, ctx, "edit"))

    def delete(self, ctx: Ctx, id: str, kind: str = "post") -> Response:
        post = self.find(id, kind)
        own = post.author == getattr(ctx.user, "id", None)
        cap = ("delete_published_posts" if post.status == "publish" else "delete_posts") if own else "delete_others_posts"
        if not self.emu.can(ctx.user, cap):
            raise WPError("rest_cannot_delete", "Sorry, you are not allowed to delete this post.", ctx.auth_status())
        render = self.emu.media.render if kind == "attachment" else self.render
        if truthy(ctx.params.get("force", False)):
            previous = render(post, ctx, "edit")
            del self.emu.items[post.id]
            self.emu.future.discard(post.id)
            self.emu.record(f"{'media' if kind == 'attachment' else 'posts'}/delete", id=post.id, body={"slug": post.slug})
            return JSONResponse({"deleted": True, "previous": previous})
        if not self.emu.settings.trash_enabled or kind == "attachment":
            raise WPError("rest_trash_not_supported", "The post does not support trashing. Set 'force=true' to delete.", 501)
        if post.status == "trash":
            raise WPError("rest_already_trashed", "The post has already been deleted.", 410)
        post.desired_slug = post.slug
        post.slug = f"{post.slug}__trashed"
        post.status = "trash"
        post.modified_gmt = self.emu.clock.now()
        self.emu.future.discard(post.id)
        self.emu.record("posts/trash", id=post.id, body={"slug": post.slug})
        return JSONResponse(self.render(post, ctx, "edit"))

    # -- field handling -----------------------------------------------------------------------
    def _prepare(self, ctx: Ctx, post: WPPost, creating: bool) -> dict[str, Any]:
        """Validate request fields into a dict of changes (raises rest_invalid_param & co)."""
        p, out, bad = ctx.params, {}, {}
        for key in ("title", "content", "excerpt"):
            if key in p:
                value = p[key]["raw"] if isinstance(p[key], dict) and "raw" in p[key] else p[key]
                if not isinstance(value, str):
                    bad[key] = f"{key} is not of type object,string."
                else:
                    out[key] = value
        for key in ("slug", "password", "template"):
            if key in p:
                out[key] = str(p[key])
        if "status" in p:
            if p["status"] not in STATUSES:
                bad["status"] = f"status is not one of {', '.join(STATUSES)}."
            else:
                out["status"] = p["status"]
        for key in ("date", "date_gmt"):
            if p.get(key):
                ts = parse_date(p[key], timezone.utc if key == "date_gmt" else self.tz)
                if ts is None:
                    bad[key] = "Invalid date."
                else:
                    out.setdefault("date_ts", ts)
                    out[key] = p[key]
        for key, choices in (("comment_status", ("open", "closed")), ("ping_status", ("open", "closed")),
                             ("format", FORMATS)):
            if key in p:
                if p[key] not in choices:
                    bad[key] = f"{key} is not one of {', '.join(choices)}."
                else:
                    out[key] = p[key]
        for key in ("categories", "tags"):
            if key in p:
                ids = [_int(v) for v in _listify(p[key])]
                if any(i is None for i in ids):
                    bad[key] = f"{key}[0] is not of type integer."
                else:
                    out[key] = ids
        if "sticky" in p:
            out["sticky"] = truthy(p["sticky"])
        if isinstance(p.get("meta"), dict):
            out["meta"] = {k: v for k, v in p["meta"].items() if k in self.emu.settings.registered_meta}
        if bad:
            raise invalid_params(bad)
        if "author" in p:
            author = _int(p["author"])
            if author is None or self.emu.user(author) is None:
                raise WPError("rest_invalid_author", "Invalid author ID.", 400)
            if author != ctx.user.id and not self.emu.can(ctx.user, "edit_others_posts"):  # type: ignore[union-attr]
                raise WPError("rest_cannot_edit_others", "Sorry, you are not allowed to create posts as this user."
                              if creating else "Sorry, you are not allowed to update posts as this user.", 403)
            out["author"] = author
        if "featured_media" in p:
            media_id = _int(p["featured_media"])
            item = self.emu.items.get(media_id or -1)
            if media_id is None or (media_id and (item is None or item.type != "attachment")):
                raise WPError("rest_invalid_featured_media", "Invalid featured media ID.", 400)
            out["featured_media"] = media_id
        if out.get("status") in ("publish", "future", "private") and not self.emu.can(ctx.user, "publish_posts"):
            raise WPError("rest_cannot_publish", "Sorry, you are not allowed to publish posts in this post type.", 403)
        return out

    def _apply(self, ctx: Ctx, post: WPPost, changes: dict[str, Any], creating: bool) -> None:
        unfiltered = self.emu.can(ctx.user, "unfiltered_html")
        for key in ("title", "content", "excerpt"):
            if key in changes:
                value = changes[key]
                setattr(post, key, value if unfiltered else _ON_ATTR.sub("", _SCRIPT.sub("", value)))
        for key in ("password", "template", "comment_status", "ping_status", "format", "categories", "tags",
                    "sticky", "meta", "author", "featured_media"):
            if key in changes:
                setattr(post, key, changes[key])
        now = self.emu.clock.now()
        if "date_ts" in changes:
            post.date_gmt = changes.pop("date_ts")
        status = changes.get("status", post.status)
        if status == "publish" and post.date_gmt - now >= FUTURE_THRESHOLD:
            status = "future"
        elif status == "future" and post.date_gmt - now < FUTURE_THRESHOLD:
            status = "publish"
        post.status = status
        (self.emu.future.add if status == "future" else self.emu.future.discard)(post.id)
        if "slug" in changes and sanitize_slug(changes["slug"]):
            post.slug = self.unique_slug(sanitize_slug(changes["slug"]), post.id)
        elif not post.slug and status in ("publish", "future", "private"):
            post.slug = self.unique_slug(sanitize_slug(post.title) or str(post.id), post.id)
        post.modified_gmt = now


def _listify(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None

