"""Weibo (微博): each article becomes one status posted with `2/statuses/share` (contract §2).

A status is 【标题】摘要 followed by the article link, at most 140 字 as Weibo counts them
(`weibo_length`). The summary is shortened to fit; the link is never cut. Weibo accepts the post
only if the link is on the app's 安全域名 (`safe_domain`).

Weibo has no edit API (contract §2.4), so `update` applies a correction as a new post
(`correction = "new_post"`): a snapshot with a correction note renders 【更正】【标题】说明 <link>, and
`update` shares it, then, with `delete_on_correction`, deletes the old post. A correction never
fails because the old post cannot be deleted (destroy closed to the app, or its id unknown): the
receipt then says `old_post_kept` and where a person deletes it by hand (`manual_delete_url`).

`retract` uses `2/statuses/destroy`. Ordinary apps may not be allowed to call it. In that case a
person must delete the post by hand: `ManualRemovalRequired`, a `ManualActionRequired` carrying the
post's URL, which the core turns into a manual task.

Receipts carry the status object's `idstr` as remote_id and `https://weibo.com/<user.idstr>/<idstr>`
as remote_url.

Weibo has no idempotency key. The core stores the rendition before the first attempt, so every
retry sends the identical status, and Weibo answers a repeat of the account's last post with
20019. When a share fails after it was sent (timeout, broken connection, 5xx), the outcome is
unknown (`UnavailableAfterSend`) and the core retries with `attempt.reconcile`. On that retry 20019
(or the "similar content" 20017) means the earlier attempt was posted. Weibo does not say which
post matched, so the receipt's remote_id is `UNKNOWN_ID` with `detail={"already_posted": True}`.
A later retract of that post needs a person. `update` reconciles the same way.
"""
from __future__ import annotations

import html
import ipaddress
import logging
import math
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeGuard
from urllib.parse import quote, urlsplit

import requests
from pydantic import AwareDatetime, Field, SecretStr, field_validator, model_validator
from urllib3.exceptions import NewConnectionError

from channels.base import (ArticleSnapshot, Attempt, Channel, ChannelSettings, Ports, Receipt,
                           RenderContext, Rendition)
from channels.errors import (AuthInvalid, ContentRejected, DeliveryError, ManualActionRequired, OutcomeUnknown,
                             PermanentError, RateLimited, Unavailable)

log = logging.getLogger(__name__)

#: The statuses/share limit in 字, as `weibo_length` counts them (contract §2.1).
MAX_CHARS = 140
#: Half-width units one link counts for, if it is at most URL_MAX_UNITS long. A longer link adds the excess.
URL_UNITS = 20
URL_MAX_UNITS = 140
#: remote_id of a post Weibo says exists (20019/20017 on a reconciling retry, 20032) without giving its id.
UNKNOWN_ID = "unknown"
#: Appended where the summary (or title) was cut.
ELLIPSIS = "…"
#: Picture types statuses/share accepts, with the file extension sent, and the size bound (< 5 MB).
PIC_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif"}
MAX_PIC_BYTES = 5 * 1024 * 1024
#: Template of the status text, under the templates directory.
TEMPLATE = "weibo/status.txt"
#: Default article link: the micro-site page (config.yaml serves the micro-site under `m/`).
DEFAULT_LINK = "m/a/{slug}.html"
SHARE = "2/statuses/share.json"
DESTROY = "2/statuses/destroy.json"

#: A link as Weibo's counter recognises it (WeCase's pattern, plus https and hyphens in host names).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_URL = re.compile(rf"https?://{_LABEL}(?:\.{_LABEL})+[-A-Za-z0-9_$.+!*()/\\,:@&=?~#%]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Characters dropped from the end of a cut summary before the ellipsis.
_SOFT_END = " ，、；：。,.;:（(《“‘【["
#: Characters that join the one before them (combining marks are checked separately).
_JOINERS = {"\u200d", "\ufe0e", "\ufe0f", *map(chr, range(0x1F3FB, 0x1F400))}

