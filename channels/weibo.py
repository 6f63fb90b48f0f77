"""Weibo (微博): each article becomes one status posted with `2/statuses/share` (contract §2).

A status is 【标题】摘要 followed by the article link, at most 140 字 as Weibo counts them
(`weibo_length`). The summary is shortened to fit; the link is never cut. Weibo accepts the post
only if the link is on the app's 安全域名 (`safe_domain`).

Weibo has no edit API (contract §2.4), so `update` applies a correction as a new post
(`correction = "new_post"`): a snapshot with a correction note renders 【更正】【标题】说明 <link>, and
`update` shares it, then, with `delete_on_correction`, deletes the old post. A correction never
fails because the old post cannot be deleted (destroy closed to the app, or its id unknown): the
receipt then says `old_post_kept` and where a person deletes it by hand (`manual_delete_url`).

`retract` uses `2/statuses/destroy` on every post the channel holds for the article (the original
and any 【更正】 posts a correction kept; one already gone counts as deleted). Ordinary apps may not
be allowed to call it. In that case a person must delete the post by hand: `ManualRemovalRequired`,
a `ManualActionRequired` carrying the post's URL (naming every such post), which the core turns
into a manual task.

Receipts carry the status object's `idstr` as remote_id and `https://weibo.com/<user.idstr>/<idstr>`
as remote_url.

Weibo has no idempotency key. The core stores the rendition before the first attempt, so every
retry sends the identical status, and Weibo answers a repeat of the account's last post with
20019. When a share fails after it was sent (timeout, broken connection, 5xx), the outcome is
unknown (`UnavailableAfterSend`) and the core retries with `attempt.reconcile`. On that retry 20019
(or the "similar content" 20017) means the earlier attempt was posted. Weibo does not say which
post matched, so the receipt's remote_id is `UNKNOWN_ID` with `detail={"already_posted": True}`.
A later retract of that post needs a person. `update` reconciles the same way.

Counting and cutting status text live in `channels.weibo_text`; the translation of Weibo's answers
into `channels.errors` lives in `channels.weibo_errors`.
"""
from __future__ import annotations

import html
import ipaddress
import logging
import re
import threading
from dataclasses import replace
from typing import Any, TypeGuard
from urllib.parse import quote, urlsplit

import requests
from pydantic import AwareDatetime, Field, SecretStr, field_validator, model_validator

from channels.base import (ArticleSnapshot, Attempt, Channel, ChannelSettings, Ports, Receipt,
                           RenderContext, Rendition)
from channels.errors import (AuthInvalid, ContentRejected, DeliveryError, ManualActionRequired, OutcomeUnknown,
                             PermanentError, Unavailable)
# ERRORS, UnavailableAfterSend, ELLIPSIS, URL_UNITS, URL_MAX_UNITS and _shorten are only re-exported:
# they were importable from this module before weibo_errors and weibo_text were split off.
from channels.weibo_errors import (DUPLICATE, ERRORS, GONE, SERVER_SLOW, Answer,  # noqa: F401
                                   ManualRemovalRequired, UnavailableAfterSend, http_error, transport_error,
                                   vendor_error)
from channels.weibo_text import (ELLIPSIS, LINK, MAX_CHARS, URL_MAX_UNITS, URL_UNITS, longest,  # noqa: F401
                                 on_domain, one_line, shorten, weibo_length)
from channels.weibo_text import shorten as _shorten  # noqa: F401

log = logging.getLogger(__name__)

#: remote_id of a post Weibo says exists (20019/20017 on a reconciling retry, 20032) without giving its id.
UNKNOWN_ID = "unknown"
#: Picture types statuses/share accepts, with the file extension sent, and the size bound (< 5 MB).
PIC_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif"}
MAX_PIC_BYTES = 5 * 1024 * 1024
#: Template of the status text, under the templates directory.
TEMPLATE = "weibo/status.txt"
#: Default article link: the micro-site page (config.yaml serves the micro-site under `m/`).
DEFAULT_LINK = "m/a/{slug}.html"
SHARE = "2/statuses/share.json"
DESTROY = "2/statuses/destroy.json"


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


