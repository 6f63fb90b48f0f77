"""The editor desk (编辑台): article list, the create form, the five-channel preview, the one
publish button, and the article page with live delivery rows, correction, retraction and retry.

Every route declares its action with `page_user(action)` (login, role, CSRF on POST). A form is
validated completely before anything is stored (`parse_article`, the same check as the CLI and
API); problems come back as 422 with each message next to its field. Uploaded images are the one
thing kept early: content-addressed in the assets table (harmless if never used), carried by
SHA-256 in hidden fields, so neither a failed form nor the publish step needs a re-upload.

The preview renders each enabled channel with the channel's own pure `render` on a snapshot built
from the draft (nothing stored), and shows it in a form suited to the channel. Everything that
shows article HTML goes through `_display_html` (nh3, images only from /desk/assets/), and the
micro-site page sits in a sandboxed `<iframe srcdoc>` without scripts. No inline script or style
anywhere: the CSP is `script-src 'self'; style-src 'self'`.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlencode

import nh3
import yaml
from fastapi import APIRouter, HTTPException, Path as PathParam, Query, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import exists, func, select
from sqlalchemy.orm import aliased
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from channels.base import ArticleSnapshot, AssetRef, RenderContext
from syndicator import editorial, operations
from syndicator.articles import SLUG_RE, ArticleDraft, AssetData, BadInput, load_image, parse_article
from syndicator.models import Article, Asset, Delivery, Revision, utcnow
from syndicator.publishing import publish as do_publish
from syndicator.states import TERMINAL
from syndicator.users import Principal
from syndicator.views import NotFoundError, article_status, find_article
from syndicator.web.i18n import choose, translator
from syndicator.web.pages import page_user, render

router = APIRouter(prefix="/desk", include_in_schema=False)

#: Text fields of the article form, with their length limits (the front-matter limits).
LIMITS = {"title": 200, "summary": 500, "author": 64, "unit": 120, "tags": 400, "slug": 80,
          "publish_at": 40, "expires_at": 40, "note": 500, "at": 40, "reason": 500}
ARTICLE_FIELDS = ("title", "summary", "author", "unit", "tags", "slug", "publish_at", "expires_at",
                  "body", "body_format")
BODY_FORMATS = ("markdown", "html")
#: The source name in `parse_article` problems ("desk: body: …").
SOURCE = "desk"
#: Delivery states an editor must look at.
PROBLEM_STATES = ("failed", "unknown", "manual")
#: Channel types in the order the preview grid lays them out (phones first, documents last).
TYPE_ORDER = {"wechat": 0, "microsite": 1, "weibo": 2, "rss": 3, "portal": 4}
PAGE_SIZE = 30
MAX_IMAGES = 20
_SHA = re.compile(r"^[0-9a-f]{64}$")
_TAG_SPLIT = re.compile(r"[,，、;；\n]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

STATE_LABELS = {"queued": "Queued", "sending": "Sending", "retry_wait": "Waiting to retry",
                "delivered": "Delivered", "submitted": "Submitted", "failed": "Failed",
                "manual": "Needs a person", "unknown": "Outcome unknown", "cancelled": "Cancelled",
                "withdrawn": "Withdrawn"}
OPERATION_LABELS = {"publish": "Publish", "update": "Correction", "retract": "Retraction"}

#: Tags, attributes and URLs any article HTML keeps when the desk shows it.
_DISPLAY_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "strong", "b", "em", "i", "u", "s", "ul", "ol", "li",
                 "blockquote", "pre", "code", "table", "thead", "tbody", "tr", "th", "td", "caption", "a",
                 "img", "br", "hr", "figure", "figcaption", "sup", "sub", "span", "section"}
_DISPLAY_ATTRS = {"a": {"href", "title"}, "img": {"src", "alt", "title"},
                  "th": {"colspan", "rowspan"}, "td": {"colspan", "rowspan"}}
#: An image source naming a stored asset: the `asset:` marker or a channel's …/media/<sha>.<ext> URL.
_IMG_ASSET = re.compile(r"""(<img\b[^>]*?\ssrc=)(["'])(?:asset:|[^"'<>]*/media/)([0-9a-fA-F]{64})(?:\.[a-z]+)?\2""")


# -- messages ---------------------------------------------------------------------------------

#: Known English messages of the core and the channels → msgids with placeholders (desk.po has
#: their Chinese). Unknown messages are shown as they are.
_KNOWN: list[tuple[re.Pattern[str], str]] = [(re.compile(p), m) for p, m in [
    (r"(?P<what>.+) is not allowed in an article \(body line (?P<line>\d+)\)",
     "{what} is not allowed in an article (body line {line})"),
    (r"(?P<what>.+) is not allowed in an article", "{what} is not allowed in an article"),
    (r"image (?P<src>.+) is remote; .*", "image {src} is remote; upload the file and refer to it by its name"),
    (r"image (?P<src>.+): cannot read .*", "image {src} is not among the uploaded images"),
    (r"(?:image .+: )?(?P<name>.+) is (?P<n>[\d,]+) bytes, over the limit of (?P<max>[\d,]+) bytes",
     "{name} is {n} bytes, over the limit of {max} bytes"),
    (r"(?:image .+: )?(?P<name>.+) is not a readable image.*", "{name} is not a readable image"),
    (r"(?:image .+: )?(?P<name>.+) is (?P<fmt>\w+); use JPEG, PNG, GIF or WebP",
     "{name} is {fmt}; use JPEG, PNG, GIF or WebP"),
    (r"empty \(.*\)", "Write the article text."),
    (r"(?P<n>\d+) characters, more than the limit of (?P<max>\d+)",
     "{n} characters, more than the limit of {max}"),
    (r"'(?P<slug>[^']+)' is already used by article (?P<id>\d+) «(?P<title>.*)» with different content;.*",
     "“{slug}” is already used by article {id} «{title}» with different content; choose another one, "
     "or correct that article from its page"),
    (r"--at: .* is in the past .*", "The correction time has passed; choose a later time or leave it empty."),
    (r"--at: .* is neither .*", "Not a valid date and time."),
    (r"article \d+ \(.*\) was retracted on .*; it cannot be corrected",
     "This article was retracted; it cannot be corrected."),
    # channel warnings
    (r"title has (?P<n>\d+) characters; WeChat allows at most (?P<max>\d+) \((?P<code>\d+)\)",
     "title has {n} characters; WeChat allows at most {max} ({code})"),
    (r"digest \(summary\) has (?P<n>\d+) characters; WeChat allows at most (?P<max>\d+) \((?P<code>\d+)\)",
     "summary has {n} characters; WeChat allows at most {max} ({code})"),
    (r"author has (?P<n>\d+) characters; WeChat allows at most (?P<max>\d+) \((?P<code>\d+)\)",
     "author has {n} characters; WeChat allows at most {max} ({code})"),
    (r"summary is empty; WeChat shows the first 54 characters of the body as digest",
     "summary is empty; WeChat shows the first 54 characters of the body as digest"),
    (r"article has no cover; the configured default_cover is used",
     "article has no cover; the configured default_cover is used"),
    (r"article has no cover image and no default_cover is configured.*",
     "article has no cover image, and WeChat articles need one"),
    (r"link to (?P<href>.+) turned into text \(WeChat allows links to mp\.weixin\.qq\.com only\)",
     "link to {href} turned into text (WeChat allows links to mp.weixin.qq.com only)"),
    (r"content has (?P<n>\d+) characters of text; WeChat needs fewer than (?P<max>\d+) \((?P<code>\d+)\)",
     "content has {n} characters of text; WeChat needs fewer than {max} ({code})"),
    (r"summary is empty; the status uses the start of the body",
     "summary is empty; the status uses the start of the body"),
    (r"summary truncated to fit (?P<max>\d+) 字 \(kept (?P<kept>\d+) of (?P<n>\d+) characters\)",
     "summary truncated to fit {max} 字 (kept {kept} of {n} characters)"),
    (r"summary dropped and title truncated to fit (?P<max>\d+) 字", "summary dropped and title truncated to fit {max} 字"),
    (r"'#' replaced by '＃' so Weibo does not read a #话题#", "'#' replaced by '＃' so Weibo does not read a #话题#"),
    (r"summary is empty; the feed uses the start of the body", "summary is empty; the feed uses the start of the body"),
    (r"summary is empty; WordPress generates the excerpt from the body",
     "summary is empty; WordPress generates the excerpt from the body"),
    (r"summary is empty; the listing shows the start of the body instead",
     "summary is empty; the listing shows the start of the body instead"),
]]


def localise(message: str, _: Callable[..., str]) -> str:
    """The visitor's-language text of a known core or channel message; others unchanged."""
    message = message.strip()
    for pattern, msgid in _KNOWN:
        match = pattern.fullmatch(message)
        if match:
            values = match.groupdict()
            if values.get("src"):  # Markdown percent-encodes image sources; show what the editor wrote
                values["src"] = unquote(values["src"].strip("'\""))
            return _(msgid, **values)
    return message


def _translator(request: Request) -> Callable[..., str]:
    return translator(choose(request.query_params.get("lang"), request.cookies.get("lang")))


def _flash(request: Request, level: str, text: str) -> None:
    request.session["desk_flash"] = [*request.session.get("desk_flash", []), {"level": level, "text": text}][-3:]


def _take_flash(request: Request) -> list[dict[str, str]]:
    return request.session.pop("desk_flash", [])


# -- the article form ---------------------------------------------------------------------------

@dataclass
class Submission:
    """An article form as posted: normalised text, and images already stored (by SHA-256)."""

    values: dict[str, str]
    cover: tuple[str, str] | None = None  # (sha256, filename)
    images: dict[str, str] = field(default_factory=dict)  # name in the body → sha256
    errors: dict[str, list[str]] = field(default_factory=dict)

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    @property
    def images_json(self) -> str:
        return json.dumps(self.images, ensure_ascii=False, sort_keys=True)


def _text(value: Any, single_line: bool = False) -> str:
    if not isinstance(value, str):
        return ""
    value = _CONTROL.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))
    return " ".join(value.split()) if single_line else value


