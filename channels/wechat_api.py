"""The WeChat OA API as the adapter uses it: wechatpy 1.8.18 pointed at `api_base`, one locked token
refresher shared by every worker through `ports.tokens`, and every vendor answer translated once
into `channels.errors` (contract §1.3, §1.8).

wechatpy is used for the wire (`client.post`, JSON without escapes, errcode → exception) with its
own token handling switched off: `auto_retry=False` (its 40001 retry recurses without limit) and the
token passed explicitly on every call, so no worker ever fetches a token behind the lock's back.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import requests
from urllib3.exceptions import NewConnectionError
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

from channels.errors import (AuthInvalid, ContentRejected, DeliveryError, NotFound, OutcomeUnknown,
                             PermanentError, RateLimited, Unavailable)

log = logging.getLogger(__name__)

#: Answers meaning "this access_token is no good": refresh once (locked), retry once.
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
#: A cached token is dropped this many seconds before WeChat says it expires.
TOKEN_MARGIN = 300
#: Uploaded images and covers are remembered by content hash this long (WeChat keeps them).
MEDIA_TTL = 30 * 86400
#: WeChat's quota day ends at midnight China Standard Time.
CST = ZoneInfo("Asia/Shanghai")

_AUTH = AuthInvalid
_CONTENT = ContentRejected
#: errcode → (error class, what it means). Token codes, 45009/45011 and −1 are handled in `classify`.
ERRORS: dict[int, tuple[type[DeliveryError], str]] = {
    40164: (_AUTH, "caller IP is not in the account's IP whitelist (mp.weixin.qq.com → 设置与开发 → 基本配置)"),
    40013: (_AUTH, "invalid appid"),
    40125: (_AUTH, "invalid appsecret"),
    40243: (_AUTH, "AppSecret is frozen"),
    41001: (_AUTH, "access_token missing"),
    41002: (_AUTH, "appid missing"),
    41004: (_AUTH, "appsecret missing"),
    50004: (_AUTH, "API use is forbidden for this account"),
    50007: (_AUTH, "the account is frozen"),
    48001: (_AUTH, "API unauthorized: draft/publish APIs need a verified (认证) service or subscription account"),
    48004: (_AUTH, "API is banned for this account"),
    50002: (_AUTH, "the account is limited"),
    43001: (_CONTENT, "wrong HTTP method (GET required) — an adapter bug"),
    43002: (_CONTENT, "wrong HTTP method (POST required) — an adapter bug"),
    44002: (_CONTENT, "empty request body — an adapter bug"),
    47001: (_CONTENT, "malformed JSON/XML — an adapter bug"),
    40002: (_CONTENT, "invalid grant_type — an adapter bug"),
    40097: (_CONTENT, "invalid argument — an adapter bug"),
    41005: (_CONTENT, "upload without media data — an adapter bug"),
    44003: (_CONTENT, "empty news data"),
    44004: (_CONTENT, "empty content"),
    45008: (_CONTENT, "too many articles in one draft"),
    40007: (_CONTENT, "invalid media_id (expired or deleted media / draft)"),
    40004: (_CONTENT, "invalid media type"),
    40005: (_CONTENT, "invalid file type (images must be JPEG or PNG)"),
    40006: (_CONTENT, "invalid media size"),
    40009: (_CONTENT, "image too large (in-article images must be < 1 MB)"),
    45001: (_CONTENT, "media too large"),
    45002: (_CONTENT, "content too long (< 20 000 characters and < 1 MB)"),
    45003: (_CONTENT, "title too long (≤ 32 characters)"),
    45004: (_CONTENT, "digest too long (≤ 128 characters)"),
    45110: (_CONTENT, "author too long (≤ 16 characters)"),
    45166: (_CONTENT, "invalid content: WeChat refuses hyperlinks outside mp.weixin.qq.com or this markup"),
    41039: (_CONTENT, "invalid content_source_url (阅读原文 link)"),
    40114: (_CONTENT, "invalid article index"),
    53404: (_CONTENT, "product card (带货) not allowed"),
    53405: (_CONTENT, "product card (带货) invalid"),
    53406: (_CONTENT, "product card (带货) invalid"),
    88000: (_CONTENT, "the account has no comment privilege; set need_open_comment: false"),
    53503: (_CONTENT, "the draft failed WeChat's publish check (该草稿未通过发布检查) — needs human review"),
    53504: (PermanentError, "this draft must be published on mp.weixin.qq.com (需前往公众平台官网使用草稿)"),
    53505: (PermanentError, "the draft must first be saved by hand on mp.weixin.qq.com (请手动保存成功后再发表)"),
    53600: (NotFound, "invalid article_id (the published article does not exist)"),
}
#: Query parameters whose values never reach a message or a log line.
_SECRET_QUERY = re.compile(r"((?:access_token|secret)=)[^&\s'\"]+", re.I)


def redact(text: str, *secrets: str) -> str:
    text = _SECRET_QUERY.sub(r"\1***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class _RedactQueryFilter(logging.Filter):
    """urllib3 logs request URLs at DEBUG; ours carry access_token (and, for classic tokens, secret)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