_REAUTH = "the access token is expired or revoked: the account must be re-authorised (OAuth) and the new " \
          "token put in the configuration"
#: Weibo error_code → (error class, what it means here). Contract §2.2.
ERRORS: dict[int, tuple[type[DeliveryError], str]] = {
    **dict.fromkeys((10001, 10002, 10003, 10009, 10010, 10011), (Unavailable, "Weibo is failing or busy")),
    **dict.fromkeys((10022, 10023, 10024, 20016), (RateLimited, "rate limit reached")),
    **dict.fromkeys((21327, 21332, 21301, *range(21314, 21320)), (AuthInvalid, _REAUTH)),
    21321: (AuthInvalid, "the app is unaudited and over its user limit: fix the app on open.weibo.com"),
    10014: (AuthInvalid, "the app lacks permission for this API: fix the app on open.weibo.com"),
    **dict.fromkeys((10006, 10008, 10016, 10017, 10018),
                    (ContentRejected, "Weibo refused the request (an adapter or configuration bug)")),
    20005: (ContentRejected, "the cover image was refused: unsupported image type (JPEG, GIF or PNG only)"),
    20006: (ContentRejected, "the cover image was refused: image too large"),
    20007: (ContentRejected, "the cover image was refused: no image in the multipart body"),
    20012: (ContentRejected, "the status is too long for Weibo (over 140 字)"),
    **dict.fromkeys((20017, 20019), (ContentRejected, "duplicate: the account already posted this status")),
    20018: (ContentRejected, "moderation: the link was judged an illegal website; a person must look at it"),
    20020: (ContentRejected, "moderation: the status was judged advertising; a person must look at it"),
    20021: (ContentRejected, "moderation: the content was judged illegal; a person must look at it"),
    20022: (ContentRejected, "moderation: the posting IP was judged abnormal; a person must look at it"),
    20031: (ContentRejected, "moderation: Weibo asks for a captcha; a person must post or verify by hand"),
}
#: "Update success, server slow": the post was accepted, its id comes later (contract §2.2).
SERVER_SLOW = 20032
#: Repeat content: on a reconciling retry, the earlier attempt was posted.
DUPLICATE = (20017, 20019)
#: statuses/destroy: the post does not exist (any more), which is what retract wants.
GONE = 20101


class UnavailableAfterSend(Unavailable, OutcomeUnknown):
    """The share was sent, then the answer was lost or was a server failure.

    Weibo is failing (Unavailable: back off, count towards a breaker), and the post may have been
    applied (OutcomeUnknown: the next attempt must reconcile, which 20019 makes safe).
    """


class ManualRemovalRequired(ManualActionRequired):
    """Weibo will not delete this post for the app (or its id is unknown): a person must delete it,
    at `url` when the id is known. The core parks the delivery as a manual task."""


def weibo_length(text: str) -> int:
    """Length in 字 as Weibo counts it (contract §2.1).

    Each non-ASCII character counts 2 units, each ASCII character 1, and each http(s) link 20
    units (a link longer than 140 characters adds the excess). The result is ceil(units / 2).
    """
    units, pos = 0, 0
    for match in _URL.finditer(text):
        units += _units(text[pos:match.start()])
        size = len(match.group())
        units += URL_UNITS if size <= URL_MAX_UNITS else size - URL_MAX_UNITS + URL_UNITS
        pos = match.end()
    return math.ceil((units + _units(text[pos:])) / 2)


def _units(text: str) -> int:
    return sum(1 if ord(ch) < 128 else 2 for ch in text)


def _known(remote_id: str | None) -> TypeGuard[str]:
    """Whether `remote_id` is a real status id (not None or UNKNOWN_ID), which destroy can use."""
    return bool(remote_id) and remote_id.isdigit()


def profile_url(uid: str) -> str:
    """The account's timeline, where a person finds a post whose id is unknown."""
    return f"https://weibo.com/u/{uid}"


