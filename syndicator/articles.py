"""Reading an article file: Markdown with YAML front matter → a validated `ArticleDraft`.

Everything that can be wrong with an input is found here, before anything is stored: malformed
front matter, missing or over-long fields, an unreadable or oversized image, hostile HTML in the
body. Each problem names the file and the field (or body line) it is about.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

import frontmatter
import nh3
import yaml
from markdown_it import MarkdownIt
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from channels.base import ASSET_SCHEME
from syndicator.config import format_validation_error

#: Image formats accepted, Pillow name → MIME type.
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
#: Elements an article body must not contain (rejected, not silently dropped: the editor must know).
FORBIDDEN_TAGS = {"script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "form",
                  "input", "button", "textarea", "select", "link", "meta", "base", "svg", "math"}
#: URL schemes that execute code.
FORBIDDEN_SCHEMES = ("javascript:", "vbscript:", "data:")
#: What survives sanitising of a stored body.
ALLOWED_TAGS = {"p", "h2", "h3", "h4", "h5", "strong", "b", "em", "i", "u", "s", "ul", "ol", "li",
                "blockquote", "pre", "code", "table", "thead", "tbody", "tr", "th", "td", "caption",
                "a", "img", "br", "hr", "figure", "figcaption", "sup", "sub", "span"}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title", "width", "height"},
                      "th": {"colspan", "rowspan", "align"}, "td": {"colspan", "rowspan", "align"}}
SLUG_RE = r"^[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?$"

_markdown = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table").enable("strikethrough")


class BadInput(Exception):
    """The input cannot be published; `problems` lists each one, naming the file and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class AssetData:
    sha256: str
    mime: str
    filename: str
    size: int
    width: int
    height: int
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ArticleDraft:
    """A validated article ready to be stored as a revision."""

    slug: str
    title: str
    summary: str
    author: str
    unit: str
    tags: tuple[str, ...]
    body_source: str
    body_html: str
    cover: AssetData | None
    assets: tuple[AssetData, ...]
    publish_at: datetime | None
    expires_at: datetime | None
    source: str
    #: The slug was written in the front matter (not derived from the file name).
    slug_given: bool = False

    @property
    def content_hash(self) -> str:
        """Identity of the content: same hash ⇒ publishing again changes nothing."""
        canonical = {
            "title": self.title, "summary": self.summary, "author": self.author, "unit": self.unit,
            "tags": list(self.tags), "body": self.body_html,
            "cover": self.cover.sha256 if self.cover else None,
            "publish_at": self.publish_at.isoformat() if self.publish_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }
        return hashlib.sha256(json.dumps(canonical, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


class FrontMatter(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=200)
    summary: str = Field("", max_length=500)
    author: str = Field("", max_length=64)
    unit: str = Field("", max_length=120)
    tags: list[str] = Field(default_factory=list, max_length=10)
    cover: str | None = None
    slug: str | None = Field(None, pattern=SLUG_RE)
    publish_at: datetime | None = None
    expires_at: datetime | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        out = []
        for t in v:
            t = str(t).strip()
            if not t or len(t) > 30:
                raise ValueError(f"each tag must be 1–30 characters (got {t!r})")
            if t not in out:
                out.append(t)
        return out

    @model_validator(mode="after")
    def _window(self) -> FrontMatter:
        if self.publish_at and self.expires_at and _aware(self.expires_at) <= _aware(self.publish_at):
            raise ValueError("expires_at must be later than publish_at")
        return self


def _aware(value: datetime, tz: ZoneInfo | None = None) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=tz or ZoneInfo("Asia/Shanghai"))


def slug_from_filename(path: Path) -> str:
    """Default slug: the file name's stem, lower-cased, with anything but a-z0-9 turned into '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")[:80].strip("-")
    return slug


def read_article(path: str | Path, *, max_image_bytes: int, max_body_chars: int,
                 timezone: str = "Asia/Shanghai") -> ArticleDraft:
    """Parse and validate one article file. Raises BadInput listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadInput([f"{path}: not UTF-8 text"]) from None
    except OSError as exc:
        raise BadInput([f"{path}: cannot read file: {exc.strerror}"]) from None
    return parse_article(text, source=str(path), images=lambda rel: (path.parent / rel).read_bytes(),
                         default_slug=slug_from_filename(path), max_image_bytes=max_image_bytes,
                         max_body_chars=max_body_chars, timezone=timezone)


def parse_article(text: str, *, source: str, images: Callable[[str], bytes], default_slug: str | None,
                  max_image_bytes: int, max_body_chars: int, timezone: str = "Asia/Shanghai") -> ArticleDraft:
    """Validate an article given as text; `images(relative_name)` returns image bytes (or raises OSError)."""
    name = source
    if not text.lstrip("\ufeff").startswith("---"):
        raise BadInput([f"{name}: front matter: missing (the file must start with a '---' line, "
                        "YAML fields, then another '---' line)"])
    try:
        post = frontmatter.loads(text.lstrip("\ufeff"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark else ""
        raise BadInput([f"{name}: front matter: not valid YAML{where}: "
                        f"{getattr(exc, 'problem', None) or exc}"]) from None
    if not isinstance(post.metadata, dict):
        raise BadInput([f"{name}: front matter: expected 'key: value' lines"])
    meta = {k: _yaml_value(v) for k, v in post.metadata.items()}
    try:
        fm = FrontMatter.model_validate(meta)
    except ValidationError as exc:
        raise BadInput(format_validation_error(f"{name}: front matter", exc).splitlines()) from None
    if fm.slug is None and default_slug is None:
        raise BadInput([f"{name}: front matter: slug: required here (lowercase letters, digits and '-')"])

    problems: list[str] = []
    body = post.content.strip()
    if not body:
        problems.append(f"{name}: body: empty (write the article text after the front matter)")
    if len(body) > max_body_chars:
        problems.append(f"{name}: body: {len(body)} characters, more than the limit of {max_body_chars}")
    html = _markdown.render(body)
    problems += [f"{name}: body: {p}" for p in hostile_markup(html, body)]

    tz = ZoneInfo(timezone)
    cover = None
    if fm.cover:
        try:
            cover = load_image(fm.cover, images, max_image_bytes)
        except BadInput as exc:
            problems += [f"{name}: front matter: cover: {p}" for p in exc.problems]
    assets: dict[str, AssetData] = {}

    def rewrite(match: re.Match[str]) -> str:
        src = match.group(2)
        if src.startswith(("http://", "https://", "//")):
            problems.append(f"{name}: body: image {src!r} is remote; put the file next to the article "
                            "and link it by a relative path")
            return match.group(0)
        try:
            asset = load_image(_unquote(src), images, max_image_bytes)
        except BadInput as exc:
            problems.extend(f"{name}: body: image {src!r}: {p}" for p in exc.problems)
            return match.group(0)
        assets[asset.sha256] = asset
        return f'{match.group(1)}{ASSET_SCHEME}{asset.sha256}"'

    html = re.sub(r'(<img\b[^>]*?\bsrc=")([^"]*)"', rewrite, html)
    if problems:
        raise BadInput(problems)
    clean = sanitize(html)
    return ArticleDraft(
        slug=fm.slug or default_slug, title=fm.title, summary=fm.summary,
        author=fm.author, unit=fm.unit, tags=tuple(fm.tags), body_source=body, body_html=clean,
        cover=cover, assets=tuple(assets.values()),
        publish_at=_aware(fm.publish_at, tz) if fm.publish_at else None,
        expires_at=_aware(fm.expires_at, tz) if fm.expires_at else None,
        source=name, slug_given=fm.slug is not None,
    )


def _yaml_value(v: Any) -> Any:
    """YAML gives dates as `date`; treat a bare date as midnight."""
    if isinstance(v, date) and not isinstance(v, datetime):
        return datetime.combine(v, time())
    return v


def _unquote(src: str) -> str:
    from urllib.parse import unquote

    return unquote(src)


def sanitize(html: str) -> str:
    """Defence in depth for stored bodies: only the allowed tags, attributes and URL schemes."""
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                     url_schemes={"http", "https", "mailto", ASSET_SCHEME.rstrip(":")},
                     link_rel="noopener noreferrer")


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in FORBIDDEN_TAGS:
            self.found.append((f"<{tag}>", f"<{tag}"))
        for attr, value in attrs:
            if attr.startswith("on"):
                self.found.append((f"the {attr}= attribute on <{tag}>", attr))
            if attr in ("href", "src", "action", "formaction", "xlink:href") and value:
                squashed = re.sub(r"[\s\x00-\x1f]", "", value).lower()
                if squashed.startswith(FORBIDDEN_SCHEMES):
                    self.found.append((f"a {squashed.split(':')[0]}: URL in <{tag} {attr}>", value[:20]))


def hostile_markup(html: str, source: str) -> list[str]:
    """Name each element or attribute that could run code, with its line in the source."""
    scanner = _Scanner()
    scanner.feed(html)
    problems = []
    for what, needle in scanner.found:
        line = next((i for i, text in enumerate(source.splitlines(), 1) if needle.lower() in text.lower()), None)
        where = f" (body line {line})" if line else ""
        problems.append(f"{what} is not allowed in an article{where}")
    return problems


def load_image(name: str, images: Callable[[str], bytes], max_bytes: int) -> AssetData:
    """Read and check one image: it must exist, decode, be a web format and fit the limit."""
    path = Path(name)
    try:
        data = images(name)
    except OSError as exc:
        raise BadInput([f"cannot read {name}: {exc.strerror or exc}"]) from None
    if len(data) > max_bytes:
        raise BadInput([f"{path.name} is {len(data):,} bytes, over the limit of {max_bytes:,} bytes"])
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInput([f"{path.name} is not a readable image ({exc.__class__.__name__})"]) from None
    if fmt not in IMAGE_FORMATS:
        raise BadInput([f"{path.name} is {fmt}; use JPEG, PNG, GIF or WebP"])
    return AssetData(sha256=hashlib.sha256(data).hexdigest(), mime=IMAGE_FORMATS[fmt], filename=path.name,
                     size=len(data), width=width, height=height, data=data)
