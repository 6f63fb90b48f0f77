"""Emulator of the WordPress REST API (``wp/v2``), contract §3.

Served under both ``/wp-json/wp/v2/…`` and ``/?rest_route=/wp/v2/…``. Basic auth with application
passwords (spaces ignored); when app passwords are unavailable (plain HTTP and an environment type
other than ``local``) credentials are silently ignored, as in core. Errors are
``{"code", "message", "data": {"status"}}``.

    emu = WordPressEmulator(WordPressSettings(users=[WPUser(1, "editor", ["abcd efgh ijkl mnop qrst uvwx"])]))
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from .base import Emulator
from .bodies import is_multipart, parse_multipart, parse_urlencoded
from .faults import Faults
from .ledger import Ledger

#: Capabilities per role (the subset the posts and media endpoints check).
_AUTHOR_CAPS = {"read", "edit_posts", "publish_posts", "delete_posts", "edit_published_posts",
                "delete_published_posts", "upload_files"}
ROLE_CAPS: dict[str, set[str]] = {
    "administrator": _AUTHOR_CAPS | {"edit_others_posts", "delete_others_posts", "unfiltered_html",
                                     "read_private_posts", "list_users"},
    "editor": _AUTHOR_CAPS | {"edit_others_posts", "delete_others_posts", "unfiltered_html", "read_private_posts"},
    "author": set(_AUTHOR_CAPS),
    "contributor": {"read", "edit_posts", "delete_posts"},
    "subscriber": {"read"},
}
#: HTTP status for error codes injected by name through Faults.
CODE_STATUS = {"db_insert_error": 500, "db_update_error": 500, "internal_server_error": 500,
               "rest_cannot_create": 401, "rest_forbidden": 403, "rest_no_route": 404,
               "rest_post_invalid_id": 404, "rest_already_trashed": 410, "rest_invalid_param": 400}
#: What PHP's fatal-error handler answers for REST requests (WP ≥ 5.2).
CRITICAL_ERROR = ("<p>There has been a critical error on this website.</p><p><a href=\"https://wordpress.org/"
                  "documentation/article/faq-troubleshooting/\">Learn more about troubleshooting WordPress.</a></p>")


@dataclass
class WPUser:
    id: int
    login: str
    #: Application passwords as WordPress shows them (groups of 4); compared alphanumerics only.
    app_passwords: list[str] = field(default_factory=list)
    email: str = ""
    role: str = "editor"
    name: str = ""


@dataclass
class WordPressSettings:
    users: list[WPUser] = field(default_factory=lambda: [
        WPUser(1, "editor", ["abcd EFGH ijkl MNOP qrst UVWX"], "editor@example.com", "editor", "Editor")])
    #: ``WP_ENVIRONMENT_TYPE``; app passwords work over plain HTTP only when it is ``local``.
    environment_type: str = "local"
    #: Treat every request as HTTPS (``is_ssl()``), as behind a TLS-terminating proxy.
    https: bool = False
    #: False = "plain" permalinks: ``/wp-json/`` is a web-server 404 and links use ``?rest_route=``.
    pretty_permalinks: bool = True
    timezone: str = "Asia/Shanghai"
    site_name: str = "Portal"
    #: ``EMPTY_TRASH_DAYS > 0``; False → DELETE without force answers 501 rest_trash_not_supported.
    trash_enabled: bool = True
    #: Meta keys registered with ``show_in_rest``; other keys are ignored.
    registered_meta: list[str] = field(default_factory=list)
    #: Web-server request-body limit (nginx ``client_max_body_size``) → HTML 413; None = none.
    server_max_body: int | None = None
    #: PHP ``post_max_size`` (body dropped → rest_upload_no_data) and ``upload_max_filesize``.
    php_post_max_size: int = 8 * 1024 * 1024
    php_upload_max_filesize: int = 2 * 1024 * 1024
    #: Multisite ``fileupload_maxk`` → 400 rest_upload_file_too_big; None = single site (no check).
    max_upload_kb: int | None = None


class WPError(Exception):
    """A WP_Error on its way to the client."""

    def __init__(self, code: str, message: str, status: int, **data: Any) -> None:
        super().__init__(code, message)
        self.code, self.message, self.status, self.data = code, message, status, data

    def response(self) -> Response:
        return JSONResponse({"code": self.code, "message": self.message,
                             "data": {"status": self.status, **self.data}}, status_code=self.status)


def invalid_params(params: dict[str, str]) -> WPError:
    return WPError("rest_invalid_param", f"Invalid parameter(s): {', '.join(params)}", 400, params=params,
                   details={k: {"code": "rest_invalid_param", "message": v, "data": None} for k, v in params.items()})


def truthy(value: Any) -> bool:
    """``rest_sanitize_boolean``."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