async def _collect(request: Request, rt, _: Callable[..., str], extra: tuple[str, ...] = ()) -> Submission:
    """Read an article form: text fields, hidden image references, new uploads (stored at once)."""
    form: FormData = await request.form()
    values = {name: _text(form.get(name), single_line=name not in ("body",)).strip()
              for name in (*ARTICLE_FIELDS, *extra)}
    values["body"] = _text(form.get("body")).strip("\n")
    values["body_format"] = values["body_format"] or "markdown"
    sub = Submission(values)
    uploads: list[tuple[str, bytes, str]] = []  # (field, bytes, filename)
    limit = rt.config.limits.max_image_bytes
    cover_file = form.get("cover_file")
    if isinstance(cover_file, UploadFile) and cover_file.filename:
        uploads.append(("cover", await cover_file.read(limit + 1), cover_file.filename))
    files = [f for f in form.getlist("image_files") if isinstance(f, UploadFile) and f.filename]
    if len(files) > MAX_IMAGES:
        sub.error("images", _("At most {n} images at a time.", n=MAX_IMAGES))
        files = []
    for f in files:
        uploads.append(("images", await f.read(limit + 1), f.filename))
    await run_in_threadpool(_attach, rt, sub, form, uploads, _)
    return sub


def _attach(rt, sub: Submission, form: FormData, uploads: list[tuple[str, bytes, str]],
            _: Callable[..., str]) -> None:
    """Resolve hidden image references, check and store new uploads, and check the text fields."""
    cover_sha = _text(form.get("cover_sha")).strip()
    try:
        carried = json.loads(_text(form.get("images_json")) or "{}")
    except ValueError:
        carried = None
    if not isinstance(carried, dict) or len(carried) > MAX_IMAGES or not all(
            isinstance(k, str) and len(k) <= 200 and isinstance(v, str) and _SHA.match(v) for k, v in carried.items()):
        sub.error("images", _("The attached images could not be read; attach them again."))
        carried = {}
    wanted = set(carried.values()) | ({cover_sha} if _SHA.match(cover_sha) else set())
    with rt.store.read() as session:
        known = dict(session.execute(select(Asset.sha256, Asset.filename).where(Asset.sha256.in_(wanted))).all()) \
            if wanted else {}
    if cover_sha and form.get("cover_remove") != "1":
        if cover_sha in known:
            sub.cover = (cover_sha, known[cover_sha])
        else:
            sub.error("cover", _("The cover image is no longer available; choose it again."))
    sub.images = {name: sha for name, sha in carried.items() if sha in known}
    for name in set(carried) - set(sub.images):
        sub.error("images", _("Image {name} is no longer available; attach it again.", name=name))

    limit = rt.config.limits.max_image_bytes
    for where, data, filename in uploads:
        name = Path(filename.replace("\\", "/")).name[:200] or "image"
        try:
            asset = load_image(name, lambda _n: data, limit)
        except BadInput as exc:
            sub.error(where, localise(exc.problems[0], _))
            continue
        _store_asset(rt, asset)
        if where == "cover":
            sub.cover = (asset.sha256, asset.filename)
        else:
            sub.images[name] = asset.sha256
    _check_fields(rt, sub, _)


