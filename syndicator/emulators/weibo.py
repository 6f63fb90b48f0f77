"""Emulator of the Weibo open API used for third-party sharing, contract §2.

``POST /2/statuses/share.json`` (form or multipart with ``pic``), ``POST /2/statuses/destroy.json``,
``POST /oauth2/get_token_info``. Errors are JSON ``{"request", "error_code", "error"}`` with HTTP
400 (403 for rate limits and permissions).

    emu = WeiboEmulator(WeiboSettings(safe_domains=["portal.example.cn"]))
    emu.add_token("tok", uid=42, ttl=86400)      # emu.expire_token("tok") → 21327
"""
from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .base import Emulator
from .bodies import is_multipart, parse_multipart, parse_urlencoded, sniff_image
from .faults import Faults
from .ledger import Ledger

#: error_code → error text (open.weibo.com/wiki/Error_code; 10017 texts seen in SDK issues).
ERRORS: dict[int, str] = {
    10001: "system error!",
    10002: "service unavailable!",
    10014: "Insufficient app permissions!",
    10016: "miss required parameter ({0}) , see doc for more info.",
    10017: "{0}",
    10020: "Request api not found!",
    10021: "HTTP method is not suported for this request!",
    10022: "IP requests out of rate limit!",
    10024: "User requests for ({0}) out of rate limit!",
    20005: "unsupported image type, only suport JPG, GIF, PNG!",
    20006: "image size too large.",
    20007: "does multipart has image?",
    20012: "Text too long, please input text less than 140 characters!",
    20016: "out of limit!",
    20019: "repeat content!",
    20101: "target weibo does not exist!",
    20102: "not your own weibo!",
    21301: "auth faild!",
    21327: "expired_token",
    21332: "invalid_access_token",
}
#: Codes answered with HTTP 403 (rate limits, permissions); everything else is 400.
FORBIDDEN_CODES = {10014, 10022, 10023, 10024, 20016}
#: Weibo's counter: URLs count this many half-width units (contract §2.1, WeCase TweetUtils).
URL_UNITS = 20
MAX_CHARS = 140
#: Timezone of ``created_at`` (Weibo renders +0800).
CST_OFFSET = 8 * 3600

_URL = re.compile(r"https?://[a-zA-Z0-9]+(?:\.[a-zA-Z0-9]+)+[-A-Z0-9a-z_$.+!*()/\\,:@&=?~#%]*")
_NON_ASCII = re.compile(r"[^\x00-\x80]")
_TOPIC = re.compile(r"#[^#]+#")


def weibo_length(text: str) -> int:
    """Length in 字 the way Weibo counts it (bug-for-bug port of WeCase, extended to https)."""
    total, rest = 0, text
    for url in _URL.findall(text):
        units = len(url) + len(_NON_ASCII.findall(url))
        if re.match(r"https?://t\.cn", url):
            continue
        if re.match(r"https?://(weibo\.com|weibo\.cn)", url) and units <= 41:
            total += units
        else:
            total += URL_UNITS if units <= 140 else units - 140 + URL_UNITS
        rest = rest.replace(url, "")
    return math.ceil((total + len(rest) + len(_NON_ASCII.findall(rest))) / 2)


class WeiboError(Exception):
    def __init__(self, code: int, arg: str = "") -> None:
        super().__init__(code, arg)
        self.code, self.arg = code, arg


@dataclass
class WeiboToken:
    """An OAuth2 user token; ``expires_at`` is epoch seconds on the emulator clock."""

    uid: int
    expires_at: float
    scope: str = ""
    created_at: float = field(default_factory=time.time)


@dataclass
class WeiboSettings:
    app_key: str = "3489623310"
    app_name: str = "syndicator"
    #: The app's 安全域名: every status must link to one of these (or a subdomain).
    safe_domains: list[str] = field(default_factory=lambda: ["example.com"])
    tokens: dict[str, WeiboToken] = field(default_factory=lambda: {
        "weibo-emulator-token": WeiboToken(uid=5000000001, expires_at=time.time() + 7 * 86400)})
    #: Posts per user per clock hour (→ 10024) and calls per caller IP per hour (→ 10022).
    user_hourly_posts: int = 30
    ip_hourly_requests: int = 15_000
    #: Minimum seconds between two posts of one user (→ 20016); 0 = off.
    min_post_interval: float = 0.0
    #: False = ``statuses/destroy`` is not open to this app (→ 10014).
    destroy_available: bool = True
    max_pic_bytes: int = 5 * 1024 * 1024
    #: Send ``error_code`` as a string, as some documented examples do.
    error_code_as_string: bool = False


