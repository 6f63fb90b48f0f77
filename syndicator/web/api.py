"""The JSON REST API: every action the CLI offers, for the desk's scripts and for automation.

Parse, call the core, present — the same core functions as the CLI, so every change goes through
`states.transition` and is logged under the caller's name. Errors are 4xx with field-level detail.
"""
from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Body, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from syndicator import editorial, operations
from syndicator.articles import BadInput, parse_article
from syndicator.publishing import publish as do_publish
from syndicator.states import Conflict, DeliveryState, IllegalTransition
from syndicator.users import Principal, authenticate
from syndicator.views import NotFoundError, article_status, channel_matrix, find_article, list_articles, \
    list_deliveries, timeline
from syndicator.web.auth import csrf_token, require

router = APIRouter(prefix="/api/v1", tags=["api"])

#: Article references in paths: an id or a slug.
Ref = Annotated[str, Path(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9-]+$")]
_STATES = tuple(s.value for s in DeliveryState)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArticleFields(_Strict):
    """An article as JSON: the front-matter fields, the Markdown body, and images by name."""

    title: str = Field(min_length=1, max_length=200)
    summary: str = Field("", max_length=500)
    author: str = Field("", max_length=64)
    unit: str = Field("", max_length=120)
    tags: list[Annotated[str, Field(min_length=1, max_length=30)]] = Field(default_factory=list, max_length=10)
    slug: str | None = Field(None, pattern=r"^[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?$")
    publish_at: datetime | None = None
    expires_at: datetime | None = None
    body: str = Field(min_length=1, max_length=200_000, description="Markdown; images as ![alt](name)")
    cover: str | None = Field(None, max_length=200, description="name of an entry in `images`")
    images: dict[Annotated[str, Field(max_length=200)], Annotated[str, Field(max_length=20_000_000)]] = Field(
        default_factory=dict, description="name → base64 bytes")


class PublishRequest(ArticleFields):
    slug: str = Field(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?$")


class CorrectionRequest(ArticleFields):
    note: str | None = Field(None, max_length=500)
    at: str | None = Field(None, max_length=40, description="ISO time or +30m / +2h / +1d")


class RetractRequest(_Strict):
    reason: str = Field(min_length=1, max_length=500)


class RetryRequest(_Strict):
    channel: str | None = Field(None, max_length=40)


class OperatorNote(_Strict):
    note: str = Field("", max_length=500)


class LoginRequest(_Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


def _draft(rt, fields: ArticleFields, source: str):
    images: dict[str, bytes] = {}
    for name, data in fields.images.items():
        try:
            images[name] = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadInput([f"{source}: images.{name}: not valid base64"]) from None
    front = fields.model_dump(exclude={"body", "images", "note", "at"}, exclude_none=True)
    text = "---\n" + yaml.safe_dump(front, allow_unicode=True, default_flow_style=False) + "---\n\n" + fields.body

    def image(name: str) -> bytes:
        if name not in images:
            raise FileNotFoundError(f"no image named {name!r} in `images`")
        return images[name]

    return parse_article(text, source=source, images=image, default_slug=None,
                         max_image_bytes=rt.config.limits.max_image_bytes,
                         max_body_chars=rt.config.limits.max_body_chars, timezone=rt.config.site.timezone)


def _unprocessable(exc: BadInput) -> HTTPException:
    return HTTPException(422, detail=[{"loc": _loc(p), "msg": p} for p in exc.problems])


def _loc(problem: str) -> list[str]:
    parts = [p.strip() for p in problem.split(":")]
    return [p for p in parts[1:3] if p] or ["body"]


def _status(rt, ref: str) -> dict[str, Any]:
    with rt.store.read() as session:
        try:
            return article_status(session, find_article(session, ref))
        except NotFoundError as exc:
            raise HTTPException(404, detail=str(exc)) from None


@router.post("/session", summary="Log in (sets the session cookie; returns the CSRF token)")
def login(request: Request, body: LoginRequest) -> dict[str, Any]:
    who = authenticate(request.app.state.runtime.store, body.username, body.password)
    if who is None:
        raise HTTPException(401, detail="wrong username or password")
    request.session.clear()
    request.session["uid"] = who.id
    return {"username": who.username, "role": who.role, "csrf_token": csrf_token(request)}


@router.delete("/session", summary="Log out")
def logout(request: Request) -> dict[str, bool]:
    request.session.clear()
    return {"ok": True}


@router.get("/me")
def me(request: Request, who: Principal = require("read")) -> dict[str, Any]:
    return {"username": who.username, "role": who.role, "via": who.via}


@router.get("/articles")
def articles(request: Request, who: Principal = require("read"),
             limit: int = Query(50, ge=1, le=500), before_id: int | None = Query(None, ge=1, le=2**62),
             status: str | None = Query(None, pattern="^(live|retracted)$")) -> dict[str, Any]:
    with request.app.state.runtime.store.read() as session:
        return {"articles": list_articles(session, limit=limit, before_id=before_id, status=status)}


@router.post("/articles", status_code=201, summary="Publish an article to every enabled channel")
def publish(request: Request, body: PublishRequest, who: Principal = require("publish")) -> dict[str, Any]:
    rt = request.app.state.runtime
    try:
        draft = _draft(rt, body, "api")
        result = do_publish(rt.store, rt.config, draft, actor=who.actor, enqueuer=rt.enqueuer)
    except BadInput as exc:
        raise _unprocessable(exc) from None
    return {**_status(rt, str(result.article_id)), "created": result.created}


@router.get("/articles/{ref}")
def article(request: Request, ref: Ref, who: Principal = require("read")) -> dict[str, Any]:
    return _status(request.app.state.runtime, ref)


@router.post("/articles/{ref}/corrections", summary="Correct an article (更正)")
def correct(request: Request, ref: Ref, body: CorrectionRequest, who: Principal = require("correct")) -> dict:
    rt = request.app.state.runtime
    try:
        at = editorial.parse_when(body.at, now=rt.clock(), timezone=rt.config.site.timezone) if body.at else None
        result = editorial.correct(rt, ref, _draft(rt, body, "api"), note=body.note, at=at, actor=who.actor)
    except BadInput as exc:
        raise _unprocessable(exc) from None
    except NotFoundError as exc:
        raise HTTPException(404, detail=str(exc)) from None
    return {**_status(rt, ref), "changed": result.changed, "message": result.message}


@router.post("/articles/{ref}/retraction", summary="Retract an article (撤稿)")
def retract(request: Request, ref: Ref, body: RetractRequest, who: Principal = require("retract")) -> dict:
    rt = request.app.state.runtime
    try:
        result = editorial.retract(rt, ref, reason=body.reason, actor=who.actor)
    except BadInput as exc:
        raise _unprocessable(exc) from None
    except NotFoundError as exc:
        raise HTTPException(404, detail=str(exc)) from None
    return {**_status(rt, ref), "changed": result.changed, "message": result.message}


@router.post("/articles/{ref}/retry", summary="Re-queue failed or stuck deliveries")
def retry(request: Request, ref: Ref, body: RetryRequest = Body(default_factory=RetryRequest),
          who: Principal = require("retry")) -> dict[str, Any]:
    rt = request.app.state.runtime
    if body.channel and body.channel not in rt.config.channels:
        raise HTTPException(422, detail=[{"loc": ["body", "channel"], "msg": f"unknown channel {body.channel!r}"}])
    try:
        ids = operations.retry(rt, ref, channel=body.channel, actor=who.actor)
    except NotFoundError as exc:
        raise HTTPException(404, detail=str(exc)) from None
    return {"requeued": ids}


@router.get("/deliveries")
def deliveries(request: Request, who: Principal = require("read"),
               state: str | None = Query(None, pattern="^(" + "|".join(_STATES) + ")$"),
               channel: str | None = Query(None, max_length=40), limit: int = Query(100, ge=1, le=1000),
               before_id: int | None = Query(None, ge=1, le=2**62)) -> dict[str, Any]:
    with request.app.state.runtime.store.read() as session:
        return {"deliveries": list_deliveries(session, state=state, channel=channel, limit=limit,
                                              before_id=before_id)}


@router.get("/deliveries/{delivery_id}/timeline")
def delivery_timeline(request: Request, delivery_id: int = Path(ge=1, le=2**62),
                      who: Principal = require("read")) -> dict[str, Any]:
    with request.app.state.runtime.store.read() as session:
        return {"events": timeline(session, delivery_id)}


def _operate(request: Request, delivery_id: int, action, who: Principal, note: str) -> dict[str, Any]:
    try:
        state = action(request.app.state.runtime, delivery_id, actor=who.actor, note=note)
    except (Conflict, IllegalTransition) as exc:
        raise HTTPException(409, detail=str(exc)) from None
    return {"id": delivery_id, "state": state}


@router.post("/deliveries/{delivery_id}/resolve", summary="Confirm an unknown or manual delivery arrived")
def resolve(request: Request, delivery_id: int = Path(ge=1, le=2**62),
            body: OperatorNote = Body(default_factory=OperatorNote), who: Principal = require("operate")) -> dict:
    return _operate(request, delivery_id, operations.resolve, who, body.note)


@router.post("/deliveries/{delivery_id}/cancel", summary="Give up on a delivery")
def cancel(request: Request, delivery_id: int = Path(ge=1, le=2**62),
           body: OperatorNote = Body(default_factory=OperatorNote), who: Principal = require("operate")) -> dict:
    return _operate(request, delivery_id, operations.cancel, who, body.note)


@router.get("/channels")
def channels(request: Request, who: Principal = require("read")) -> dict[str, Any]:
    return {"channels": channel_matrix(request.app.state.runtime)}