def _store_asset(rt, asset: AssetData) -> None:
    """Keep image bytes by SHA-256: content-addressed, so storing twice or never using them is harmless."""
    from sqlalchemy.exc import IntegrityError

    def tx(session) -> None:
        if session.get(Asset, asset.sha256) is None:
            session.add(Asset(sha256=asset.sha256, mime=asset.mime, filename=asset.filename, size=asset.size,
                              width=asset.width, height=asset.height, data=asset.data, created_at=utcnow()))
    try:
        rt.store.run_write(tx)
    except IntegrityError:  # stored by a concurrent request: same bytes
        pass


def _local_input(value: str, tz) -> datetime | None:
    """A `datetime-local` value (or ISO time) → aware datetime in the site's zone; ValueError if bad."""
    when = datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=tz)


def _check_fields(rt, sub: Submission, _: Callable[..., str]) -> None:
    v, tz, now = sub.values, rt.ports.timezone, rt.clock()
    if not v["title"]:
        sub.error("title", _("Give the article a title."))
    for name, label in (("title", "Title"), ("summary", "Article summary"), ("author", "Author"), ("unit", "Unit"),
                        ("note", "Correction note"), ("reason", "Reason")):
        if name in v and len(v[name]) > LIMITS[name]:
            sub.error(name, _("{label} has {n} characters; at most {max} are allowed.", label=_(label),
                              n=len(v[name]), max=LIMITS[name]))
    tags = _tags(v["tags"])
    if len(tags) > 10:
        sub.error("tags", _("At most 10 tags."))
    if any(len(t) > 30 for t in tags):
        sub.error("tags", _("Each tag may have at most 30 characters."))
    if v["slug"] and not re.match(SLUG_RE, v["slug"]):
        sub.error("slug", _("Use lowercase letters, digits and '-' only (at most 80, not starting or ending "
                            "with '-')."))
    if v["body_format"] not in BODY_FORMATS:
        sub.error("body", _("Choose Markdown or HTML."))
    if not v["body"].strip():
        sub.error("body", _("Write the article text."))
    elif len(v["body"]) > rt.config.limits.max_body_chars:
        sub.error("body", _("{n} characters, more than the limit of {max}", n=len(v["body"]),
                            max=rt.config.limits.max_body_chars))
    times: dict[str, datetime] = {}
    for name in ("publish_at", "expires_at"):
        if v[name]:
            try:
                times[name] = _local_input(v[name], tz)
            except ValueError:
                sub.error(name, _("Not a valid date and time."))
    if "expires_at" in times:
        if times["expires_at"] <= now:
            sub.error("expires_at", _("The end of the display window must be in the future."))
        elif "publish_at" in times and times["expires_at"] <= times["publish_at"]:
            sub.error("expires_at", _("The end of the display window must be later than the publishing time."))