if not any(isinstance(f, _RedactQueryFilter) for f in logging.getLogger("urllib3.connectionpool").filters):
    logging.getLogger("urllib3.connectionpool").addFilter(_RedactQueryFilter())


def seconds_until_cst_midnight(now: datetime) -> float:
    local = now.astimezone(CST)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - local).total_seconds()


class _Client(WeChatClient):
    """wechatpy 1.8.18 aimed at `api_base`; the token is always passed in `params` by `WeChatAPI`."""

    def __init__(self, api_base: str, appid: str, secret: str, timeout: float, token_mode: str) -> None:
        self.API_BASE_URL = api_base.rstrip("/") + "/cgi-bin/"
        super().__init__(appid, secret, timeout=timeout, auto_retry=False)
        self.token_mode = token_mode

    def fetch_access_token(self) -> dict[str, Any]:
        """stable_token (POST JSON) or classic token (GET) against api_base, with a timeout."""
        if self.token_mode == "stable":
            body = json.dumps({"grant_type": "client_credential", "appid": self.appid, "secret": self.secret})
            res = self._http.post(self.API_BASE_URL + "stable_token", data=body.encode(), timeout=self.timeout)
        else:
            res = self._http.get(self.API_BASE_URL + "token", timeout=self.timeout, params={
                "grant_type": "client_credential", "appid": self.appid, "secret": self.secret})
        if res.status_code >= 400:
            raise WeChatClientException(None, None, client=self, request=res.request, response=res)
        return self._handle_result(res)


