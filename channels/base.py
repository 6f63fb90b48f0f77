"""What a channel is.

A channel type is a class with capabilities as class attributes (so pages can list them without
building an instance), a pure `render` that turns an article snapshot into a `Rendition`, and
I/O-only `deliver` (plus `update` / `retract` where the flags say so) that return a `Receipt` or
raise one of the classified errors in `channels.errors`.

Adapters never touch the database, Celery or the state machine. They receive a rendition, their
validated settings and injected ports (`Ports`: where public files go and how they are reached,
templates, clock). The rendition is stored on the delivery before the first attempt, so a retry
sends identical bytes and ops can see exactly what was sent.
"""
from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol
from zoneinfo import ZoneInfo

import jinja2
from pydantic import BaseModel, ConfigDict

#: Image sources in an article body point at stored assets as `asset:<sha256>`; render rewrites them.
ASSET_SCHEME = "asset:"
#: Attributes inside a tag; a quoted value may hold ">" (nh3 leaves it unescaped), so it is skipped whole.
_ATTRS = r"""(?:[^>"']|"[^"]*"|'[^']*')*?"""
#: An <img> whose quoted src is an asset marker: (the tag up to `src=`, quote, sha256, rest of the tag).
_ASSET_IMG = re.compile(r"(<img\b" + _ATTRS + r"\ssrc\s*=\s*)([\"'])" + re.escape(ASSET_SCHEME)
                        + r"([0-9a-fA-F]{64})\2(" + _ATTRS + ">)")


@dataclass(frozen=True)
class AssetRef:
    """An image stored with the article, addressed by the SHA-256 of its bytes."""

    sha256: str
    mime: str
    filename: str
    size: int
    width: int = 0
    height: int = 0

    @property
    def ext(self) -> str:
        return {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp"}.get(
            self.mime, ".bin"
        )

    @property
    def stored_name(self) -> str:
        return self.sha256 + self.ext


@dataclass(frozen=True)
class ArticleSnapshot:
    """One immutable revision of an article, as every channel's `render` sees it."""

    article_id: int
    slug: str
    revision: int
    content_hash: str
    title: str
    summary: str
    #: Sanitised HTML; images as `<img src="asset:<sha256>">`.
    body_html: str
    author: str
    unit: str
    tags: tuple[str, ...]
    cover: AssetRef | None
    assets: tuple[AssetRef, ...]
    #: When revision 1 went out; RSS pubDate and page dates never move after that.
    first_published_at: datetime
    #: When this revision was made.
    revised_at: datetime
    publish_at: datetime | None = None
    expires_at: datetime | None = None
    correction_note: str | None = None
    canonical_url: str | None = None
    #: Set on the snapshot a retract delivery renders: why the article was withdrawn.
    retraction_reason: str | None = None

    def asset(self, sha256: str) -> AssetRef | None:
        for a in (*self.assets, *([self.cover] if self.cover else [])):
            if a.sha256 == sha256:
                return a
        return None


@dataclass(frozen=True)
class ImageRewrite:
    """What `rewrite_images` made of a body: the new HTML, the assets it shows (by sha256, first use
    first) and a warning per image it dropped."""

    html: str
    used: dict[str, AssetRef]
    warnings: list[str]


def rewrite_images(html: str, find: Callable[[str], AssetRef | None],
                   url_for: Callable[[AssetRef], str]) -> ImageRewrite:
    """Point every `<img src="asset:<sha256>">` at `url_for(asset)` (HTML-escaped here), or drop the
    whole tag with a warning when `find(sha256)` knows no such asset (pass `article.asset`).

    Pure. Render uses it to turn markers into the channel's URLs (or to normalise them, when
    `url_for` returns the marker); deliver uses it to swap kept markers for uploaded URLs.
    """
    used: dict[str, AssetRef] = {}
    warnings: list[str] = []

    def rewrite(match: re.Match[str]) -> str:
        head, quote, sha, tail = match.groups()
        asset = find(sha.lower())
        if asset is None:
            warnings.append(f"image {ASSET_SCHEME}{sha} is not attached to the article; dropped")
            return ""
        used.setdefault(asset.sha256, asset)
        return f"{head}{quote}{escape(url_for(asset))}{quote}{tail}"

    return ImageRewrite(_ASSET_IMG.sub(rewrite, html), used, warnings)


@dataclass(frozen=True)
class Rendition:
    """What a channel will send for one delivery: JSON-serialisable, stored before sending."""

    payload: dict[str, Any]
    warnings: tuple[str, ...] = ()
    #: Assets the deliver step must be able to read (sha256 list).
    assets: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Rendition:
        data = json.loads(text)
        return cls(payload=data["payload"], warnings=tuple(data.get("warnings", ())),
                   assets=tuple(data.get("assets", ())))


@dataclass(frozen=True)
class Receipt:
    """Proof the channel applied an operation: the remote's id and where readers find it."""

    remote_id: str
    remote_url: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    #: The channel accepted a job that finishes later; `remote_id` identifies the job until then.
    pending: bool = False


