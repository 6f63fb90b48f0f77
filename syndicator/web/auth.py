"""Who is asking, and may they: sessions (signed HttpOnly SameSite cookies), API tokens, CSRF.

Every route declares the action it performs (`require("publish")`); `syndicator.users.PERMISSIONS`
says which roles may. State-changing requests made with a session cookie must carry the session's
CSRF token (form field `csrf_token` or header `X-CSRF-Token`); token-authenticated API calls are
not cookie-based and need none.
"""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import Depends, HTTPException, Request

from syndicator.config import Config
from syndicator.users import Principal, by_token, user_by_id

#: Environment variable holding the key that signs session cookies.
SECRET_ENV = "SYNDICATOR_SECRET_KEY"
#: Methods that change nothing.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def secret_key(config: Config) -> str:
    """$SYNDICATOR_SECRET_KEY, else a random key kept in var/secret_key (mode 0600), made once."""
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV]
    path: Path = config.var_dir / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def _check_csrf(request: Request) -> None:
    expected = request.session.get("csrf")
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        given = (await request.form()).get("csrf_token")
    if not expected or not given or not hmac.compare_digest(str(given), expected):
        raise HTTPException(403, detail="CSRF token missing or wrong; reload the page and try again")


def principal(request: Request) -> Principal | None:
    store = request.app.state.runtime.store
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return by_token(store, header[7:].strip())
    user_id = request.session.get("uid")
    return user_by_id(store, int(user_id)) if user_id else None


def require(action: str):
    """A dependency: the caller must be logged in with a role allowed to do `action`."""

    async def dependency(request: Request) -> Principal:
        who = principal(request)
        if who is None:
            raise HTTPException(401, detail="login required", headers={"WWW-Authenticate": "Bearer"})
        if not who.may(action):
            raise HTTPException(403, detail=f"role '{who.role}' may not {action}")
        if request.method not in SAFE_METHODS and who.via == "session":
            await _check_csrf(request)
        return who

    return Depends(dependency)