def _tags(text: str) -> list[str]:
    out: list[str] = []
    for tag in _TAG_SPLIT.split(text):
        tag = tag.strip()
        if tag and tag not in out:
            out.append(tag)
    return out


def _body_source(body: str, fmt: str) -> str:
    """The body as `parse_article` reads it. HTML is made one raw HTML block (no blank lines, no
    indentation that Markdown would read as code) inside a <div> the sanitiser then removes."""
    if fmt != "html":
        return body
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    return "<div>\n" + "\n".join(lines) + "\n</div>"


def _draft(rt, sub: Submission, _: Callable[..., str]) -> ArticleDraft | None:
    """Validate the whole article with `parse_article`; problems go to `sub.errors` by field."""
    v, tz = sub.values, rt.ports.timezone
    front: dict[str, Any] = {"title": v["title"] if "title" not in sub.errors else "-"}
    for name in ("summary", "author", "unit"):
        if v[name] and name not in sub.errors:
            front[name] = v[name]
    if v["tags"] and "tags" not in sub.errors:
        front["tags"] = _tags(v["tags"])
    if v["slug"] and "slug" not in sub.errors:
        front["slug"] = v["slug"]
    for name in ("publish_at", "expires_at"):
        if v[name] and name not in sub.errors:
            front[name] = _local_input(v[name], tz).isoformat()
    if sub.cover:
        front["cover"] = f"{sub.cover[0]}/{sub.cover[1]}"
    body = _body_source(v["body"], v["body_format"]) if "body" not in sub.errors else "-"
    text = "---\n" + yaml.safe_dump(front, allow_unicode=True, default_flow_style=False, sort_keys=False) \
        + "---\n\n" + body + "\n"
    try:
        draft = parse_article(text, source=SOURCE, images=_image_loader(rt, sub), default_slug="draft",
                              max_image_bytes=rt.config.limits.max_image_bytes,
                              max_body_chars=rt.config.limits.max_body_chars, timezone=rt.config.site.timezone)
    except BadInput as exc:
        for problem in exc.problems:
            name, message = _field_of(problem)
            if name not in sub.errors or name in ("body", "form"):
                sub.error(name, localise(message, _))
        return None
    if sub.errors:
        return None
    if not v["slug"]:
        draft = dataclasses.replace(draft, slug=_derived_slug(rt, draft))
    return draft


def _derived_slug(rt, draft: ArticleDraft) -> str:
    """A slug when the editor gives none: the date and the content hash, so submitting the same
    content again gives the same slug (and publishing it again is a no-op)."""
    day = (draft.publish_at or rt.clock()).astimezone(rt.ports.timezone)
    return f"{day:%Y%m%d}-{draft.content_hash[:8]}"