class MediaSource(Protocol):
    """Reads stored asset bytes by SHA-256 (the core injects one backed by its store)."""

    def read(self, sha256: str) -> bytes: ...


@dataclass(frozen=True)
class Attempt:
    """Facts about this try that an adapter may need; never a handle to the database."""

    delivery_id: int
    number: int
    #: The previous attempt ended without a known outcome: look at the remote before acting again.
    reconcile: bool
    #: What the remote already holds for this article (for update and retract): the newest id.
    remote_id: str | None
    media: MediaSource
    #: Every id the channel was given for this article (for update and retract), newest first,
    #: distinct: a correction that adds a post ("notice", "new_post") leaves more than one up. Ids a
    #: later operation already removed may be among them, so deleting one must treat "gone" as done.
    held_ids: tuple[str, ...] = ()

    def held(self) -> tuple[str, ...]:
        """`remote_id`, then the rest of `held_ids`: every id to act on, newest first, no blanks."""
        return tuple(dict.fromkeys(i for i in (self.remote_id, *self.held_ids) if i))


@dataclass(frozen=True)
class Ports:
    """Everything from the outside world an adapter may use, injected by the core."""

    public_dir: Path
    #: Public base URL where `public_dir` is served, or None (readers then get file:// URLs).
    site_url: str | None
    templates: jinja2.Environment
    timezone: ZoneInfo
    clock: Callable[[], datetime]
    #: The shared token cache (syndicator.tokens.TokenCache): get/set/delete and a refresh lock.
    tokens: Any = None
    #: Folder of config.yaml: relative file paths in channel settings resolve against it.
    base_dir: Path = Path(".")

    def config_path(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p

    def public_url(self, relpath: str) -> str:
        """The URL a reader uses for a file under `public_dir`."""
        if self.site_url:
            return self.site_url + relpath.lstrip("/")
        return (self.public_dir / relpath).resolve().as_uri()


@dataclass(frozen=True)
class RenderContext:
    """The only source of time and environment `render` may use."""

    now: datetime
    ports: Ports


class ChannelSettings(BaseModel):
    """Base for each channel type's own settings model (the keys of its config.yaml entry)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Channel(ABC):
    """A channel type. Subclasses set the capability attributes and implement render/deliver."""

    #: Type name used in config.yaml (`type: rss`).
    name: ClassVar[str]
    display_name: ClassVar[str]
    supports_update: ClassVar[bool] = False
    supports_retract: ClassVar[bool] = False
    #: After an attempt with no known outcome, the adapter can find out whether it took effect.
    reconcilable: ClassVar[bool] = False
    #: deliver may return a pending receipt; `poll` (and a callback, where the channel has one)
    #: later reports the outcome.
    settles_async: ClassVar[bool] = False
    #: What `update` does with a correction: "in_place" (same id and URL), "new_post" (a separate
    #: correction post), "republish" (delete, then publish again: new URL) or "notice" (publish a
    #: correction notice); a type may let each instance choose (see `correction_strategy`).
    correction: ClassVar[str] = "in_place"
    max_title_chars: ClassVar[int | None] = None
    max_body_chars: ClassVar[int | None] = None
    #: Human-readable rate limit of the remote, if any.
    rate_limit: ClassVar[str | None] = None
    #: Optional Python packages the adapter needs.
    requires: ClassVar[tuple[str, ...]] = ()
    Settings: ClassVar[type[ChannelSettings]] = ChannelSettings

    def __init__(self, instance: str, settings: ChannelSettings, ports: Ports) -> None:
        self.instance = instance
        self.settings = settings
        self.ports = ports

    @abstractmethod
    def render(self, article: ArticleSnapshot, ctx: RenderContext) -> Rendition:
        """Turn a snapshot into what will be sent. Pure: no network, no files, no clock."""

    @abstractmethod
    def deliver(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Apply a publish. I/O only; raise a classified error on failure."""

    def update(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Apply a correction in place (only where `supports_update`)."""
        raise NotImplementedError(f"{self.name} does not support update")

    def retract(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Withdraw the article (only where `supports_retract`)."""
        raise NotImplementedError(f"{self.name} does not support retract")

    def poll(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Ask how a submitted job (`attempt.remote_id`) ended (only where `settles_async`).

        Return a pending receipt while it runs, a final receipt when done, or raise.
        """
        raise NotImplementedError(f"{self.name} does not settle asynchronously")

    def correction_strategy(self) -> str:
        """How this instance applies corrections (instances may override the class default)."""
        return self.correction

    def describe(self) -> dict[str, Any]:
        """Capabilities as a dict, for `syndicator channels` and the dashboard."""
        return {**capabilities(type(self)), "correction": self.correction_strategy()}


def capabilities(cls: type[Channel]) -> dict[str, Any]:
    return {
        "type": cls.name,
        "display_name": cls.display_name,
        "supports_update": cls.supports_update,
        "supports_retract": cls.supports_retract,
        "reconcilable": cls.reconcilable,
        "settles_async": cls.settles_async,
        "correction": cls.correction,
        "max_title_chars": cls.max_title_chars,
        "max_body_chars": cls.max_body_chars,
        "rate_limit": cls.rate_limit,
    }
