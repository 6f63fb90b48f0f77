"""The FastAPI application served by `syndicator run` and `syndicator serve`.

For now it serves the public output (feeds and the micro-site) with the right media types, and
answers HTTP 410 for micro-site pages that were withdrawn (a `.gone` marker beside the page).
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from syndicator.runtime import Runtime

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
    app = FastAPI(title="syndicator", docs_url="/api/docs", openapi_url="/api/openapi.json")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse({"ok": True})

    public = rt.config.public_dir
    public.mkdir(parents=True, exist_ok=True)
    app.mount("/", PublicFiles(directory=public, html=True), name="public")
    return app