class WeiboChannel(Channel):
    """Posts each article as one Weibo status with a link to the article, a correction as a new
    【更正】 status (deleting the old one), and deletes every post it made for the article on retract."""

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
            if not LINK.fullmatch(value.replace("{slug}", "slug")):
                raise ValueError("must be an absolute http(s) URL that Weibo recognises as a link")
            return value if "{slug}" in value or value.endswith("/") else value + "/"

        @field_validator("rip")
        @classmethod
        def _ip(cls, value: str) -> str:
            return str(ipaddress.ip_address(value.strip()))

        @model_validator(mode="after")
        def _link_on_safe_domain(self) -> WeiboChannel.Settings:
            if self.link_base and not on_domain(self.link_base.replace("{slug}", "slug"), self.safe_domain):
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
        title = one_line(article.title)
        if correction:
            text = one_line(article.correction_note or "")
        else:
            text = one_line(article.summary)
            if not text:
                text = one_line(html.unescape(re.sub(r"<[^>]+>", " ", article.body_html)))[:400]
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
            keep = longest(lambda k: fits(title, shorten(text, k)), len(text))
            if keep is not None:
                warnings.append(f"summary truncated to fit {MAX_CHARS} 字 "
                                f"(kept {keep} of {len(text)} characters)")
                text = shorten(text, keep)
            else:
                keep = longest(lambda k: fits(shorten(title, k), ""), len(title))
                if keep is None:
                    raise ContentRejected(f"weibo {self.instance}: the link {link} alone is longer than "
                                          f"{MAX_CHARS} 字")
                warnings.append(f"summary dropped and title truncated to fit {MAX_CHARS} 字")
                title, text = shorten(title, keep), ""
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
        if not LINK.fullmatch(url) or not on_domain(url, self.settings.safe_domain):
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
        """Delete every post held for the article (`attempt.held()`, newest first): the post, and the
        【更正】 posts and corrected posts that `delete_on_correction: false` (or a refused delete) kept.

        A post already gone (20101) counts as deleted, so a retry finishes what a crash interrupted.
        A post Weibo will not delete for this app, or whose id is unknown, does not stop the others:
        once they are done, `ManualRemovalRequired` names each post a person must delete (and what
        was deleted), with the first one's URL."""
        deleted: list[str] = []
        gone: list[str] = []
        by_hand: list[ManualRemovalRequired] = []
        held = attempt.held() or (attempt.remote_id,)
        for remote_id in held:
            if not _known(remote_id):
                by_hand.append(ManualRemovalRequired(
                    f"weibo {self.instance}: the post's id is unknown ({remote_id!r}; Weibo reported it as posted "
                    "without an id), so it cannot be deleted through the API; a person must find it on the "
                    "account's timeline and delete it by hand", url=None))
                continue
            try:
                (gone if self._destroy(remote_id) else deleted).append(remote_id)
            except ManualRemovalRequired as exc:
                by_hand.append(exc)
        if by_hand:
            raise _by_hand(by_hand, deleted, gone)
        return Receipt(remote_id=str(held[0]), detail={"deleted": deleted, "already_gone": gone})

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
              share: bool) -> Answer:
        """POST form fields (multipart if there are files) with the token in the body, never the URL."""
        url = self.settings.api_base + endpoint
        data = {**fields, "access_token": self.settings.access_token.get_secret_value()}
        try:
            resp = self._session().post(url, data=data, files=files, timeout=self.settings.timeout)
        except requests.RequestException as exc:
            raise transport_error(exc, f"weibo {self.instance}", url, share=share, timeout=self.settings.timeout,
                                  detail=self._redact(f"{type(exc).__name__}: {exc}")) from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        answer = Answer(resp.status_code, body if isinstance(body, dict) else None, resp.headers)
        if answer.code is not None or (answer.body is not None and 200 <= resp.status_code < 300):
            return answer  # a result, or Weibo's own error, which the caller reads for its operation
        raise http_error(answer, f"weibo {self.instance}: {url}", share=share, clock=self.ports.clock)

    def _posted(self, answer: Answer) -> tuple[Receipt, str | None]:
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

    def _error(self, answer: Answer, endpoint: str, *, share: bool) -> DeliveryError:
        """The classified error for a Weibo error answer (contract §2.2)."""
        return vendor_error(answer, f"weibo {self.instance}: {endpoint}", text=self._vendor_text(answer), share=share,
                            safe_domain=self.settings.safe_domain, clock=self.ports.clock)

    def _vendor_text(self, answer: Answer) -> str:
        return self._redact(str((answer.body or {}).get("error", "")))

    def _redact(self, text: str) -> str:
        token = self.settings.access_token.get_secret_value()
        return text.replace(token, "***") if token else text


def _by_hand(posts: list[ManualRemovalRequired], deleted: list[str], gone: list[str]) -> ManualRemovalRequired:
    """One `ManualRemovalRequired` for a retract: the single post's own error, or every post a person
    must delete, plus what the API did delete, so the manual task says exactly what is left."""
    if len(posts) == 1 and not deleted and not gone:
        return posts[0]
    done = "; ".join(f"{what}: {', '.join(ids)}" for what, ids in (("deleted", deleted), ("already gone", gone))
                     if ids)
    text = f"{len(posts)} post(s) must be deleted by hand: " + " | ".join(str(p) for p in posts)
    first = next((p for p in posts if p.url), posts[0])
    return ManualRemovalRequired(text + (f" ({done})" if done else ""), url=first.url, code=first.code)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
