"""The FastAPI application served by `syndicator run` and `syndicator serve`.

For now it serves the public output (feeds and the micro-site) with the right media types, and
answers HTTP 410 for micro-site pages that were withdrawn (a `.gone` marker beside the page).
"""
from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from syndicator.runtime import Runtime

log = logging.getLogger(__name__)

#: Content-Security-Policy of the desk, dashboard and API pages: nothing from elsewhere, no inline script.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
#: Paths that get the security headers (the public site and feeds are plain static files).
PAGE_PREFIXES = ("/desk", "/ops", "/login", "/logout", "/api", "/_static")

#: Media types the contract requires for feeds (Starlette would guess text/xml).
FEED_TYPES = {"rss.xml": "application/rss+xml; charset=utf-8", "atom.xml": "application/atom+xml; charset=utf-8"}


class PublicFiles(StaticFiles):
    """Static files with feed media types, no dotfiles, and 410 for withdrawn pages."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        parts = Path(path).parts
        if any(p.startswith(".") for p in parts):
            return Response("Not Found", status_code=404)
        response = await super().get_response(path, scope)
        name = parts[-1] if parts else ""
        if name in FEED_TYPES and response.status_code == 200:
            response.headers["content-type"] = FEED_TYPES[name]
        if response.status_code == 200 and name.endswith(".html"):
            gone = Path(self.directory) / Path(path).with_suffix(".gone")
            if gone.exists():
                response.status_code = 410
        return response


def create_app(rt: Runtime) -> FastAPI:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from starlette.middleware.sessions import SessionMiddleware

    from syndicator.web import api, desk, ops, pages
    from syndicator.web.auth import secret_key
    from syndicator.web.metrics import CHALLENGE, StoreCollector, scrape_allowed

    app = FastAPI(title="syndicator", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.runtime = rt
    app.add_middleware(SessionMiddleware, secret_key=secret_key(rt.config), session_cookie="syndicator_session",
                       same_site="strict", https_only=(rt.config.site.base_url or "").startswith("https://"),
                       max_age=12 * 3600)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(desk.router)
    app.include_router(ops.router)
    app.add_exception_handler(pages.LoginRequired, pages.login_redirect)
    app.add_exception_handler(pages.PageForbidden, pages.forbidden_page)
    app.mount("/_static", StaticFiles(directory=Path(__file__).resolve().parent / "static"), name="web-static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        if request.url.path.startswith(PAGE_PREFIXES):
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
            response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        return response
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreCollector(rt))
    metrics_token = rt.config.serve.metrics_token
    if metrics_token is None:
        log.warning("/metrics is open to anyone who can reach the server: serve.metrics_token is not set "
                    "(set SYNDICATOR_METRICS_TOKEN to require a bearer token)")

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if not scrape_allowed(metrics_token, request.headers.get("authorization")):
            return PlainTextResponse("a bearer token is required\n", status_code=401,
                                     headers={"WWW-Authenticate": CHALLENGE})
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse({"ok": True})

    @app.api_route("/wechat/callback/{instance}", methods=["GET", "POST"], include_in_schema=False)
    async def wechat_callback(instance: str, request: Request) -> Response:
        """WeChat's push endpoint: URL verification (GET) and PUBLISHJOBFINISH events (POST).

        No login: the signature (and, in safe mode, the AES envelope) is the authentication.
        Duplicate pushes (WeChat retries up to 3 times) settle nothing twice.
        """
        return await run_in_threadpool(_wechat_callback, rt, instance, request.method,
                                       dict(request.query_params), await request.body())

    public = rt.config.public_dir
    public.mkdir(parents=True, exist_ok=True)
    app.mount("/", PublicFiles(directory=public, html=True), name="public")
    return app


def _wechat_callback(rt: Runtime, instance: str, method: str, query: dict[str, str], body: bytes) -> Response:
    from channels.errors import DeliveryError
    from syndicator import pipeline

    entry = rt.config.channels.get(instance)
    if entry is None or entry.type != "wechat" or not entry.enabled:
        return PlainTextResponse("unknown channel", status_code=404)
    channel = rt.channel(instance)
    try:
        if method == "GET":
            return PlainTextResponse(channel.verify_url(query))
        result = channel.handle_callback(query, body)
    except DeliveryError as exc:
        return PlainTextResponse(f"rejected: {exc.message}", status_code=403)
    if result.job_id and result.outcome is not None:
        pipeline.settle_job(rt, instance, result.job_id, result.outcome, actor=f"{instance}:callback")
    return Response(result.reply, media_type="text/plain")
