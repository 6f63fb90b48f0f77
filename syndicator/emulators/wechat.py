"""Emulator of the WeChat Official Account API (``/cgi-bin/…``), contract §1.

Covers access tokens (classic ``token`` with rotation + grace window, ``stable_token``), media
(``media/uploadimg``, ``material/add_material|del_material``), the draft box, free-publish with
its ``PUBLISHJOBFINISH`` push, mass send, and per-API daily/minute quotas (``clear_quota``,
``openapi/quota/get``). Errors are HTTP 200 with ``errcode``/``errmsg … rid: …``.

    emu = WeChatEmulator(WeChatSettings(callback_url="http://127.0.0.1:9/cb", publish_delay=0.1))
    base = EmulatorServer(emu).start()      # then point WeChatClient.API_BASE_URL at base + "/cgi-bin/"
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .base import Emulator
from .bodies import Part, is_multipart, parse_multipart, sniff_image
from .faults import Faults
from .ledger import Ledger
from .wechat_drafts import Drafts
from .wechat_errors import WeChatError, error_body
from .wechat_publish import Publisher

#: A valid EncodingAESKey (43 characters → 32-byte AES key) for tests and the sandbox.
DEFAULT_AES_KEY = base64.b64encode(b"syndicator-emulator-aes-key-32by").decode().rstrip("=")
#: uploadimg: jpg/png < 1 MB.
UPLOADIMG_MAX = 1024 * 1024
#: add_material type → (accepted sniffed kinds or None for "not checked", max bytes, size errcode).
MATERIAL_LIMITS: dict[str, tuple[tuple[str, ...] | None, int, int]] = {
    "image": (("jpeg", "png", "gif", "bmp"), 10 * 1024 * 1024, 40009),
    "thumb": (("jpeg",), 64 * 1024, 40009),
    "voice": (None, 2 * 1024 * 1024, 40006),
    "video": (None, 10 * 1024 * 1024, 40006),
}
#: Seconds to add to epoch time to get China Standard Time (quota days reset at 00:00 CST).
CST_OFFSET = 8 * 3600
_ESCAPE = re.compile(r"\\(.)", re.S)


@dataclass
class WeChatSettings:
    """Account, callback and behaviour settings (mutable at runtime)."""

    appid: str = "wx0123456789abcdef"
    secret: str = "0123456789abcdef0123456789abcdef"
    #: Original id (``gh_…``): ToUserName of pushed events.
    original_id: str = "gh_4d00ed8d6399"
    #: Developer callback that receives PUBLISHJOBFINISH; None = no push.
    callback_url: str | None = None
    callback_token: str = "syndicator"
    encoding_aes_key: str = DEFAULT_AES_KEY
    #: ``plain`` (signature only), ``aes`` (safe mode) or ``compat`` (plaintext fields + Encrypt).
    callback_mode: Literal["plain", "aes", "compat"] = "plain"
    callback_timeout: float = 5.0
    callback_tries: int = 3
    callback_retry_delay: float = 0.0
    #: Access-token lifetime (``expires_in``) and how long a rotated-out classic token keeps working.
    token_ttl: int = 7200
    token_grace: float = 300.0
    #: stable_token normal mode hands out a new token once fewer seconds than this remain.
    stable_refresh_before: float = 300.0
    stable_force_daily: int = 20
    stable_force_interval: float = 30.0
    #: Caller IPs allowed to use the API (None = any) → 40164.
    ip_whitelist: list[str] | None = None
    #: False = unverified/personal account: draft, publish and mass APIs answer 48001.
    api_authorized: bool = True
    comment_privilege: bool = True
    #: Keep ``\\uXXXX`` escapes literally, as WeChat does with ASCII-escaped JSON ("不要使用Unicode转义").
    literal_unicode_escapes: bool = True
    #: Per-API quotas, keyed by cgi path without ``/cgi-bin/`` (``"draft/add"``).
    default_daily_quota: int = 100_000
    daily_quota: dict[str, int] = field(default_factory=lambda: {"token": 2000, "stable_token": 500_000})
    minute_quota: dict[str, int] = field(default_factory=lambda: {"stable_token": 10_000})
    clear_quota_monthly: int = 10
    #: Seconds a publish job stays in status 1, its final status (0, 2, 3, 4) and fail_idx for 2/4.
    publish_delay: float = 2.0
    publish_outcome: int = 0
    publish_fail_idx: list[int] = field(default_factory=lambda: [1])
    max_articles: int = 8


@dataclass
class Token:
    kind: str
    issued_at: float
    expires_at: float
    #: Set when a newer token replaced this one; the token stops working at that time.
    invalid_after: float | None = None


@dataclass
class Endpoint:
    method: str
    handler: Callable[["Call"], dict[str, Any]]
    auth: bool = True
    #: Needs an authorized (verified) account.
    verified: bool = False


@dataclass
class Call:
    """One API call as handlers see it."""

    request: Request
    params: dict[str, str]
    body: bytes
    literal_escapes: bool = True

    def json(self) -> dict[str, Any]:
        """The raw UTF-8 JSON body (Content-Type is not required)."""
        if not self.body.strip():
            raise WeChatError(44002)
        try:
            text = self.body.decode("utf-8")
            if self.literal_escapes:
                text = _ESCAPE.sub(lambda m: "\\\\u" if m.group(1) == "u" else m.group(0), text)
            data = json.loads(text)
        except (UnicodeDecodeError, ValueError):
            raise WeChatError(47001) from None
        if not isinstance(data, dict):
            raise WeChatError(47001)
        return data

    def media(self) -> Part:
        """The multipart field ``media`` (41005 when absent)."""
        ctype = self.request.headers.get("content-type")
        try:
            parts = parse_multipart(self.body, ctype) if is_multipart(ctype) else {}
        except ValueError:
            parts = {}
        if "media" not in parts or not parts["media"].data:
            raise WeChatError(41005)
        return parts["media"]


class WeChatEmulator(Emulator):
    """The WeChat OA API on one Starlette app; state lives in memory."""

    api = "wechat"
    default_error = -1

    def __init__(self, settings: WeChatSettings | None = None, ledger: Ledger | None = None,
                 faults: Faults | None = None) -> None:
        super().__init__(ledger, faults)
        self.settings = settings or WeChatSettings()
        self.drafts = Drafts(self)
        self.publisher = Publisher(self)
        self.reset_state()
        self.endpoints: dict[str, Endpoint] = {
            "token": Endpoint("GET", self._token, auth=False),
            "stable_token": Endpoint("POST", self._stable_token, auth=False),
            "media/uploadimg": Endpoint("POST", self._uploadimg),
            "material/add_material": Endpoint("POST", self._add_material),
            "material/del_material": Endpoint("POST", self._del_material),
            "clear_quota": Endpoint("POST", self._clear_quota),
            "openapi/quota/get": Endpoint("POST", self._quota_get),
        }
        for path, (method, handler) in {**self.drafts.endpoints(), **self.publisher.endpoints()}.items():
            self.endpoints[path] = Endpoint(method, handler, verified=True)

    def routes(self) -> list[BaseRoute]:
        return [Route("/cgi-bin/{path:path}", self._cgi, methods=["GET", "POST"])]

    def fault_response(self, code: int | str, path: str) -> Response:
        return JSONResponse(error_body(int(code)))

    def reset_state(self) -> None:
        self.tokens: dict[str, Token] = {}
        self.current: dict[str, str] = {}
        self.counters: dict[tuple[str, str, int], int] = {}
        self.stable_forces: dict[int, int] = {}
        self.last_force: float | None = None
        self.clears: dict[str, int] = {}
        self.materials: dict[str, dict[str, Any]] = {}
        self.images: set[str] = set()
        self.drafts.reset()
        self.publisher.reset()

    # -- Python helpers for tests -----------------------------------------------------------
    def issue_token(self) -> str:
        """A fresh classic token without an HTTP call (rotates like ``/token``)."""
        with self.lock:
            return self._issue("token", self.settings.token_grace)

    def expire_tokens(self) -> None:
        """Every token issued so far now answers 42001."""
        with self.lock:
            for info in self.tokens.values():
                info.expires_at = min(info.expires_at, self.clock.now())

    def next_publish_outcome(self, status: int, fail_idx: list[int] | None = None) -> None:
        """The next submitted job ends in ``status`` (0, 2, 3 or 4)."""
        with self.lock:
            self.publisher.outcomes.append((status, fail_idx or [1]))

    def ban(self, publish_id: str) -> None:
        self.publisher.ban(publish_id)

    def material_url(self, media_id: Any) -> str:
        item = self.materials.get(media_id) if isinstance(media_id, str) else None
        return item["url"] if item and item.get("url") else ""

    # -- dispatch -----------------------------------------------------------------------------
    async def _cgi(self, request: Request) -> Response:
        endpoint = self.endpoints.get(request.path_params["path"])
        if endpoint is None:
            return PlainTextResponse("404 Not Found", status_code=404)
        call = Call(request, dict(request.query_params), await request.body(),
                    self.settings.literal_unicode_escapes)
        try:
            with self.lock:
                self._gate(call, endpoint, "/cgi-bin/" + request.path_params["path"])
                return JSONResponse(endpoint.handler(call))
        except WeChatError as exc:
            return JSONResponse(exc.body())

    def _gate(self, call: Call, endpoint: Endpoint, path: str) -> None:
        if call.request.method != endpoint.method:
            raise WeChatError(43002 if endpoint.method == "POST" else 43001)
        ip = call.request.client.host if call.request.client else ""
        if self.settings.ip_whitelist is not None and ip not in self.settings.ip_whitelist:
            raise WeChatError(40164, hint=ip)
        if endpoint.auth:
            self.check_token(call.params.get("access_token"))
        if endpoint.verified and not self.settings.api_authorized:
            raise WeChatError(48001)
        self._count(path)

    def check_token(self, token: str | None) -> None:
        """41001 missing, 40001 unknown or rotated out, 42001 expired."""
        if not token:
            raise WeChatError(41001)
        info = self.tokens.get(token)
        now = self.clock.now()
        if info is None:
            raise WeChatError(40001)
        if now >= info.expires_at:
            raise WeChatError(42001)
        if info.invalid_after is not None and now >= info.invalid_after:
            raise WeChatError(40001)

    # -- quotas -------------------------------------------------------------------------------
    def _limits(self, path: str) -> tuple[int, int | None]:
        key = path.removeprefix("/cgi-bin/")
        s = self.settings
        return s.daily_quota.get(key, s.default_daily_quota), s.minute_quota.get(key)

    def _windows(self) -> tuple[int, int]:
        now = self.clock.now()
        return int((now + CST_OFFSET) // 86400), int(now // 60)

    def _count(self, path: str) -> None:
        daily, per_minute = self._limits(path)
        day, minute = self._windows()
        if self.counters.get((path, "d", day), 0) >= daily:
            raise WeChatError(45009)
        if per_minute is not None and self.counters.get((path, "m", minute), 0) >= per_minute:
            raise WeChatError(45011)
        for key in ((path, "d", day), (path, "m", minute)):
            self.counters[key] = self.counters.get(key, 0) + 1

    def quota_used(self, path: str) -> int:
        """Calls counted today against ``path`` (``"draft/add"`` or ``"/cgi-bin/draft/add"``)."""
        path = path if path.startswith("/cgi-bin/") else "/cgi-bin/" + path
        return self.counters.get((path, "d", self._windows()[0]), 0)

    def _clear_quota(self, call: Call) -> dict[str, Any]:
        if call.json().get("appid") != self.settings.appid:
            raise WeChatError(40013)
        key = time.strftime("%Y-%m", time.gmtime(self.clock.now() + CST_OFFSET))
        if self.clears.get(key, 0) >= self.settings.clear_quota_monthly:
            raise WeChatError(48006)
        self.clears[key] = self.clears.get(key, 0) + 1
        self.counters.clear()
        self.record("clear_quota", id=self.settings.appid)
        return {"errcode": 0, "errmsg": "ok"}

    def _quota_get(self, call: Call) -> dict[str, Any]:
        path = call.json().get("cgi_path")
        if not isinstance(path, str) or path.removeprefix("/cgi-bin/") not in self.endpoints:
            raise WeChatError(40097, hint="cgi_path")
        path = path if path.startswith("/cgi-bin/") else "/cgi-bin/" + path
        daily, _ = self._limits(path)
        used = self.quota_used(path)
        return {"errcode": 0, "errmsg": "ok", "quota": {"daily_limit": daily, "used": used,
                                                       "remain": max(daily - used, 0)}}

    # -- tokens -------------------------------------------------------------------------------
    def _credentials(self, grant_type: Any, appid: Any, secret: Any) -> None:
        if grant_type != "client_credential":
            raise WeChatError(40002)
        if not appid:
            raise WeChatError(41002)
        if not secret:
            raise WeChatError(41004)
        if appid != self.settings.appid:
            raise WeChatError(40013)
        if secret != self.settings.secret:
            raise WeChatError(40125)

    def _issue(self, kind: str, grace: float | None) -> str:
        """Mint a token of ``kind``; the previous one dies after ``grace`` s (None = at its expiry)."""
        now = self.clock.now()
        old = self.current.get(kind)
        if old is not None and grace is not None:
            info = self.tokens[old]
            info.invalid_after = min(info.invalid_after or now + grace, now + grace)
        token = secrets.token_urlsafe(96 if kind == "token" else 144)
        self.tokens[token] = Token(kind, now, now + self.settings.token_ttl)
        self.current[kind] = token
        self.record(kind, id=token, body={"expires_in": self.settings.token_ttl, "replaced": old})
        return token

    def _token(self, call: Call) -> dict[str, Any]:
        p = call.params
        self._credentials(p.get("grant_type"), p.get("appid"), p.get("secret"))
        token = self._issue("token", self.settings.token_grace)
        return {"access_token": token, "expires_in": self.settings.token_ttl}

    def _stable_token(self, call: Call) -> dict[str, Any]:
        data = call.json()
        self._credentials(data.get("grant_type"), data.get("appid"), data.get("secret"))
        s, now = self.settings, self.clock.now()
        current = self.tokens.get(self.current.get("stable_token", ""))
        if data.get("force_refresh"):
            day = self._windows()[0]
            if self.stable_forces.get(day, 0) >= s.stable_force_daily:
                raise WeChatError(45009)
            if self.last_force is not None and now - self.last_force < s.stable_force_interval:
                raise WeChatError(45011)
            self.stable_forces[day] = self.stable_forces.get(day, 0) + 1
            self.last_force = now
            token = self._issue("stable_token", 0.0)
        elif current is None or current.expires_at - now <= s.stable_refresh_before:
            token = self._issue("stable_token", None)
        else:
            token = self.current["stable_token"]
        return {"access_token": token, "expires_in": int(self.tokens[token].expires_at - now)}

    # -- media --------------------------------------------------------------------------------
    def _uploadimg(self, call: Call) -> dict[str, Any]:
        media = call.media()
        kind = sniff_image(media.data)
        if kind not in ("jpeg", "png"):
            raise WeChatError(40005)
        if len(media.data) >= UPLOADIMG_MAX:
            raise WeChatError(40009)
        url = _image_url(kind)
        self.images.add(url)
        self.record("media/uploadimg", id=url, body=_meta(media))
        return {"url": url, "errcode": 0, "errmsg": "ok"}

    def _add_material(self, call: Call) -> dict[str, Any]:
        mtype = call.params.get("type")
        if mtype not in MATERIAL_LIMITS:
            raise WeChatError(40004)
        media = call.media()
        kinds, limit, size_error = MATERIAL_LIMITS[mtype]
        kind = sniff_image(media.data)
        if kinds is not None and kind not in kinds:
            raise WeChatError(40005)
        if len(media.data) > limit:
            raise WeChatError(size_error)
        media_id = secrets.token_urlsafe(32)
        item = {"type": mtype, **_meta(media)}
        if mtype == "image":
            item["url"] = _image_url(kind or "jpeg")
        self.materials[media_id] = item
        self.record("material/add_material", id=media_id, body=item)
        return {"media_id": media_id, "url": item["url"]} if "url" in item else {"media_id": media_id}

    def _del_material(self, call: Call) -> dict[str, Any]:
        media_id = call.json().get("media_id")
        if not isinstance(media_id, str) or self.materials.pop(media_id, None) is None:
            raise WeChatError(40007)
        self.record("material/del_material", id=media_id)
        return {"errcode": 0, "errmsg": "ok"}


def _image_url(kind: str) -> str:
    ext = "jpg" if kind == "jpeg" else kind
    return f"http://mmbiz.qpic.cn/mmbiz_{ext}/{secrets.token_urlsafe(40)}/0?wx_fmt={kind}"


def _meta(part: Part) -> dict[str, Any]:
    return {"filename": part.filename, "content_type": part.content_type, "size": len(part.data),
            "sha256": hashlib.sha256(part.data).hexdigest()}


def create_app(settings: WeChatSettings | None = None, ledger: Ledger | None = None):
    """App factory: ``create_app(settings).state.emulator`` is the ``WeChatEmulator``."""
    return WeChatEmulator(settings, ledger).app