@dataclass
class Status:
    id: int
    uid: int
    text: str
    created_at: float
    pic: dict[str, Any] | None = None
    deleted: bool = False


class WeiboEmulator(Emulator):
    """Weibo statuses/share + destroy + token info, state in memory."""

    api = "weibo"
    default_error = 10001

    def __init__(self, settings: WeiboSettings | None = None, ledger: Ledger | None = None,
                 faults: Faults | None = None) -> None:
        super().__init__(ledger, faults)
        self.settings = settings or WeiboSettings()
        self.reset_state()

    def routes(self) -> list[BaseRoute]:
        return [Route("/2/statuses/share.json", self._share, methods=["GET", "POST"]),
                Route("/2/statuses/destroy.json", self._destroy, methods=["GET", "POST"]),
                Route("/oauth2/get_token_info", self._token_info, methods=["GET", "POST"]),
                Route("/{path:path}", self._not_found, methods=["GET", "POST", "PUT", "DELETE"])]

    def fault_response(self, code: int | str, path: str) -> Response:
        return self._error(path, int(code), "")

    def reset_state(self) -> None:
        self.statuses: dict[int, Status] = {}
        self.by_user: dict[int, list[Status]] = {}
        self.ip_counts: dict[tuple[str, int], int] = {}
        self.user_posts: dict[int, list[float]] = {}
        self._next_id = 4_900_000_000_000_000 + secrets.randbelow(10**12)

    # -- Python helpers -----------------------------------------------------------------------
    def add_token(self, token: str, uid: int, ttl: float = 86400, scope: str = "") -> None:
        self.settings.tokens[token] = WeiboToken(uid, self.clock.now() + ttl, scope, self.clock.now())

    def expire_token(self, token: str) -> None:
        self.settings.tokens[token].expires_at = self.clock.now() - 1

    # -- plumbing -----------------------------------------------------------------------------
    def _error(self, path: str, code: int, arg: str) -> Response:
        text = ERRORS.get(code, "error").format(arg or "")
        status = 403 if code in FORBIDDEN_CODES else 400
        ecode: int | str = str(code) if self.settings.error_code_as_string else code
        return JSONResponse({"request": path, "error_code": ecode, "error": text}, status_code=status)

    async def _params(self, request: Request) -> tuple[dict[str, str], dict[str, Any]]:
        """Query + form fields, and multipart file parts (empty for url-encoded bodies)."""
        params = dict(request.query_params)
        body = await request.body()
        ctype = request.headers.get("content-type", "")
        files: dict[str, Any] = {}
        if is_multipart(ctype):
            try:
                parts = parse_multipart(body, ctype)
            except ValueError:
                parts = {}
            for name, part in parts.items():
                if part.filename is not None:
                    files[name] = part
                else:
                    params[name] = part.text
            files["__multipart__"] = True
        elif body:
            params.update(parse_urlencoded(body))
        return params, files

    def _auth(self, request: Request, params: dict[str, str]) -> WeiboToken:
        token = params.get("access_token")
        header = request.headers.get("authorization", "")
        if not token and header.lower().startswith("oauth2 "):
            token = header[7:].strip()
        if not token:
            raise WeiboError(21301)
        info = self.settings.tokens.get(token)
        if info is None:
            raise WeiboError(21332)
        if self.clock.now() >= info.expires_at:
            raise WeiboError(21327)
        return info

    def _count_ip(self, request: Request) -> None:
        key = (request.client.host if request.client else "", int(self.clock.now() // 3600))
        if self.ip_counts.get(key, 0) >= self.settings.ip_hourly_requests:
            raise WeiboError(10022)
        self.ip_counts[key] = self.ip_counts.get(key, 0) + 1

    async def _api(self, request: Request, handler: Any) -> Response:
        path = request.url.path
        try:
            if request.method != "POST":
                raise WeiboError(10021)
            params, files = await self._params(request)
            with self.lock:
                self._count_ip(request)
                token = self._auth(request, params)
                return JSONResponse(handler(token, params, files))
        except WeiboError as exc:
            return self._error(path, exc.code, exc.arg)

    async def _not_found(self, request: Request) -> Response:
        return self._error(request.url.path, 10020, "")

    # -- endpoints ----------------------------------------------------------------------------
    async def _share(self, request: Request) -> Response:
        return await self._api(request, self._do_share)

    async def _destroy(self, request: Request) -> Response:
        return await self._api(request, self._do_destroy)

    async def _token_info(self, request: Request) -> Response:
        return await self._api(request, self._do_token_info)

    def _do_share(self, token: WeiboToken, params: dict[str, str], files: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        text = params.get("status")
        if not text:
            raise WeiboError(10016, "status")
        if not params.get("rip"):
            raise WeiboError(10016, "rip")
        pic = files.get("pic")
        if files.get("__multipart__") and pic is None:
            raise WeiboError(20007)
        if pic is not None:
            if sniff_image(pic.data) not in ("jpeg", "gif", "png"):
                raise WeiboError(20005)
            if len(pic.data) >= s.max_pic_bytes:
                raise WeiboError(20006)
        if weibo_length(text) > MAX_CHARS:
            raise WeiboError(20012)
        if _TOPIC.search(_URL.sub(" ", text)):
            raise WeiboError(10017, "text can not contain topic!")
        if not any(self._safe(url) for url in _URL.findall(text)):
            raise WeiboError(10017, "text not find domain!")
        now = self.clock.now()
        posts = [t for t in self.user_posts.get(token.uid, []) if int(t // 3600) == int(now // 3600)]
        if len(posts) >= s.user_hourly_posts:
            raise WeiboError(10024, "statuses/share")
        if s.min_post_interval and posts and now - posts[-1] < s.min_post_interval:
            raise WeiboError(20016)
        last = next((st for st in reversed(self.by_user.get(token.uid, [])) if not st.deleted), None)
        if last is not None and last.text == text:
            raise WeiboError(20019)
        self._next_id += 1 + secrets.randbelow(1000)
        meta = None
        if pic is not None:
            meta = {"filename": pic.filename, "size": len(pic.data),
                    "sha256": hashlib.sha256(pic.data).hexdigest(), "key": secrets.token_hex(12)}
        status = Status(self._next_id, token.uid, text, now, meta)
        self.statuses[status.id] = status
        self.by_user.setdefault(token.uid, []).append(status)
        self.user_posts[token.uid] = posts + [now]
        self.record("statuses/share", id=str(status.id),
                    body={"text": text, "uid": token.uid, "rip": params["rip"], "pic": meta})
        return self._render(status)

    def _do_destroy(self, token: WeiboToken, params: dict[str, str], files: dict[str, Any]) -> dict[str, Any]:
        if not self.settings.destroy_available:
            raise WeiboError(10014)
        raw = params.get("id")
        if not raw:
            raise WeiboError(10016, "id")
        status = self.statuses.get(int(raw)) if raw.isdigit() else None
        if status is None or status.deleted:
            raise WeiboError(20101)
        if status.uid != token.uid:
            raise WeiboError(20102)
        status.deleted = True
        self.record("statuses/destroy", id=str(status.id), body={"uid": token.uid})
        return self._render(status)

    def _do_token_info(self, token: WeiboToken, params: dict[str, str], files: dict[str, Any]) -> dict[str, Any]:
        return {"uid": token.uid, "appkey": self.settings.app_key, "scope": token.scope,
                "create_at": int(token.created_at), "expire_in": int(token.expires_at - self.clock.now())}

    # -- helpers ------------------------------------------------------------------------------
    def _safe(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()
        return any(host == d or host.endswith("." + d) for d in self.settings.safe_domains)

    def _render(self, st: Status) -> dict[str, Any]:
        created = time.strftime("%a %b %d %H:%M:%S +0800 %Y", time.gmtime(st.created_at + CST_OFFSET))
        out: dict[str, Any] = {
            "created_at": created, "id": st.id, "idstr": str(st.id), "mid": str(st.id), "text": st.text,
            "source": f'<a href="http://app.weibo.com/t/feed/{self.settings.app_key}" rel="nofollow">'
                      f"{self.settings.app_name}</a>",
            "favorited": False, "truncated": False, "in_reply_to_status_id": "", "in_reply_to_user_id": "",
            "in_reply_to_screen_name": "", "pic_urls": [], "geo": None, "reposts_count": 0,
            "comments_count": 0, "attitudes_count": 0, "visible": {"type": 0, "list_id": 0},
            "user": {"id": st.uid, "idstr": str(st.uid), "screen_name": f"user{st.uid}", "name": f"user{st.uid}"},
        }
        if st.pic:
            key = st.pic["key"]
            out.update(thumbnail_pic=f"http://ww1.sinaimg.cn/thumbnail/{key}.jpg",
                       bmiddle_pic=f"http://ww1.sinaimg.cn/bmiddle/{key}.jpg",
                       original_pic=f"http://ww1.sinaimg.cn/large/{key}.jpg",
                       pic_urls=[{"thumbnail_pic": f"http://ww1.sinaimg.cn/thumbnail/{key}.jpg"}])
        return out


def create_app(settings: WeiboSettings | None = None, ledger: Ledger | None = None):
    """App factory: ``create_app(settings).state.emulator`` is the ``WeiboEmulator``."""
    return WeiboEmulator(settings, ledger).app