@dataclass
class Ctx:
    """One REST request as handlers see it."""

    request: Request
    method: str
    route: str
    params: dict[str, Any]
    body: bytes
    user: WPUser | None
    home: str
    pretty: bool

    def rest_url(self, route: str) -> str:
        return f"{self.home}/wp-json{route}" if self.pretty else f"{self.home}/?rest_route={route}"

    def auth_status(self) -> int:
        """``rest_authorization_required_code()``: 401 when anonymous, 403 when logged in."""
        return 401 if self.user is None else 403


class WordPressEmulator(Emulator):
    """WordPress posts, media and users/me on one Starlette app."""

    api = "wordpress"
    default_error = 500

    def __init__(self, settings: WordPressSettings | None = None, ledger: Ledger | None = None,
                 faults: Faults | None = None) -> None:
        from .wordpress_media import Media
        from .wordpress_posts import Posts

        super().__init__(ledger, faults)
        self.settings = settings or WordPressSettings()
        self.posts = Posts(self)
        self.media = Media(self)
        self.reset_state()
        self.table: list[tuple[re.Pattern[str], dict[str, Callable[..., Response]]]] = [
            (re.compile(r"^/wp/v2/posts/?$"), {"GET": self.posts.list, "POST": self.posts.create}),
            (re.compile(r"^/wp/v2/posts/(?P<id>\d+)/?$"),
             {"GET": self.posts.get, "POST": self.posts.update, "PUT": self.posts.update,
              "PATCH": self.posts.update, "DELETE": self.posts.delete}),
            (re.compile(r"^/wp/v2/media/?$"), {"POST": self.media.create}),
            (re.compile(r"^/wp/v2/media/(?P<id>\d+)/?$"), {"GET": self.media.get, "DELETE": self.media.delete}),
            (re.compile(r"^/wp/v2/users/me/?$"), {"GET": self._me}),
            (re.compile(r"^/?$"), {"GET": self._index}),
        ]

    def routes(self) -> list[BaseRoute]:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return [Route("/wp-json", self._pretty, methods=methods),
                Route("/wp-json/{route:path}", self._pretty, methods=methods),
                Route("/", self._plain, methods=methods), Route("/index.php", self._plain, methods=methods),
                Route("/wp-content/uploads/{file:path}", self.media.serve_file, methods=["GET"])]

    def logical_path(self, scope: Scope) -> str:
        path = scope["path"]
        if path == "/wp-json" or path.startswith("/wp-json/"):
            return path[len("/wp-json"):] or "/"
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        return query.get("rest_route", path)

    def fault_response(self, code: int | str, path: str) -> Response:
        if isinstance(code, str):
            return WPError(code, f"Injected {code}.", CODE_STATUS.get(code, 500)).response()
        if code in (429, 502, 503, 504):
            return HTMLResponse(f"<html><head><title>{code}</title></head><body><center><h1>{code}</h1>"
                                "</center><hr><center>nginx</center></body></html>", status_code=code)
        if code == 500:
            return JSONResponse({"code": "internal_server_error", "message": CRITICAL_ERROR,
                                 "data": {"status": 500}, "additional_errors": []}, status_code=500)
        return WPError("emulator_error", f"Injected HTTP {code}.", code).response()

    def reset_state(self) -> None:
        self.items: dict[int, Any] = {}
        self.future: set[int] = set()
        self._next_id = 10
        self.media.reset()

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- users & capabilities ---------------------------------------------------------------
    def user(self, user_id: int) -> WPUser | None:
        return next((u for u in self.settings.users if u.id == user_id), None)

    @staticmethod
    def can(user: WPUser | None, cap: str) -> bool:
        return user is not None and cap in ROLE_CAPS.get(user.role, set())

    def app_passwords_available(self, request: Request) -> bool:
        """``wp_is_application_passwords_available()``: ``is_ssl() || 'local' === environment``."""
        ssl = (self.settings.https or request.url.scheme == "https"
               or request.headers.get("x-forwarded-proto", "").lower() == "https")
        return ssl or self.settings.environment_type == "local"

    def authenticate(self, request: Request) -> WPUser | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic ") or not self.app_passwords_available(request):
            return None  # credentials are ignored: the request is anonymous
        try:
            login, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if "@" in login:
            user = next((u for u in self.settings.users if u.email.lower() == login.lower()), None)
            if user is None:
                raise WPError("invalid_email", "Unknown email address. Check again or try your username.", 401)
        else:
            user = next((u for u in self.settings.users if u.login == login), None)
            if user is None:
                raise WPError("invalid_username", "Unknown username. Check again or try your email address.", 401)
        given = re.sub(r"[^a-z\d]", "", password, flags=re.I)
        if given not in {re.sub(r"[^a-z\d]", "", p, flags=re.I) for p in user.app_passwords}:
            raise WPError("incorrect_password", "The provided password is an invalid application password.", 401)
        return user

    # -- dispatch -----------------------------------------------------------------------------
    async def _pretty(self, request: Request) -> Response:
        if not self.settings.pretty_permalinks:
            return HTMLResponse("<h1>Not Found</h1><p>The requested URL was not found on this server.</p>",
                                status_code=404)
        return await self._dispatch(request, "/" + request.path_params.get("route", ""), pretty=True)

    async def _plain(self, request: Request) -> Response:
        route = request.query_params.get("rest_route")
        if route is None:
            return HTMLResponse(f"<html><body><h1>{self.settings.site_name}</h1></body></html>")
        return await self._dispatch(request, route, pretty=False)

    async def _dispatch(self, request: Request, route: str, pretty: bool) -> Response:
        body = await request.body()
        method = (request.query_params.get("_method") or request.headers.get("x-http-method-override")
                  or request.method).upper()
        home = str(request.base_url).rstrip("/")
        try:
            with self.lock:
                self.posts.tick()
                user = self.authenticate(request)
                ctx = Ctx(request, method, route, self._params(request, body), body, user, home,
                          pretty and self.settings.pretty_permalinks)
                for pattern, handlers in self.table:
                    m = pattern.match(route)
                    if m and method in handlers:
                        return handlers[method](ctx, **m.groupdict())
                raise WPError("rest_no_route", "No route was found matching the URL and request method.", 404)
        except WPError as exc:
            return exc.response()

    def _params(self, request: Request, body: bytes) -> dict[str, Any]:
        """GET params, then body params (JSON when declared, else form fields), like WP_REST_Request."""
        params: dict[str, Any] = {}
        for key, value in request.query_params.multi_items():
            if key.endswith("[]"):
                params.setdefault(key[:-2], []).append(value)
            else:
                params[key] = value
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json" and body.strip():
            try:
                data = json.loads(body)
            except ValueError:
                raise WPError("rest_invalid_json", "Invalid JSON body passed.", 400) from None
            if isinstance(data, dict):
                params.update(data)
        elif ctype == "application/x-www-form-urlencoded":
            params.update(parse_urlencoded(body))
        elif is_multipart(ctype):
            try:
                fields = parse_multipart(body, request.headers["content-type"])
            except ValueError:
                fields = {}
            params.update({k: p.text for k, p in fields.items() if p.filename is None})
        return params

    def _me(self, ctx: Ctx) -> Response:
        if ctx.user is None:
            raise WPError("rest_not_logged_in", "You are not currently logged in.", 401)
        u = ctx.user
        out: dict[str, Any] = {"id": u.id, "name": u.name or u.login, "url": "", "description": "",
                               "link": f"{ctx.home}/author/{u.login}/", "slug": u.login, "meta": []}
        if ctx.params.get("context") == "edit":
            out.update(username=u.login, email=u.email, roles=[u.role],
                       capabilities={c: True for c in sorted(ROLE_CAPS.get(u.role, set()))})
        return JSONResponse(out)

    def _index(self, ctx: Ctx) -> Response:
        out: dict[str, Any] = {"name": self.settings.site_name, "description": "", "url": ctx.home,
                               "home": ctx.home, "timezone_string": self.settings.timezone,
                               "namespaces": ["oembed/1.0", "wp/v2"], "authentication": {}, "routes": {}}
        if self.app_passwords_available(ctx.request):
            out["authentication"] = {"application-passwords": {"endpoints": {
                "authorization": f"{ctx.home}/wp-admin/authorize-application.php"}}}
        return JSONResponse(out)


def create_app(settings: WordPressSettings | None = None, ledger: Ledger | None = None):
    """App factory: ``create_app(settings).state.emulator`` is the ``WordPressEmulator``."""
    return WordPressEmulator(settings, ledger).app