def _image_loader(rt, sub: Submission) -> Callable[[str], bytes]:
    def load(name: str) -> bytes:
        head = name.split("/", 1)[0]
        if sub.cover and head == sub.cover[0]:
            sha = sub.cover[0]
        else:
            sha = sub.images.get(name) or sub.images.get(Path(name).name)
        if not sha:
            raise FileNotFoundError(f"no uploaded image named {name!r}")
        with rt.store.read() as session:
            data = session.scalar(select(Asset.data).where(Asset.sha256 == sha))
        if data is None:
            raise FileNotFoundError(f"image {name!r} is no longer stored")
        return data

    return load


def _field_of(problem: str) -> tuple[str, str]:
    """`desk: front matter: title: …` → ("title", "…"); `desk: body: …` → ("body", "…")."""
    rest = problem.split(": ", 1)[1] if problem.startswith(SOURCE + ": ") else problem
    if rest.startswith("front matter: "):
        head, _sep, message = rest[len("front matter: "):].partition(": ")
        if head in ARTICLE_FIELDS or head == "cover":
            return head, message
        return "form", rest
    if rest.startswith("body: "):
        return "body", rest[len("body: "):]
    return "form", rest


# -- preview ------------------------------------------------------------------------------------

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


# -- shared page context -------------------------------------------------------------------------

def _channel_labels(rt, _: Callable[..., str]) -> dict[str, str]:
    labels = {}
    for name in rt.config.channels:
        try:
            labels[name] = _(type(rt.channel(name)).display_name)
        except Exception:
            labels[name] = name
    return labels


def _limits(rt) -> dict[str, int | None]:
    """Limits the form shows next to its counters: the tightest title limit of an enabled channel."""
    titles = []
    for name in rt.config.enabled_channels():
        try:
            titles.append(type(rt.channel(name)).max_title_chars)
        except Exception:  # an unavailable channel shows its problem in the preview
            continue
    titles = [t for t in titles if t]
    return {"title": min(titles) if titles else None, "summary": LIMITS["summary"]}