def post_url(idstr: str, uid: str | None = None) -> str:
    """Where readers find a post. Weibo's canonical URL is weibo.com/<uid>/<base62 mid>. The numeric
    id is accepted there too, and m.weibo.cn/status/<id> works without the uid [unverified]."""
    return f"https://weibo.com/{uid}/{idstr}" if uid else f"https://m.weibo.cn/status/{idstr}"


def _on_domain(url: str, domain: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == domain or host.endswith("." + domain)


def _plain(text: str) -> str:
    """One line of text: no control characters, whitespace runs collapsed."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _shorten(text: str, keep: int) -> str:
    """The first `keep` characters plus an ellipsis. A character sequence that joins (combining
    mark, ZWJ emoji) is never split. "" if nothing is left."""
    if keep >= len(text):
        return text
    while keep > 0 and (unicodedata.combining(text[keep]) or text[keep] in _JOINERS
                        or text[keep - 1] == "\u200d"):
        keep -= 1
    head = text[:keep].rstrip(_SOFT_END)
    return head + ELLIPSIS if head else ""


def _longest(fits: Callable[[int], bool], size: int) -> int | None:
    """The largest k in 0..size with fits(k) (binary search; fits grows with k), None if none."""
    if not fits(0):
        return None
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class _Answer:
    """One HTTP answer from Weibo: status and the JSON object, if the body was one."""

    status: int
    body: dict[str, Any] | None
    headers: Any

    @property
    def code(self) -> int | str | None:
        """error_code as an int (Weibo sometimes sends a string), None on success."""
        raw = self.body.get("error_code") if self.body else None
        if raw in (None, "", 0, "0"):
            return None
        try:
            return int(str(raw).strip())
        except ValueError:
            return str(raw)


class WeiboChannel(Channel):
    """Posts each article as one Weibo status with a link to the article, a correction as a new
    【更正】 status (deleting the old one), and deletes the post on retract."""

    name = "weibo"
    display_name = "微博"
    supports_update = True
    supports_retract = True
    reconcilable = True
    #: No edit API: a correction is a separate 【更正】 post (contract §2.4).
    correction = "new_post"
    #: The longest title a status keeps whole: 140 字 less 【】, the space and the link (10 字).
    max_title_chars = 127
    #: The whole status, link included, in 字 as `weibo_length` counts them.
    max_body_chars = MAX_CHARS
    rate_limit = "30 posts/hour per user"

    class Settings(ChannelSettings):
        #: The API root. Point it at the emulator in tests and the sandbox.
        api_base: str = "https://api.weibo.com/"
        #: The account's OAuth2 token. Write it as `${ENV}` in config.yaml. Redacted everywhere.
        access_token: SecretStr = Field(min_length=1)
        #: When the token expires (set on authorisation). After that, attempts fail fast.
        token_expires_at: AwareDatetime | None = None
        #: The app's 安全域名. Each post's link must be on it or on a subdomain of it.
        safe_domain: str
        #: Article link: `<link_base><slug>.html`, or link_base with `{slug}` replaced.
        #: Default: the micro-site page, ports.public_url("m/a/<slug>.html").
        link_base: str | None = None
        #: The end user's real IP (`rip`), which statuses/share requires.
        rip: str = "127.0.0.1"
        #: Send the article's cover as the post's picture.
        with_cover: bool = True
        #: Seconds to wait for Weibo (connect and read).
        timeout: float = Field(15, gt=0, le=300)
        #: After posting a correction, delete the post it corrects (statuses/destroy). Where Weibo
        #: will not, the old post stays and the receipt names it for deletion by hand.
        delete_on_correction: bool = True

        @field_validator("api_base")
        @classmethod
        def _api_base(cls, value: str) -> str:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an absolute http(s) URL")
            if parts.scheme == "http" and not _loopback(parts.hostname):
                raise ValueError("plain http would send the access token unencrypted; use https "
                                 "(http is only for an emulator on the loopback interface)")
            return value.rstrip("/") + "/"

        @field_validator("safe_domain")
        @classmethod
        def _domain(cls, value: str) -> str:
            value = value.strip().strip(".").lower()
            if not re.fullmatch(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?", value) or ".." in value:
                raise ValueError("must be a host name such as mzt.example.gov.cn (no scheme or path)")
            return value

        @field_validator("link_base")
        @classmethod
        def _link_base(cls, value: str | None) -> str | None:
            if value is None:
                return None
            if not _URL.fullmatch(value.replace("{slug}", "slug")):
                raise ValueError("must be an absolute http(s) URL that Weibo recognises as a link")
            return value if "{slug}" in value or value.endswith("/") else value + "/"

        @field_validator("rip")
        @classmethod
        def _ip(cls, value: str) -> str:
            return str(ipaddress.ip_address(value.strip()))

        @model_validator(mode="after")
        def _link_on_safe_domain(self) -> WeiboChannel.Settings:
            if self.link_base and not _on_domain(self.link_base.replace("{slug}", "slug"), self.safe_domain):
                raise ValueError(f"link_base {self.link_base} is not on safe_domain {self.safe_domain} "
                                 "(Weibo refuses posts whose link is off the app's 安全域名)")
            return self

    settings: WeiboChannel.Settings

    def __init__(self, instance: str, settings: ChannelSettings, ports: Ports) -> None:
        super().__init__(instance, settings, ports)
        self._local = threading.local()  # one requests.Session per worker thread

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        expires = self.settings.token_expires_at
        info["token_expires_at"] = expires.isoformat() if expires else None
        info["token_expired"] = bool(expires and self.ports.clock() >= expires)
        return info

    # -- render (pure) ---------------------------------------------------------------------------

    def render(self, article: ArticleSnapshot, ctx: RenderContext) -> Rendition:
        warnings: list[str] = []
        link = self.link(article.slug, ctx.ports)
        correction = bool(article.correction_note)
        title = _plain(article.title)
        if correction:
            text = _plain(article.correction_note or "")
        else:
            text = _plain(article.summary)
            if not text:
                text = _plain(html.unescape(re.sub(r"<[^>]+>", " ", article.body_html)))[:400]
                warnings.append("summary is empty; the status uses the start of the body")
        if "#" in title + text:  # "#…#" would make a 话题, which statuses/share refuses
            title, text = title.replace("#", "＃"), text.replace("#", "＃")
            warnings.append("'#' replaced by '＃' so Weibo does not read a #话题#")
        template = ctx.ports.templates.get_template(TEMPLATE)

        def status(title: str, text: str) -> str:
            return template.render(correction=correction, title=title, text=text, link=link).strip()

        def fits(title: str, text: str) -> bool:
            return weibo_length(status(title, text)) <= MAX_CHARS

        if not fits(title, text):
            keep = _longest(lambda k: fits(title, _shorten(text, k)), len(text))
            if keep is not None:
                warnings.append(f"summary truncated to fit {MAX_CHARS} 字 "
                                f"(kept {keep} of {len(text)} characters)")
                text = _shorten(text, keep)
            else:
                keep = _longest(lambda k: fits(_shorten(title, k), ""), len(title))
                if keep is None:
                    raise ContentRejected(f"weibo {self.instance}: the link {link} alone is longer than "
                                          f"{MAX_CHARS} 字")
                warnings.append(f"summary dropped and title truncated to fit {MAX_CHARS} 字")
                title, text = _shorten(title, keep), ""
        final = status(title, text)
        cover = self._cover(article, warnings)
        payload = {"status": final, "link": link, "length": weibo_length(final), "cover": cover}
        return Rendition(payload=payload, warnings=tuple(warnings),
                         assets=(cover["sha256"],) if cover else ())

    def link(self, slug: str, ports: Ports) -> str:
        """The article link the status ends with. It must be on the safe domain and be a link Weibo
        recognises whole, so that its length is counted as Weibo counts it."""
        quoted = quote(slug, safe="-_.~")
        base = self.settings.link_base
        if base is None:
            url = ports.public_url(DEFAULT_LINK.format(slug=quoted))
        elif "{slug}" in base:
            url = base.replace("{slug}", quoted)
        else:
            url = f"{base}{quoted}.html"
        if not _URL.fullmatch(url) or not _on_domain(url, self.settings.safe_domain):
            raise PermanentError(f"weibo {self.instance}: the article link {url} is not an http(s) link on "
                                 f"safe_domain {self.settings.safe_domain} (the app's 安全域名); "
                                 "set link_base or site.base_url")
        return url

    def _cover(self, article: ArticleSnapshot, warnings: list[str]) -> dict[str, str] | None:
        c = article.cover
        if c is None or not self.settings.with_cover:
            return None
        if c.mime not in PIC_TYPES:
            warnings.append(f"cover {c.filename} is {c.mime}; Weibo takes JPEG, GIF or PNG only, "
                            "so the status goes without a picture")
            return None
        if c.size >= MAX_PIC_BYTES:
            warnings.append(f"cover {c.filename} is {c.size} bytes; Weibo takes pictures under 5 MB only, "
                            "so the status goes without a picture")
            return None
        return {"sha256": c.sha256, "mime": c.mime}

    # -- I/O -------------------------------------------------------------------------------------

    def deliver(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Share the stored status exactly as rendered, with the cover as `pic` if there is one."""
        receipt, _uid = self._share(rendition, attempt)
        return receipt

    def update(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Apply a correction: share the stored 【更正】 status as a new post, then, with
        `delete_on_correction`, delete the post it corrects (`attempt.remote_id`).

        The new post is the correction; once it is up, the old one's fate never fails the update
        (a retry would only repost). If Weibo will not delete the old post, or its id is unknown, or
        the delete fails, the receipt's detail says `old_post_kept` with a `manual_delete_url`.
        """
        receipt, uid = self._share(rendition, attempt)
        old = attempt.remote_id
        detail: dict[str, Any] = {**receipt.detail, "old_post_id": old}
        if not self.settings.delete_on_correction:
            detail["old_post_deleted"] = False
        elif not _known(old):
            detail.update(old_post_kept=True, manual_delete_url=profile_url(uid) if uid else None,
                          delete_error=f"the old post's id is unknown ({old!r}), so it cannot be deleted "
                                       "through the API; a person must find it on the account's timeline")
        else:
            try:
                gone = self._destroy(old)
            except DeliveryError as exc:
                url = exc.url if isinstance(exc, ManualActionRequired) and exc.url else post_url(old)
                log.warning("weibo correction posted; the old post could not be deleted",
                            extra={"instance": self.instance, "delivery_id": attempt.delivery_id,
                                   "remote_id": old, "error": str(exc)})
                detail.update(old_post_kept=True, manual_delete_url=url, delete_error=str(exc))
            else:
                detail["old_post_deleted"] = True
                if gone:
                    detail["old_post_already_gone"] = True
        return replace(receipt, detail=detail)

    def _share(self, rendition: Rendition, attempt: Attempt) -> tuple[Receipt, str | None]:
        """statuses/share with the stored status; the receipt and the account's uid, if Weibo said.

        On a reconciling attempt, Weibo's "repeat content" means the earlier attempt was posted.
        """
        self._check_token()
        cover = rendition.payload.get("cover")
        files = None
        if cover:
            files = {"pic": (f"cover.{PIC_TYPES[cover['mime']]}", self._read(attempt, cover["sha256"]),
                             cover["mime"])}
        answer = self._post(SHARE, {"status": rendition.payload["status"], "rip": self.settings.rip},
                            files, share=True)
        code = answer.code
        if code is None:
            return self._posted(answer)
        text = self._vendor_text(answer)
        if code == SERVER_SLOW:
            log.warning("weibo accepted the status but is slow to store it",
                        extra={"instance": self.instance, "delivery_id": attempt.delivery_id})
            return Receipt(remote_id=UNKNOWN_ID, detail={"server_slow": True, "code": code, "error": text}), None
        if attempt.reconcile and code in DUPLICATE:
            log.warning("weibo reports the status as already posted; its id is unknown",
                        extra={"instance": self.instance, "delivery_id": attempt.delivery_id, "code": code})
            return Receipt(remote_id=UNKNOWN_ID, detail={"already_posted": True, "code": code, "error": text}), None
        raise self._error(answer, SHARE, share=True)

    def retract(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Delete the post. If it is already gone, that counts as success. If Weibo will not
        delete it, `ManualRemovalRequired` is raised."""
        remote_id = attempt.remote_id
        if not _known(remote_id):
            raise ManualRemovalRequired(
                f"weibo {self.instance}: the post's id is unknown ({remote_id!r}; Weibo reported it as posted "
                "without an id), so it cannot be deleted through the API; a person must find it on the "
                "account's timeline and delete it by hand", url=None)
        if self._destroy(remote_id):
            return Receipt(remote_id=remote_id, detail={"already_gone": True})
        return Receipt(remote_id=remote_id, detail={"deleted": True})

    # -- internals -------------------------------------------------------------------------------

    def _destroy(self, remote_id: str) -> bool:
        """statuses/destroy one post: False once deleted, True if it was already gone (20101).
        `ManualRemovalRequired` if Weibo will not delete it for this app."""
        self._check_token()
        answer = self._post(DESTROY, {"id": remote_id}, None, share=False)
        code = answer.code
        if code is None:
            return False
        if code == GONE:
            return True
        if code in (10014, 20102):
            url = post_url(remote_id)
            raise ManualRemovalRequired(
                f"weibo {self.instance}: Weibo will not delete the post for this app "
                f"({self._vendor_text(answer)}); a person must delete it by hand at {url}", url=url, code=code)
        raise self._error(answer, DESTROY, share=False)

    def _check_token(self) -> None:
        expires = self.settings.token_expires_at
        if expires is not None and self.ports.clock() >= expires:
            raise AuthInvalid(f"weibo {self.instance}: the access token expired at {expires.isoformat()} "
                              "(token_expires_at); the account must be re-authorised (OAuth) and the new token "
                              "put in the configuration. Nothing was sent")

    def _read(self, attempt: Attempt, sha256: str) -> bytes:
        try:
            return attempt.media.read(sha256)
        except LookupError as exc:
            raise ContentRejected(f"weibo {self.instance}: the cover {sha256} is not stored: {exc}") from exc
        except Exception as exc:  # nothing was sent yet, so any storage failure is worth a retry
            raise Unavailable(f"weibo {self.instance}: cannot read the cover {sha256}: {exc}") from exc

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["User-Agent"] = "syndicator-weibo"
        return session

    def _post(self, endpoint: str, fields: dict[str, str], files: dict[str, Any] | None, *,
              share: bool) -> _Answer:
        """POST form fields (multipart if there are files) with the token in the body, never the URL."""
        url = self.settings.api_base + endpoint
        data = {**fields, "access_token": self.settings.access_token.get_secret_value()}
        try:
            resp = self._session().post(url, data=data, files=files, timeout=self.settings.timeout)
        except requests.RequestException as exc:
            raise self._transport_error(exc, url, share) from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        answer = _Answer(resp.status_code, body if isinstance(body, dict) else None, resp.headers)
        if answer.code is not None or (answer.body is not None and 200 <= resp.status_code < 300):
            return answer  # a result, or Weibo's own error, which the caller reads for its operation
        raise self._http_error(answer, url, share)

    def _posted(self, answer: _Answer) -> tuple[Receipt, str | None]:
        body = answer.body or {}
        idstr = str(body.get("idstr") or body.get("id") or "")
        if not idstr:
            raise OutcomeUnknown(f"weibo {self.instance}: statuses/share answered HTTP {answer.status} "
                                 "without a post id; the status may have been posted")
        user = body.get("user") if isinstance(body.get("user"), dict) else {}
        uid = str(user.get("idstr") or user.get("id") or "") or None
        log.info("weibo status posted", extra={"instance": self.instance, "remote_id": idstr})
        return Receipt(remote_id=idstr, remote_url=post_url(idstr, uid),
                       detail={"mid": body.get("mid"), "created_at": body.get("created_at"),
                               "picture": body.get("original_pic")}), uid

    def _error(self, answer: _Answer, endpoint: str, *, share: bool) -> DeliveryError:
        """The classified error for a Weibo error answer (contract §2.2)."""
        code = answer.code
        text = self._vendor_text(answer)
        cls, meaning = ERRORS.get(code, (None, "")) if isinstance(code, int) else (None, "")
        if cls is None:  # not in the table: a server failure if 5xx, else for a person to read
            cls = Unavailable if answer.status >= 500 else PermanentError
            meaning = f"unrecognised Weibo error (HTTP {answer.status})"
        if code == 10017 and "domain" in text.lower():
            meaning += f"; the link must be on the app's 安全域名 (safe_domain {self.settings.safe_domain})"
        message = f"weibo {self.instance}: {endpoint}: {meaning} — Weibo says {text!r}"
        if cls is RateLimited:
            retry = self._next_window()
            return RateLimited(f"{message}; next window in {retry:.0f}s", retry_after=retry, code=code)
        if cls is Unavailable and share:
            cls = UnavailableAfterSend
        return cls(message, code=code)

    def _http_error(self, answer: _Answer, url: str, share: bool) -> DeliveryError:
        """An answer that is not Weibo's: a proxy or gateway page, or a success without JSON."""
        where = f"weibo {self.instance}: {url} answered HTTP {answer.status} without a Weibo JSON body"
        if answer.status == 429:
            retry = _retry_after(answer.headers) or self._next_window()
            return RateLimited(f"{where}; retry in {retry:.0f}s", retry_after=retry, code=429)
        if answer.status >= 500:
            cls = UnavailableAfterSend if share else Unavailable
            return cls(f"{where}{'; the status may have been posted' if share else ''}", code=answer.status)
        if 200 <= answer.status < 300:
            return OutcomeUnknown(f"{where}; the status may have been posted") if share \
                else Unavailable(where, code=answer.status)
        return PermanentError(f"{where}; check api_base", code=answer.status)

    def _transport_error(self, exc: requests.RequestException, url: str, share: bool) -> DeliveryError:
        detail = self._redact(f"{type(exc).__name__}: {exc}")
        if not _was_sent(exc):
            return Unavailable(f"weibo {self.instance}: cannot reach {url}: {detail}")
        what = f"no answer within {self.settings.timeout:g}s" if isinstance(exc, requests.Timeout) \
            else "the connection broke"
        if share:
            return UnavailableAfterSend(f"weibo {self.instance}: {what} after the status was sent to {url}; "
                                        f"it may have been posted: {detail}")
        return Unavailable(f"weibo {self.instance}: {what} from {url}: {detail}")

    def _vendor_text(self, answer: _Answer) -> str:
        return self._redact(str((answer.body or {}).get("error", "")))

    def _redact(self, text: str) -> str:
        token = self.settings.access_token.get_secret_value()
        return text.replace(token, "***") if token else text

    def _next_window(self) -> float:
        """Seconds until the next clock hour (Weibo's limits are hourly), at least a minute."""
        return max(60.0, 3600.0 - self.ports.clock().timestamp() % 3600)


def _retry_after(headers: Any) -> float | None:
    try:
        return max(float(headers.get("Retry-After", "")), 1.0)
    except (TypeError, ValueError):
        return None


def _was_sent(exc: requests.RequestException) -> bool:
    """False only when the request surely never left: no connection, TLS failure, bad URL."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError, requests.exceptions.ProxyError,
                        requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, NewConnectionError)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
