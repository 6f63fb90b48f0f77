"""What the desk pages show: the article list and its counts, the article page with its delivery
rows and history, and the context the article form needs."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from fastapi import HTTPException
from sqlalchemy import exists, func, select
from sqlalchemy.orm import aliased

from syndicator.models import Article, Asset, Delivery, Revision
from syndicator.states import TERMINAL
from syndicator.views import NotFoundError, article_status, articles_query, find_article
from syndicator.web.desk.forms import ARTICLE_FIELDS, LIMITS, Submission

#: Delivery states an editor must look at.
PROBLEM_STATES = ("failed", "unknown", "manual")
PAGE_SIZE = 30

STATE_LABELS = {"queued": "Queued", "sending": "Sending", "retry_wait": "Waiting to retry",
                "delivered": "Delivered", "submitted": "Submitted", "failed": "Failed",
                "manual": "Needs a person", "unknown": "Outcome unknown", "cancelled": "Cancelled",
                "withdrawn": "Withdrawn"}
OPERATION_LABELS = {"publish": "Publish", "update": "Correction", "retract": "Retraction"}


# -- shared page context -------------------------------------------------------------------------

def _channel_labels(rt, _: Callable[..., str]) -> dict[str, str]:
    labels = {}
    for name in rt.config.channels:
        try:
            labels[name] = _(type(rt.channel(name)).display_name)
        except Exception:
            labels[name] = name
    return labels


def _limits(rt) -> dict[str, int | None]:
    """Limits the form shows next to its counters: the tightest title limit of an enabled channel."""
    titles = []
    for name in rt.config.enabled_channels():
        try:
            titles.append(type(rt.channel(name)).max_title_chars)
        except Exception:  # an unavailable channel shows its problem in the preview
            continue
    titles = [t for t in titles if t]
    return {"title": min(titles) if titles else None, "summary": LIMITS["summary"]}


def _local(rt, when: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return when.astimezone(rt.ports.timezone).strftime(fmt) if when else ""


def _form_context(rt, sub: Submission, _: Callable[..., str], **extra: Any) -> dict[str, Any]:
    images = sorted(sub.images.items())
    return {"values": sub.values, "errors": sub.errors, "cover": sub.cover, "images": images,
            "images_json": sub.images_json, "limits": _limits(rt), "channel_labels": _channel_labels(rt, _),
            "enabled": list(rt.config.enabled_channels()), **extra}


def _empty_submission() -> Submission:
    values = {name: "" for name in ARTICLE_FIELDS}
    values["body_format"] = "markdown"
    return Submission(values)


def _problem_clause():
    later = aliased(Delivery)
    return exists().where(Delivery.article_id == Article.id, Delivery.state.in_(PROBLEM_STATES),
                          ~exists().where(later.article_id == Delivery.article_id, later.channel == Delivery.channel,
                                          later.id > Delivery.id))


def _articles(session, *, status: str | None, unit: str | None, problems: bool,
              before: int | None) -> tuple[list[dict[str, Any]], bool]:
    q = articles_query()
    if status:
        q = q.where(Article.status == status)
    if unit:
        q = q.where(Revision.unit == unit)
    if problems:
        q = q.where(_problem_clause())
    if before:
        q = q.where(Article.id < before)
    rows = [dict(r._mapping) for r in session.execute(q.order_by(Article.id.desc()).limit(PAGE_SIZE + 1))]
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


def _latest_states(session, ids: list[int]) -> dict[int, dict[str, tuple[str, str]]]:
    """Article id → channel → (state, operation) of its latest delivery."""
    if not ids:
        return {}
    latest = select(func.max(Delivery.id)).where(Delivery.article_id.in_(ids)).group_by(
        Delivery.article_id, Delivery.channel)
    out: dict[int, dict[str, tuple[str, str]]] = {}
    for article_id, channel, state, operation in session.execute(
            select(Delivery.article_id, Delivery.channel, Delivery.state, Delivery.operation)
            .where(Delivery.id.in_(latest))):
        out.setdefault(article_id, {})[channel] = (shown_state(state, operation), operation)
    return out


def shown_state(state: str, operation: str) -> str:
    """The state as the desk shows it: a retraction that arrived reads "withdrawn", not "delivered"."""
    return "withdrawn" if operation == "retract" and state == "delivered" else state


def _counts(session) -> dict[str, int]:
    terminal = [s.value for s in TERMINAL]
    return {
        "live": session.scalar(select(func.count()).select_from(Article).where(Article.status == "live")) or 0,
        "sending": session.scalar(select(func.count(func.distinct(Delivery.article_id)))
                                  .where(Delivery.state.not_in(terminal))) or 0,
        "problems": session.scalar(select(func.count()).select_from(Article).where(_problem_clause())) or 0,
    }


# -- the article page ---------------------------------------------------------------------------

def _article_context(rt, article_id: int, _: Callable[..., str]) -> dict[str, Any]:
    with rt.store.read() as session:
        try:
            article = find_article(session, str(article_id))
        except NotFoundError:
            raise HTTPException(404, detail="no such article") from None
        status = article_status(session, article)
        revisions = session.scalars(select(Revision).where(Revision.article_id == article.id)
                                    .order_by(Revision.number.desc())).all()
        current = revisions[0]
        shas = [*current.asset_shas, *([current.cover_sha] if current.cover_sha else [])]
        names = dict(session.execute(select(Asset.sha256, Asset.filename).where(Asset.sha256.in_(shas))).all()) \
            if shas else {}
        history = [{"number": r.number, "at": _local(rt, r.created_at), "by": r.created_by,
                    "note": r.note or "", "title": r.title} for r in revisions]
        info = {"id": article.id, "slug": article.slug, "status": article.status,
                "revision": article.current_revision, "title": current.title, "summary": current.summary,
                "unit": current.unit, "author": current.author, "tags": list(current.tags),
                "created": _local(rt, article.created_at), "created_by": article.created_by,
                "first_published": _local(rt, article.first_published_at),
                "expires": _local(rt, article.expires_at),
                "retracted": _local(rt, article.retracted_at), "retracted_by": article.retracted_by or "",
                "retraction_reason": article.retraction_reason or "",
                "cover": current.cover_sha}
        local_input = "%Y-%m-%dT%H:%M"
        values = {"title": current.title, "summary": current.summary, "author": current.author,
                  "unit": current.unit, "tags": "，".join(current.tags), "slug": "",
                  "publish_at": _local(rt, current.publish_at, local_input),
                  "expires_at": _local(rt, current.expires_at, local_input),
                  "body": current.body_source, "body_format": "markdown", "note": "", "at": ""}
        correction = Submission(values, cover=(current.cover_sha, names.get(current.cover_sha, "cover"))
                                if current.cover_sha in names else None,
                                images={names[s]: s for s in current.asset_shas if s in names})
    labels = _channel_labels(rt, _)
    latest: dict[str, dict[str, Any]] = {}
    for d in status["deliveries"]:
        latest[d["channel"]] = d
    order = [*rt.config.enabled_channels(), *sorted(set(latest) - set(rt.config.enabled_channels()))]
    rows = [{"channel": name, "label": labels.get(name, name), "d": latest.get(name)} for name in order
            if name in latest or info["status"] == "live"]
    for row in rows:
        d = row["d"]
        if d:
            row["shown"] = shown_state(d["state"], d["operation"])
            row["updated"] = _local(rt, datetime.fromisoformat(d["updated_at"])) if d["updated_at"] else ""
            row["link"] = d["remote_url"] if (d["remote_url"] or "").startswith(("http://", "https://")) else None
    retryable = any(r["d"] and r["d"]["state"] in ("failed", "unknown", "retry_wait") for r in rows)
    return {"article": info, "rows": rows, "history": history, "retryable": retryable,
            "correction": correction, "terminal": sorted(s.value for s in TERMINAL)}