class WeChatAPI:
    """Calls for one account: tokens and media through the shared cache, errors classified."""

    def __init__(self, *, api_base: str, appid: str, secret: str, token_mode: str, timeout: float,
                 tokens: Any, clock: Callable[[], datetime]) -> None:
        self.api_base, self.appid, self.token_mode, self.timeout = api_base, appid, token_mode, timeout
        self._secret = secret
        self.tokens = tokens
        self.clock = clock
        self.lock_key = f"wechat:{appid}"
        self.token_key = f"wechat:{appid}:access_token"
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"WeChatAPI(api_base={self.api_base!r}, appid={self.appid!r})"

    @property
    def client(self) -> _Client:
        """One wechatpy client (and HTTP session) per thread."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = _Client(self.api_base, self.appid, self._secret, self.timeout,
                                                  self.token_mode)
        return client

    # -- tokens -----------------------------------------------------------------------------
    def access_token(self) -> str:
        return self._cache(self.tokens.get, self.token_key) or self.refresh_token(None)

    def refresh_token(self, stale: str | None) -> str:
        """Fetch a token under the shared lock, unless another worker already replaced `stale`."""
        with self._locked(self.lock_key):
            current = self._cache(self.tokens.get, self.token_key)
            if current and current != stale:
                return current
            try:
                result = self.client.fetch_access_token()
            except (WeChatClientException, requests.RequestException) as exc:
                raise self.classify(exc, "token" if self.token_mode == "classic" else "stable_token") from None
            token = result.get("access_token") if isinstance(result, dict) else None
            if not token:
                raise Unavailable(f"wechat token endpoint answered without access_token (HTTP "
                                  f"{getattr(result, 'status_code', 200)})")
            expires_in = float(result.get("expires_in") or 7200)
            self._cache(self.tokens.set, self.token_key, token, max(expires_in - TOKEN_MARGIN, expires_in / 2))
            log.info("wechat access token refreshed", extra={"appid": self.appid, "mode": self.token_mode})
            return token

    # -- calls --------------------------------------------------------------------------------
    def call(self, path: str, data: dict[str, Any] | None = None, *, files: dict[str, Any] | None = None,
             params: dict[str, str] | None = None, method: str = "post", ambiguous: bool = False,
             subject: str = "") -> dict[str, Any]:
        """One API call; on a token error a single locked refresh and one retry.

        `ambiguous`: the call is not idempotent, so an answer lost after sending is OutcomeUnknown.
        """
        token = self.access_token()
        try:
            return self._send(method, path, data, files, params, token, ambiguous, subject)
        except _TokenRejected:
            token = self.refresh_token(stale=token)
        try:
            return self._send(method, path, data, files, params, token, ambiguous, subject)
        except _TokenRejected as again:
            raise AuthInvalid(f"{path}: access_token rejected again right after a refresh — another process "
                              f"is rotating the token or the secret is wrong ({again.errmsg})",
                              code=again.errcode) from None

    def _send(self, method: str, path: str, data: Any, files: Any, params: dict[str, str] | None,
              token: str, ambiguous: bool, subject: str) -> dict[str, Any]:
        try:
            result = getattr(self.client, method)(path, data=data, files=files,
                                                  params={**(params or {}), "access_token": token})
        except WeChatClientException as exc:
            if exc.errcode in TOKEN_ERRORS:
                raise _TokenRejected(exc.errcode, redact(str(exc.errmsg))) from None
            raise self.classify(exc, path, ambiguous=ambiguous, subject=subject) from None
        except requests.RequestException as exc:
            raise self.classify(exc, path, ambiguous=ambiguous, subject=subject) from None
        if not isinstance(result, dict):
            what = f"HTTP {getattr(result, 'status_code', '?')} without a JSON body"
            if ambiguous:
                raise OutcomeUnknown(f"{path}: {what}; it may have been applied")
            raise Unavailable(f"{path}: {what}")
        return result

    def classify(self, exc: Exception, path: str, *, ambiguous: bool = False, subject: str = "") -> DeliveryError:
        """The error-tree member for a wechatpy or requests exception raised by `path`."""
        about = f" ({subject})" if subject else ""
        if isinstance(exc, WeChatClientException) and exc.errcode is not None:
            code = int(exc.errcode)
            errmsg = redact(str(exc.errmsg), self._secret)
            detail = f"errcode {code}: {errmsg}"
            if code == -1:
                return Unavailable(f"{path}: WeChat system busy; retry later — {detail}", code=code)
            if code == 45009:
                wait = seconds_until_cst_midnight(self.clock())
                return RateLimited(f"{path}: daily API quota reached; resets at 00:00 Asia/Shanghai "
                                   f"(in {wait:.0f}s) or via clear_quota — {detail}", retry_after=wait, code=code)
            if code == 45011:
                return RateLimited(f"{path}: per-minute API quota reached — {detail}", retry_after=60, code=code)
            if code in TOKEN_ERRORS:
                return AuthInvalid(f"{path}: access_token rejected — {detail}", code=code)
            cls, meaning = ERRORS.get(code, (PermanentError, "unclassified WeChat error"))
            return cls(f"{path}: {meaning}{about} — {detail}", code=code)
        if isinstance(exc, WeChatClientException):  # HTTP status >= 400 from wechatpy
            status = getattr(exc.response, "status_code", None)
            return self._http_error(path, status, ambiguous, about)
        text = redact(str(exc), self._secret)
        never_sent = isinstance(exc, requests.RequestException) and _never_sent(exc)
        if isinstance(exc, requests.ConnectionError | requests.Timeout) and not never_sent and ambiguous:
            return OutcomeUnknown(f"{path}: no answer after sending ({type(exc).__name__}: {text}); "
                                  "it may have been applied — reconcile before retrying")
        return Unavailable(f"{path}: {type(exc).__name__}: {text}")

    def _http_error(self, path: str, status: int | None, ambiguous: bool, about: str) -> DeliveryError:
        if status == 429:
            return RateLimited(f"{path}: HTTP 429 from a proxy in front of WeChat", retry_after=60, code=429)
        if status is not None and status >= 500:
            if ambiguous:
                return OutcomeUnknown(f"{path}: HTTP {status} after sending; it may have been applied — "
                                      "reconcile before retrying", code=status)
            return Unavailable(f"{path}: HTTP {status}{about}", code=status)
        return PermanentError(f"{path}: HTTP {status} — is api_base ({self.api_base}) right?", code=status)

    # -- media cached by content hash -----------------------------------------------------------
    def upload_image(self, sha: str, data: bytes, filename: str, mime: str) -> str:
        """`media/uploadimg` once per image content; returns the mmbiz URL for `<img src>`."""
        key = f"wechat:{self.appid}:uploadimg:{sha}"
        url = self._cache(self.tokens.get, key)
        if url:
            return url
        with self._locked(key):
            url = self._cache(self.tokens.get, key)
            if not url:
                result = self.call("media/uploadimg", files={"media": (filename, data, mime)},
                                   subject=f"image {filename}")
                url = result.get("url")
                if not url:
                    raise Unavailable(f"media/uploadimg answered without url for image {filename}")
                self._cache(self.tokens.set, key, url, MEDIA_TTL)
        return url

    def add_cover(self, sha: str, data: bytes, filename: str, mime: str, *, fresh: bool = False) -> str:
        """Permanent image material once per content (`fresh`: forget the cached media_id first)."""
        key = f"wechat:{self.appid}:material:{sha}"
        if fresh:
            self._cache(self.tokens.delete, key)
        media_id = self._cache(self.tokens.get, key)
        if media_id:
            return media_id
        with self._locked(key):
            media_id = self._cache(self.tokens.get, key)
            if not media_id:
                result = self.call("material/add_material", params={"type": "image"},
                                   files={"media": (filename, data, mime)}, subject=f"cover {filename}")
                media_id = result.get("media_id")
                if not media_id:
                    raise Unavailable(f"material/add_material answered without media_id for cover {filename}")
                self._cache(self.tokens.set, key, media_id, MEDIA_TTL)
        return media_id

    # -- the shared cache as a port ------------------------------------------------------------
    def remember(self, key: str, value: str, ttl: float) -> None:
        """Best effort: a note for a later reconcile; losing it only weakens that reconcile."""
        try:
            self.tokens.set(f"wechat:{self.appid}:{key}", value, ttl)
        except Exception as exc:  # noqa: BLE001 - a cache outage must not fail a delivery here
            log.warning("wechat: could not write %s to the token cache: %s", key, type(exc).__name__)

    def recall(self, key: str) -> str | None:
        return self._cache(self.tokens.get, f"wechat:{self.appid}:{key}")

    def _cache(self, op: Callable[..., Any], *args: Any) -> Any:
        try:
            return op(*args)
        except Exception as exc:  # noqa: BLE001 - Redis/file errors of the port, whatever their type
            raise Unavailable(f"token cache unavailable: {type(exc).__name__}: {redact(str(exc))}") from None

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """The shared refresh lock; a busy or unreachable lock is Unavailable (retry later)."""
        from syndicator.tokens import TokenLockTimeout

        held = ExitStack()
        try:
            held.enter_context(self.tokens.lock(key, timeout=self.timeout + 5))
        except TokenLockTimeout as exc:
            raise Unavailable(f"{exc}; another worker is refreshing it") from None
        except Exception as exc:  # noqa: BLE001 - Redis/file errors of the port, whatever their type
            raise Unavailable(f"token cache unavailable: {type(exc).__name__}: {redact(str(exc))}") from None
        with held:
            yield


class _TokenRejected(Exception):
    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(errcode, errmsg)
        self.errcode, self.errmsg = errcode, errmsg


def _never_sent(exc: requests.RequestException) -> bool:
    """The connection was never made (connect timeout, refused, DNS), so nothing was sent."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)  # includes NameResolutionError
