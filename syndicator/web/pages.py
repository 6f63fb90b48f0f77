"""Server-rendered pages: shared rendering (language, CSRF token, user), login and logout.

Page routes declare their action with `page_user(action)`; a visitor who is not logged in is
sent to the login page, one whose role may not is shown a 403 page.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from syndicator.users import Principal, authenticate
from syndicator.web.auth import _check_csrf, csrf_token, principal
from syndicator.web.i18n import LANGUAGES, choose, translator

router = APIRouter(include_in_schema=False)


class PageForbidden(Exception):
    """The visitor's role may not do this; shown as an HTML 403 page."""

    def __init__(self, role: str, action: str) -> None:
        self.role, self.action = role, action


def forbidden_page(request: Request, exc: PageForbidden) -> Response:
    return render(request, "web/forbidden.html", status_code=403, role=exc.role, action=exc.action)


class LoginRequired(Exception):
    """Raised by page dependencies; turned into a redirect to /login."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def page_user(action: str):
    async def dependency(request: Request) -> Principal:
        who = principal(request)
        if who is None:
            raise LoginRequired(str(request.url.path))
        if not who.may(action):
            raise PageForbidden(who.role, action)
        if request.method not in ("GET", "HEAD"):
            await _check_csrf(request)
        return who

    return Depends(dependency)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a page in the visitor's language, with the CSRF token and the user at hand."""
    lang = choose(request.query_params.get("lang"), request.cookies.get("lang"))
    env = request.app.state.runtime.ports.templates
    html = env.get_template(template).render(
        _=translator(lang), lang=lang, languages=LANGUAGES, csrf_token=csrf_token(request),
        user=principal(request), path=request.url.path, **context)
    response = HTMLResponse(html, status_code=status_code)
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie("lang", lang, max_age=365 * 86400, httponly=True, samesite="strict")
    return response


def login_redirect(request: Request, exc: LoginRequired) -> Response:
    return RedirectResponse(f"/login?next={quote(exc.next_url)}", status_code=303)


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/desk"


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "web/login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request, username: str = Form(max_length=64), password: str = Form(max_length=200),
                next: str = Form("/desk", max_length=500)) -> Response:
    await _check_csrf(request)
    who = authenticate(request.app.state.runtime.store, username, password)
    if who is None:
        return render(request, "web/login.html", status_code=401, next=_safe_next(next),
                      error="Wrong username or password.")
    request.session.clear()  # a new session (and CSRF token) after login: no fixation
    request.session["uid"] = who.id
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _check_csrf(request)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/")
def home(request: Request) -> Response:
    who = principal(request)
    if who is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/ops" if who.role == "ops" else "/desk", status_code=303)
