"""The article form: reading a posted form (text, carried and uploaded images) into a `Submission`,
checking each field, and validating the whole article into an `ArticleDraft` with `parse_article`."""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import yaml
from fastapi import Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from syndicator.articles import SLUG_RE, ArticleDraft, AssetData, BadInput, load_image, parse_article
from syndicator.models import Asset, utcnow
from syndicator.web.desk.messages import localise

#: Text fields of the article form, with their length limits (the front-matter limits).
LIMITS = {"title": 200, "summary": 500, "author": 64, "unit": 120, "tags": 400, "slug": 80,
          "publish_at": 40, "expires_at": 40, "note": 500, "at": 40, "reason": 500}
ARTICLE_FIELDS = ("title", "summary", "author", "unit", "tags", "slug", "publish_at", "expires_at",
                  "body", "body_format")
BODY_FORMATS = ("markdown", "html")
#: The source name in `parse_article` problems ("desk: body: …").
SOURCE = "desk"
MAX_IMAGES = 20
_SHA = re.compile(r"^[0-9a-f]{64}$")
_TAG_SPLIT = re.compile(r"[,，、;；\n]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


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