def _local(rt, when: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return when.astimezone(rt.ports.timezone).strftime(fmt) if when else ""


def _form_context(rt, sub: Submission, _: Callable[..., str], **extra: Any) -> dict[str, Any]:
    images = sorted(sub.images.items())
    return {"values": sub.values, "errors": sub.errors, "cover": sub.cover, "images": images,
            "images_json": sub.images_json, "limits": _limits(rt), "channel_labels": _channel_labels(rt, _),
            "enabled": list(rt.config.enabled_channels()), **extra}


def _empty_submission() -> Submission:
    values = {name: "" for name in ARTICLE_FIELDS}
    values["body_format"] = "markdown"
    return Submission(values)


# -- routes: list -----------------------------------------------------------------------------------

@router.get("")
def desk_index(request: Request, who: Principal = page_user("read"),
               status: str | None = Query(None, max_length=16), unit: str | None = Query(None, max_length=120),
               problems: str | None = Query(None, max_length=4),
               before: int | None = Query(None, ge=1, le=2**62)) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    status = status if status in ("live", "retracted") else None
    unit = (unit or "").strip() or None
    only_problems = problems in ("1", "on", "true")
    with rt.store.read() as session:
        rows, more = _articles(session, status=status, unit=unit, problems=only_problems, before=before)
        units = session.scalars(select(Revision.unit).join(
            Article, (Article.id == Revision.article_id) & (Article.current_revision == Revision.number))
            .where(Revision.unit != "").distinct().order_by(Revision.unit).limit(200)).all()
        dots = _latest_states(session, [r["id"] for r in rows])
        counts = _counts(session)
    channels = list(rt.config.enabled_channels())
    for row in rows:
        states = dots.get(row["id"], {})
        row["channels"] = [(name, states.get(name)) for name in
                           [*channels, *sorted(set(states) - set(channels))]]
        row["created"] = _local(rt, row["created_at"])
        row["problem"] = any(s and s[0] in PROBLEM_STATES for _n, s in row["channels"])
        row["pending"] = any(s and s[0] not in {"withdrawn", *(t.value for t in TERMINAL)} for _n, s in row["channels"])
    filters = {"status": status or "", "unit": unit or "", "problems": only_problems}
    next_url = None
    if more and rows:
        query = {k: v for k, v in (("status", status), ("unit", unit), ("problems", "1" if only_problems else None))
                 if v}
        query["before"] = str(rows[-1]["id"])
        next_url = "/desk?" + urlencode(query)
    return render(request, "web/desk/index.html", rows=rows, units=units, filters=filters, next_url=next_url,
                  counts=counts, channel_labels=_channel_labels(rt, _), state_labels=STATE_LABELS,
                  flashes=_take_flash(request), paged=before is not None)


def _problem_clause():
    later = aliased(Delivery)
    return exists().where(Delivery.article_id == Article.id, Delivery.state.in_(PROBLEM_STATES),
                          ~exists().where(later.article_id == Delivery.article_id, later.channel == Delivery.channel,
                                          later.id > Delivery.id))


def _articles(session, *, status: str | None, unit: str | None, problems: bool,
              before: int | None) -> tuple[list[dict[str, Any]], bool]:
    q = select(Article.id, Article.slug, Article.status, Article.current_revision, Article.created_at,
               Article.created_by, Revision.title, Revision.unit).join(
        Revision, (Revision.article_id == Article.id) & (Revision.number == Article.current_revision))
    if status:
        q = q.where(Article.status == status)
    if unit:
        q = q.where(Revision.unit == unit)
    if problems:
        q = q.where(_problem_clause())
    if before:
        q = q.where(Article.id < before)
    rows = [dict(r._mapping) for r in session.execute(q.order_by(Article.id.desc()).limit(PAGE_SIZE + 1))]
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


def _latest_states(session, ids: list[int]) -> dict[int, dict[str, tuple[str, str]]]:
    """Article id → channel → (state, operation) of its latest delivery."""
    if not ids:
        return {}
    latest = select(func.max(Delivery.id)).where(Delivery.article_id.in_(ids)).group_by(
        Delivery.article_id, Delivery.channel)
    out: dict[int, dict[str, tuple[str, str]]] = {}
    for article_id, channel, state, operation in session.execute(
            select(Delivery.article_id, Delivery.channel, Delivery.state, Delivery.operation)
            .where(Delivery.id.in_(latest))):
        out.setdefault(article_id, {})[channel] = (shown_state(state, operation), operation)
    return out


def shown_state(state: str, operation: str) -> str:
    """The state as the desk shows it: a retraction that arrived reads "withdrawn", not "delivered"."""
    return "withdrawn" if operation == "retract" and state == "delivered" else state


def _counts(session) -> dict[str, int]:
    terminal = [s.value for s in TERMINAL]
    return {
        "live": session.scalar(select(func.count()).select_from(Article).where(Article.status == "live")) or 0,
        "sending": session.scalar(select(func.count(func.distinct(Delivery.article_id)))
                                  .where(Delivery.state.not_in(terminal))) or 0,
        "problems": session.scalar(select(func.count()).select_from(Article).where(_problem_clause())) or 0,
    }


# -- routes: create, preview, publish ------------------------------------------------------------

@router.get("/new")
def new_article(request: Request, who: Principal = page_user("publish")) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    return render(request, "web/desk/form.html", form=_form_context(rt, _empty_submission(), _))


@router.post("/new")
async def edit_again(request: Request, who: Principal = page_user("publish")) -> Response:
    """Back from the preview to the form, with everything as it was (nothing is checked here)."""
    rt = request.app.state.runtime
    _ = _translator(request)
    sub = await _collect(request, rt, _)
    sub.errors = {k: v for k, v in sub.errors.items() if k in ("cover", "images")}
    return render(request, "web/desk/form.html", form=_form_context(rt, sub, _))


@router.post("/preview")
async def preview(request: Request, who: Principal = page_user("publish")) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    sub = await _collect(request, rt, _)
    draft = await run_in_threadpool(_draft, rt, sub, _)
    if draft is None:
        return render(request, "web/desk/form.html", status_code=422, form=_form_context(rt, sub, _))
    panels = await run_in_threadpool(preview_panels, rt, draft, _)
    now = rt.clock()
    scheduled = draft.publish_at if draft.publish_at and draft.publish_at > now else None
    return render(request, "web/desk/preview.html", draft=draft, panels=panels, values=sub.values,
                  cover=sub.cover, images_json=sub.images_json, scheduled=_local(rt, scheduled),
                  site_name=rt.config.site.name,
                  expires=_local(rt, draft.expires_at),
                  errors_count=sum(1 for p in panels for level, _t in p.problems if level == "error"),
                  warnings_count=sum(1 for p in panels for level, _t in p.problems if level == "warn"))


@router.post("/publish")
async def publish_article(request: Request, who: Principal = page_user("publish")) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    sub = await _collect(request, rt, _)

    def run():
        draft = _draft(rt, sub, _)
        if draft is None:
            return None
        try:
            return do_publish(rt.store, rt.config, draft, actor=who.actor, enqueuer=rt.enqueuer)
        except BadInput as exc:
            for problem in exc.problems:
                name, message = _field_of(problem)
                sub.error(name, localise(message, _))
            return None

    result = await run_in_threadpool(run)
    if result is None:
        return render(request, "web/desk/form.html", status_code=422, form=_form_context(rt, sub, _))
    if result.created:
        _flash(request, "ok", _("Published: every channel is on its way."))
    else:
        _flash(request, "info", _("This article was already published with the same content; nothing was sent again."))
    return RedirectResponse(f"/desk/articles/{result.article_id}", status_code=303)


# -- routes: the article ------------------------------------------------------------------------

def _article_context(rt, article_id: int, _: Callable[..., str]) -> dict[str, Any]:
    with rt.store.read() as session:
        try:
            article = find_article(session, str(article_id))
        except NotFoundError:
            raise HTTPException(404, detail="no such article") from None
        status = article_status(session, article)
        revisions = session.scalars(select(Revision).where(Revision.article_id == article.id)
                                    .order_by(Revision.number.desc())).all()
        current = revisions[0]
        shas = [*current.asset_shas, *([current.cover_sha] if current.cover_sha else [])]
        names = dict(session.execute(select(Asset.sha256, Asset.filename).where(Asset.sha256.in_(shas))).all()) \
            if shas else {}
        history = [{"number": r.number, "at": _local(rt, r.created_at), "by": r.created_by,
                    "note": r.note or "", "title": r.title} for r in revisions]
        info = {"id": article.id, "slug": article.slug, "status": article.status,
                "revision": article.current_revision, "title": current.title, "summary": current.summary,
                "unit": current.unit, "author": current.author, "tags": list(current.tags),
                "created": _local(rt, article.created_at), "created_by": article.created_by,
                "first_published": _local(rt, article.first_published_at),
                "expires": _local(rt, article.expires_at),
                "retracted": _local(rt, article.retracted_at), "retracted_by": article.retracted_by or "",
                "retraction_reason": article.retraction_reason or "",
                "cover": current.cover_sha}
        local_input = "%Y-%m-%dT%H:%M"
        values = {"title": current.title, "summary": current.summary, "author": current.author,
                  "unit": current.unit, "tags": "，".join(current.tags), "slug": "",
                  "publish_at": _local(rt, current.publish_at, local_input),
                  "expires_at": _local(rt, current.expires_at, local_input),
                  "body": current.body_source, "body_format": "markdown", "note": "", "at": ""}
        correction = Submission(values, cover=(current.cover_sha, names.get(current.cover_sha, "cover"))
                                if current.cover_sha in names else None,
                                images={names[s]: s for s in current.asset_shas if s in names})
    labels = _channel_labels(rt, _)
    latest: dict[str, dict[str, Any]] = {}
    for d in status["deliveries"]:
        latest[d["channel"]] = d
    order = [*rt.config.enabled_channels(), *sorted(set(latest) - set(rt.config.enabled_channels()))]
    rows = [{"channel": name, "label": labels.get(name, name), "d": latest.get(name)} for name in order
            if name in latest or info["status"] == "live"]
    for row in rows:
        d = row["d"]
        if d:
            row["shown"] = shown_state(d["state"], d["operation"])
            row["updated"] = _local(rt, datetime.fromisoformat(d["updated_at"])) if d["updated_at"] else ""
            row["link"] = d["remote_url"] if (d["remote_url"] or "").startswith(("http://", "https://")) else None
    retryable = any(r["d"] and r["d"]["state"] in ("failed", "unknown", "retry_wait") for r in rows)
    return {"article": info, "rows": rows, "history": history, "retryable": retryable,
            "correction": correction, "terminal": sorted(s.value for s in TERMINAL)}


def _render_article(request: Request, article_id: int, status_code: int = 200, *,
                    correction: Submission | None = None, retract_errors: dict[str, list[str]] | None = None,
                    reason: str = "") -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    ctx = _article_context(rt, article_id, _)
    stored = ctx.pop("correction")
    sub = correction or stored
    live_labels = {"states": {k: _(v) for k, v in STATE_LABELS.items()},
                   "operations": {k: _(v) for k, v in OPERATION_LABELS.items()},
                   "open": _("Open"), "all_done": _("All channels settled."),
                   "delivered_of": _("{done} of {total} delivered"),
                   "withdrawn_of": _("{done} of {total} withdrawn")}
    return render(request, "web/desk/article.html", status_code=status_code, **ctx,
                  form=_form_context(rt, sub, _), correction_open=correction is not None,
                  retract_errors=retract_errors or {}, reason=reason, state_labels=STATE_LABELS,
                  operation_labels=OPERATION_LABELS, live_labels=live_labels,
                  timezone=rt.config.site.timezone, flashes=_take_flash(request))


@router.get("/articles/{article_id}")
def show_article(request: Request, article_id: int = PathParam(ge=1, le=2**62),
                 who: Principal = page_user("read")) -> Response:
    return _render_article(request, article_id)


@router.post("/articles/{article_id}/correct")
async def correct_article(request: Request, article_id: int = PathParam(ge=1, le=2**62),
                          who: Principal = page_user("correct")) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    sub = await _collect(request, rt, _, extra=("note", "at"))

    def run():
        at = None
        if sub.values["at"]:
            try:
                at = editorial.parse_when(sub.values["at"], now=rt.clock(), timezone=rt.config.site.timezone)
            except BadInput as exc:
                sub.error("at", localise(exc.problems[0], _))
        draft = _draft(rt, sub, _)
        if draft is None or sub.errors:
            return None
        try:
            return editorial.correct(rt, str(article_id), draft, note=sub.values["note"] or None, at=at,
                                     actor=who.actor)
        except NotFoundError:
            raise HTTPException(404, detail="no such article") from None
        except BadInput as exc:
            for problem in exc.problems:
                name, message = _field_of(problem)
                sub.error(name if name != "slug" else "form", localise(message, _))
            return None

    result = await run_in_threadpool(run)
    if result is None:
        return await run_in_threadpool(lambda: _render_article(request, article_id, 422, correction=sub))
    if result.changed:
        when = _local(rt, _local_input(sub.values["at"], rt.ports.timezone)) if sub.values["at"] else ""
        _flash(request, "ok", _("Correction scheduled for {when}: revision {n}.", when=when, n=result.revision)
               if when else _("Correction sent: revision {n} is on its way.", n=result.revision))
    else:
        _flash(request, "info", _("The correction is identical to the current revision; nothing was sent."))
    return RedirectResponse(f"/desk/articles/{article_id}", status_code=303)


@router.post("/articles/{article_id}/retract")
async def retract_article(request: Request, article_id: int = PathParam(ge=1, le=2**62),
                          who: Principal = page_user("retract")) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    form = await request.form()
    reason = _text(form.get("reason"), single_line=True).strip()
    errors: dict[str, list[str]] = {}
    if not reason:
        errors["reason"] = [_("Give the reason for the retraction; it is recorded and shown to readers.")]
    elif len(reason) > LIMITS["reason"]:
        errors["reason"] = [_("{label} has {n} characters; at most {max} are allowed.", label=_("Reason"),
                              n=len(reason), max=LIMITS["reason"])]
    if errors:
        return await run_in_threadpool(lambda: _render_article(request, article_id, 422, retract_errors=errors,
                                                               reason=reason))
    try:
        result = await run_in_threadpool(lambda: editorial.retract(rt, str(article_id), reason=reason,
                                                                   actor=who.actor))
    except NotFoundError:
        raise HTTPException(404, detail="no such article") from None
    if result.changed:
        _flash(request, "ok", _("Retracted: the article is being withdrawn from every channel."))
    else:
        _flash(request, "info", _("This article was already retracted; nothing was done."))
    return RedirectResponse(f"/desk/articles/{article_id}", status_code=303)


@router.post("/articles/{article_id}/retry")
async def retry_article(request: Request, article_id: int = PathParam(ge=1, le=2**62),
                        who: Principal = page_user("retry")) -> Response:
    """「仅重试失败渠道」: failed, unknown and waiting deliveries go again; delivered ones are untouched."""
    rt = request.app.state.runtime
    _ = _translator(request)
    try:
        ids = await run_in_threadpool(lambda: operations.retry(rt, str(article_id), channel=None, actor=who.actor))
    except NotFoundError:
        raise HTTPException(404, detail="no such article") from None
    if ids:
        _flash(request, "ok", _("{n} channel(s) sent again.", n=len(ids)))
    else:
        _flash(request, "info", _("No channel needed sending again."))
    return RedirectResponse(f"/desk/articles/{article_id}", status_code=303)


# -- routes: images and the micro-site stylesheet for the preview ----------------------------------

@router.get("/assets/{sha}")
def asset(request: Request, sha: str = PathParam(pattern=r"^[0-9a-f]{64}$"),
          who: Principal = page_user("read")) -> Response:
    rt = request.app.state.runtime
    with rt.store.read() as session:
        row = session.execute(select(Asset.mime, Asset.data).where(Asset.sha256 == sha)).one_or_none()
    if row is None:
        raise HTTPException(404, detail="no such image")
    return Response(row.data, media_type=row.mime,
                    headers={"Cache-Control": "private, max-age=31536000, immutable"})


@router.get("/preview/microsite.css")
def microsite_css(request: Request, who: Principal = page_user("read")) -> Response:
    css = request.app.state.runtime.ports.templates.get_template("microsite/site.css").render()
    return Response(css, media_type="text/css; charset=utf-8", headers={"Cache-Control": "private, max-age=300"})
